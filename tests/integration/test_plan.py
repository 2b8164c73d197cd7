"""One EditPlan for every entry point: for the same settings, train (its inversion cache and training steps), edit.py
with and without cache_dir, a sweep trial's edits, the interactive editor and discover put the backbone on the same
timesteps, for both spacings. The timesteps are recorded where the backbone is called, so a path that drops a field
of the plan (spacing, n_inv, ...) walks another grid and fails here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import images

from asyrp.backbones.base import UNet2DBackbone
from asyrp.ops.io import atomic_write_png
from asyrp.plan import EditPlan

N_INV, N_GEN, T0, T_EDIT, T_BOOST = 5, 4, 999, 500, 200  # n_inv != n_gen: a path that swaps them shows too


@pytest.fixture()
def recorded(monkeypatch):
    """The timestep of every backbone encode (every network pass goes through encode)."""
    seen: list[int] = []
    real = UNet2DBackbone.encode

    def encode(self, x, t, *args, **kw):
        seen.append(int(round(float(torch.as_tensor(t).reshape(-1)[0]))))
        return real(self, x, t, *args, **kw)

    monkeypatch.setattr(UNet2DBackbone, "encode", encode)
    return seen


def _take(seen: list[int]) -> set[int]:
    out = set(seen)
    seen.clear()
    return out


@pytest.fixture()
def faces(tmp_path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, img in enumerate(images(4, size=32, seed=1)):
        atomic_write_png(img, folder / f"face_{i}.png")
    return folder


def test_the_plan_is_frozen_checked_and_its_inversion_part_keys_the_cache():
    plan = EditPlan(n_inv=N_INV, n_gen=N_GEN, t0=T0, t_edit=T_EDIT, t_boost=T_BOOST, spacing="uniform")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.t0 = 500
    assert plan.inversion_part() == EditPlan(n_inv=N_INV, n_gen=N_GEN, t0=T0, spacing="uniform")
    assert [t for _, t, _ in plan.edit_steps()] == [t for t in reversed(plan.seq_gen) if t >= T_EDIT] == [750, 500]
    assert plan.eta(199) == 1.0 and plan.eta(200) == 0.0 and EditPlan(t_boost=None).eta(0) == 0.0
    with pytest.raises(ValueError, match="spacing"):
        EditPlan(spacing="linear")
    with pytest.raises(ValueError, match="mode"):
        EditPlan(mode="nope")


@pytest.mark.parametrize("spacing", ["official", "uniform"])
def test_every_entry_point_walks_the_plans_timesteps(spacing, faces, tmp_path, recorded):
    from hydra.core.hydra_config import HydraConfig

    from asyrp.config import compose
    from asyrp.editor import load_editor
    from asyrp.tasks.discover import discover
    from asyrp.tasks.edit import edit
    from asyrp.tasks.edit_quality import edit_config, edit_quality
    from asyrp.tasks.train import train

    plan = EditPlan(n_inv=N_INV, n_gen=N_GEN, t0=T0, t_edit=T_EDIT, t_boost=T_BOOST, spacing=spacing)
    # inversion evaluates the network at seq_inv[:-1], every generation walk (cache, training, edits) at seq_gen
    grid = set(plan.seq_inv[:-1]) | set(plan.seq_gen)
    other = dataclasses.replace(plan, spacing="uniform" if spacing == "official" else "official")
    assert grid != set(other.seq_inv[:-1]) | set(other.seq_gen)  # the two spacings really differ
    run = tmp_path / "train"
    steps = [
        f"plan.n_inv={N_INV}",
        f"plan.n_gen={N_GEN}",
        f"plan.t0={T0}",
        f"plan.spacing={spacing}",
        f"plan.t_edit={T_EDIT}",
        f"plan.t_boost={T_BOOST}",
    ]
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            "hparams_search=edit_quality",
            "callbacks.edit_grid=null",
            "dataset.kind=folder",
            f"dataset.path={faces}",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            f"edit_quality.input_dir={faces}",
            "edit_quality.strengths=null",
            "hydra.job.num=0",
            *steps,
        ],
        output_dir=run,
    )
    _, objects = train(cfg)
    walked = {"train (cache, training, validation edits)": _take(recorded)}
    assert objects["module"].plan == plan
    ckpt = run / "checkpoints" / "hfunction.pt"

    def edit_py(name: str, *extra: str) -> set[int]:
        edit(
            compose(
                "edit",
                [
                    "arch=tiny_ddpm",
                    f"checkpoint={ckpt}",
                    f"input_dir={faces}",
                    "batch_size=4",
                    "progress=false",
                    f"output_dir={tmp_path / name}",
                    *extra,
                ],
                output_dir=tmp_path / "e",
            )
        )
        return _take(recorded)

    walked["edit.py"] = edit_py("plain")
    walked["edit.py cache_dir"] = edit_py("cached", f"cache_dir={tmp_path / 'edit_cache'}")
    assert edit_config(cfg, ckpt, tmp_path / "x").cache_dir == str(tmp_path / "cache")
    HydraConfig.instance().set_config(cfg)  # back in the trial after the edit runs above
    edit_quality(cfg, objects)  # the trial's edits through the train cache, then its reconstruction read back
    walked["sweep trial"] = _take(recorded)
    ed = load_editor(cfg.arch, [ckpt], {})
    assert ed.plan == plan
    ed.generate(ed.invert(images(1, size=32, seed=5)[0]), [[1.0]])
    walked["editor"] = _take(recorded)
    discover(
        compose(
            "discover",
            [
                "arch=tiny_ddpm",
                "method=pca",
                "method.k=2",
                f"input_dir={faces}",
                "n_images=4",
                *steps,
                f"cache_dir={tmp_path / 'dcache'}",
                "judge=none",
                f"output_dir={tmp_path / 'dirs'}",
            ],
            output_dir=tmp_path / "d",
        )
    )
    walked["discover"] = _take(recorded)
    # every path walks the plan's grid, all of it (each inverts: the random tiny nets differ by seed between train and
    # edit, so no path finds another's inversions) and nothing else
    assert {name: sorted(ts) for name, ts in walked.items()} == {name: sorted(grid) for name in walked}
