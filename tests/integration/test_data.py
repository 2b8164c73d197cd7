"""The inversion cache and the DataModule: built once, reused, keyed by content, clear errors for bad images."""

from pathlib import Path

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.data import AsyrpDataModule, InversionCache, image_sources, noise_sources
from asyrp.data.cache import load_entry
from asyrp.ddim import ddim_generate, ddim_invert
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png
from asyrp.plan import EditPlan
from asyrp.schedules import alphas_cumprod, make_betas, timesteps

A = alphas_cumprod(make_betas("linear"))


class CallCounter:
    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def write_folder(folder: Path, n: int = 3, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images(n, size=size, seed=3)):
        atomic_write_png(img, folder / f"img_{i}.png")
    return folder


def dm_for(backbone, **kw) -> AsyrpDataModule:
    dm = AsyrpDataModule(**kw)
    return dm.bind(backbone, A, EditPlan(n_inv=3, n_gen=4))


def test_cache_built_once_and_reused_across_runs(tmp_path):
    bb = tiny_backbone()
    calls = CallCounter(bb)
    folder = write_folder(tmp_path / "imgs")
    kw = dict(kind="folder", path=str(folder), n_images=3, batch_size=2, cache_dir=str(tmp_path / "cache"), n_val=2)
    dm = dm_for(bb, **kw)
    dm.prepare_data()
    first = calls.n
    assert first == 2 + 4  # one batched chunk: n_inv - 1 inversion passes + n_gen generation passes
    dm2 = dm_for(bb, **kw)  # a second run (or sweep trial) with the same settings
    dm2.prepare_data()
    dm2.setup("fit")
    assert calls.n == first, "the second run inverted again"
    assert not list((tmp_path / "cache").rglob("*.tmp")), "temporary files left behind"
    batch = next(iter(dm2.train_dataloader()))
    assert batch["x0"].shape == (2, 3, 16, 16) and batch["P_orig"].shape == (2, 4, 3, 16, 16)
    assert batch["t"][0].tolist() == sorted(timesteps(4, 999), reverse=True)


def test_cache_entry_is_the_ddim_walk(tmp_path):
    bb = tiny_backbone()
    folder = write_folder(tmp_path / "imgs", n=2)
    cache = InversionCache(tmp_path / "c", bb, A, EditPlan(n_inv=3, n_gen=4, t0=999))
    paths = cache.build(image_sources(folder, None))
    e = load_entry(paths[0])
    x0 = e["x0"][None]
    x_T = ddim_invert(bb, x0, timesteps(3, 999), A)
    assert torch.allclose(e["x_T"], x_T[0], atol=1e-4 * float(x_T.abs().max()))
    x_rec = ddim_generate(bb, x_T, timesteps(4, 999), A)[0]
    assert torch.allclose(e["x_rec"], x_rec, atol=1e-4 * float(x_rec.abs().max()))
    # the first P_t of the walk is x_T's own prediction at t0
    eps = bb.eps(bb(x_T, torch.full((1,), 999.0)))
    P = (x_T - (1 - A[999]).sqrt().float() * eps) / A[999].sqrt().float()
    assert torch.allclose(e["P_orig"][0], P[0], atol=1e-3 * float(P.abs().max()))


