"""Shared test setup: small thread count (2-core machine, xdist workers), offline W&B, fixture paths."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_NETS = FIXTURES / "reference_nets"
ASYRP_OFFICIAL = FIXTURES / "asyrp_official"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
