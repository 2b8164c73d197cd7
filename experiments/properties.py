"""The h-space properties the paper claims (Sec. 5), as numbers: homogeneity, linearity, compositionality,
robustness, consistency across timesteps.

    python experiments/properties.py --train                        # synthfaces (oracle scores)
    python experiments/properties.py --quick --train
    python experiments/properties.py --arch tiny_ddpm --smoke       # any backbone
    python experiments/properties.py --only linearity,consistency

Attribute score s(x): the oracle's logit margin of the target class (synthfaces), else CLIP
cos(E(x), target text) - cos(E(x), source text). Every edit starts from the same inverted x_T with the same seeds;
"change" means s(edit) - s(reconstruction) of the same image.

- homogeneity: one h-function over many images: mean, std and coefficient of variation of the per-image change,
  the fraction of images whose score rises;
- linearity: s against the coefficient c in [-1, 2] (one batched edit): R^2 of a linear fit to the means and to
  all points, the slope;
- compositionality: f1 + f2 (a Composition) against each alone: change of each attribute under the sum vs under
  its own function, additivity ratio = change(f1+f2) / (change(f1) + change(f2)) per attribute score;
- robustness: a random delta_h with the norm of the trained one at every t against a random eps perturbation of
  the norm of Asyrp's eps change (both in P_t only): FID (oracle or CLIP features) against the source images,
  oracle validity (mean minimum head confidence), PSNR to the reconstruction;
- consistency: delta_h_t along the edit, cosine similarity across timesteps (matrix plot) and across images.
Writes properties.md / .csv (one table per property, sections in the .md), and PNG plots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from asyrp import experiment as C
from asyrp.synthfaces.oracle import find_oracle

PROPERTIES = ("homogeneity", "linearity", "compositionality", "robustness", "consistency")
COLUMNS = ["property", "quantity", "value", "detail"]


class RandomShift(torch.nn.Module):
    """delta = a fresh N(0, I) draw per row, rescaled to the norm listed for the nearest timestep."""

    def __init__(self, norms: dict[int, float], seed: int = 0):
        super().__init__()
        self.ts = sorted(norms)
        self.norms = norms
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, h, emb=None, t=None):
        tt = float(torch.as_tensor(t).reshape(-1)[0]) if t is not None else self.ts[-1]
        m = self.norms[min(self.ts, key=lambda s: abs(s - tt))]
        z = torch.randn(h.shape, generator=self.gen).to(h)
        return z * (m / z.flatten(1).norm(dim=1).clamp(min=1e-12)).view(-1, *[1] * (h.dim() - 1))


def r2(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(R^2, slope) of the least-squares line y ~ x."""
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    A = torch.stack([x, torch.ones_like(x)], 1)
    coef = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    res = y - A @ coef
    ss_tot = ((y - y.mean()) ** 2).sum()
    return float(1 - (res**2).sum() / ss_tot) if ss_tot > 0 else math.nan, float(coef[0])


