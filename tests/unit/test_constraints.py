"""Constraints on delta_h (issue 24): the projection layer after f(h, t) leaves delta_h orthogonal to the kept
attributes' directions at every t, also after training through it; a region mask concentrates the change of P_t in
its region; the layer survives the file; bad settings are one clear error."""

from __future__ import annotations

import pytest
import torch
from helpers import images, tiny_backbone
from PIL import Image

from asyrp import build
from asyrp.constraints import constrain
from asyrp.ddim import P_t
from asyrp.directions import Direction, Walk, jacobian_directions, save_direction
from asyrp.hfunctions import GlobalDirection, build_hfunction, load_hfunction_checkpoint, payload, save_hfunction
from asyrp.hfunctions.constrained import orthonormal_rows
from asyrp.masks import save_mask
from asyrp.ops.errors import AsyrpUserError
from asyrp.samplers import asyrp_step, edit_eps
from asyrp.schedules import alphas_cumprod, make_betas

TS = [999, 666, 333]  # descending, as discover.py's finders list them


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone()


def direction_file(d, name, bb, *, per_t=True, seed=0, attribute=None, arch="tiny"):
    g = torch.Generator().manual_seed(seed)
    shape = tuple(bb.h_shape)
    delta = torch.randn(len(TS), *shape, generator=g) if per_t else torch.randn(*shape, generator=g)
    direction = Direction(delta, TS if per_t else None, "mean_diff", seed)
    extra = {"attribute": attribute} if attribute else None
    return save_direction(direction, d / f"{name}.pt", bb, arch={"name": arch}, edit={"t0": 999}, extra=extra)


def projected(bb, files, **kw):
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    return constrain(f, {"use": "project", "directions": [str(p) for p in files]}, bb, arch_name="tiny", **kw)


