"""LOCO Edit (Chen et al., NeurIPS 2024) as an x-space direction: a one-time move of x_t at one timestep t.

At t, P_t(x_t) (the posterior mean) is split by a region mask M into the part inside, M * P_t, and the part outside,
(1 - M) * P_t. The candidates are the top right singular vectors of the inside Jacobian d(M * P_t)/d x_t; each is
projected off the top ``r_null`` right singular vectors of the outside Jacobian (their row space), so to first order
moving x_t along it leaves P_t outside the region where it was; then normalised. Unlike the authors' per-image
basis, the Jacobians here are shared by the N images they are found on (the eigenvectors of sum_i J_i^T J_i), so
one direction edits every image (their "transfer" setting). The Jacobian machinery is ``top_singular_vectors``.

Which candidate, and which sign, is not chosen by LOCO (it shows them all): ``choose_by_text`` picks the one whose
edit moves CLIP's image embedding most along the attribute's text direction (no oracle, no labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .finders import Direction, top_singular_vectors


def posterior_mean(backbone, a: torch.Tensor, t: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x_t -> P_t(x_t) at timestep t: one full network pass (differentiable in x_t; the network is frozen)."""
    from ..ddim import P_t
    from ..schedules import alpha_at

    a_t = alpha_at(a, t)

    def P(x: torch.Tensor) -> torch.Tensor:
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        return P_t(x, backbone.eps(backbone(x, tt)), a_t.to(x))

    return P


def loco_directions(
    backbone,
    a: torch.Tensor,
    x_t: torch.Tensor,
    t: int,
    mask: torch.Tensor,
    *,
    k: int = 4,
    r_null: int = 5,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> tuple[list[Direction], dict[str, int]]:
    """The k LOCO candidates at x_t (N, C, H, W), timestep t, region ``mask`` (H, W) in [0, 1]: unit x-space
    directions (strength = the norm of the move of x_t, LOCO's own unit), with the null-space basis's singular values
    and how much of each candidate the projection kept. Returns the candidates and the JVP / VJP rows evaluated."""
    from ..masks import check_mask
    from ..perf import set_sdpa

    m = check_mask(mask, x_t.shape[-1], what="LOCO region mask").to(x_t)
    if not 1 <= r_null < x_t[0].numel():
        raise ValueError(f"r_null={r_null}: the outside null-space basis needs 1..{x_t[0].numel() - 1} vectors")
    set_sdpa(backbone, False)  # fused attention kernels have no forward-mode derivative
    P = posterior_mean(backbone, a, t)
    inside = top_singular_vectors(lambda x: P(x) * m, x_t, k, iters=iters, tol=tol, seed=seed)
    outside = top_singular_vectors(lambda x: P(x) * (1 - m), x_t, r_null, iters=iters, tol=tol, seed=seed + 1)
    V_out = outside["V"].reshape(r_null, -1).double()
    out = []
    for j in range(k):
        v = inside["V"][j].reshape(-1).double()
        v_null = v - V_out.T @ (V_out @ v)
        kept = float(v_null.norm())
        out.append(
            Direction(
                (v_null / max(kept, 1e-300)).float().reshape(x_t.shape[1:]),
                None,
                "loco",
                j,
                {
                    "t": int(t),
                    "singular_value_inside": float(inside["sigma"][j]),
                    "singular_values_outside": [float(s) for s in outside["sigma"]],
                    "r_null": int(r_null),
                    "kept_after_projection": kept,
                    "n_images": int(x_t.shape[0]),
                },
                space="x",
            )
        )
    cost = {k_: inside[k_] + outside[k_] for k_ in ("jvp_rows", "vjp_rows")}
    return out, cost


@torch.no_grad()
def choose_by_text(
    backbone,
    a: torch.Tensor,
    plan,
    x_T: torch.Tensor,
    candidates: Sequence[Direction],
    text_score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    strength: float,
    seeds: Sequence[int],
) -> tuple[Direction, list[float]]:
    """The candidate and sign whose edit of the images (inverted to ``plan.t0`` = t: ``x_T``) at +-``strength``
    scores highest by ``text_score(x_ref, x_edit)`` (the mean CLIP directional cosine to the attribute's text
    direction). All 2k edits and the reference run as one batched walk. Returns the chosen direction (sign applied,
    the scores in its meta) and the 2k scores (candidate j: +strength at 2j, -strength at 2j + 1)."""
    from ..hfunctions.modules import Composition
    from ..samplers import edit
    from .files import direction_hfunction

    k = len(candidates)
    coeffs = torch.zeros(2 * k + 1, k, dtype=torch.float64)
    for j in range(k):
        coeffs[2 * j, j], coeffs[2 * j + 1, j] = strength, -strength
    comp = Composition([direction_hfunction(d) for d in candidates])
    out = edit(backbone, None, comp, a=a, plan=plan, strength=coeffs, seeds=list(seeds), x_T=x_T).x_edit
    ref = out[-1]
    scores = [float(text_score(ref, out[i])) for i in range(2 * k)]
    best = max(range(2 * k), key=lambda i: scores[i])
    d = candidates[best // 2]
    sign = 1.0 if best % 2 == 0 else -1.0
    meta = dict(d.meta, sign=sign, chosen_by="CLIP text direction", text_scores=scores, probe_strength=strength)
    return replace(d, delta_h=d.delta_h * sign, meta=meta), scores
