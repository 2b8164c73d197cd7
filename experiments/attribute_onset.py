"""At which t does each synthfaces attribute appear in P_t? (why an edit interval works or not)

    python -m asyrp.synthfaces.data --out data/synthfaces_all --exclude none --n-train 0 --n-test 64
    python experiments/attribute_onset.py --images data/synthfaces_all/test --out outputs/onset.json

Inverts the faces to t0 (deterministic DDIM, n steps; the inversion cache), walks back unedited, and lets the oracle
read P_t (the predicted x0) at every step. Per attribute and t: the fraction of faces whose P_t already reads as the
final reconstruction does. An attribute that is decided only at t < t_edit cannot be edited by h at t >= t_edit; one
decided at high t is edited only if the interval reaches up there, where h also moves the attributes decided there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from asyrp import build
from asyrp.config import compose
from asyrp.data.cache import cached_inversions
from asyrp.data.images import scan_images
from asyrp.plan import EditPlan
from asyrp.synthfaces.oracle import load_oracle
from asyrp.synthfaces.render import HEADS


def onset(rows: list[dict]) -> int | None:
    """The highest t from which on (down to t = 0) P_t reads as the reconstruction on >= 90% of the faces."""
    t_on = None
    for r in reversed(rows):  # rows: t descending; walk up from t = 0
        if r["agree"] < 0.9:
            break
        t_on = r["t"]
    return t_on


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True)
    p.add_argument("--out", default="outputs/onset.json")
    p.add_argument("--cache", default=".cache/asyrp")
    p.add_argument("--t0", type=int, default=999)
    p.add_argument("--steps", type=int, default=40)
    a = p.parse_args(argv)
    cfg = compose("train", ["experiment=synthfaces_smiling"])
    backbone = build.backbone(cfg.arch)
    files, _ = scan_images(a.images, None, 32)
    plan = EditPlan(n_inv=a.steps, n_gen=a.steps, t0=a.t0)
    entries = cached_inversions(a.cache, backbone, build.alpha_bar(cfg.arch), files, plan, image_size=32, batch_size=16)
    oracle = load_oracle()
    P = torch.stack([e["P_orig"] for e in entries]).float()  # (N, K, 3, H, W), K generation steps (t descending)
    ts = entries[0]["t"].tolist()
    final = oracle.judge(torch.stack([e["x_rec"] for e in entries]).float())
    source = oracle.judge(torch.stack([e["x0"] for e in entries]).float())
    rows = {h: [] for h in HEADS}
    for k, t in enumerate(ts):
        read = oracle.judge(P[:, k].clamp(-1, 1))
        for h in HEADS:
            rows[h].append({"t": int(t), "agree": float((read[h] == final[h]).float().mean())})
    out = {
        "images": str(a.images),
        "n": len(files),
        "t0": a.t0,
        "steps": a.steps,
        "reconstruction_keeps": {h: float((final[h] == source[h]).float().mean()) for h in HEADS},
        "onset": {h: onset(rows[h]) for h in HEADS},
        "per_t": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print("attribute: highest t from which on P_t reads as the reconstruction for >= 90% of faces")
    for h in HEADS:
        curve = " ".join(f"{r['t']}:{r['agree']:.2f}" for r in rows[h][::4])
        print(f"  {h:12s} onset t={out['onset'][h]}  ({curve})")


if __name__ == "__main__":
    main()
