"""The four finders. Inputs are recorded h (``{t: (N, C, H, W)}``, descending t), outputs ``Direction`` objects."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Direction:
    """delta_h per timestep (T, C, H, W) with ``timesteps`` (descending), or one global delta_h (C, H, W) with
    ``timesteps=None``. ``meta`` says what found it (method, index, per-t scales, fit quality, ...). ``space``: what
    it is added to (h, or x for an image-shaped move of x_t such as LOCO's; asyrp.hfunctions' spaces)."""

    delta_h: torch.Tensor
    timesteps: list[int] | None
    method: str
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    space: str = "h"

    @property
    def name(self) -> str:
        return f"{self.method}_{self.index:02d}"


def _flat(h: torch.Tensor) -> torch.Tensor:
    return h.reshape(h.shape[0], -1).double()


def _align(v: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
    """v with the sign that makes <v, ref> >= 0 (a singular vector's sign is arbitrary; keep one path over t)."""
    if ref is None:
        return v if v.sum() >= 0 else -v
    return v if float((v * ref).sum()) >= 0 else -v


def _pcs(X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, D) principal axes and the (k,) standard deviations along them of the rows of X (centred SVD)."""
    Xc = X - X.mean(0, keepdim=True)
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    return Vh[:k], S[:k] / max(X.shape[0] - 1, 1) ** 0.5


def pca_directions(h: Mapping[int, torch.Tensor], k: int, *, pooled: bool = False) -> list[Direction]:
    """The top-k principal components of h over N images: per timestep (one PCA per t, each PC sign-aligned with the
    one of the previous, noisier step) or ``pooled`` (one PCA over all steps' h: one global delta_h).

    delta_h = sigma_k * u_k (sigma: the standard deviation of h along u_k), so strength 1 moves one std.
    """
    ts = sorted(h, reverse=True)
    n = min(v.shape[0] for v in h.values())
    if k < 1 or k > n - 1:
        raise ValueError(f"PCA of h over {n} images gives at most {n - 1} components; asked for k={k}")
    shape = tuple(h[ts[0]].shape[1:])
    if pooled:
        U, S = _pcs(torch.cat([_flat(h[t]) for t in ts]), k)
        return [
            Direction(
                (S[j] * _align(U[j], None)).float().reshape(shape),
                None,
                "pca",
                j,
                {"pooled": True, "sigma": float(S[j]), "n_images": n, "timesteps_pooled": ts},
            )
            for j in range(k)
        ]
    per_t = [_pcs(_flat(h[t]), k) for t in ts]
    out = []
    for j in range(k):
        rows, sig, prev = [], [], None
        for U, S in per_t:
            prev = _align(U[j], prev)
            rows.append((S[j] * prev).float().reshape(shape))
            sig.append(float(S[j]))
        out.append(Direction(torch.stack(rows), ts, "pca", j, {"pooled": False, "sigma": sig, "n_images": n}))
    return out


def top_singular_vectors(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 30,
    tol: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Top-k singular vectors of the Jacobian of a row-wise map f at the N rows of ``x``, shared by all rows:
    the eigenvectors of A = sum_i J_i^T J_i (N = 1: the image-specific Jacobian), by subspace iteration.

    A is applied as J^T (J v): one forward-mode JVP and one reverse-mode VJP per iteration on k*N rows (the k
    vectors side by side in one batch); no Jacobian is ever formed. Each iteration ends with a Rayleigh-Ritz
    rotation, so the vectors come out ordered. Stops when every vector moved less than ``tol`` (1 - |cos|).
    Returns V (k, *in) right singular vectors, sigma (k,) = sqrt(eigenvalues of A), U (k, *out) = normalised
    sum_i J_i v, the iterations run and the JVP / VJP rows evaluated.
    """
    N, shape_in = x.shape[0], tuple(x.shape[1:])
    D = int(torch.tensor(shape_in).prod())
    if not 1 <= k <= D:
        raise ValueError(f"k={k} singular vectors of a map on {D} inputs")
    X = x.detach().repeat(k, *([1] * len(shape_in)))  # copy j of row i at j*N + i
    _, vjp_fn = torch.func.vjp(f, X)  # the linearisation for J^T is built once

    def jvp(V: torch.Tensor) -> torch.Tensor:
        T = V.reshape(k, 1, *shape_in).expand(k, N, *shape_in).reshape(k * N, *shape_in).to(X.dtype)
        return torch.func.jvp(f, (X,), (T,))[1]

    def apply_A(V: torch.Tensor) -> torch.Tensor:
        JtJv = vjp_fn(jvp(V))[0]
        return JtJv.detach().reshape(k, N, D).sum(1).double()

    g = torch.Generator().manual_seed(int(seed))
    V = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=torch.float64)).Q.T  # (k, D) orthonormal rows
    evals = torch.zeros(k, dtype=torch.float64)
    it = 0
    for it in range(1, iters + 1):  # noqa: B007 (read after the loop: the iterations it took)
        W = apply_A(V)
        evals, R = torch.linalg.eigh(V @ W.T)
        order = evals.argsort(descending=True)
        evals, R = evals[order], R[:, order]
        V_r, W_r = R.T @ V, R.T @ W
        V_new = torch.linalg.qr(W_r.T).Q.T
        V_new = V_new * torch.sign((V_new * W_r).sum(1, keepdim=True) + 1e-300)
        moved = float((1 - (V_new * V_r).sum(1).abs()).max())
        V = V_new
        if moved < tol:
            break
    V = torch.stack([_align(v, None) for v in V])
    with torch.no_grad():
        JV = jvp(V)
    shape_out = tuple(JV.shape[1:])
    JV = JV.reshape(k, N, -1).sum(1).double()
    U = JV / JV.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return {
        "V": V.float().reshape(k, *shape_in),
        "sigma": evals.clamp_min(0).sqrt().float(),
        "U": U.float().reshape(k, *shape_out),
        "iters": it,
        "jvp_rows": (it + 1) * k * N,
        "vjp_rows": it * k * N,
    }


