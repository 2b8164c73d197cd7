"""What does delta_h at a given t move? A trained h-function applied in one window of timesteps at a time.

    python experiments/locality.py --hfunction outputs/recipes/glasses/s0/train/checkpoints/hfunction.pt \\
        --images data/synthfaces_glasses/test --target glasses=True --t0 800 --width 100 --strength 1.0

The faces are inverted once to t0 (the inversion cache); then for every window [t_hi, t_lo] (width --width, from t0
down to 0) the h-function acts only there (asyrp.hfunctions.TimeWindow; plain DDIM elsewhere). The oracle reads each
result against the source: the target's success and, per other attribute, the share of faces that keep it. A window
where success rises while another attribute falls is where h entangles the two; no window with high success and
every attribute kept means the attribute cannot be reached by this h-function in any interval.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from asyrp import build
from asyrp.config import compose
from asyrp.data.cache import cached_inversions
from asyrp.data.images import read_image_files, scan_images
from asyrp.hfunctions import TimeWindow
from asyrp.metrics import OracleEditScore
from asyrp.plan import EditPlan
from asyrp.samplers import edit
from asyrp.synthfaces.oracle import load_oracle


def windows(t0: int, width: int) -> list[tuple[int, int]]:
    out, hi = [], t0
    while hi > 0:
        out.append((hi, max(hi - width + 1, 0)))
        hi -= width
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hfunction", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--target", required=True, help="oracle target, e.g. glasses=True or mouth!=smiling")
    p.add_argument("--t0", type=int, default=800)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--steps", type=int, default=80, help="DDIM steps over [t0, 0] (inversion and generation)")
    p.add_argument("--strength", type=float, nargs="+", default=[1.0])
    p.add_argument("--cache", default=".cache/asyrp")
    p.add_argument("--out", default="outputs/locality.json")
    a = p.parse_args(argv)
    cfg = compose("train", ["experiment=synthfaces_smiling"])
    backbone, a_bar, oracle = build.backbone(cfg.arch), build.alpha_bar(cfg.arch), load_oracle()
    fn, _ = build.trained_hfunction(a.hfunction, backbone, "synthfaces")
    files, _ = scan_images(a.images, None, 32)
    x0 = read_image_files(files, 32)
    steps = EditPlan(n_inv=a.steps, n_gen=a.steps, t0=a.t0, t_boost=0)
    x_T = torch.stack(
        [e["x_T"] for e in cached_inversions(a.cache, backbone, a_bar, files, steps, image_size=32, batch_size=32)]
    )
    rows = []
    for hi, lo in [(None, None), *windows(a.t0, a.width)]:  # first: no window at all, the unedited reconstruction
        # the reconstruction is one plain walk (no h-function, no second decoder pass), reported as strength 0
        fn_w, t_edit, strengths = (TimeWindow(fn, hi, lo), lo, list(a.strength)) if hi is not None else (None, 0, [0.0])
        with torch.no_grad():
            x_edit = edit(
                backbone,
                x0,
                fn_w,
                a=a_bar,
                plan=replace(steps, t_edit=t_edit),
                strength=strengths if fn_w is not None else 1.0,
                x_T=x_T,
            ).x_edit
        x_edit = x_edit if x_edit.dim() == 5 else x_edit[None]
        for k, s in enumerate(strengths):
            score = OracleEditScore.from_oracle(oracle, a.target)
            score.update(x0, x_edit[k].clamp(-1, 1))
            r = {key: round(float(v), 3) for key, v in score.compute().items()}
            rows.append({"t_hi": hi, "t_lo": lo, "strength": s, **r})
            kept = " ".join(f"{key.split('/')[1]} {v:.2f}" for key, v in r.items() if key.startswith("preserved/"))
            where = f"window [{hi:3d}, {lo:3d}]" if hi is not None else "reconstruction   "
            print(
                f"{where} strength {s:g}: success {r['success']:.2f} preserved {r['preserved']:.2f} | kept: {kept}",
                flush=True,
            )
    out = {
        "hfunction": a.hfunction,
        "images": a.images,
        "n": len(files),
        "target": a.target,
        "t0": a.t0,
        "steps": a.steps,
        "rows": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
