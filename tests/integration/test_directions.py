"""Direction finders (asyrp.directions, discover.py) on tiny backbones: shapes, determinism, a planted principal
component, the JVP/VJP subspace iteration against a dense SVD, supervised directions, and direction files through
edit.py and edit(...)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.config import CONF_DIR, compose
from asyrp.ddim import ddim_invert
from asyrp.directions import (
    boundary_direction,
    direction_hfunction,
    jacobian_directions,
    mean_diff_direction,
    oracle_labels,
    pca_directions,
    record_walk,
    save_direction,
    target_gain,
    top_singular_vectors,
)
from asyrp.hfunctions import Composition, load_hfunction_checkpoint
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png
from asyrp.plan import EditPlan
from asyrp.samplers import edit as asyrp_edit
from asyrp.schedules import alphas_cumprod, make_betas, timesteps
from asyrp.tasks.discover import discover
from asyrp.tasks.edit import edit

ROOT = Path(__file__).resolve().parents[2]
A = alphas_cumprod(make_betas("linear"))


@pytest.fixture(scope="module")
def walk():
    bb = tiny_backbone(0)
    x_T = ddim_invert(bb, images(6, seed=3), timesteps(4), A)
    return bb, record_walk(bb, x_T, A, EditPlan(n_inv=4, n_gen=4, t_edit=300))


def test_walk_records_the_reconstruction_h(walk):
    bb, w = walk
    assert w.timesteps == [999, 666, 333] and all(v.shape == (6, 64, 8, 8) for v in w.h.values())
    with torch.no_grad():  # h of the recorded x_t is the h the walk saw
        assert torch.allclose(bb.encode(w.x[666], 666.0).h, w.h[666], atol=1e-5)


def test_pca_recovers_a_planted_component():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(4 * 3 * 3, generator=g)
    u /= u.norm()
    h = {
        t: (0.05 * torch.randn(200, 36, generator=g) + 2.0 * torch.randn(200, 1, generator=g) * u).reshape(200, 4, 3, 3)
        for t in (900, 500)
    }
    d = pca_directions(h, 2)
    assert len(d) == 2 and d[0].delta_h.shape == (2, 4, 3, 3) and d[0].timesteps == [900, 500]
    for row in d[0].delta_h:
        v = row.reshape(-1)
        assert abs(float(v @ u)) / float(v.norm()) > 0.999
        assert 1.7 < float(v.norm()) < 2.3  # scaled by the std along it (2.0 planted)
    assert float(d[0].delta_h[0].reshape(-1) @ d[0].delta_h[1].reshape(-1)) > 0  # signs aligned over t
    pooled = pca_directions(h, 1, pooled=True)[0]
    assert (
        pooled.timesteps is None and abs(float(pooled.delta_h.reshape(-1) @ u)) / float(pooled.delta_h.norm()) > 0.999
    )


def test_subspace_iteration_matches_a_dense_svd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.Tanh(), torch.nn.Linear(20, 9)).double()
    x = torch.randn(1, 12, dtype=torch.float64)
    res = top_singular_vectors(net, x, 3, iters=200, tol=1e-12, seed=0)
    J = torch.func.jacrev(net)(x[0])  # dense, for the test only
    U, S, Vh = torch.linalg.svd(J)
    assert torch.allclose(res["sigma"].double(), S[:3], rtol=1e-4)
    for j in range(3):
        assert abs(float(res["V"][j].double() @ Vh[j])) > 0.9999
        assert abs(float(res["U"][j].double() @ U[:, j])) > 0.9999
    # several rows: the eigenvectors of sum_i J_i^T J_i
    xs = torch.randn(3, 12, dtype=torch.float64)
    res = top_singular_vectors(net, xs, 2, iters=300, tol=1e-12, seed=1)
    A_ = sum(torch.func.jacrev(net)(r).T @ torch.func.jacrev(net)(r) for r in xs)
    ev, evec = torch.linalg.eigh(A_)
    assert torch.allclose(res["sigma"].double() ** 2, ev.flip(0)[:2], rtol=1e-4)
    assert abs(float(res["V"][0].double() @ evec[:, -1])) > 0.9999


def test_jacobian_directions_shape_and_determinism(walk):
    bb, w = walk
    runs = [
        jacobian_directions(bb, w, 2, of=of, n_images=2, timesteps=[999, 333], iters=4, seed=5)
        for of in ("decoder", "decoder", "encoder")
    ]
    (d1, cost), (d2, _), (d3, _) = runs
    assert [d.delta_h.shape for d in d1] == [(2, 64, 8, 8)] * 2 and d1[0].timesteps == [999, 333]
    assert all(torch.equal(a.delta_h, b.delta_h) for a, b in zip(d1, d2))
    assert d3[0].meta["of"] == "encoder" and not torch.allclose(d1[0].delta_h, d3[0].delta_h)
    assert cost["jvp_rows"] > 0 and cost["vjp_rows"] > 0


def test_supervised_directions(walk):
    _, w = walk
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    md = mean_diff_direction(w.h, y)
    assert md.delta_h.shape == (3, 64, 8, 8)
    assert torch.allclose(md.delta_h[0], w.h[999][:3].mean(0) - w.h[999][3:].mean(0), atol=1e-5)
    y2 = torch.tensor([1, 0, 1, 0, 1, 0])
    b = boundary_direction(w.h, y2, 666, val_fraction=0.0)
    assert b.timesteps is None and b.delta_h.shape == (64, 8, 8) and b.meta["fit_accuracy"] == 1.0
    proj = w.h[666].reshape(6, -1) @ b.delta_h.reshape(-1)
    assert proj[y2.bool()].mean() > proj[~y2.bool()].mean()  # the normal points towards the attribute
    with pytest.raises(ValueError, match="with and without"):
        mean_diff_direction(w.h, torch.ones(6))


def test_oracle_labels_name_the_head_that_flips():
    class Toy:  # a toy oracle: mouth from channel 0, hat from channel 1
        classes = {"mouth": ["smiling", "neutral"], "hat": [False, True]}

        def judge(self, x):
            return {"mouth": (x[:, 0, 0, 0] < 0).long(), "hat": (x[:, 1, 0, 0] > 0).long()}

    ref = -torch.ones(4, 3, 2, 2)
    up = ref.clone()
    up[:3, 1] = 1.0  # strength +1 puts a hat on 3 of 4
    lab = oracle_labels(Toy(), ref, {0.0: ref, 1.0: up, -1.0: ref})
    assert lab["label"] == "hat=True (+)" and lab["others_moved"] == 0 and lab["disentanglement"] == 1.0
    assert target_gain(lab, "hat=True") == (0.75, 1.0)


def test_direction_file_is_an_hfunction(walk, tmp_path):
    bb, w = walk
    d = pca_directions(w.h, 2)[1]
    path = save_direction(d, tmp_path / "d.pt", bb, arch={"name": None}, edit={"t_edit": 300, "n_gen": 4})
    f, meta = load_hfunction_checkpoint(path, bb)
    assert meta["direction"]["method"] == "pca" and meta["direction"]["index"] == 1
    h = torch.zeros(2, 64, 8, 8)
    for k, t in enumerate(d.timesteps):
        assert torch.equal(f(h, None, t)[0], d.delta_h[k])
    x0 = images(2, seed=9)
    kw = dict(a=A, plan=EditPlan(n_inv=4, n_gen=4, t_edit=300), seeds=[0, 1])
    two = asyrp_edit(bb, x0, Composition([f, direction_hfunction(d)]), strength=[0.5, 0.5], **kw).x_edit
    one = asyrp_edit(bb, x0, f, strength=1.0, **kw).x_edit
    assert torch.allclose(two, one, atol=1e-5)  # composable and strength-scalable like any h-function


@pytest.fixture()
def folder(tmp_path) -> Path:
    out = tmp_path / "faces"
    out.mkdir()
    attrs = {}
    for i, img in enumerate(images(6, size=32, seed=4)):
        atomic_write_png(img, out / f"f{i}.png")
        attrs[f"f{i}.png"] = {"mouth": "smiling" if i % 2 else "neutral"}
    (out / "attributes.json").write_text(json.dumps(attrs))
    return out


def discover_cfg(tmp_path, folder, method, *extra):
    return compose(
        "discover",
        [
            "arch=tiny_ddpm",
            f"method={method}",
            f"input_dir={folder}",
            "n_images=6",
            "plan.n_inv=4",
            "plan.n_gen=4",
            "plan.t_edit=500",
            "plan.t_boost=0",
            f"cache_dir={tmp_path / 'cache'}",
            "judge=none",
            *extra,
        ],
        output_dir=tmp_path / method,
    )


@pytest.mark.parametrize(
    "method,extra",
    [
        ("pca", ["method.k=2"]),
        ("mean_diff", []),
        ("boundary", ["method.val_fraction=0"]),
        ("jacobian", ["method.k=1", "method.n_images=1", "method.iters=2", "method.n_timesteps=2"]),
    ],
)
def test_discover_writes_files_that_edit_py_takes(method, extra, folder, tmp_path):
    res = discover(discover_cfg(tmp_path, folder, method, *extra))
    out = tmp_path / method
    summary = json.loads((out / "directions.json").read_text())
    assert (out / "grid.png").is_file() and [p.name for p in res["files"]] == [r["file"] for r in summary["directions"]]
    assert summary["cost"]["passes"]["walk"] == 6 * 4 and summary["cost"]["images"] == 6
    edited = edit(
        compose(
            "edit",
            ["arch=tiny_ddpm", f"checkpoint={res['files'][0]}", f"input_dir={folder}", "n_images=2", "sweep=[0,1]"],
            output_dir=tmp_path / "e",
        )
    )
    assert edited["t_edit"] == 500 and edited["n_gen"] == 4  # step settings read from the direction file
    a, b = (Path(edited["output_dir"]) / f"f0_{k:02d}.png" for k in (0, 1))
    assert a.read_bytes() != b.read_bytes()  # strength 1 moves the image, strength 0 does not


def test_discover_errors_are_one_line(folder, tmp_path):
    with pytest.raises(AsyrpUserError, match="method.k=9 principal components need at least 10 images"):
        discover(discover_cfg(tmp_path, folder, "pca", "method.k=9"))
    (folder / "attributes.json").write_text(json.dumps({f"f{i}.png": {"mouth": "neutral"} for i in range(6)}))
    with pytest.raises(AsyrpUserError, match="a supervised direction needs both"):
        discover(discover_cfg(tmp_path, folder, "mean_diff"))
    assert not (tmp_path / "mean_diff").exists()  # nothing written
    proc = subprocess.run([sys.executable, "discover.py", "method=nope"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "conf/method/nope.yaml" in proc.stderr


@pytest.mark.parametrize("method", sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml")))
def test_every_method_config_composes(method, tmp_path):
    cfg = compose("discover", [f"method={method}"], output_dir=tmp_path)
    assert cfg.method.name == method and cfg.arch.name == "synthfaces" and cfg.plan.t_edit == cfg.plan.interval.t_edit


class _ToyOracle:
    """An attribute oracle of the shape discover takes: brighter than the batch's median image or not."""

    classes = {"bright": ["dark", "light"]}

    def judge(self, x):
        m = x.mean((1, 2, 3))
        return {"bright": (m > m.median()).long()}


