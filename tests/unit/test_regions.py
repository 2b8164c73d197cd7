"""Per-image regions at edit time (``samplers.edit(regions=...)``, edit.py ``masks=``): P_t^edit only inside a given
mask; with one mask per function of a composition, each function's shift decoded on its own and held to its own."""

from __future__ import annotations

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.hfunctions import Composition, DeltaBlock
from asyrp.plan import EditPlan
from asyrp.samplers import edit, masked_eps
from asyrp.schedules import alphas_cumprod, make_betas

A = alphas_cumprod(make_betas("linear"))
PLAN = EditPlan(n_inv=6, n_gen=8, t0=999, t_edit=400, t_boost=0)


def _fns(n: int):
    torch.manual_seed(1)
    return [DeltaBlock("ddpm", 64, 128, num_groups=8) for _ in range(n)]


def test_full_regions_are_the_plain_edit_and_empty_ones_the_reconstruction():
    bb, x0 = tiny_backbone(), images(2)
    f = _fns(1)[0]
    plain = edit(bb, x0, f, a=A, plan=PLAN, strength=0.7, seeds=[0, 1]).x_edit
    ones = edit(bb, x0, f, a=A, plan=PLAN, strength=0.7, seeds=[0, 1], regions=torch.ones(2, 1, 16, 16)).x_edit
    zeros = edit(bb, x0, f, a=A, plan=PLAN, strength=0.7, seeds=[0, 1], regions=torch.zeros(2, 1, 16, 16)).x_edit
    rec = edit(bb, x0, None, a=A, plan=PLAN, seeds=[0, 1]).x_edit
    assert torch.allclose(ones, plain, rtol=1e-5, atol=1e-4) and torch.allclose(zeros, rec, rtol=1e-5, atol=1e-4)
    assert (plain - rec).abs().amax() > 1e-3  # the edit does something


def test_a_region_holds_the_step_outside_it():
    bb, x_t = tiny_backbone(), torch.randn(2, 3, 16, 16)
    f = _fns(1)[0]
    region = torch.zeros(2, 1, 16, 16)
    region[0, :, 4:9, 4:9] = 1.0
    region[1, :, 10:14, 2:6] = 1.0
    ee = masked_eps(bb, x_t, 600, f, region, strength=1.0)
    inside = region.bool().expand_as(x_t)
    assert torch.equal(ee.eps_edit[~inside], ee.eps[~inside])
    assert (ee.eps_edit[inside] - ee.eps[inside]).abs().amax() > 1e-4


def test_one_region_per_function_holds_each_function_to_its_own():
    bb, x_t = tiny_backbone(), torch.randn(1, 3, 16, 16)
    fa, fb = _fns(2)
    comp = Composition([fa, fb])
    ra, rb = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    ra[..., 0:8, :] = 1.0  # function a: the top half; function b: the bottom half
    rb[..., 8:16, :] = 1.0
    c = torch.tensor([[0.8, 0.5]])
    ee = masked_eps(bb, x_t, 600, comp, torch.cat([ra, rb], 1), strength=c)
    only_a = masked_eps(bb, x_t, 600, fa, ra, strength=0.8)
    only_b = masked_eps(bb, x_t, 600, fb, rb, strength=0.5)
    assert torch.allclose(ee.eps_edit[..., :8, :], only_a.eps_edit[..., :8, :], atol=1e-6)  # a alone in its half
    assert torch.allclose(ee.eps_edit[..., 8:, :], only_b.eps_edit[..., 8:, :], atol=1e-6)
    summed = masked_eps(bb, x_t, 600, comp, torch.ones(1, 1, 16, 16), strength=c)  # one region: the summed shift
    assert not torch.allclose(summed.eps_edit[..., :8, :], ee.eps_edit[..., :8, :], atol=1e-4)
    with pytest.raises(ValueError, match="composition of 3"):
        masked_eps(bb, x_t, 600, comp, torch.ones(1, 3, 16, 16), strength=c)


def test_the_writer_masks_where_the_renderer_draws_the_attribute(tmp_path):
    """synthfaces masks (python -m asyrp.synthfaces.data --masks glasses): white exactly around where the face
    drawn with and without the attribute differs, the same for faces that have it and faces that lack it."""
    from asyrp.data.images import read_image_files
    from asyrp.masks import read_mask
    from asyrp.ops.errors import AsyrpUserError
    from asyrp.synthfaces.data import write_masks, write_split, write_twins

    train = write_split(tmp_path / "train", 1, 4, {"glasses": "True"})
    twins = write_twins(train, "glasses")
    folder = write_masks(train, "glasses", tmp_path / "masks", dilate=0)
    names = sorted(p.name for p in train.glob("face_*.png"))
    diff = read_image_files([twins / n for n in names], 32) - read_image_files([train / n for n in names], 32)
    for n, d in zip(names, diff):
        m = read_mask(folder / n, 32)["mask"].bool()
        assert torch.equal(m, d.abs().amax(0) > 0.1)  # the pair's own region (PNG-rounded images: same threshold)
    again = write_masks(twins, "glasses", tmp_path / "masks_on", dilate=0)  # faces that have it: the same masks
    assert all((again / n).read_bytes() == (folder / n).read_bytes() for n in names)
    with pytest.raises(AsyrpUserError, match="not one of"):
        write_masks(train, "sunglasses", tmp_path / "x")
