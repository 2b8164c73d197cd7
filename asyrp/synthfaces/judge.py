"""Judge edits with the synthfaces oracle: success = the target attribute now holds; preserved = every other head
unchanged. The scoring is asyrp.metrics.EditScorer (the one edit scorer, its ``oracle`` metric); this adds the
per-image verdicts and the layout of the demo's metrics.json.

"Unchanged" compares the oracle's reading of the edited image with its reading of the source image (not the ground
truth), so an oracle mistake on a source face does not count against the edit.
"""

from __future__ import annotations

import torch

from ..metrics import EditScorer
from ..metrics import parse_target as _parse
from .render import HEADS


def parse_target(target: str) -> tuple[str, int]:
    """'mouth=smiling' -> ('mouth', index of 'smiling' in HEADS['mouth'])."""
    return _parse(target, HEADS)


@torch.no_grad()
def judge_pairs(oracle, x_src: torch.Tensor, x_edit: torch.Tensor, target: str) -> dict:
    scorer = EditScorer(oracle=oracle, oracle_target=target)
    v = scorer.verdicts(x_src, x_edit)
    r = scorer.score(x_src, x_edit, ["n", "oracle"])
    return {
        "n": int(r["n"]),
        "success": r["success"],
        "preserved": r["preserved"],
        "preserved_per_head": {k.split("/", 1)[1]: p for k, p in r.items() if k.startswith("preserved/")},
        "already_target_before": r["already_target"],
        "per_image": [{"success": bool(s), "preserved": bool(p)} for s, p in zip(v["success"], v["kept"].all(1))],
    }
