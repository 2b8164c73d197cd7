"""edit.py's split over processes, without processes: the one cut of the inputs into batches, the device of each
rank, and what a rerun counts as done (journalled, with files of the recorded digests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from asyrp.ops.errors import AsyrpUserError
from asyrp.tasks.edit_done import close_journals, done_images, record_done
from asyrp.tasks.edit_ranks import edit_batches, rank_devices


def test_batches_are_one_fixed_cut_whatever_is_done():
    inputs = [{"id": f"i{k}"} for k in range(5)]
    ids = lambda batches: [[it["id"] for it in b] for b in batches]  # noqa: E731
    assert ids(edit_batches(inputs, {}, 2)) == [["i0", "i1"], ["i2", "i3"], ["i4"]]
    # i0, i1 and i2 done: [i2, i3] stays one batch (edited whole, i3 written), not [i3, i4]
    assert ids(edit_batches(inputs, {"i0": {}, "i1": {}, "i2": {}}, 2)) == [["i2", "i3"], ["i4"]]


def test_rank_devices():
    cfg = lambda **kw: OmegaConf.create({"device": "cpu", "devices": 1, **kw})  # noqa: E731
    assert rank_devices(cfg()) == ["cpu"] and rank_devices(cfg(device="cuda:1")) == ["cuda:1"]
    assert rank_devices(cfg(devices=3)) == ["cpu"] * 3
    with pytest.raises(AsyrpUserError, match="pass device=cuda"):
        rank_devices(cfg(device="cuda:1", devices=2))
    with pytest.raises(AsyrpUserError, match="needs device=cuda"):
        rank_devices(cfg(devices=-1))
    with pytest.raises(AsyrpUserError, match="devices=0 must be >= 1"):
        rank_devices(cfg(devices=0))
    with pytest.raises(AsyrpUserError, match=r"devices='two' must be an integer"):
        rank_devices(cfg(devices="two"))
    if torch.cuda.device_count() < 8:
        with pytest.raises(AsyrpUserError, match="CUDA device"):
            rank_devices(cfg(device="cuda", devices=8))


def test_done_means_journalled_with_files_of_those_digests(tmp_path):
    from asyrp.ops.claims import MANIFEST

    items = [{"id": f"i{k}", "seed": k} for k in range(3)]
    req = SimpleNamespace(
        inputs=items,
        fingerprint="fp",
        out_names=lambda i: [f"{i}.png"],
        manifest=lambda complete, done: {
            "fingerprint": "fp",
            "complete": complete,
            "inputs": [
                dict(it, done=it["id"] in done, **({"digests": done[it["id"]]} if it["id"] in done else {}))
                for it in items
            ],
        },
    )
    for k in range(3):
        (tmp_path / f"i{k}.png").write_bytes(bytes([k]) * 10)
    record_done(tmp_path, 0, "fp", "i0", [tmp_path / "i0.png"])
    record_done(tmp_path, 1, "fp", "i1", [tmp_path / "i1.png"])
    record_done(tmp_path, 1, "another run", "i2", [tmp_path / "i2.png"])  # not this run's: not counted
    with open(tmp_path / ".edit-done.1.jsonl", "a") as f:
        f.write('{"fingerprint": "fp", "id": "i2", "dig')  # the torn last line of a killed process
    assert sorted(done_images(req, tmp_path)) == ["i0", "i1"]
    (tmp_path / "i1.png").write_bytes(b"changed since")
    assert sorted(done_images(req, tmp_path)) == ["i0"]
    (tmp_path / ".i2.png.x.tmp").write_bytes(b"half")
    close_journals(req, tmp_path, complete=False)  # into the manifest; journals and temporary files gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i0.png", "i1.png", "i2.png", MANIFEST]
    assert sorted(done_images(req, tmp_path)) == ["i0"]  # now from the manifest's digests
