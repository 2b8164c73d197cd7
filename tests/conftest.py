"""Shared test setup: small thread count (2-core machine, xdist workers), offline W&B, fixture paths.

Also: every test under tests/e2e/ is marked ``slow`` (subprocess runs of the entry points), and the terminal summary
ends with the time spent per test file (the slowest files and the total), summed over setup, call and teardown.
"""

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
REFERENCE_NETS = FIXTURES / "reference_nets"
ASYRP_OFFICIAL = FIXTURES / "asyrp_official"
SLOWEST_FILES = 15

_seconds_per_file: dict[str, float] = defaultdict(float)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def pytest_collection_modifyitems(items):
    for item in items:
        if (TESTS / "e2e") in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report):
    """Runs in the controller under xdist too (the workers' reports arrive there), so the sums cover every worker."""
    _seconds_per_file[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds_per_file:
        return
    ranked = sorted(_seconds_per_file.items(), key=lambda kv: kv[1], reverse=True)
    tr = terminalreporter
    tr.write_sep("=", f"seconds per test file (slowest {min(SLOWEST_FILES, len(ranked))} of {len(ranked)})")
    for name, seconds in ranked[:SLOWEST_FILES]:
        tr.write_line(f"{seconds:8.1f}s  {name}")
    tr.write_line(f"{sum(_seconds_per_file.values()):8.1f}s  total over all files (test time, summed over workers)")
