"""asyrp's Hydra sweeper: Optuna trials, k at a time through any Hydra launcher, on a study that survives a kill.

``hydra/sweeper=study`` (conf/hydra/sweeper/study.yaml; Hydra finds the class through the shim
``hydra_plugins.asyrp_sweeper``). Each batch of ``n_jobs`` trials goes to the configured launcher at once (basic:
one after another; ``trials=joblib`` / ``slurm`` / ``submitit_local`` / ``ray``: side by side), each trial in its
own folder ``<sweep dir>/<folder>`` (its Optuna number; a rerun of a killed trial reuses the killed one's folder)
with ``threads`` torch threads. Why not hydra-optuna-sweeper, and how killed trials are found: asyrp.tasks.study.

A rerun of the same command (same ``hydra.sweep.dir``, so the same journal file) asks only for the trials still to
do. Every job records its own value in the study as it ends (``TrialCallback``), so a trial that finished while its
sweeper was killed is not run again.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from . import study as st

log = logging.getLogger(__name__)

TRIAL_ENV, STUDY_ENV = "ASYRP_TRIAL", "ASYRP_STUDY"


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> tuple[dict, dict, list[str]]:
    """(searched: key -> parsed sweep override, fixed: key -> value, the other command-line overrides) from the
    config's ``params`` and the command line; a command-line ``key=value`` replaces the config's range for key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    given = [f"{k}={v}" for k, v in (params or {}).items()]
    searched, fixed, other = {}, {}, []
    for o in parser.parse_overrides(given) + parser.parse_overrides(list(arguments)):
        key = o.get_key_element()
        if o.is_sweep_override():
            searched[key] = o
            fixed.pop(key, None)
        elif key in searched or key in fixed:
            searched.pop(key, None)
            fixed[key] = o.get_value_element_as_str()
        else:
            other.append(o.input_line)
    return searched, fixed, other


