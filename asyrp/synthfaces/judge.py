"""Judge edits with the synthfaces oracle: success = the target attribute now holds; preserved = every other head
unchanged. The scoring is asyrp.metrics.OracleEditScore (the one oracle scorer); this adds the per-image verdicts and
the layout of the demo's metrics.json.

"Unchanged" compares the oracle's reading of the edited image with its reading of the source image (not the ground
truth), so an oracle mistake on a source face does not count against the edit.
"""
from __future__ import annotations

import torch

from ..metrics import OracleEditScore
from ..metrics import parse_target as _parse
from .render import HEADS


def parse_target(target: str) -> tuple[str, int]:
    """'mouth=smiling' -> ('mouth', index of 'smiling' in HEADS['mouth'])."""
    return _parse(target, HEADS)


@torch.no_grad()
def judge_pairs(oracle, x_src: torch.Tensor, x_edit: torch.Tensor, target: str) -> dict:
    score = OracleEditScore.from_oracle(oracle, target)
    v = score.verdicts(x_src, x_edit)
    score.update(x_src, x_edit)
    r = score.compute()
    return {
        "n": int(x_src.shape[0]),
        "success": float(r["success"]),
        "preserved": float(r["preserved"]),
        "preserved_per_head": {k: float(r[f"preserved/{k}"]) for k in score.others},
        "already_target_before": float(r["already_target"]),
        "per_image": [{"success": bool(s), "preserved": bool(p)} for s, p in zip(v["success"], v["kept"].all(1))],
    }
