"""What a direction changes, read by an attribute oracle: which heads flip, towards what, how many others move."""

from __future__ import annotations

from collections.abc import Mapping

import torch

FLIP_MOVED = 0.1  # a head "moves" when at least this fraction of the images changes class on it


@torch.no_grad()
def oracle_labels(oracle, x_ref: torch.Tensor, x_edit: Mapping[float, torch.Tensor]) -> dict:
    """Label one direction from the oracle's readings of its edits at several strengths.

    ``oracle``: an object with ``judge`` and ``classes`` (read through ``asyrp.metrics.EditScorer``). ``x_ref`` (M, 3,
    H, W): the unedited reconstructions; ``x_edit[s]`` the same images edited at strength s.
    Per strength and head: the fraction of images whose class changed (``flips``) and the class frequencies after
    the edit (``after``). The label is the head that flips most (at the strength where it does), with the class most
    of its flipped images land on; ``others_moved`` counts the other heads that flip on >= 10% of the images at any
    strength; ``disentanglement`` = the main head's flip rate / the sum of all heads' (1: nothing else moves).
    """
    from ..metrics import EditScorer

    scorer = EditScorer(oracle=oracle)
    heads = list(oracle.classes)
    per_s, best = {}, {h: (0.0, None) for h in heads}
    for s, x in x_edit.items():
        if float(s) == 0.0:
            continue
        changes = scorer.head_changes(x_ref, x)
        for h in heads:
            if changes[h]["flips"] > best[h][0]:
                best[h] = (changes[h]["flips"], (float(s), changes[h]["to"]))
        per_s[f"{float(s):g}"] = {
            "flips": {h: changes[h]["flips"] for h in heads},
            "after": {h: changes[h]["after"] for h in heads},
        }
    before = scorer.class_frequencies(x_ref)
    rate = {h: best[h][0] for h in heads}
    main = max(heads, key=lambda h: rate[h])
    total = sum(rate.values())
    if rate[main] == 0.0:
        label = "nothing flips"
    else:
        s, to = best[main][1]
        label = f"{main}={to} ({'+' if s > 0 else '-'})"
    return {
        "label": label,
        "main_head": main if rate[main] > 0 else None,
        "flip_rate": rate,
        "others_moved": sum(1 for h in heads if h != main and rate[h] >= FLIP_MOVED),
        "disentanglement": rate[main] / total if total > 0 else 0.0,
        "before": before,
        "strengths": per_s,
        "n_images": int(x_ref.shape[0]),
    }


def target_gain(labels: Mapping, target: str) -> tuple[float, float]:
    """(best gain, strength): how much more often the images read as ``target`` ('head=value') after the edit than
    before, at the best labelled strength. Picks the best-matching unsupervised direction for an attribute."""
    head, value = target.split("=", 1)
    base = labels["before"][head].get(value, 0.0)
    best = (float("-inf"), 0.0)
    for s, r in labels["strengths"].items():
        gain = r["after"][head].get(value, 0.0) - base
        if gain > best[0]:
            best = (gain, float(s))
    return best
