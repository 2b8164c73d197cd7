"""Constraints on delta_h (issue 24): the projection layer after f(h, t) leaves delta_h orthogonal to the kept
attributes' directions at every t, also after training through it; the layer survives the file; bad settings are one
clear error."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_backbone

from asyrp import build
from asyrp.constraints import constrain
from asyrp.directions import Direction, save_direction
from asyrp.hfunctions import build_hfunction, load_hfunction_checkpoint, payload, save_hfunction
from asyrp.hfunctions.constrained import orthonormal_rows
from asyrp.ops.errors import AsyrpUserError
from asyrp.samplers import asyrp_step
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