def test_x_T_only_entries_skip_the_walk_and_full_entries_serve_them(tmp_path):
    """walk_to=None (edit.py): the inversion alone, the same x_T as the full entry's; a full entry of the image serves
    such a reader with no pass, and a reader that needs the walk does not take an x_T-only entry for one."""
    bb = tiny_backbone()
    calls = CallCounter(bb)
    folder = write_folder(tmp_path / "imgs", n=2)
    plan, src = EditPlan(n_inv=3, n_gen=4, t0=999), image_sources(folder, None)
    inv_only = InversionCache(tmp_path / "c", bb, A, plan, walk_to=None)
    paths = inv_only.build(src)
    assert calls.n == 2  # one batched chunk: n_inv - 1 inversion passes, no generation pass
    e = load_entry(paths[0])
    assert sorted(e) == ["id", "x0", "x_T"]
    full = InversionCache(tmp_path / "c", bb, A, plan)  # training on the same images: builds the full entries
    full_paths = full.build(src)
    assert calls.n == 2 + 2 + 4 and full_paths != paths
    assert torch.equal(load_entry(full_paths[0])["x_T"], e["x_T"])
    assert load_entry(full_paths[0])["P_orig"].shape[0] == 4
    calls.n = 0
    fresh = tmp_path / "d"  # a cache folder where only the full entries exist: an edit reads x_T from them
    InversionCache(fresh, bb, A, plan).build(src)
    calls.n = 0
    assert InversionCache(fresh, bb, A, plan, walk_to=None).build(src) == InversionCache(fresh, bb, A, plan).build(src)
    assert calls.n == 0


def test_training_entries_stop_the_walk_at_t_edit(tmp_path):
    """walk_to=t_edit (training): the walk's steps at t_edit and above, the same P_t^orig rows as the full entry's
    first ones; a reader of a higher t_edit takes them, one of a lower t_edit walks further."""
    bb = tiny_backbone()
    calls = CallCounter(bb)
    folder = write_folder(tmp_path / "imgs", n=2)
    plan, src = EditPlan(n_inv=3, n_gen=4, t0=999), image_sources(folder, None)  # generation at 999, 666, 333, 0
    part = load_entry(InversionCache(tmp_path / "c", bb, A, plan, walk_to=500).build(src)[0])
    assert calls.n == 2 + 2 and "x_rec" not in part and part["t"].tolist() == [999, 666]
    full = load_entry(InversionCache(tmp_path / "full", bb, A, plan).build(src)[0])
    assert torch.equal(part["P_orig"], full["P_orig"][:2]) and torch.equal(part["x_T"], full["x_T"])
    calls.n = 0
    InversionCache(tmp_path / "c", bb, A, plan, walk_to=600).build(src)  # t_edit 600: the steps at 999, 666 suffice
    InversionCache(tmp_path / "c", bb, A, plan, walk_to=None).build(src)
    assert calls.n == 0
    deeper = InversionCache(tmp_path / "c", bb, A, plan, walk_to=300).build(src)
    assert calls.n == 2 + 3 and load_entry(deeper[0])["t"].tolist() == [999, 666, 333]


def test_cache_batch_size_sets_the_build_batches_and_a_bad_one_is_one_error(tmp_path):
    """dataset.cache_batch_size: the cache is built in batches of that many images (null: max(batch_size, 4)), the
    entries the same up to float rounding; below 1: one error naming the option."""
    folder = write_folder(tmp_path / "imgs", n=3)
    kw = dict(kind="folder", path=str(folder), n_images=3, batch_size=2, n_val=0, shuffle=False)
    counts, P = {}, {}
    for cbs in (None, 1):
        bb = tiny_backbone()
        calls = CallCounter(bb)
        dm = dm_for(bb, **kw, cache_dir=str(tmp_path / f"c{cbs}"), cache_batch_size=cbs)
        dm.prepare_data()
        dm.setup("fit")
        counts[cbs], P[cbs] = calls.n, next(iter(dm.train_dataloader()))["P_orig"]
    assert counts == {None: 2 + 4, 1: 3 * (2 + 4)}  # one chunk of 3 (max(2, 4) = 4), or one chunk per image
    assert (P[None] - P[1]).abs().max() <= 1e-5 * P[1].abs().max()
    with pytest.raises(AsyrpUserError, match=r"dataset.cache_batch_size=0 must be >= 1"):
        AsyrpDataModule(**kw, cache_batch_size=0)


