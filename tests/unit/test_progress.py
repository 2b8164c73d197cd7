"""Progress in any output: a bar on a terminal, timed lines (step, total, ETA, key metric) in a log file or pipe."""

import logging

import pytest

from asyrp.ops.progress import LineTicker, Progress, modes


@pytest.mark.parametrize(
    "env,expected",
    [
        ("bar", (True, False)),
        ("lines", (False, True)),
        ("both", (True, True)),
        ("off", (False, False)),
        ("auto", (False, True)),
    ],
)
def test_modes(monkeypatch, env, expected):
    monkeypatch.setenv("ASYRP_PROGRESS", env)  # under pytest neither stdout nor stderr is a terminal
    assert modes() == expected


def test_lines_carry_step_total_eta_and_metric(monkeypatch, caplog):
    monkeypatch.setenv("ASYRP_PROGRESS", "lines")
    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        with Progress(4, "edit", "img", every=0) as p:
            for i in range(4):
                p.update(1, loss=0.5 / (i + 1))
    lines = [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]
    assert lines[0].startswith("edit: 1/4 img (25%)") and "ETA" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("edit: 4/4 img (100%)") and lines[-1].endswith("(done)") and "loss=0.125" in lines[-1]


def test_ticker_waits_every_seconds(caplog):
    t = LineTicker(100, "train", "batch", every=3600)
    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        for i in range(10):
            t.set(i + 1)
        t.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]
    assert (
        lines == [lines[-1]] and lines[-1].startswith("train: 10/100 batch (10%)") and lines[-1].endswith("(stopped)")
    )


def test_a_long_first_step_is_not_silent(caplog):
    """The ticker's own thread writes a line every `every` seconds even while no step finishes."""
    import time

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]

    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        t = LineTicker(10, "edit", "img", every=0.05)
        deadline = time.monotonic() + 60  # a loaded machine may wake the thread late: wait for the lines, not a time
        while len(lines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        t.close()
    lines = lines()
    assert len(lines) >= 3 and all(s.startswith("edit: 0/10 img (0%)") for s in lines)
    assert "elapsed" in lines[-2] and lines[-1].endswith("(stopped)")