def cosines(fn, bb, files, t):
    """|cos| between delta_h at t and each direction at the listed t nearest to t."""
    h = torch.randn(3, *bb.h_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d = fn(h, torch.randn(3, bb.emb_dim), torch.full((3,), t)).reshape(3, -1)
    out = []
    for p in files:
        sd = torch.load(p, weights_only=True)["state_dict"]
        ts = sd["timesteps"].tolist()
        row = sd["delta_h"][min(range(len(ts)), key=lambda i: (abs(ts[i] - t), ts[i]))].reshape(-1)
        out.append((d @ row).abs() / (d.norm(dim=1) * row.norm()))
    assert float(d.norm(dim=1).min()) > 0  # the projection left something to edit
    return torch.stack(out)


def test_projection_is_orthogonal_to_every_direction_at_every_t(bb, tmp_path):
    files = [direction_file(tmp_path, f"d{i}", bb, seed=i) for i in range(3)]
    fn = projected(bb, files)
    free = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    for t in (999, 800, 666, 500, 333, 100):  # listed and between listed timesteps (nearest is read)
        assert float(cosines(fn, bb, files, t).max()) < 1e-5
    assert float(cosines(free, bb, files, 666).max()) > 1e-3  # without the layer it is not


def test_training_through_the_layer_keeps_delta_h_orthogonal(bb, tmp_path):
    files = [direction_file(tmp_path, f"d{i}", bb, seed=i) for i in range(2)]
    fn = projected(bb, files)
    a = alphas_cumprod(make_betas("linear"))
    opt = torch.optim.SGD(fn.parameters(), lr=0.05)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    before = [p.detach().clone() for p in fn.parameters()]
    for t, t_next in ((999, 666), (666, 333)):
        step = asyrp_step(bb, x, t, t_next, a, fn)
        loss = -step.P_edit.mean() + (step.P_edit - step.P_orig).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        x = step.x_next.detach()
    assert any(float((p - q).abs().max()) > 0 for p, q in zip(fn.parameters(), before))  # f did train
    assert [n for n, _ in fn.named_parameters()] == [f"fn.{n}" for n, _ in fn.fn.named_parameters()]  # fixed layer
    assert float(cosines(fn, bb, files, 666).max()) < 1e-5


def test_the_layer_round_trips_through_the_file(bb, tmp_path):
    files = [direction_file(tmp_path, "d0", bb), direction_file(tmp_path, "g", bb, per_t=False, seed=5)]
    fn = projected(bb, files)
    hf_cfg = {"kind": "delta_block", "layout": "ddpm", "constraints": fn.stored_constraints()}
    info = {"hfunction": hf_cfg, "arch": {"name": "tiny"}, "h_shape": list(bb.h_shape), "emb_dim": int(bb.emb_dim)}
    save_hfunction(payload(fn, info), tmp_path / "hf.pt", official_path=tmp_path / "official.pth")
    assert not (tmp_path / "official.pth").exists()  # the official layout cannot hold the layer
    for p in files:
        p.unlink()  # the file alone carries the projection
    loaded, meta = load_hfunction_checkpoint(tmp_path / "hf.pt", bb, "tiny")
    assert meta["hfunction"]["constraints"]["project"] == {
        "directions": ["d0.pt", "g.pt"],
        "rank": 2,
        "timesteps": [333, 666, 999],
    }
    h, emb = torch.randn(2, *bb.h_shape), torch.randn(2, bb.emb_dim)
    for t in (999, 400):
        assert torch.equal(loaded(h, emb, torch.full((2,), t)), fn(h, emb, torch.full((2,), t)))


def test_no_constraint_is_the_function_itself(bb):
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm"}, bb)
    assert constrain(f, {"use": "none", "directions": ["ignored.pt"]}, bb) is f
    assert constrain(f, None, bb) is f


def test_bad_settings_are_one_clear_error(bb, tmp_path):
    d0 = direction_file(tmp_path, "d0", bb)
    cases = [
        ({"use": "project", "directions": []}, "directions is empty"),
        ({"use": "sideways"}, "constraint.use='sideways'"),
        ({"use": "project", "directions": [str(d0), str(d0)]}, "rank deficient"),
        ({"use": "project", "directions": [str(tmp_path / "none.pt")]}, "not found"),
    ]
    other = tiny_backbone(block_out_channels=(32, 48))  # h of 48 channels
    cases.append(({"use": "project", "directions": [str(direction_file(tmp_path, "o", other))]}, "rerun discover.py"))
    cases.append(({"use": "project", "directions": [str(direction_file(tmp_path, "a", bb, arch="x"))]}, "arch 'x'"))
    own = direction_file(tmp_path, "own", bb, attribute="glasses=True")
    cases.append(({"use": "project", "directions": [str(own)]}, "attribute being edited"))
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    save_hfunction(payload(f, {"hfunction": {"kind": "delta_block"}}), tmp_path / "trained.pt")
    cases.append(({"use": "project", "directions": [str(tmp_path / "trained.pt")]}, "not an h-direction file"))
    for cfg, words in cases:
        with pytest.raises(AsyrpUserError, match=words):
            build.hfunction({"kind": "delta_block", "layout": "ddpm"}, bb, cfg, arch_name="tiny", target="glasses=True")


def test_directions_that_span_h_remove_everything():
    with pytest.raises(ValueError, match="span all 4 dimensions"):
        orthonormal_rows(torch.eye(4), "constraint.directions")
    with pytest.raises(ValueError, match="span only 1 dimension"):
        orthonormal_rows(torch.tensor([[1.0, 0, 0], [2.0, 0, 0]]), "constraint.directions")


def left_half(tmp_path, size=16):
    m = torch.zeros(size, size)
    m[:, : size // 2] = 1.0
    return save_mask(m, tmp_path / f"left_{size}.pt", source="test: left half", attribute="glasses=True")


def noised(t):
    a = alphas_cumprod(make_betas("linear"))
    x0 = images(4, size=16, seed=3)
    return a[t].sqrt() * x0 + (1 - a[t]).sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))


def change_of_P_t(bb, fn, t=666):
    """|dP_t| = |P_t(h + delta_h) - P_t(h)| on noised images at t."""
    a, x_t = alphas_cumprod(make_betas("linear")), noised(t)
    with torch.no_grad():
        e = edit_eps(bb, x_t, t, fn)
    return (P_t(x_t, e.eps_edit, a[t]) - P_t(x_t, e.eps, a[t])).abs()


def inside_outside(bb, fn, t=666):
    """mean |dP_t| inside the left half / outside it."""
    dP = change_of_P_t(bb, fn, t)
    return float(dP[..., :8].mean() / dP[..., 8:].mean())


def test_a_mask_concentrates_the_change_of_P_t_in_its_region(bb, tmp_path):
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    masked = constrain(f, {"use": "mask", "mask": str(left_half(tmp_path))}, bb)
    assert masked.mask.shape[-2:] == bb.h_shape[-2:] and float(masked.mask[..., 4:].abs().max()) == 0.0
    free, inside = inside_outside(bb, f), inside_outside(bb, masked)
    assert inside > 1.4 * free and inside > 1.5  # measured against the unmasked edit of the same f