def test_datamodule_full_entries_for_validation_only(tmp_path):
    """With a t_edit and a validation set, the validation images keep x_rec (full entries) and the training items
    carry the steps at t_edit and above, whatever entry they come from; the rows match an all-full cache's."""
    bb = tiny_backbone()
    calls = CallCounter(bb)
    folder = write_folder(tmp_path / "imgs", n=3)
    plan = EditPlan(n_inv=3, n_gen=4, t0=999, t_edit=500)
    kw = dict(kind="folder", path=str(folder), n_images=3, batch_size=4, shuffle=False)
    dm = AsyrpDataModule(**kw, cache_dir=str(tmp_path / "c"), n_val=1).bind(bb, A, plan)
    dm.prepare_data()
    assert calls.n == (2 + 4) + (2 + 2)  # image 0 in full, images 1 and 2 down to t_edit
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "x_rec" not in batch and batch["P_orig"].shape == (3, 2, 3, 16, 16) and batch["t"][0].tolist() == [999, 666]
    assert next(iter(dm.val_dataloader()))["x_rec"].shape == (1, 3, 16, 16)
    ref = AsyrpDataModule(**kw, cache_dir=str(tmp_path / "r"), n_val=0).bind(bb, A, plan)
    ref.prepare_data()
    ref.setup("fit")
    P_ref = next(iter(ref.train_dataloader()))["P_orig"]
    # the same calls in other batches (image 0 alone, then 1 and 2; the reference: all three): float rounding only
    assert P_ref.shape[1] == 4 and (batch["P_orig"] - P_ref[:, :2]).abs().max() <= 1e-5 * P_ref.abs().max()


def test_cache_key_follows_content_and_settings(tmp_path):
    bb = tiny_backbone()
    folder = write_folder(tmp_path / "imgs", n=1)
    src = image_sources(folder, None)
    base = InversionCache(tmp_path / "c", bb, A, EditPlan(n_inv=3, n_gen=4, t0=999)).path_for(src[0])
    assert InversionCache(tmp_path / "c", bb, A, EditPlan(n_inv=3, n_gen=5, t0=999)).path_for(src[0]) != base
    assert InversionCache(tmp_path / "c", bb, A, EditPlan(n_inv=3, n_gen=4, t0=800)).path_for(src[0]) != base
    assert (
        InversionCache(tmp_path / "c", tiny_backbone(seed=1), A, EditPlan(n_inv=3, n_gen=4, t0=999)).path_for(src[0])
        != base
    )
    atomic_write_png(images(1, size=16, seed=9)[0], folder / "img_0.png")  # same name, new content
    assert (
        InversionCache(tmp_path / "c", bb, A, EditPlan(n_inv=3, n_gen=4, t0=999)).path_for(
            image_sources(folder, None)[0]
        )
        != base
    )


def test_corrupt_image_is_one_error_naming_the_file(tmp_path):
    bb = tiny_backbone()
    calls = CallCounter(bb)
    folder = write_folder(tmp_path / "imgs", n=2)
    (folder / "img_1.png").write_bytes(b"not a png")
    dm = dm_for(bb, kind="folder", path=str(folder), n_images=2, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(AsyrpUserError, match="img_1.png"):
        dm.prepare_data()
    assert calls.n == 0
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_missing_folder_and_too_few_images(tmp_path):
    with pytest.raises(AsyrpUserError, match="image folder not found"):
        image_sources(tmp_path / "nope", 2)
    folder = write_folder(tmp_path / "imgs", n=2)
    with pytest.raises(AsyrpUserError, match="holds only 2 usable images"):
        image_sources(folder, 5)


def test_random_samples_are_generated_not_blank(tmp_path):
    bb = tiny_backbone()
    dm = dm_for(bb, kind="random_samples", n_images=3, cache_dir=str(tmp_path / "cache"), seed=7, n_val=1)
    dm.prepare_data()
    dm.setup("fit")
    items = [dm.train_set[i] for i in range(3)]
    for it in items:
        assert it["x0"].std() > 1e-3
    assert not torch.allclose(items[0]["x_T"], items[1]["x_T"])
    assert torch.equal(items[0]["x_T"], noise_sources(7, 1)[0].noise((3, 16, 16))[0])
    assert len(dm.val_set) == 1
