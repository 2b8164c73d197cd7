"""train.py with both keep terms (keep=[clip,probe]): the probes are trained by the run on its labelled split, written
beside hfunction.pt with their digest in it, both terms are logged, and a second run can reuse the probe file."""

import csv
from pathlib import Path

import torch

from asyrp import build
from asyrp.config import compose
from asyrp.ops.io import file_digest
from asyrp.tasks.train import train


def _run(tmp_path: Path, name: str, *extra: str):
    out = tmp_path / name
    cfg = compose(
        "train",
        [
            "experiment=synthfaces_glasses_keep_probe",
            "keep=[clip,probe]",
            "model.loss.keep.clip.pairs=[[a face with brown hair,a face with blond hair]]",
            "debug=smoke",
            "logger=csv",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
            *extra,
        ],
        output_dir=out,
    )
    _, objects = train(cfg)
    return out, objects


def test_keep_probe_run_trains_its_probes_first_and_records_them(tmp_path):
    from asyrp.synthfaces.data import write_split

    labelled = write_split(tmp_path / "labelled", 4, 24, {})
    out, objects = _run(tmp_path, "run", f"model.loss.keep.probe.labelled={labelled}")
    probes_file = out / "checkpoints" / "keep_probes.pt"
    obj = torch.load(out / "checkpoints" / "hfunction.pt", weights_only=True)
    rec = obj["keep"]["probe"]
    assert rec["file"] == "keep_probes.pt" and rec["sha256"] == file_digest(probes_file)
    assert rec["supervision"].startswith("labelled images: 24 from") and rec["labelled"]["n_images"] == 24
    assert rec["arch"] == "tiny_ddpm" and set(rec["accuracy"]) == set(rec["attributes"]) and len(rec["attributes"]) == 9
    assert rec["buckets"] == [[999], [666]]  # one probe per training t under debug=smoke
    assert obj["keep"]["clip"]["pairs"] == [["a face with brown hair", "a face with blond hair"]]
    with open(next(out.glob("**/metrics.csv")), newline="") as fh:
        cols = next(csv.reader(fh))
    assert "train/keep_clip_step" in cols and "train/keep_probe_step" in cols
    # the file edits like any h-function, and a second run reuses the probe file (no labelled split needed)
    build.trained_hfunction(out / "checkpoints" / "hfunction.pt", objects["backbone"], "tiny_ddpm")
    out2, _ = _run(tmp_path, "reuse", f"model.loss.keep.probe.file={probes_file}")
    again = torch.load(out2 / "checkpoints" / "keep_probes.pt", weights_only=True)
    assert torch.equal(again["weight"], torch.load(probes_file, weights_only=True)["weight"])