def _std_along(h: torch.Tensor, u: torch.Tensor) -> float:
    """Standard deviation over the N rows of h of their coordinate along the unit vector u."""
    c = _flat(h) @ (u.reshape(-1).double() / u.double().norm())
    return float(c.std()) if c.numel() > 1 else float(c.abs().mean())


def _decoder_map(backbone, enc, region: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """h -> eps, or with a region mask M: h -> (1 - M) * eps(h changed only inside M's cells of h's grid)."""
    if region is None:
        return lambda h: backbone.eps(backbone.decode(enc, h))
    outside = 1.0 - region.reshape(1, 1, *region.shape[-2:]).to(enc.h.dtype)
    inside = torch.nn.functional.interpolate(1.0 - outside, size=tuple(enc.h.shape[-2:]), mode="area")
    h0 = enc.h.detach()

    def f(h: torch.Tensor) -> torch.Tensor:
        rest = (1 - inside) * h0.repeat(h.shape[0] // h0.shape[0], 1, 1, 1)  # k stacked copies of the N rows
        return backbone.eps(backbone.decode(enc, inside * h + rest)) * outside

    return f


def jacobian_directions(
    backbone,
    walk,
    k: int,
    *,
    of: str = "decoder",
    n_images: int = 1,
    timesteps: Sequence[int] | None = None,
    iters: int = 30,
    tol: float = 1e-4,
    seed: int = 0,
    region: torch.Tensor | None = None,
) -> tuple[list[Direction], dict[str, int]]:
    """Top-k h-space directions of the Jacobian at the first ``n_images`` images of a recorded ``walk``, at each
    listed timestep (default: every recorded one), sign-aligned step to step.

    - ``of="decoder"`` (Haas et al.): J = d eps / d h at x_t (skips and time embedding fixed); the directions are
      its right singular vectors, in h-space.
    - ``of="encoder"`` (Park et al., pullback): J = d h / d x_t; the directions are its left singular vectors (the
      h-space images of the x-space basis V).
    delta_h_t = std_t * u_t, std_t the spread of the walk's h (all its images) along u_t: strength 1 moves one std.
    ``region`` (decoder only, a mask (H, W) at image resolution): the Jacobian of (1 - mask) * eps w.r.t. h inside
    the region (the mask area-resized to h's grid): the directions of a region edit that move what lies outside it,
    the null space a constraint holds (asyrp.constraints, use=project_mask).
    Returns the directions and the JVP / VJP rows evaluated.
    """
    from ..perf import set_sdpa

    if of not in ("decoder", "encoder"):
        raise ValueError(f"jacobian of={of!r}: use decoder (d eps / d h) or encoder (d h / d x_t, the pullback)")
    if region is not None and of != "decoder":
        raise ValueError("jacobian: a region (method.outside) applies to of=decoder only")
    ts = list(timesteps) if timesteps is not None else walk.timesteps
    set_sdpa(backbone, False)  # fused attention kernels have no forward-mode derivative
    vecs: list[list[torch.Tensor]] = [[] for _ in range(k)]
    sig: list[list[float]] = [[] for _ in range(k)]
    cost = {"jvp_rows": 0, "vjp_rows": 0, "iters": []}
    for t in ts:
        x_t = walk.x[t][:n_images]
        if of == "decoder":
            with torch.no_grad():
                enc = backbone.encode(x_t, float(t))
            res = top_singular_vectors(_decoder_map(backbone, enc, region), enc.h, k, iters=iters, tol=tol, seed=seed)
            dirs = res["V"]
        else:
            res = top_singular_vectors(
                lambda x: backbone.encode(x, float(t)).h, x_t, k, iters=iters, tol=tol, seed=seed
            )
            dirs = res["U"]
        cost["jvp_rows"] += res["jvp_rows"]
        cost["vjp_rows"] += res["vjp_rows"]
        cost["iters"].append(res["iters"])
        for j in range(k):
            u = _align(dirs[j].double(), vecs[j][-1].double() if vecs[j] else None).float()
            vecs[j].append(u)
            sig[j].append(float(res["sigma"][j]))
    out = [
        Direction(
            torch.stack([u * _std_along(walk.h[t], u) for u, t in zip(vecs[j], ts)]),
            ts,
            "jacobian",
            j,
            {
                "of": of,
                "singular_value": sig[j],
                "n_images": n_images,
                "iters": cost["iters"],
                "outside_region": region is not None,
            },
        )
        for j in range(k)
    ]
    return out, cost


def _split_labels(h: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.as_tensor(labels).bool()
    pos, neg = h[labels], h[~labels]
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError(
            f"{what} needs images with and without the attribute: got {pos.shape[0]} with, {neg.shape[0]} without"
        )
    return pos, neg


def mean_diff_direction(h: Mapping[int, torch.Tensor], labels: torch.Tensor) -> Direction:
    """delta_h_t = mean h_t over images with the attribute - mean over images without it, at every recorded t."""
    ts = sorted(h, reverse=True)
    rows = []
    for t in ts:
        pos, neg = _split_labels(h[t], labels, "mean_diff")
        rows.append(pos.double().mean(0) - neg.double().mean(0))
    n_pos = int(torch.as_tensor(labels).bool().sum())
    return Direction(
        torch.stack(rows).float(),
        ts,
        "mean_diff",
        0,
        {"n_pos": n_pos, "n_neg": int(len(labels)) - n_pos, "norm": [float(r.norm()) for r in rows]},
    )


def fit_logistic(X: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-3, iters: int = 200) -> tuple[torch.Tensor, float]:
    """Logistic regression (L-BFGS, L2 penalty ``l2`` on w) of labels y on the rows of X: returns (w, b)."""
    X, y = X.double(), torch.as_tensor(y).double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), float(b.detach())


def boundary_direction(
    h: Mapping[int, torch.Tensor], labels: torch.Tensor, t_m: int, *, l2: float = 1e-3, val_fraction: float = 0.25
) -> Direction:
    """The normal of a linear boundary between images with and without the attribute in h-space at step ``t_m``
    (logistic regression, BoundaryDiffusion's linear SVM in spirit), as one global delta_h.

    h is centred and divided by one global scale before the fit (the normal stays a direction of h-space). The last
    ``val_fraction`` of the images are held out of the fit to report its accuracy. delta_h = n * (separation of the
    class means along the unit normal n): strength 1 moves an image by the class separation. Unlike
    BoundaryDiffusion, which sets the coordinate along n once at t_m, the shift is added at every edited step.
    """
    if t_m not in h:
        raise ValueError(f"boundary: no h recorded at t_m={t_m} (recorded: {sorted(h)})")
    labels = torch.as_tensor(labels).bool()
    X = _flat(h[t_m])
    _split_labels(X, labels, "boundary")
    n_fit = max(int(round(X.shape[0] * (1 - val_fraction))), 2)
    mu, scale = X[:n_fit].mean(0), X[:n_fit].std().clamp_min(1e-12)
    Z = (X - mu) / scale
    _split_labels(Z[:n_fit], labels[:n_fit], "boundary (fit part)")
    w, b = fit_logistic(Z[:n_fit], labels[:n_fit], l2=l2)
    acc = lambda s: float((((Z[s] @ w + b) > 0) == labels[s]).double().mean()) if Z[s].shape[0] else float("nan")  # noqa: E731
    n = w / w.norm().clamp_min(1e-300)
    proj = X @ n
    sep = float(proj[labels].mean() - proj[~labels].mean())
    shape = tuple(h[t_m].shape[1:])
    return Direction(
        (n * sep).float().reshape(shape),
        None,
        "boundary",
        0,
        {
            "t_m": int(t_m),
            "fit_accuracy": acc(slice(0, n_fit)),
            "val_accuracy": acc(slice(n_fit, None)),
            "n_fit": n_fit,
            "n_val": int(X.shape[0] - n_fit),
            "separation": sep,
            "l2": l2,
        },
    )
