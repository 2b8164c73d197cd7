"""The h-only ceiling: how far can a change of h alone go on the shipped synthfaces DDPM, per attribute and window?

    python experiments/ceiling.py --out outputs/ceiling --threads 1

synthfaces draws the same face with and without an attribute, so the true edit is known. For each attribute, faces of
the test split that lack it (dataset seed 2, in the order ``python -m asyrp.synthfaces.data --exclude`` writes them)
are rendered once as they are (the source) and once with the attribute switched on (the true edit). Per window
[t0, t_lo] the source is inverted to t0 (DDIM, ``--steps`` steps over [t0, 0], as the recipes invert to their
interval's top); the Asyrp walk edits every step with t >= t_lo (only P_t sees h + delta_h) and plain DDIM runs below.

The fitted quantity is delta_h, by Adam, through the edited walk:
- ``per_face``: a free delta_h per face and per editing step (the most an h-only method could do there);
- ``f_ht``: the project's DeltaBlock f(h, t) (zero-initialised), trained on faces of the train split (dataset seed 1)
  and judged on the held-out test faces, in each attribute's best per-face window.
The loss is the distance at the window's end to the true edit inverted along the same DDIM grid (x*_{t_end}):
|| x_{t_end} - x*_{t_end} ||^2 / alpha_bar(t_end), mean per pixel (``--lookahead 0``, the default). The walk below
the window is the fixed plain DDIM walk, so reaching x*_{t_end} gives exactly the true edit's own reconstruction (row
``target_rec``), and the gradient only passes through the window's steps (a final-image loss would back-propagate
through every step to t = 0). ``--lookahead K`` instead compares the images of a K-step plain walk from x_{t_end}
and from x*_{t_end} (in a 4-face pilot on glasses it fitted worse: 22.9 dB to the true render against 31.3 dB).
Reference rows: ``true_render`` (the oracle on the true edit itself), ``floor`` (the unedited reconstruction from
t0) and ``target_rec`` (the plain walk from x*_{t_end}: what a perfect fit yields).
The oracle judges every row through asyrp.metrics.EditScorer (its ``oracle`` metric: success, preserved, kept rate
per other head); ``psnr_true`` is its ``psnr`` to the true render. These rows use the true edit: they never count
toward any target.

Resumable: each (attribute, window, mode) row is appended to <out>/rows.jsonl as it finishes and skipped on a rerun;
progress goes to <out>/ceiling.log; <out>/ceiling.csv is rewritten after every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import torch

from asyrp import build
from asyrp.config import compose
from asyrp.ddim import ddim_generate, ddim_invert, ddim_walk
from asyrp.hfunctions import HFunction
from asyrp.metrics import EditScorer
from asyrp.ops.progress import logging_to
from asyrp.plan import EditPlan, generation_pairs
from asyrp.samplers import edit, edit_eps
from asyrp.schedules import alpha_at, timesteps
from asyrp.synthfaces.edits import ATTRIBUTES, face_pairs
from asyrp.synthfaces.oracle import load_oracle

log = logging.getLogger("ceiling")


class PerFaceShift(HFunction):
    """A free delta_h per face and per editing step: parameter (steps, faces, C, H, W), looked up by t."""

    def __init__(self, ts: list[int], n_faces: int, h_shape: tuple[int, ...]):
        super().__init__()
        self.slot = {int(t): i for i, t in enumerate(ts)}
        self.delta_h = torch.nn.Parameter(torch.zeros(len(ts), n_faces, *h_shape))

    def forward(self, h, emb=None, t=None):
        k = round(float(torch.as_tensor(t).reshape(-1)[0]))
        if k not in self.slot or h.shape[0] != self.delta_h.shape[1]:
            raise ValueError(f"PerFaceShift: no entry for t={k} and {h.shape[0]} faces")
        return self.delta_h[self.slot[k]].to(h.dtype)


def row_key(attr: str, win, n_faces: int) -> dict:
    """What identifies a row of the table: the attribute, the window and the faces it was measured on."""
    return {
        "attribute": attr,
        "window": win.name,
        "t0": win.t0,
        "t_lo": win.t_lo,
        "t_end": win.t_end,
        "edit_steps": len(win.edit_pairs),
        "n_faces": n_faces,
    }


class Window:
    """One window [t0, t_lo] as an EditPlan (``steps`` DDIM steps over [t0, 0], the h-function on t >= t_lo, no
    boosting): its editing steps, where they end, and the walks around them."""

    def __init__(self, backbone, a: torch.Tensor, t0: int, t_lo: int, steps: int, lookahead: int = 0):
        self.backbone, self.a, self.t0, self.t_lo, self.steps = backbone, a, t0, t_lo, steps
        self.lookahead = lookahead
        self.plan = EditPlan(n_inv=steps, n_gen=steps, t0=t0, t_edit=t_lo, t_boost=0)
        self.seq = self.plan.seq_gen
        self.edit_pairs = [(t, tn) for _, t, tn in self.plan.edit_steps()]
        self.t_end = self.edit_pairs[-1][1]
        self.coarse = timesteps(lookahead + 1, self.t_end)  # the loss's short DDIM walk from t_end to 0

    @property
    def name(self) -> str:
        return f"[{self.t0}, {self.t_lo}]"

    def invert(self, x0: torch.Tensor, to_end: bool = False) -> torch.Tensor:
        """x0 inverted to t0, or (to_end) only up to the window's end along the same grid."""
        seq = self.seq[: self.seq.index(self.t_end) + 1] if to_end else self.seq
        return ddim_invert(self.backbone, x0, seq, self.a)

    def walk(self, x_T: torch.Tensor, fn) -> torch.Tensor:
        """The edited walk through the window (Asyrp steps: only P_t sees h + delta_h; differentiable w.r.t. fn):
        x at the window's end."""

        def predict(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            ee = edit_eps(self.backbone, x, t, fn, mode=self.plan.mode)
            return x, ee.eps_edit, ee.eps

        return ddim_walk(self.backbone, x_T, self.edit_pairs, self.a, predict=predict)

    def look(self, x_end: torch.Tensor) -> torch.Tensor:
        """x_end / sqrt(alpha_bar) (lookahead 0), or the image a short plain DDIM walk of ``lookahead`` steps makes
        from the window's end (differentiable)."""
        if self.lookahead == 0:
            return x_end / float(alpha_at(self.a, self.t_end)) ** 0.5
        return ddim_walk(self.backbone, x_end, generation_pairs(self.coarse), self.a)

    def loss(self, x_end: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-face mean squared distance of look(x_end) to ``target`` = look(x*_end)."""
        return (self.look(x_end) - target).pow(2).flatten(1).mean(1)

    @torch.no_grad()
    def final(self, x_T: torch.Tensor, fn) -> torch.Tensor:
        """The image the project's edit path makes: asyrp.samplers.edit with fn on the window, DDIM below."""
        seeds = list(range(x_T.shape[0]))
        return edit(self.backbone, None, fn, a=self.a, plan=self.plan, x_T=x_T, seeds=seeds).x_edit

    @torch.no_grad()
    def below(self, x_end: torch.Tensor) -> torch.Tensor:
        """The plain DDIM walk from the window's end to x0 (the walk outside the window)."""
        return ddim_generate(self.backbone, x_end, self.seq[: self.seq.index(self.t_end) + 1], self.a)


def converged(curve: list[float], tail: float = 0.2, tol: float = 0.02) -> tuple[bool, float]:
    """(flat?, relative drop over the last ``tail`` of the iterations): flat when it fell by less than ``tol``."""
    start = curve[min(int(len(curve) * (1 - tail)), len(curve) - 1)]
    drop = (start - curve[-1]) / max(curve[-1], 1e-12)
    return drop < tol, drop


def fit_per_face(win: Window, x_T: torch.Tensor, target: torch.Tensor, iters: int, lr: float):
    """A free delta_h per face and step, Adam through the window's walk (faces are independent: summed loss)."""
    fn = PerFaceShift([t for t, _ in win.edit_pairs], x_T.shape[0], win.backbone.h_shape)
    opt = torch.optim.Adam(fn.parameters(), lr=lr)
    curve = []
    for it in range(iters):
        per_face = win.loss(win.walk(x_T, fn), target)
        opt.zero_grad(set_to_none=True)
        per_face.sum().backward()
        opt.step()
        curve.append(float(per_face.detach().mean()))
        if it % 10 == 0 or it == iters - 1:
            log.info("  per_face %s iter %d loss %.5f", win.name, it, curve[-1])
    return fn.eval().requires_grad_(False), curve


def fit_f(win: Window, x_T: torch.Tensor, target: torch.Tensor, epochs: int, lr: float, batch: int):
    """The DeltaBlock f(h, t) (zero-initialised, as in conf/hfunction/delta_block.yaml otherwise) trained on the
    train faces with the same loss; the curve is the mean loss of each epoch."""
    fn = build.hfunction({"kind": "delta_block", "zero_init": True, "num_groups": 8, "seed": 0}, win.backbone)
    opt = torch.optim.Adam(fn.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    curve = []
    for ep in range(epochs):
        order, total = torch.randperm(x_T.shape[0], generator=g), 0.0
        for lo in range(0, x_T.shape[0], batch):
            idx = order[lo : lo + batch]
            per_face = win.loss(win.walk(x_T[idx], fn), target[idx])
            opt.zero_grad(set_to_none=True)
            per_face.mean().backward()
            opt.step()
            total += float(per_face.detach().sum())
        curve.append(total / x_T.shape[0])
        log.info("  f_ht %s epoch %d loss %.5f", win.name, ep, curve[-1])
    return fn.eval().requires_grad_(False), curve


def score(oracle, target: str, x_src: torch.Tensor, x_out: torch.Tensor, x_true: torch.Tensor) -> dict:
    """The oracle's verdict (EditScorer's ``oracle`` metric) and the PSNR to the true render (``psnr_true``)."""
    scorer, x_out = EditScorer(oracle=oracle, oracle_target=target), x_out.clamp(-1, 1)
    out = {k: round(v, 4) for k, v in scorer.score(x_src, x_out, ["oracle"]).items() if k != "already_target"}
    return {**out, "psnr_true": round(scorer.score(x_true, x_out, ["psnr"])["psnr"], 2)}


class Rows:
    """rows.jsonl (appended, one row per finished (attribute, window, mode)) and ceiling.csv (rewritten)."""

    def __init__(self, out: Path):
        self.path, self.csv = out / "rows.jsonl", out / "ceiling.csv"
        self.rows = [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.is_file() else []

    def done(self, attr: str, window: str, mode: str) -> dict | None:
        return next((r for r in self.rows if (r["attribute"], r["window"], r["mode"]) == (attr, window, mode)), None)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        cols = [k for k in dict.fromkeys(k for r in self.rows for k in r) if k != "curve"]
        with open(self.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in cols} for r in self.rows)
        kept = " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in row.items() if k.startswith("preserved/"))
        log.info(
            "ROW %s %s %s: success %.2f preserved %.2f psnr_true %.1f loss %s conv %s | %s",
            row["attribute"],
            row["window"],
            row["mode"],
            row["success"],
            row["preserved"],
            row["psnr_true"],
            row.get("final_loss", "-"),
            row.get("converged", "-"),
            kept,
        )


def margin(row: dict) -> tuple[float, float]:
    """The sweeps' objective min(success - 0.80, preserved - 0.90), ties broken by success."""
    return min(row["success"] - 0.80, row["preserved"] - 0.90), row["success"]


def fitted_row(base: dict, fn_score: dict, curve: list[float], seconds: float, **extra) -> dict:
    flat, drop = converged(curve)
    return {
        **base,
        **fn_score,
        "final_loss": round(curve[-1], 6),
        "first_loss": round(curve[0], 6),
        "tail_drop": round(drop, 4),
        "converged": flat,
        "cpu_seconds": round(seconds, 1),
        **extra,
        "curve": [round(c, 6) for c in curve],
    }


def per_face_rows(a, ctx: dict, rows: Rows, attr: str, win: Window) -> None:
    """floor, target_rec and per_face rows of one attribute and window (those not yet in rows.jsonl)."""
    src, true = ctx["test"][attr]
    todo = [m for m in ("floor", "target_rec", "per_face") if not rows.done(attr, win.name, m)]
    if not todo:
        return
    base = {
        **row_key(attr, win, src.shape[0]),
    }
    x_T, x_end = win.invert(src), win.invert(true, to_end=True)
    with torch.no_grad():
        target = win.look(x_end)

    def judge(x):
        return score(ctx["oracle"], ctx["target"][attr], src, x, true)

    if "floor" in todo:
        rec = win.final(x_T, None)
        with torch.no_grad():
            loss0 = float(win.loss(win.walk(x_T, None), target).mean())
        rows.add({**base, "mode": "floor", **judge(rec), "final_loss": round(loss0, 6)})
    if "target_rec" in todo:
        rows.add({**base, "mode": "target_rec", **judge(win.below(x_end))})
    if "per_face" in todo:
        t = time.process_time()
        fn, curve = fit_per_face(win, x_T, target, a.iters, a.lr)
        rows.add(
            fitted_row(
                {**base, "mode": "per_face", "iters": a.iters, "lr": a.lr},
                judge(win.final(x_T, fn)),
                curve,
                time.process_time() - t,
            )
        )


def f_row(a, ctx: dict, rows: Rows, attr: str, win: Window) -> None:
    """The f(h, t) row: trained on the train split, judged on the test faces of the per-face rows."""
    src, true = ctx["test"][attr]
    tr_src, tr_true = face_pairs(attr, "train", a.n_train)
    base = {
        **row_key(attr, win, src.shape[0]),
        "mode": "f_ht",
        "n_train": a.n_train,
        "epochs": a.epochs,
        "lr": a.f_lr,
        "batch": a.batch,
    }
    t = time.process_time()
    with torch.no_grad():
        tr_target = win.look(win.invert(tr_true, to_end=True))
    fn, curve = fit_f(win, win.invert(tr_src), tr_target, a.epochs, a.f_lr, a.batch)
    x_T = win.invert(src)
    with torch.no_grad():
        target = win.look(win.invert(true, to_end=True))
        held_out = float(win.loss(win.walk(x_T, fn), target).mean())
    judged = score(ctx["oracle"], ctx["target"][attr], src, win.final(x_T, fn), true)
    rows.add(fitted_row(base, judged, curve, time.process_time() - t, held_out_loss=round(held_out, 6)))


def table(rows: list[dict]) -> str:
    """The markdown table of docs/results.md ("The h-only ceiling") from rows.jsonl."""
    head = [
        "attribute",
        "window",
        "mode",
        "success",
        "preserved",
        "kept per other head",
        "dB to true render",
        "final loss (start)",
        "converged (drop in last 20%)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {"true_render": 0, "floor": 1, "target_rec": 2, "per_face": 3, "f_ht": 4}
    for r in sorted(rows, key=lambda r: (list(ATTRIBUTES).index(r["attribute"]), -r.get("t0", 1000), order[r["mode"]])):
        kept = ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in r.items() if k.startswith("preserved/") and v < 1)
        loss = f"{r['final_loss']:.3f}" if "final_loss" in r else "-"
        if "first_loss" in r:
            loss += f" ({r['first_loss']:.3f})"
        if "held_out_loss" in r:
            loss += f"; held-out {r['held_out_loss']:.3f}"
        conv = f"{'yes' if r['converged'] else 'no'} ({100 * r['tail_drop']:.1f}%)" if "converged" in r else "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["attribute"],
                    r["window"],
                    r["mode"],
                    f"{r['success']:.2f}",
                    f"{r['preserved']:.2f}",
                    kept or "all 1.00",
                    f"{r['psnr_true']:.1f}",
                    loss,
                    conv,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def parse_window(s: str) -> tuple[int, int]:
    hi, lo = (int(v) for v in s.split(":"))
    if not 0 < lo < hi <= 999:
        raise SystemExit(f"--windows: {s!r} is not T0:T_LO with 0 < T_LO < T0 <= 999")
    return hi, lo


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=list(ATTRIBUTES))
    p.add_argument("--windows", nargs="+", default=["600:400", "400:250", "999:600"], help="T0:T_LO, in run order")
    p.add_argument("--n-faces", type=int, default=12, help="held-out test faces per attribute")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps over [t0, 0] (inversion and generation)")
    p.add_argument("--lookahead", type=int, default=0, help="steps of the loss's short walk from t_end to x0")
    p.add_argument("--iters", type=int, default=30, help="Adam iterations of a per-face fit")
    p.add_argument("--lr", type=float, default=1.0, help="Adam learning rate of the per-face delta_h")
    p.add_argument("--modes", nargs="+", default=["per_face", "f_ht"], choices=["per_face", "f_ht"])
    p.add_argument("--n-train", type=int, default=24, help="train-split faces for f(h, t)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--f-lr", type=float, default=1e-2)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/ceiling"))
    p.add_argument("--table", action="store_true", help="only print the markdown table of <out>/rows.jsonl")
    a = p.parse_args(argv)
    if a.table:
        print(table(Rows(a.out).rows))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    with logging_to(log, a.out / "ceiling.log"):
        run(a)


def run(a: argparse.Namespace) -> None:
    """Every row of the command line's attributes, windows and modes not yet in <out>/rows.jsonl."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = compose("train", ["experiment=synthfaces_smiling"])
    backbone = build.backbone(cfg.arch).requires_grad_(False)
    a_bar = build.alpha_bar(cfg.arch)
    targets = {
        k: build.attribute(compose("train", [f"experiment=synthfaces_{k}"]).attribute)["oracle_target"]
        for k in a.attributes
    }
    ctx = {
        "oracle": load_oracle(),
        "target": targets,
        "test": {k: face_pairs(k, "test", a.n_faces) for k in a.attributes},
    }
    rows = Rows(a.out)
    windows = [Window(backbone, a_bar, *parse_window(w), a.steps, a.lookahead) for w in a.windows]
    log.info("ceiling: %s, windows %s, %d faces, %d steps", a.attributes, [w.name for w in windows], a.n_faces, a.steps)
    for attr in a.attributes:
        if not rows.done(attr, "-", "true_render"):
            src, true = ctx["test"][attr]
            rows.add(
                {
                    "attribute": attr,
                    "window": "-",
                    "mode": "true_render",
                    "n_faces": src.shape[0],
                    **score(ctx["oracle"], targets[attr], src, true, true),
                }
            )
    if "per_face" in a.modes:
        for win in windows:
            for attr in a.attributes:
                per_face_rows(a, ctx, rows, attr, win)
    if "f_ht" in a.modes:
        for attr in a.attributes:
            fitted = [r for r in rows.rows if r["attribute"] == attr and r["mode"] == "per_face"]
            if not fitted:
                continue
            best = max(fitted, key=margin)
            if not rows.done(attr, best["window"], "f_ht"):
                f_row(a, ctx, rows, attr, Window(backbone, a_bar, best["t0"], best["t_lo"], a.steps, a.lookahead))
    log.info("ceiling: done")


if __name__ == "__main__":
    main()
