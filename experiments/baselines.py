"""Asyrp against the editing spaces the paper argues against, at matched delta norms (paper Sec. 3, Theorem 1).

    python experiments/baselines.py --train                      # synthfaces: oracle success / preservation
    python experiments/baselines.py --quick --train
    python experiments/baselines.py --arch tiny_ddpm --smoke     # any backbone (random h-function without --train)

Rows (every method starts from the same inverted x_T and uses the same noise seeds):
- reconstruction: no edit (what preservation can reach at most with this DDPM);
- asyrp: the trained h-function f, delta_h = f(h, t) in P_t only;
- symmetric: the SAME delta_h in both P_t and D_t (identical norm; Theorem 1 says the shifts largely cancel);
- eps_shift / x_shift: a per-timestep direction in eps space (P_t only) / on x_t itself (conf/hfunction/eps_shift,
  x_shift), trained through asyrp.tasks.train like the h-function (same objective, training images and walk; Adam,
  --baseline-lr), then rescaled at every t so that its per-step effect on x_{t-1} has the size of Asyrp's:
  ||d_eps_t|| = mean ||eps_edit - eps|| of Asyrp at t, ||d_x_t|| = sqrt(1 - a_t) times that; "as trained" rows keep
  the norms the training reached.
Writes baselines.md / .csv, baselines.png (bars) and baselines_grid.png.
"""

from __future__ import annotations

from asyrp import experiment as C
from asyrp.hfunctions import load_hfunction_checkpoint
from asyrp.schedules import timesteps
from asyrp.synthfaces.oracle import find_oracle

COLUMNS = [
    "method",
    "space",
    "norm_matched_to",
    "mean_delta_norm",
    "success",
    "preserved",
    "clip_dir",
    "clip_text",
    "psnr",
    "ssim",
    "validity",
]


