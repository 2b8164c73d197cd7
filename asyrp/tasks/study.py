"""A sweep's Optuna study kept on disk, so that several workers share it and a rerun after a kill resumes it.

Why asyrp has its own sweeper (``asyrp.tasks.sweeper``) over Optuna >= 4 instead of hydra-optuna-sweeper: that
plugin's latest release (1.3.0) pins Optuna < 3, which has no journal storage and whose sqlite storage fails with
SQLAlchemy 2; and it asks ``n_trials`` new trials on every start, so a rerun can only start the study again.

``hydra.sweeper.storage``: null keeps the study in memory (gone with the process); a file path is Optuna's journal
file (processes on one machine, or on a shared file system, append to it in turns); a URL (``sqlite:///study.db``,
``postgresql://...``) is Optuna's RDB storage. One study name in one storage is one study: a second sweep with the
same name and the same search space joins it (the trials are shared, ``n_trials`` is the study's total); with
another search space or direction it is refused.

Killed trials. The sweeper holds a lock per running trial (``asyrp.ops.locks``: the kernel lets go when its process
dies, however it dies). A RUNNING trial whose lock is free was killed: its parameters are queued again (user
attributes ``rerun_of`` and ``folder``: the rerun trains in the killed trial's folder and resumes from its
last.ckpt) and it is marked FAIL. Finished = COMPLETE, PRUNED, or FAIL without a rerun (a trial that failed for a
reason would fail again).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..ops.errors import AsyrpUserError, one_line
from ..ops.locks import LockBusy, acquire

STORAGE_KEY = "hydra.sweeper.storage"
ORPHAN_SECONDS = 120.0  # a RUNNING trial that never got its lock attribute (killed right after ask) is dead by then


def require_optuna() -> None:
    """Optuna >= 4 (its journal storage), named with its extra in one line when missing or too old."""
    from ..ops.faults import require

    require("optuna", min_version="4")


def open_storage(spec: str | None) -> Any:
    """The Optuna storage of ``hydra.sweeper.storage`` (module docstring); one line when it cannot be opened."""
    if spec is None or str(spec) in ("", "null", "None"):
        return None
    spec = str(spec)
    import optuna

    try:
        if "://" in spec:
            return optuna.storages.RDBStorage(spec, heartbeat_interval=None)
        from optuna.storages.journal import JournalFileBackend

        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    except ModuleNotFoundError as err:
        raise AsyrpUserError(
            f"{STORAGE_KEY}={spec}: its database driver {err.name} is not installed: pip install {err.name}, "
            "or use a journal file (hydra.sweeper.storage=<folder>/study.journal)"
        ) from err
    except Exception as err:  # noqa: BLE001 - SQLAlchemy / OS errors of every kind: one line before any trial
        raise AsyrpUserError(
            f"{STORAGE_KEY}={spec}: the study storage cannot be opened ({one_line(err)[:200]}): check the URL and "
            "that its server is reachable, or use a journal file (hydra.sweeper.storage=<folder>/study.journal)"
        ) from err


def open_study(storage: Any, name: str, directions: Sequence[str], sampler: Any, space: Mapping[str, str]):
    """The study ``name`` in ``storage``, created or joined; a study of that name with other directions or another
    search space is refused in one line (two sweeps share a study only deliberately: same name, same space)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper says what it does in its own lines
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=sampler, directions=list(directions), load_if_exists=True
    )
    have = [d.name.lower() for d in study.directions]
    if have != [d.lower() for d in directions]:
        raise AsyrpUserError(
            f"study {name} in {STORAGE_KEY} already holds trials with direction {have}, not {list(directions)}: "
            "choose another hydra.sweeper.study_name (or the same direction to share the study)"
        )
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", dict(space))
    elif stored != dict(space):
        raise AsyrpUserError(
            f"study {name} in {STORAGE_KEY} already holds trials of another search space ({stored}): choose another "
            "hydra.sweeper.study_name, or the same hydra.sweeper.params to add trials to that study"
        )
    return study


def _alive(trial) -> bool:
    """A RUNNING trial's sweeper still holds its lock (a lock on another machine's folder counts as held)."""
    lock = trial.user_attrs.get("lock")
    if lock is None:
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - started < ORPHAN_SECONDS
    if not Path(lock).parent.is_dir():
        return True
    try:
        acquire(lock).release()
    except LockBusy:
        return True
    return False


def requeue_killed(study) -> list[int]:
    """Queue the parameters of every killed trial again (once) and mark it FAIL; the numbers requeued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    killed = []
    for t in trials:
        if t.state != TrialState.RUNNING or _alive(t):
            continue
        if t.number not in rerun:
            attrs = {"rerun_of": t.number, "folder": t.user_attrs.get("folder", str(t.number))}
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        killed.append(t.number)
    return killed


def still_to_do(study, n_trials: int) -> int:
    """Trials to ask for: ``n_trials`` minus the finished ones and the ones running (here or in another worker)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    finished = [t for t in trials if t.state.is_finished() and t.number not in rerun]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return max(0, int(n_trials) - len(finished) - len(running))


def record(study, number: int, value: Any) -> None:
    """The trial's value(s) (a float, a list for several directions) or FAIL (``value`` an exception or None);
    a trial already recorded (by its own job, or a sweeper that was faster) stays as it is."""
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False)[number].state.is_finished():
        return
    if value is None or isinstance(value, BaseException):
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        return
    values = [float(v) for v in value] if isinstance(value, list | tuple) else float(value)
    study.tell(number, values, skip_if_finished=True)


def results(study) -> dict[str, Any]:
    """``optimization_results.yaml``: the best trial (one direction) or the Pareto front (several)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out: dict[str, Any] = {"name": "optuna", "study": study.study_name, "n_complete": len(done)}
    if not done:
        return out
    if len(study.directions) == 1:
        out.update(best_trial=study.best_trial.number, best_params=study.best_params, best_value=study.best_value)
    else:
        out["best_trials"] = [{"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials]
    return out


def trials_table(study) -> tuple[list[str], list[list[Any]]]:
    """Every trial as one row (number, state, values, parameters, user attributes): the W&B summary table."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    attrs = sorted({k for t in trials for k in t.user_attrs if k != "lock"})
    n_values = len(study.directions)
    cols = ["number", "state", *[f"value_{i}" for i in range(n_values)], *params, *attrs]
    rows = []
    for t in trials:
        values = list(t.values) if t.values else [None] * n_values
        rows.append(
            [t.number, t.state.name, *values, *[t.params.get(k) for k in params]]
            + [str(t.user_attrs.get(k, "")) for k in attrs]
        )
    return cols, rows
