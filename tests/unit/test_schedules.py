"""The timestep grid must be the official Asyrp one, including its guard against float truncation."""

import numpy as np
import pytest

from asyrp.schedules import alphas_cumprod, make_betas, timesteps


def test_official_grid_guards_float_truncation():
    # linspace(0, 1, 10) * 999 gives 776.9999999999999 at index 7; Asyrp adds 1e-6 before int()
    assert timesteps(10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    raw = [int(s) for s in np.linspace(0, 1, 10) * 999]
    assert raw[7] == 776  # what a plain int() would have produced


@pytest.mark.parametrize("n", [2, 4, 10, 40, 50, 100, 1000])
def test_official_grid_ends(n):
    seq = timesteps(n)
    assert len(seq) == n and seq[-1] == 999 and seq == sorted(seq)
    if n > 1:
        assert seq[0] == 0


def test_uniform_grid_and_bad_count():
    assert timesteps(4, kind="uniform") == [0, 250, 500, 750]
    with pytest.raises(ValueError, match="n_steps"):
        timesteps(0)


def test_linear_alphas_match_ddpm():
    a = alphas_cumprod(make_betas("linear"))
    assert a.shape == (1000,)
    assert abs(float(a[0]) - (1 - 1e-4)) < 1e-12
    assert 4e-5 < float(a[-1]) < 4.1e-5
