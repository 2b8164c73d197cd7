"""Judge edits with the oracle: success = the target attribute now holds; preserved = every other head unchanged.

"Unchanged" compares the oracle's reading of the edited image with its reading of the source image (not the ground
truth), so an oracle mistake on a source face does not count against the edit.
"""
from __future__ import annotations

import torch

from .render import HEADS


def parse_target(target: str) -> tuple[str, int]:
    """'mouth=smiling' -> ('mouth', index of 'smiling' in HEADS['mouth'])."""
    key, value = target.split("=", 1)
    classes = [str(c) for c in HEADS[key]]
    return key, classes.index(value)


@torch.no_grad()
def judge_pairs(oracle, x_src: torch.Tensor, x_edit: torch.Tensor, target: str) -> dict:
    key, value = parse_target(target)
    src, edt = oracle.judge(x_src), oracle.judge(x_edit)
    success = edt[key] == value
    others = [k for k in HEADS if k != key]
    kept = torch.stack([edt[k] == src[k] for k in others], 1)
    return {
        "n": int(x_src.shape[0]),
        "success": float(success.float().mean()),
        "preserved": float(kept.all(1).float().mean()),
        "preserved_per_head": {k: float(kept[:, i].float().mean()) for i, k in enumerate(others)},
        "already_target_before": float((src[key] == value).float().mean()),
        "per_image": [{"success": bool(s), "preserved": bool(p)} for s, p in zip(success, kept.all(1))],
    }
