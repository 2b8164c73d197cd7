"""The sweeper's study on disk (asyrp/tasks/study.py, asyrp/tasks/sweeper.py): the search space, killed trials
found and queued again, what is left to do, shared or refused study names, bad storages, missing packages."""

import sys
import types

import pytest
from helpers import needs_sweep

from asyrp.ops.cli import check_plugins
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.locks import acquire

SPACE = {"model.optimizer.lr": "interval(0.1, 0.2)", "plan.t0": "range(300, 800, step=50)", "mode": "choice(a, b)"}


def test_old_optuna_and_missing_launchers_are_named_with_their_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", types.SimpleNamespace(__version__="2.10.1"))
    assert check_plugins(["-m", "hparams_search=edit_quality"]) == (
        "hparams_search=edit_quality (the Optuna sweeper) needs the package optuna>=4, optuna 2.10.1 is installed: "
        "pip install -U 'asyrp[sweep]' (or pip install -U 'optuna>=4'), then rerun the same command"
    )
    for name in ("hydra_plugins.hydra_ray_launcher", "hydra_plugins.hydra_submitit_launcher"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails, as when it is not installed
    assert check_plugins(["trials=ray"]).startswith("trials=ray needs the package hydra-ray-launcher, which is not")
    assert "pip install 'asyrp[ray]'" in check_plugins(["trials=ray"])
    assert "pip install 'asyrp[submitit]'" in check_plugins(["hydra/launcher=submitit_slurm"])
    assert check_plugins(["trials=null", "hparams_search=null"]) is None


@needs_sweep
def test_search_space_draws_hydra_sweeps_and_the_command_line_fixes_or_widens_it():
    import optuna

    from asyrp.tasks.sweeper import search_space, suggest

    searched, fixed, other = search_space(SPACE, ["plan.t0=400", "debug=smoke", "model.n_iter=choice(2,4)"])
    assert set(searched) == {"model.optimizer.lr", "mode", "model.n_iter"} and fixed == {"plan.t0": "400"}
    assert other == ["debug=smoke"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        drawn = {k: suggest(trial, k, o) for k, o in searched.items()}
        assert 0.1 <= drawn["model.optimizer.lr"] <= 0.2 and drawn["mode"] in ("a", "b")
        assert drawn["model.n_iter"] in (2, 4)
    searched, _, _ = search_space(SPACE, [])
    t0s = {suggest(study.ask(), "plan.t0", searched["plan.t0"]) for _ in range(40)}
    assert t0s <= set(range(300, 800, 50)) and len(t0s) > 3  # range() excludes its stop, like Hydra's


@needs_sweep
def test_a_killed_trial_is_queued_again_once_in_its_folder_and_a_live_one_is_left_alone(tmp_path):
    from optuna.trial import TrialState

    from asyrp.tasks import study as st

    study = st.open_study(st.open_storage(str(tmp_path / "s.journal")), "s", ["maximize"], None, SPACE)
    done, killed, live = study.ask(), study.ask(), study.ask()
    for t in (done, killed, live):
        t.suggest_float("model.optimizer.lr", 0.1, 0.2)
        t.set_user_attr("lock", str(tmp_path / ".trials" / f"{t.number}.lock"))
        t.set_user_attr("folder", str(t.number))
    st.record(study, done.number, 0.5)
    held = acquire(tmp_path / ".trials" / f"{live.number}.lock")  # the live trial's sweeper holds its lock
    try:
        assert st.requeue_killed(study) == [killed.number]
        assert st.requeue_killed(study) == []  # once
        states = [t.state for t in study.get_trials()]
        assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
        assert st.still_to_do(study, 4) == 2  # 4 - (trial 0 done) - (trial 2 running): the rerun and one more
        rerun = study.ask()
        assert rerun.user_attrs["rerun_of"] == killed.number and rerun.user_attrs["folder"] == str(killed.number)
        assert rerun.suggest_float("model.optimizer.lr", 0.1, 0.2) == killed.params["model.optimizer.lr"]
        st.record(study, rerun.number, 0.7)
        st.record(study, rerun.number, 0.1)  # already recorded (by its own job): kept
        assert study.trials[rerun.number].value == 0.7 and st.still_to_do(study, 4) == 1  # 2 done, 1 running
        assert st.results(study)["best_trial"] == rerun.number
        cols, rows = st.trials_table(study)
        assert cols[:3] == ["number", "state", "value_0"] and len(rows) == 4 and "lock" not in cols
    finally:
        held.release()


@needs_sweep
def test_one_study_name_is_shared_with_the_same_space_and_refused_with_another(tmp_path):
    from asyrp.tasks import study as st

    path = str(tmp_path / "s.journal")
    first = st.open_study(st.open_storage(path), "glasses", ["maximize"], None, SPACE)
    first.enqueue_trial({})
    second = st.open_study(st.open_storage(path), "glasses", ["maximize"], None, SPACE)
    assert len(second.trials) == 1  # the same study
    with pytest.raises(AsyrpUserError, match=r"^study glasses in hydra.sweeper.storage already holds trials of anot"):
        st.open_study(st.open_storage(path), "glasses", ["maximize"], None, {"plan.t0": "choice(400)"})
    with pytest.raises(AsyrpUserError, match=r"direction \['maximize'\], not \['minimize'\]: choose another"):
        st.open_study(st.open_storage(path), "glasses", ["minimize"], None, SPACE)


@needs_sweep
@pytest.mark.parametrize(
    "url, needle",
    [
        ("sqlite:////nonexistent-asyrp/dir/study.db", "unable to open database file"),
        ("postgresql://nobody@127.0.0.1:9/db", "hydra.sweeper.storage=postgresql://nobody@127.0.0.1:9/db: "),
    ],
)
def test_a_storage_that_cannot_be_opened_is_one_line(url, needle):
    from asyrp.tasks import study as st

    with pytest.raises(AsyrpUserError) as err:
        st.open_storage(url)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "use a journal file (hydra.sweeper.storage=" in msg


@needs_sweep
def test_sqlite_storage_works_with_the_installed_sqlalchemy(tmp_path):
    from asyrp.tasks import study as st

    study = st.open_study(st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), "s", ["maximize"], None, SPACE)
    trial = study.ask()
    st.record(study, trial.number, 1.0)
    again = st.open_study(st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), "s", ["maximize"], None, SPACE)
    assert again.best_value == 1.0