def test_discover_labels_with_the_oracle_passed_in(folder, tmp_path):
    """The oracle comes from the caller (discover.py passes the synthfaces one): a toy oracle passed in labels every
    direction by its own heads; without one nothing is labelled, and labels=oracle is refused."""
    over = [
        "arch=tiny_ddpm",
        "method=pca",
        "method.k=2",
        f"input_dir={folder}",
        "n_images=6",
        "plan.n_inv=4",
        "plan.n_gen=4",
        "plan.t_edit=500",
        "plan.t_boost=0",
        f"cache_dir={tmp_path / 'cache'}",
        "judge=auto",
    ]
    res = discover(compose("discover", over, output_dir=tmp_path / "with"), oracle=_ToyOracle())
    recs = json.loads((Path(res["output_dir"]) / "directions.json").read_text())["directions"]
    assert len(recs) == 2 and all(r["main_head"] in ("bright", None) and r["label"] for r in recs)
    assert all(r["label"] == "nothing flips" or r["label"].startswith("bright=") for r in recs)
    res = discover(compose("discover", over, output_dir=tmp_path / "without"))
    recs = json.loads((Path(res["output_dir"]) / "directions.json").read_text())["directions"]
    assert all(r["label"] is None and "main_head" not in r for r in recs)
    with pytest.raises(AsyrpUserError, match="labels=oracle needs"):
        discover(
            compose(
                "discover", [*over[:1], "method=mean_diff", *over[3:], "labels=oracle"], output_dir=tmp_path / "sup"
            )
        )