def main(argv=None) -> int:
    ap = C.base_parser("baselines", __doc__)
    ap.add_argument("--baseline-lr", type=float, default=0.05, help="Adam lr of the eps/x directions")
    ap.add_argument(
        "--baseline-n-train",
        type=int,
        default=None,
        help="training images of the eps/x directions (default: the run size's, at most 16)",
    )
    ap.add_argument(
        "--baseline-epochs",
        type=int,
        default=None,
        help="epochs of the eps/x directions (default: the run size's, at most 2)",
    )
    args = ap.parse_args(argv)
    w = C.setup(args, find_oracle)
    attr = w.resolve_attribute(args.attribute)
    f, prov = w.hfunction(attr)
    x0 = w.x
    x_T = w.invert(x0)

    norms = C.step_norms(w, x_T, f)
    mean = lambda key: sum(v[key] for v in norms.values()) / max(len(norms), 1)  # noqa: E731

    # the eps / x directions: trained on the training images of the h-function (the backbone's samples without a folder)
    n_train = args.baseline_n_train or min(w.size["n_train"], 16)
    epochs = args.baseline_epochs or min(w.size["epochs"], 2)
    g_eps, g_x = (_direction(w, attr, mode, args.baseline_lr, n_train, epochs) for mode in ("eps_shift", "x_shift"))
    trained_norm = {n: float(g.delta_h.flatten(1).norm(dim=1).mean()) for n, g in (("eps", g_eps), ("x", g_x))}

    rows, grid = [], [x0]
    rec = w.edit(x_T, None).x_edit
    rows.append(
        {
            "method": "reconstruction",
            "space": "-",
            "norm_matched_to": "-",
            "mean_delta_norm": 0.0,
            **w.score(x0, rec, attr),
        }
    )
    grid.append(rec)
    for method, mode, fn, space, matched, norm in [
        ("asyrp", "asyrp", f, "h (P_t only)", "-", mean("h")),
        ("symmetric", "symmetric", f, "h (P_t and D_t)", "same delta_h", mean("h")),
        ("eps_shift (as trained)", "eps_shift", g_eps, "eps (P_t only)", "-", trained_norm["eps"]),
        ("x_shift (as trained)", "x_shift", g_x, "x_t", "-", trained_norm["x"]),
    ]:
        xe = w.edit(x_T, fn, mode=mode).x_edit
        rows.append(
            {
                "method": method,
                "space": space,
                "norm_matched_to": matched,
                "mean_delta_norm": norm,
                **w.score(x0, xe, attr),
            }
        )
        if "trained" not in method:
            grid.append(xe)
    C.rescale_direction(g_eps, {t: v["eps"] for t, v in norms.items()})
    C.rescale_direction(g_x, {t: v["x_shift"] for t, v in norms.items()})
    for method, mode, fn, space, matched, norm in [
        ("eps_shift (matched)", "eps_shift", g_eps, "eps (P_t only)", "asyrp eps_edit - eps (norm)", mean("eps")),
        ("x_shift (matched)", "x_shift", g_x, "x_t", "asyrp's x_{t-1} move", mean("x_shift")),
    ]:
        xe = w.edit(x_T, fn, mode=mode).x_edit
        rows.append(
            {
                "method": method,
                "space": space,
                "norm_matched_to": matched,
                "mean_delta_norm": norm,
                **w.score(x0, xe, attr),
            }
        )
        grid.append(xe)

    notes = [
        f"h-function: {attr} ({prov}); attribute score columns: success/preserved from the oracle "
        f"(n/a without one), clip_dir = cos(E(edit) - E(src), text direction), psnr/ssim to the source",
        f"Asyrp per-step norms (mean over editing steps): delta_h {mean('h'):.4g}, eps_edit - eps "
        f"{mean('eps'):.4g}, x_(t-1) move {mean('x'):.4g}",
        f"eps/x directions: Adam lr {args.baseline_lr}, {n_train} training images, {epochs} epoch(s)",
        "grid columns: source, reconstruction, asyrp, symmetric, eps_shift (matched), x_shift (matched)",
    ]
    C.write_table(w, "baselines", rows, COLUMNS, title=f"Asyrp vs. other editing spaces: {attr}", notes=notes)
    C.save_grid(
        w.out / "baselines_grid.png",
        grid,
        ["source", "reconstruction", "asyrp", "symmetric", "eps_shift (matched)", "x_shift (matched)"],
        title=f"Asyrp vs. other editing spaces: {attr}",
    )
    _plot(w, rows)
    return 0


def _direction(w, attr: str, mode: str, lr: float, n_train: int, epochs: int):
    """A per-timestep direction (conf/hfunction/<mode>) trained through asyrp.tasks.train in ``mode``: one table entry
    per editing step t >= t_edit of the world's walk, starting from 0, Adam at ``lr`` without a schedule."""
    edit_ts = [t for t in timesteps(w.n_steps, w.t0) if t >= w.t_edit]
    extra = [
        f"plan.mode={mode}",
        "model.optimizer._target_=torch.optim.Adam",
        f"model.optimizer.lr={lr}",
        "model.scheduler=null",
        f"hfunction.timesteps=[{','.join(map(str, edit_ts))}]",
    ]
    path = C.train_hfunction(w, attr, mode, n_train=n_train, epochs=epochs, extra=extra)
    g, _ = load_hfunction_checkpoint(path, w.backbone, w.arch_cfg.get("name"))
    return g.eval().requires_grad_(False)


def _plot(w, rows):
    plt = C.plt()
    keys = [k for k in ("success", "preserved", "clip_dir", "ssim") if any(r[k] == r[k] for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6))
    axes = [axes] if len(keys) == 1 else axes
    names = [r["method"].replace(" (", "\n(") for r in rows]
    for ax, k in zip(axes, keys):
        ax.bar(range(len(rows)), [r[k] for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), names, rotation=90, fontsize=7)
        ax.set_title(k)
    fig.tight_layout()
    fig.savefig(w.out / "baselines.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