def main(argv=None) -> int:
    ap = C.base_parser("properties", __doc__)
    ap.add_argument("--attribute2", default="synthfaces_glasses", help="second attribute for compositionality")
    ap.add_argument("--only", default=",".join(PROPERTIES), help=f"comma list of {PROPERTIES}")
    args = ap.parse_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = set(only) - set(PROPERTIES)
    if bad:
        raise SystemExit(f"--only: unknown {sorted(bad)}")
    w = C.setup(args, find_oracle)
    attr = w.resolve_attribute(args.attribute)
    f, prov = w.hfunction(attr)
    x0 = w.x
    N = x0.shape[0]
    x_T = w.invert(x0)
    rows, notes = [], [f"h-function {attr}: {prov}", f"attribute score: {w.score_name(attr)}"]
    plt = C.plt()

    coeffs = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0] if w.run_size == "full" else [-1.0, 0.0, 1.0, 2.0]
    need_lin = any(p in only for p in ("homogeneity", "linearity", "robustness"))
    if need_lin:
        xs = w.edit(x_T, f, strength=coeffs).x_edit  # (K, N, C, H, W)
        rec, edit1 = xs[coeffs.index(0.0)], xs[coeffs.index(1.0)]
        s = torch.stack([w.attribute_score(xk, attr) for xk in xs])  # (K, N)
        s0 = s[coeffs.index(0.0)]

    if "homogeneity" in only:
        d = s[coeffs.index(1.0)] - s0
        mean, std = float(d.mean()), float(d.std(unbiased=True)) if N > 1 else math.nan
        sc = w.score(x0, edit1, attr)
        rows += [
            {"property": "homogeneity", "quantity": "mean change of s (strength 1)", "value": mean, "detail": f"N={N}"},
            {"property": "homogeneity", "quantity": "std of the change", "value": std, "detail": ""},
            {
                "property": "homogeneity",
                "quantity": "coefficient of variation std / abs(mean)",
                "value": std / abs(mean) if mean else math.nan,
                "detail": "small = the same edit for every image",
            },
            {
                "property": "homogeneity",
                "quantity": "fraction of images whose s rises",
                "value": float((d > 0).double().mean()),
                "detail": "",
            },
        ]
        if w.oracle is not None:
            rows.append(
                {
                    "property": "homogeneity",
                    "quantity": "oracle success (strength 1)",
                    "value": sc["success"],
                    "detail": f"preserved {C.fmt(sc['preserved'])}",
                }
            )
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.hist(d.cpu().numpy(), bins=min(20, max(N // 2, 3)), color="tab:blue")
        ax.axvline(mean, color="k", ls="--")
        ax.set_xlabel("change of attribute score, strength 1")
        ax.set_ylabel("images")
        ax.set_title(f"homogeneity: {attr}")
        fig.tight_layout()
        fig.savefig(w.out / "homogeneity.png", dpi=110)
        plt.close(fig)

    if "linearity" in only:
        c = torch.tensor(coeffs, dtype=torch.float64)
        means = s.mean(1)
        r2_means, slope = r2(c, means)
        r2_all, _ = r2(c[:, None].expand_as(s), s)
        # linear in c on the positive side only (0..2): the paper shows 0..1 interpolation and extrapolation
        pos = c >= 0
        r2_pos, _ = r2(c[pos], means[pos])
        rows += [
            {
                "property": "linearity",
                "quantity": f"R^2 of a line through the mean scores, c in {coeffs}",
                "value": r2_means,
                "detail": f"slope {slope:.4g}",
            },
            {"property": "linearity", "quantity": "R^2 over all (image, c) points", "value": r2_all, "detail": ""},
            {"property": "linearity", "quantity": "R^2 of the means for c >= 0", "value": r2_pos, "detail": ""},
        ] + [
            {
                "property": "linearity",
                "quantity": f"mean s at c = {ck:g}",
                "value": float(means[i]),
                "detail": f"std {float(s[i].std()) if N > 1 else math.nan:.3g}",
            }
            for i, ck in enumerate(coeffs)
        ]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.errorbar(
            coeffs,
            means.cpu().numpy(),
            yerr=(s.std(1) if N > 1 else torch.zeros(len(coeffs))).cpu().numpy(),
            marker="o",
            capsize=3,
        )
        line = torch.linalg.lstsq(torch.stack([c, torch.ones_like(c)], 1), means[:, None]).solution[:, 0]
        ax.plot(coeffs, (c * line[0] + line[1]).numpy(), "k--", lw=1, label=f"linear fit, R^2 = {r2_means:.3f}")
        ax.set_xlabel("coefficient c (delta_h = c f(h, t))")
        ax.set_ylabel(w.score_name(attr))
        ax.legend(fontsize=8)
        ax.set_title(f"linearity: {attr}")
        fig.tight_layout()
        fig.savefig(w.out / "linearity.png", dpi=110)
        plt.close(fig)
        C.save_grid(
            w.out / "linearity_grid.png",
            [x0, *xs],
            ["source", *[f"{attr} x{ck:g}" for ck in coeffs]],
            title=f"linearity: {attr} at coefficients {coeffs}",
        )

    if "compositionality" in only:
        from asyrp.hfunctions import Composition

        attr2 = w.resolve_attribute(args.attribute2)
        f2, prov2 = w.hfunction(attr2)
        notes.append(f"second h-function {attr2}: {prov2}")
        comp = Composition([f, f2])
        settings = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
        xc = w.edit(x_T, comp, strength=settings).x_edit
        for a_ in (attr, attr2):
            sc = torch.stack([w.attribute_score(xk, a_) for xk in xc])  # (4, N)
            d1, d2, d12 = (float((sc[i] - sc[0]).mean()) for i in (1, 2, 3))
            ratio = d12 / (d1 + d2) if abs(d1 + d2) > 1e-9 else math.nan
            own = d1 if a_ == attr else d2
            rows += [
                {
                    "property": "compositionality",
                    "quantity": f"{a_}: change under f1 / f2 / f1+f2",
                    "value": ratio,
                    "detail": f"{d1:.3g} / {d2:.3g} / {d12:.3g} (value = additivity ratio)",
                },
                {
                    "property": "compositionality",
                    "quantity": f"{a_}: change under f1+f2 relative to its own f",
                    "value": d12 / own if abs(own) > 1e-9 else math.nan,
                    "detail": "",
                },
            ]
            if w.oracle is not None and w.attribute(a_)["oracle_target"]:
                succ = [w.score(x0, xk, a_)["success"] for xk in xc]
                rows.append(
                    {
                        "property": "compositionality",
                        "quantity": f"{a_}: oracle success none/f1/f2/f1+f2",
                        "value": succ[3],
                        "detail": " / ".join(f"{v:.3g}" for v in succ),
                    }
                )
        C.save_grid(
            w.out / "compositionality_grid.png",
            [x0, *xc],
            ["source", "reconstruction", f"{attr} x1", f"{attr2} x1", f"{attr} x1 + {attr2} x1"],
            title=f"compositionality: {attr} and {attr2}",
        )

    if "robustness" in only:
        norms = C.step_norms(w, x_T, f)
        rand_h = RandomShift({t: v["h"] for t, v in norms.items()}, seed=args.seed + 11)
        rand_eps = RandomShift({t: v["eps"] for t, v in norms.items()}, seed=args.seed + 12)
        x_rh = w.edit(x_T, rand_h, mode="asyrp").x_edit
        x_re = w.edit(x_T, rand_eps, mode="eps_shift").x_edit
        out = {}
        for name, xe in (
            ("reconstruction", rec),
            ("trained delta_h", edit1),
            ("random delta_h", x_rh),
            ("random eps", x_re),
        ):
            sc = w.score(x0, xe, attr, fid_real=x0)
            sc["psnr_to_rec"] = float(10 * torch.log10(4 / ((xe - rec) ** 2).mean().clamp(min=1e-12)))
            out[name] = sc
            rows.append(
                {
                    "property": "robustness",
                    "quantity": f"{name}: FID to sources",
                    "value": sc["fid"],
                    "detail": f"validity {C.fmt(sc['validity'])}, PSNR to reconstruction {C.fmt(sc['psnr_to_rec'])} dB, "
                    f"preserved {C.fmt(sc['preserved'])}",
                }
            )
        feats = "oracle" if w.oracle is not None else "CLIP"
        notes.append(
            f"robustness: FID with {feats} penultimate features against the {N} source images "
            f"(small-sample FID, biased upwards; compare rows, not to published FIDs); random shifts matched "
            f"per t to mean norms: delta_h {sum(v['h'] for v in norms.values()) / len(norms):.4g}, "
            f"eps {sum(v['eps'] for v in norms.values()) / len(norms):.4g}"
        )
        C.save_grid(
            w.out / "robustness_grid.png",
            [x0, rec, edit1, x_rh, x_re],
            ["source", "reconstruction", f"{attr} x1 (trained delta_h)", "random delta_h", "random eps"],
            title=f"robustness: {attr} edit vs random shifts of the same norm",
        )

    if "consistency" in only:
        from asyrp.samplers import edit_eps

        res = w.edit(x_T, f, trajectory=True, batch_size=N)
        ts, dh = [], []
        for t, x_t, _ in res.trajectory:
            ee = edit_eps(w.backbone, x_t, t, f)
            ts.append(int(t))
            dh.append(F.normalize(ee.delta_h.flatten(1).double(), dim=1))  # (N, D)
        D = torch.stack(dh)  # (T, N, D)
        M = torch.einsum("tnd,snd->ts", D, D) / N  # mean over images of cos(delta_h_t, delta_h_s)
        T = len(ts)
        ed = [i for i, t in enumerate(ts) if t >= w.t_edit]

        def off(idx):  # mean off-diagonal cosine among the timesteps idx
            return float(M[idx][:, idx][~torch.eye(len(idx), dtype=torch.bool)].mean()) if len(idx) > 1 else math.nan

        cross = torch.einsum("tnd,tmd->tnm", D, D)
        cross_img = float(cross[:, ~torch.eye(N, dtype=torch.bool)].mean()) if N > 1 else math.nan
        adjacent = float(torch.stack([M[i, i + 1] for i in range(T - 1)]).mean()) if T > 1 else math.nan
        rows += [
            {
                "property": "consistency",
                "quantity": "mean cos(delta_h_t, delta_h_t') over t != t' in the editing interval",
                "value": off(ed),
                "detail": f"{len(ed)} steps t >= {w.t_edit}",
            },
            {
                "property": "consistency",
                "quantity": "mean cos over all t != t'",
                "value": off(list(range(T))),
                "detail": f"{T} steps",
            },
            {"property": "consistency", "quantity": "mean cos of adjacent steps", "value": adjacent, "detail": ""},
            {
                "property": "consistency",
                "quantity": "mean cos across images at the same t",
                "value": cross_img,
                "detail": "delta_h of different images",
            },
        ]
        fig, ax = plt.subplots(figsize=(5, 4.2))
        im = ax.imshow(M.numpy(), vmin=-1, vmax=1, cmap="RdBu_r", origin="lower")
        ticks = list(range(0, T, max(T // 6, 1)))
        ax.set_xticks(ticks, [ts[i] for i in ticks])
        ax.set_yticks(ticks, [ts[i] for i in ticks])
        ax.set_xlabel("t")
        ax.set_ylabel("t")
        ax.set_title(f"cos(delta_h_t, delta_h_t'), mean over {N} images")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(w.out / "consistency.png", dpi=110)
        plt.close(fig)

    C.write_table(w, "properties", rows, COLUMNS, title=f"h-space properties: {attr}", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
