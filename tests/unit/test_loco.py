"""LOCO Edit's x-space direction (asyrp.directions.loco) and the region finder's maps (asyrp.directions.regions) on a
tiny random network: the direction is orthogonal to the outside Jacobian's top row space, an edit along it changes
P_t more inside the mask than outside (and less outside than the unprojected direction), bad masks are one error."""

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.directions import top_singular_vectors
from asyrp.directions.loco import loco_directions, posterior_mean
from asyrp.directions.regions import clip_gradient_map, p_t_change_map, region_mask
from asyrp.ops.errors import AsyrpUserError
from asyrp.schedules import alphas_cumprod, make_betas

A = alphas_cumprod(make_betas("linear"))
T = 600
ITERS = 12  # fixed: the test recomputes the same subspace iterations


@pytest.fixture(scope="module")
def found():
    bb = tiny_backbone(0, image_size=8, block_out_channels=(16, 32))
    x_t = images(2, size=8, seed=1) * A[T].sqrt() + (1 - A[T]).sqrt() * torch.randn(2, 3, 8, 8)
    mask = torch.zeros(8, 8)
    mask[2:5, 1:7] = 1.0  # an "eye band"
    dirs, cost = loco_directions(bb, A, x_t, T, mask, k=2, r_null=4, iters=ITERS, tol=1e-9, seed=0)
    return bb, x_t, mask, dirs, cost


def test_direction_is_in_the_outside_null_space(found):
    bb, x_t, mask, dirs, _ = found
    P = posterior_mean(bb, A, T)
    out = top_singular_vectors(lambda x: P(x) * (1 - mask), x_t, 4, iters=ITERS, tol=1e-9, seed=1)  # LOCO's seed + 1
    V_out = out["V"].reshape(4, -1).double()
    for d in dirs:
        v = d.delta_h.reshape(-1).double()
        assert d.space == "x" and abs(float(v.norm()) - 1) < 1e-5
        assert float((V_out @ v).abs().max()) < 1e-5  # orthogonal to the top row space, to round-off
        assert 0 < d.meta["kept_after_projection"] <= 1


def _change(P, x_t, v, s, mask):
    with torch.no_grad():
        dP = (P(x_t + s * v) - P(x_t)).abs().sum(1).mean(0)
    return float(dP[mask > 0].mean()), float(dP[mask == 0].mean())


def test_edit_changes_P_t_inside_more_than_outside(found):
    bb, x_t, mask, dirs, _ = found
    P = posterior_mean(bb, A, T)
    v = dirs[0].delta_h[None]
    inside, outside = _change(P, x_t, v, 0.5, mask)
    print(f"P_t change per pixel: inside {inside:.3g}, outside {outside:.3g}")
    assert inside > 2 * outside, (inside, outside)
    # the projection is what holds the outside: the unprojected top inside vector moves it more
    raw = top_singular_vectors(lambda x: P(x) * mask, x_t, 2, iters=ITERS, tol=1e-9, seed=0)["V"][0][None]
    assert _change(P, x_t, raw, 0.5, mask)[1] > outside


def test_bad_masks_are_one_error(found):
    bb, x_t, mask, _, _ = found
    with pytest.raises(AsyrpUserError, match="16x16 but the images are 8x8"):
        loco_directions(bb, A, x_t, T, torch.ones(16, 16) * 0.5, k=1, r_null=1, iters=1)
    with pytest.raises(AsyrpUserError, match="empty"):
        loco_directions(bb, A, x_t, T, torch.zeros(8, 8), k=1, r_null=1, iters=1)


def test_region_maps_find_where_things_happen():
    patch = (slice(2, 5), slice(6, 10))

    def encode(x):  # a "CLIP" that reads one patch only
        return x[:, :, patch[0], patch[1]].mean((2, 3))

    g = clip_gradient_map(encode, images(3, size=16), torch.tensor([1.0, 0.0, -1.0]))
    mask = region_mask(g, threshold=0.5, blur=0)
    assert mask[patch].min() == 1 and mask.sum() == 12
    assert region_mask(g, threshold=0.5, blur=0, grow=1).sum() > 12
    P = torch.zeros(2, 3, 16, 16)
    moved = P.clone()
    moved[:, :, 10:12, 0:3] = 1.0
    ref = [(900, P, P), (600, P, P), (300, P, P)]
    change = p_t_change_map([(900, P, moved), (600, P, moved), (300, P, P)], ref, t_min=600)
    assert torch.equal(region_mask(change, blur=0) > 0, change > 0)
    with pytest.raises(ValueError, match="zero everywhere"):
        region_mask(torch.zeros(16, 16))
