"""`make demo`: the main job (train an h-function, then edit images with it) through the normal train.py and edit.py.

Until the shipped synthfaces world exists this runs on the *tiny random-weight* backbone and CLIP of `debug=smoke`:
it proves the pipeline end to end (inversion cache, Asyrp training, checkpoint, edit, grid) but the edits are
meaningless, and it says so.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"


def run(*args: str) -> None:
    cmd = [sys.executable, *args]
    print("$", " ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"demo: step failed: {' '.join(args)}")


def main() -> None:
    import torch
    from PIL import Image

    from asyrp.backbones import load_backbone  # noqa: F401  (import check before spending time)

    faces = OUT / "inputs"
    faces.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(4):  # smooth random colour fields as stand-in inputs
        x = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=32, mode="bicubic")
        arr = (x[0].clamp(0, 1).permute(1, 2, 0) * 255).byte().numpy()
        Image.fromarray(arr).save(faces / f"input_{i}.png")

    run("train.py", "debug=smoke", "logger=csv", f"hydra.run.dir={OUT / 'train'}", f"dataset.cache_dir={OUT / 'cache'}")
    run("edit.py", "arch=tiny_ddpm", f"checkpoint={OUT / 'train' / 'checkpoints' / 'hfunction.pt'}",
        f"input_dir={faces}", f"hydra.run.dir={OUT / 'edit'}")
    edited = sorted((OUT / "edit" / "edited").glob("*.png"))
    print(f"demo: tiny random-weight world (pipeline check only; edits are meaningless) "
          f"trained={OUT / 'train' / 'checkpoints' / 'hfunction.pt'} edited={len(edited)} images in {OUT / 'edit' / 'edited'}")


if __name__ == "__main__":
    main()
