"""train.py with guide=classifier: the classifier on P_t is trained by the run on its labelled split before the
h-function, written beside hfunction.pt with its digest and accuracies in it, both parts of the term are logged, a
second run reuses the file, and a bad setting through the CLI is one line and a non-zero exit before any output."""

import csv
import subprocess
import sys
from pathlib import Path

import torch

from asyrp import build
from asyrp.classifier import FILE
from asyrp.config import compose
from asyrp.ops.io import file_digest
from asyrp.tasks.train import train

ROOT = Path(__file__).resolve().parents[2]
KEY = "model.loss.guide.classifier"


def _run(tmp_path: Path, name: str, *extra: str):
    out = tmp_path / name
    cfg = compose(
        "train",
        [
            "experiment=synthfaces_glasses_guided",
            "debug=smoke",
            "logger=csv",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
            f"{KEY}.epochs=1",
            *extra,
        ],
        output_dir=out,
    )
    _, objects = train(cfg)
    return out, objects


def test_guided_run_trains_its_classifier_first_and_records_it(tmp_path):
    from asyrp.synthfaces.data import write_split

    labelled = write_split(tmp_path / "labelled", 4, 24, {})
    out, objects = _run(tmp_path, "run", f"{KEY}.labelled={labelled}")
    file = out / "checkpoints" / FILE
    obj = torch.load(out / "checkpoints" / "hfunction.pt", weights_only=True)
    rec = obj["guide"]["classifier"]
    assert rec["file"] == FILE and rec["sha256"] == file_digest(file) and rec["target"] == "glasses=True"
    assert rec["supervision"].startswith("labelled images: 24 from") and rec["labelled"]["n_images"] == 24
    assert rec["arch"] == "tiny_ddpm" and rec["t"] == [999, 666]  # the training t under debug=smoke
    assert rec["attributes"] == ["glasses=True", *rec["kept"]] and set(rec["accuracy"]) == set(rec["attributes"])
    assert len(rec["kept"]) == 9 and rec["n_held_out"] == 6
    with open(next(out.glob("**/metrics.csv")), newline="") as fh:
        cols = next(csv.reader(fh))
    assert "train/guide_target_step" in cols and "train/guide_keep_step" in cols
    build.trained_hfunction(out / "checkpoints" / "hfunction.pt", objects["backbone"], "tiny_ddpm")
    # a second run reuses the classifier file (no labelled split needed): the same weights
    out2, objects2 = _run(tmp_path, "reuse", f"{KEY}.file={file}", f"{KEY}.labelled=null")
    net, net2 = objects["module"].loss_fn.guide.net, objects2["module"].loss_fn.guide.net
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    assert not (out2 / "checkpoints" / FILE).exists()  # nothing new was trained


def test_a_bad_guide_setting_is_one_line_through_train_py(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=synthfaces_glasses_guided", f"{KEY}.w_keep=-1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"{KEY}.w_keep=-1 must be >= 0" in proc.stderr and not (tmp_path / "run").exists()