def test_mask_and_projection_together_keep_both(bb, tmp_path):
    files = [direction_file(tmp_path, f"d{i}", bb, seed=i) for i in range(2)]
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    cfg = {"use": "project_mask", "directions": [str(p) for p in files], "mask": str(left_half(tmp_path))}
    fn = constrain(f, cfg, bb, arch_name="tiny")
    h = torch.randn(2, *bb.h_shape)
    with torch.no_grad():
        d = fn(h, torch.randn(2, bb.emb_dim), 700)
    assert float(d[..., 4:].abs().max()) == 0.0  # a hard mask: nothing outside the region
    assert float(cosines(fn, bb, files, 700).max()) < 1e-5  # and orthogonal to the directions


def test_a_masked_layer_round_trips_and_a_png_is_a_mask(bb, tmp_path):
    png = torch.zeros(16, 16, dtype=torch.uint8)
    png[:, :8] = 255
    Image.fromarray(png.numpy()).save(tmp_path / "left.png")
    f = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    fn = constrain(f, {"use": "mask", "mask": str(tmp_path / "left.png")}, bb)
    stored = fn.stored_constraints()
    assert stored == {"mask": {"file": "left.png", "source": "user PNG left.png", "attribute": "", "size": [8, 8]}}
    info = {"hfunction": {"kind": "delta_block", "layout": "ddpm", "constraints": stored}, "arch": {"name": "tiny"}}
    info.update({"h_shape": list(bb.h_shape), "emb_dim": int(bb.emb_dim)})
    save_hfunction(payload(fn, info), tmp_path / "hf.pt")
    loaded, _ = load_hfunction_checkpoint(tmp_path / "hf.pt", bb, "tiny")
    h, emb = torch.randn(2, *bb.h_shape), torch.randn(2, bb.emb_dim)
    assert torch.equal(loaded(h, emb, 500), fn(h, emb, 500))


def test_bad_masks_are_one_clear_error(bb, tmp_path):
    torch.save(
        {"mask": torch.full((16, 16), 2.0), "image_size": 16, "source": "x", "attribute": "y"}, tmp_path / "b.pt"
    )
    cases = [
        ({"use": "mask", "mask": None}, "constraint.mask is not set"),
        ({"use": "mask", "mask": str(left_half(tmp_path, 32))}, "the images are 16x16"),
        ({"use": "mask", "mask": str(tmp_path / "b.pt")}, r"outside \[0, 1\]"),
        ({"use": "project_mask", "directions": [], "mask": str(left_half(tmp_path))}, "directions is empty"),
    ]
    for cfg, words in cases:
        with pytest.raises(AsyrpUserError, match=words):
            build.hfunction({"kind": "delta_block", "layout": "ddpm"}, bb, cfg, arch_name="tiny")


def test_holding_the_outside_jacobian_lowers_the_change_outside(bb, tmp_path):
    """method=jacobian method.outside=<mask>: the directions inside the region that move P_t outside it most;
    projecting them off (use=project_mask) takes out the part of an edit that leaks (LOCO Edit's null space, in h).
    The edit: the top such direction plus a random inside change of the same norm."""
    t, mask = 666, left_half(tmp_path)
    x_t = noised(t)
    with torch.no_grad():
        h = bb.encode(x_t, float(t)).h
    walk = Walk(h={t: h}, x={t: x_t}, x_rec=x_t)
    region = torch.load(mask, weights_only=True)["mask"]
    dirs, _ = jacobian_directions(bb, walk, 3, n_images=4, iters=8, tol=1e-3, region=region)
    files = [save_direction(d, tmp_path / f"{d.name}.pt", bb, arch={"name": "tiny"}, edit={}) for d in dirs]
    top = dirs[0].delta_h[0] / dirs[0].delta_h[0].norm()
    noise = torch.randn(top.shape, generator=torch.Generator().manual_seed(7)) * (torch.arange(8) < 4)
    f = GlobalDirection(top.shape, init_std=0.0)
    f.delta_h.data.copy_(3.0 * (top + noise / noise.norm()))
    masked = constrain(f, {"use": "mask", "mask": str(mask)}, bb)
    held = constrain(f, {"use": "project_mask", "mask": str(mask), "directions": [str(p) for p in files]}, bb)
    out_masked, out_held = (float(change_of_P_t(bb, g, t)[..., 8:].mean()) for g in (masked, held))
    assert out_held < 0.8 * out_masked
    assert inside_outside(bb, held, t) > inside_outside(bb, masked, t)