def suggest(trial, name: str, override) -> Any:
    """One parameter drawn by Optuna from a Hydra sweep: choice(...), range(...), interval(...) (tag log)."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer

    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return trial.suggest_categorical(name, list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        ints = all(isinstance(v, int) for v in (value.start, value.stop, value.step))
        last = value.stop - value.step  # Hydra's range excludes stop, like Python's
        if ints:
            return trial.suggest_int(name, int(value.start), int(last), step=int(value.step))
        return trial.suggest_float(name, float(value.start), float(last), step=float(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return trial.suggest_int(name, value.start, value.end, log=log_scale)
        return trial.suggest_float(name, float(value.start), float(value.end), log=log_scale)
    raise st.AsyrpUserError(f"hydra.sweeper.params.{name}: {override.input_line} is not a sweep Optuna can draw from")


class StudySweeper(Sweeper):
    """The Hydra sweeper behind ``hydra/sweeper=study`` (module docstring)."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg
        self.locks: dict[int, Any] = {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def _study(self, space: Mapping[str, str]):
        """The study on its storage, its sampler seeded with seed + the trials it holds (a resumed study draws
        new settings, not its first ones again)."""
        from hydra.utils import instantiate

        st.require_optuna()
        direction = self.cfg.get("direction") or "maximize"
        many = isinstance(direction, list | tuple) or OmegaConf.is_list(direction)
        directions = [str(d) for d in direction] if many else [str(direction)]
        storage = st.open_storage(self.cfg.get("storage"))
        study = st.open_study(storage, study_name(self.cfg), directions, None, space)
        sampler = self.cfg.get("sampler")
        if isinstance(sampler, Mapping) or OmegaConf.is_dict(sampler):
            sampler = OmegaConf.to_container(sampler, resolve=True) if OmegaConf.is_dict(sampler) else dict(sampler)
            if sampler.get("seed") is not None:
                sampler["seed"] = int(sampler["seed"]) + len(study.trials)
            sampler = instantiate(sampler)
        if sampler is not None:
            study.sampler = sampler
        return study

    def sweep(self, arguments: list[str]) -> None:
        searched, fixed, other = search_space(self.cfg.get("params"), arguments)
        space = {k: o.input_line.split("=", 1)[1] for k, o in searched.items()}
        from ..ops.cli import run_cli

        study = run_cli(self._study, space)  # a bad storage or study: one line before any trial
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        n_trials, n_jobs = int(self.cfg.get("n_trials") or 1), max(1, int(self.cfg.get("n_jobs") or 1))
        try:
            while True:
                batch = self._ask(study, searched, fixed, n_trials, n_jobs)
                if not batch:
                    break
                returns = self.launcher.launch([self._overrides(t, other, fixed) for t in batch], batch[0].number)
                for trial, ret in zip(batch, returns):
                    st.record(study, trial.number, _value(ret))
                    self._release(trial.number)
                left = st.still_to_do(study, n_trials)
                print(
                    f"sweep: study {study.study_name}: {n_trials - left} of {n_trials} trials done or running",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            for number in list(self.locks):
                self._release(number)
        self._finish(study)

    def _ask(self, study, searched, fixed, n_trials: int, n_jobs: int) -> list:
        """Under the study's lock: requeue killed trials, then ask for at most ``n_jobs`` of the trials still to do,
        each locked for as long as it runs."""
        from hydra.utils import get_method

        from ..ops.locks import acquire

        custom = self.cfg.get("custom_search_space")
        with acquire(self.sweep_dir / ".trials" / "study.lock", wait=True):
            killed = st.requeue_killed(study)
            if killed:
                log.warning(
                    "trials %s stopped while running (their sweep was killed or exited): they run again, each in its folder",
                    killed,
                )
            batch = []
            for _ in range(min(n_jobs, st.still_to_do(study, n_trials))):
                trial = study.ask()
                for key, value in fixed.items():
                    trial.set_user_attr(key, value)
                for key, override in searched.items():
                    suggest(trial, key, override)
                if custom:
                    get_method(str(custom))(self.config, trial)
                lock = self.sweep_dir / ".trials" / f"{trial.number}.lock"
                self.locks[trial.number] = acquire(lock, {"trial": trial.number})
                trial.set_user_attr("lock", str(lock))
                if "folder" not in trial.user_attrs:
                    trial.set_user_attr("folder", str(trial.number))
                batch.append(trial)
        return batch

    def _overrides(self, trial, other: list[str], fixed: Mapping[str, str]) -> list[str]:
        """The trial's command line: the fixed overrides, its parameters, its folder, its number and threads."""
        threads = self.cfg.get("threads")
        name = study_name(self.cfg)
        env = {TRIAL_ENV: trial.number, STUDY_ENV: name, "ASYRP_TRIAL_NAME": f"{name}-trial{trial.number}"}
        if threads:
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return [
            *other,
            *[f"{k}={v}" for k, v in fixed.items()],
            *[f"{k}={v}" for k, v in trial.params.items()],
            f"hydra.sweep.subdir={trial.user_attrs['folder']}",
            *[f"++hydra.job.env_set.{k}={v}" for k, v in env.items()],
        ]

    def _release(self, number: int) -> None:
        lock = self.locks.pop(number, None)
        if lock is not None:
            lock.release()

    def _finish(self, study) -> None:
        from ..ops.io import atomic_write_text

        res = st.results(study)
        atomic_write_text(OmegaConf.to_yaml(OmegaConf.create(res)), self.sweep_dir / "optimization_results.yaml")
        log.info("study %s: %s", study.study_name, res)
        if OmegaConf.select(self.config, "logger.wandb") is not None:
            log_study_table(self.config, study)


def study_name(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("study_name") or "study")


def _value(ret) -> Any:
    """The job's return value, or its exception (a failed trial)."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        return ret.return_value
    err = ret._return_value
    log.warning("trial failed: %s", st.one_line(err) if isinstance(err, BaseException) else err)
    return err if isinstance(err, BaseException) else None


def log_study_table(config: DictConfig, study) -> None:
    """One W&B run per study (group = the study name, as every trial's run) with the table of all its trials."""
    import wandb

    cols, rows = st.trials_table(study)
    w = config.logger.wandb
    run = wandb.init(
        project=str(w.get("project") or "asyrp"),
        group=study.study_name,
        name=f"{study.study_name}-summary",
        job_type="sweep",
        dir=str(Path(str(config.hydra.sweep.dir))),
        reinit=True,
    )
    run.log({"study/trials": wandb.Table(columns=cols, data=rows)})
    run.summary.update(st.results(study))
    run.finish()


class TrialCallback(Callback):
    """In the trial's own process: its torch thread budget (``hydra.sweeper.threads``) as it starts, its value in
    the study on disk as it ends (a sweeper killed meanwhile does not lose it)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        threads = OmegaConf.select(config, "hydra.sweeper.threads", default=None)
        if threads:
            import torch

            torch.set_num_threads(int(threads))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        number = OmegaConf.select(config, f"hydra.job.env_set.{TRIAL_ENV}", default=None)
        sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
        if number is None or sweeper is None or not sweeper.get("storage"):
            return
        import optuna

        study = optuna.load_study(study_name=study_name(sweeper), storage=st.open_storage(sweeper.storage))
        st.record(study, int(number), _value(job_return))
