"""The experiment world: what the scripts in experiments/ share (a backbone config, CLIP, oracle, images and
h-functions, the eps- / x-space baselines among them, all trained through asyrp.tasks.train; editing; scoring;
markdown tables and plots).

Every script takes the same options (``base_parser``): ``--arch`` / ``--clip`` (conf/arch, conf/clip names, any
backbone), ``--attribute`` (conf/attribute names), ``--images`` (a folder, or ``random`` for smooth random images),
``--hfunction NAME=PATH`` (trained h-functions) or ``--train`` (train them through ``asyrp.tasks.train`` with a
composed ``train`` config), ``--quick`` / ``--smoke`` (smaller runs), ``--out``.

Without ``--hfunction`` and ``--train`` an h-function is a seeded *random* one: its rows are labelled
``untrained`` and measure nothing about the paper (for the tiny test configs only).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from .config import CONF_DIR
from .schedules import NUM_TRAIN_TIMESTEPS

ROOT = CONF_DIR.parent  # the checkout: conf/, data/, outputs/

log = logging.getLogger("experiments")

# run sizes: images edited, DDIM steps (n_inv = n_gen), training images, training epochs
SIZES = {
    "full": {"n_images": 32, "n_steps": 20, "n_train": 64, "epochs": 4},
    "quick": {"n_images": 8, "n_steps": 10, "n_train": 8, "epochs": 1},
    "smoke": {"n_images": 2, "n_steps": 4, "n_train": 2, "epochs": 1},
}


# -- command line ------------------------------------------------------------------------------------------------
def base_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="synthfaces", help="conf/arch/<name>.yaml (default synthfaces)")
    ap.add_argument("--checkpoint", default=None, help="override the arch's checkpoint (e.g. a frozen snapshot)")
    ap.add_argument("--clip", default=None, help="conf/clip/<name>.yaml (default: synthfaces for arch synthfaces, else tiny)")
    ap.add_argument("--attribute", default="synthfaces_smiling", help="conf/attribute/<name>.yaml")
    ap.add_argument("--images", default=None,
                    help="folder of test images, or 'random' (default: data/synthfaces/test for synthfaces, else random)")
    ap.add_argument("--train-images", default=None,
                    help="folder of training images for --train (default: data/synthfaces/train for synthfaces, "
                         "else the backbone's own random samples)")
    ap.add_argument("--n-images", type=int, default=None, help="images edited (default by run size)")
    ap.add_argument("--n-steps", type=int, default=None, help="DDIM steps n_inv = n_gen (default by run size)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for --train (default by run size)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs for --train (default by run size)")
    ap.add_argument("--t0", type=int, default=None,
                    help="invert to t0 and edit in [t0, t_edit] (default 999, the paper's [T, t_edit]); the "
                         "synthfaces recipes invert only to their interval's top (conf/experiment/synthfaces_*)")
    ap.add_argument("--t-edit", type=int, default=None, help="default: conf/plan/<--edit-interval> (its interval)")
    ap.add_argument("--t-boost", type=int, default=None)
    ap.add_argument("--edit-interval", default=None, help="conf/plan name (default: synthfaces / fixed)")
    ap.add_argument("--hfunction", action="append", default=[], metavar="NAME=PATH",
                    help="a trained h-function (our hfunction.pt or an official .pth); NAME = attribute config name "
                         "(e.g. synthfaces_smiling or smiling), with a :global suffix for the global variant")
    ap.add_argument("--train", action="store_true", help="train missing h-functions through asyrp.tasks.train")
    ap.add_argument("--train-override", action="append", default=[], help="extra Hydra override for --train")
    ap.add_argument("--retrain", action="store_true", help="train even if a cached hfunction.pt exists")
    ap.add_argument("--oracle", default="auto", help="auto (synthfaces oracle if built and the arch is synthfaces), "
                                                     "none, or a folder with oracle.safetensors")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small run (a few minutes on a CPU)")
    size.add_argument("--smoke", action="store_true", help="tiny run (seconds; for tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default outputs/experiments/{name})")
    ap.set_defaults(experiment=name)
    return ap


# -- the world ---------------------------------------------------------------------------------------------------
@dataclass
class World:
    args: argparse.Namespace
    arch_cfg: dict
    backbone: Any
    a: torch.Tensor
    clip: Any
    oracle: Any
    x: torch.Tensor                # test images in [-1, 1]
    image_source: str
    t_edit: int
    t_boost: int
    n_steps: int
    size: dict
    out: Path
    t0: int = NUM_TRAIN_TIMESTEPS - 1   # top of the walk: x_t0 is what inversion reaches and generation starts from
    hf_cache: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def run_size(self) -> str:
        return "smoke" if self.args.smoke else "quick" if self.args.quick else "full"

    # -- attributes ------------------------------------------------------------------------------------------
    def attribute(self, name: str) -> dict:
        from omegaconf import OmegaConf

        path = ROOT / "conf" / "attribute" / f"{resolve_attribute(name)}.yaml"
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        return {"name": cfg.get("name", path.stem), "config": path.stem, "source": list(cfg["source"]),
                "target": list(cfg["target"]), "oracle_target": cfg.get("oracle_target")}

    # -- h-functions -----------------------------------------------------------------------------------------
    def hfunction(self, attr: str, kind: str = "delta_block") -> tuple[torch.nn.Module, str]:
        """(h-function, provenance) for an attribute: --hfunction path, else --train, else a seeded random one."""
        key = (resolve_attribute(attr), kind)
        if key in self.hf_cache:
            return self.hf_cache[key]
        paths = parse_hfunction_args(self.args.hfunction)
        path = paths.get(key)
        if path is None and self.args.train:
            path = train_hfunction(self, key[0], kind)
        if path is not None:
            from .hfunctions.files import load_hfunction_checkpoint

            f, _ = load_hfunction_checkpoint(path, self.backbone, self.arch_cfg.get("name"))
            res = (f.eval().requires_grad_(False), f"trained:{_rel(path)}")
        else:
            from .hfunctions.build import build_hfunction

            import zlib

            cfg = {"kind": kind, "seed": zlib.crc32(key[0].encode()) % 10_000}  # distinct per attribute
            if kind == "delta_block":
                cfg["num_groups"] = 8
            elif kind == "global":
                cfg["init_std"] = 0.02
            f = build_hfunction(cfg, self.backbone)
            msg = f"{key[0]} ({kind}): no --hfunction and no --train: using an UNTRAINED random h-function"
            log.warning(msg)
            self.notes.append(msg)
            res = (f.eval().requires_grad_(False), "untrained")
        self.hf_cache[key] = res
        return res

    # -- editing ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def invert(self, x0: torch.Tensor) -> torch.Tensor:
        from .samplers import ddim_invert
        from .schedules import timesteps

        return ddim_invert(self.backbone, x0, timesteps(self.n_steps, self.t0), self.a)

    def seeds(self, n: int) -> list[int]:
        return [self.args.seed + i for i in range(n)]

    @torch.no_grad()
    def edit(self, x_T: torch.Tensor, hfunc, *, strength: Any = 1.0, mode: str = "asyrp", trajectory: bool = False,
             t_edit: int | None = None, batch_size: int = 64):
        """asyrp.samplers.edit from cached x_T (same seeds for every method), in batches of images."""
        from .plan import EditPlan
        from .samplers import edit

        plan = EditPlan(n_inv=self.n_steps, n_gen=self.n_steps, t0=self.t0,
                        t_edit=self.t_edit if t_edit is None else t_edit, t_boost=self.t_boost, mode=mode)
        results = []
        for lo in range(0, x_T.shape[0], batch_size):
            xt = x_T[lo:lo + batch_size]
            results.append(edit(self.backbone, None, hfunc, a=self.a, plan=plan, strength=strength,
                                seeds=self.seeds(x_T.shape[0])[lo:lo + xt.shape[0]], x_T=xt,
                                return_trajectory=trajectory))
        if len(results) == 1:
            return results[0]
        multi = results[0].x_edit.dim() == 5
        out = results[0]
        out.x_edit = torch.cat([r.x_edit for r in results], dim=1 if multi else 0)
        out.x_T = x_T
        out.trajectory = None  # trajectories only for a single batch
        return out

    # -- scoring ---------------------------------------------------------------------------------------------
    def scorer(self, attr: str):
        """The edit scorer of an attribute: the world's CLIP and oracle, the attribute's texts and oracle target."""
        from .metrics import EditScorer

        at = self.attribute(attr)
        return EditScorer(clip=self.clip, source=at["source"], target=at["target"], oracle=self.oracle,
                          oracle_target=at["oracle_target"])

    @torch.no_grad()
    def score(self, x_src: torch.Tensor, x_edit: torch.Tensor, attr: str, fid_real: torch.Tensor | None = None) -> dict:
        """success / preserved (oracle, NaN without one), CLIP directional and target similarity, PSNR, SSIM to the
        source, oracle confidence (validity) and, with ``fid_real``, FID (oracle features, else CLIP features)."""
        scorer = self.scorer(attr)
        judged = not scorer.absent(["oracle"])
        metrics = ["clip_direction", "clip_text", "psnr", "ssim", *(["oracle", "validity"] if judged else []),
                   *(["fid"] if fid_real is not None else [])]
        s = scorer.score(x_src, x_edit, metrics, fid_real=fid_real)
        out = {"clip_dir": s["clip_direction"], "clip_text": s["clip_text"], "psnr": s["psnr"], "ssim": s["ssim"]}
        out.update({k: s.get(k, math.nan) for k in ("success", "preserved", "validity")})
        if fid_real is not None:
            out["fid"] = s["fid"]
        return out

    def attribute_score(self, x: torch.Tensor, attr: str) -> torch.Tensor:
        """(N,) how strongly the attribute holds (``EditScorer.attribute_score``: the oracle's logit margin of the
        target, else the CLIP similarity to the target minus that to the source)."""
        return self.scorer(attr).attribute_score(x)

    def score_name(self, attr: str) -> str:
        return self.scorer(attr).attribute_score_name

    def describe(self) -> dict:
        info = {"arch": self.arch_cfg.get("name"), "checkpoint": str(self.arch_cfg.get("checkpoint")),
                "clip": self.args.clip, "oracle": "yes" if self.oracle is not None else "no",
                "images": f"{self.x.shape[0]} from {self.image_source}", "n_steps": self.n_steps,
                "t0": self.t0, "t_edit": self.t_edit, "t_boost": self.t_boost, "run": self.run_size}
        meta = Path(str(self.arch_cfg.get("checkpoint") or "")) / "training.json"
        if meta.is_file():
            try:
                m = json.loads(meta.read_text())
                info["ddpm_training_step"] = f"{m.get('step')} of {m.get('steps')}"
            except ValueError:
                pass
        return info


ATTRIBUTE_PREFIX = {"prefix": ""}  # set by setup(): "synthfaces_" for the synthfaces arch


def resolve_attribute(name: str) -> str:
    """'smiling' -> 'synthfaces_smiling' on synthfaces (its own attribute configs first), else 'smiling'."""
    base = ROOT / "conf" / "attribute"
    pre = ATTRIBUTE_PREFIX["prefix"]
    if pre and not name.startswith(pre) and (base / f"{pre}{name}.yaml").is_file():
        return f"{pre}{name}"
    if (base / f"{name}.yaml").is_file():
        return name
    if (base / f"synthfaces_{name}.yaml").is_file():
        return f"synthfaces_{name}"
    raise SystemExit(f"unknown attribute {name!r}: no conf/attribute/{name}.yaml")


def parse_hfunction_args(items: Iterable[str]) -> dict[tuple[str, str], Path]:
    """['smiling=a.pt', 'smiling:global=b.pt'] -> {('synthfaces_smiling', 'delta_block'): a.pt, (..., 'global'): b.pt}."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--hfunction {item!r}: write NAME=PATH")
        name, path = item.split("=", 1)
        kind = "delta_block"
        if ":" in name:
            name, kind = name.split(":", 1)
        p = Path(path).expanduser()
        if not p.is_file():
            raise SystemExit(f"--hfunction {item!r}: {p} not found")
        out[(resolve_attribute(name), kind)] = p
    return out


def _rel(p: Any) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# -- loading -----------------------------------------------------------------------------------------------------
def load_images(folder: Path, size: int, n: int) -> torch.Tensor:
    """The first ``n`` images of ``folder`` through the library's one reader (asyrp.data.images)."""
    from .data.images import read_images

    return read_images(folder, size, n, what="--images")


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-frequency noise, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(size // 4, 1), max(size // 4, 1), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def setup(args: argparse.Namespace, find_oracle: Callable[[Path | None], Any] | None = None) -> World:
    """The experiment world from the script's arguments. ``find_oracle(folder)`` (None: the default one) returns an
    attribute oracle or None; the script passes it (asyrp.synthfaces.oracle.find_oracle), so this module does not
    import the toy world."""
    from omegaconf import OmegaConf

    from . import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("asyrp.backbones").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ASYRP_ROOT", str(ROOT))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    size = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    if args.n_images:
        size["n_images"] = args.n_images
    if args.n_steps:
        size["n_steps"] = args.n_steps
    if args.n_train:
        size["n_train"] = args.n_train
    if args.epochs:
        size["epochs"] = args.epochs
    synth = args.arch == "synthfaces"
    ATTRIBUTE_PREFIX["prefix"] = "synthfaces_" if synth else ""
    args.clip = args.clip or ("synthfaces" if synth else "tiny")

    arch_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "arch" / f"{args.arch}.yaml"), resolve=True)
    if args.checkpoint:
        arch_cfg["checkpoint"] = str(Path(args.checkpoint).resolve())
    backbone = build.backbone(arch_cfg, device=args.device)
    clip = build.clip(OmegaConf.load(ROOT / "conf" / "clip" / f"{args.clip}.yaml"), device=args.device)
    a = build.alpha_bar(arch_cfg).to(args.device)

    oracle = None
    if args.oracle != "none" and (args.oracle != "auto" or synth):
        oracle = find_oracle(None if args.oracle == "auto" else Path(args.oracle)) if find_oracle else None
        if oracle is not None:
            oracle = oracle.to(args.device)
        elif args.oracle != "auto":
            raise SystemExit(f"--oracle {args.oracle}: no oracle.safetensors there")

    interval_name = args.edit_interval or ("synthfaces" if synth else "fixed")
    ei = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "plan" / f"{interval_name}.yaml").interval, resolve=True)
    t_edit = args.t_edit if args.t_edit is not None else int(ei["t_edit"])
    t_boost = args.t_boost if args.t_boost is not None else int(ei.get("t_boost") or 0)

    images = args.images or (str(ROOT / "data" / "synthfaces" / "test") if synth else "random")
    if images == "random":
        x = random_images(size["n_images"], backbone.image_size, args.seed)
        src = "random smooth images"
    else:
        x = load_images(Path(images), backbone.image_size, size["n_images"])
        src = _rel(images)
    out = args.out or ROOT / "outputs" / "experiments" / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    return World(args=args, arch_cfg=arch_cfg, backbone=backbone, a=a, clip=clip, oracle=oracle,
                 x=x.to(args.device), image_source=src, t_edit=t_edit, t_boost=t_boost, n_steps=size["n_steps"],
                 size=size, out=out, t0=NUM_TRAIN_TIMESTEPS - 1 if args.t0 is None else int(args.t0))


# -- training through the project's normal path ----------------------------------------------------------------
def train_hfunction(world: World, attr: str, kind: str = "delta_block", *, n_train: int | None = None,
                    epochs: int | None = None, extra: Sequence[str] = ()) -> Path:
    """Train (or reuse) an h-function with asyrp.tasks.train on a composed ``train`` config; returns hfunction.pt.

    ``kind`` is a conf/hfunction name: the h-space kinds, or eps_shift / x_shift (image-shaped directions, trained
    with ``extra`` overrides that set plan.mode to match). Same budget for every kind unless given: the run size's
    training images and epochs, the world's steps, the model config's optimiser; ``extra`` overrides come last (after
    --train-override). Cached next to the output folder, in <out>/../_hfunctions/<arch>/<attr>_<kind>_<size>_s<steps>
    (reused by every script writing next to it, unless --retrain); a training run of an arch checkpoint snapshot
    should get its own --out parent.
    """
    from .config import compose
    from .tasks.train import train

    args = world.args
    size = {"n_train": n_train or world.size["n_train"], "epochs": epochs or world.size["epochs"]}
    import hashlib

    overrides = [f"arch={args.arch}", f"clip={args.clip}", f"attribute={attr}", f"hfunction={kind}",
                 "hfunction.seed=0", f"seed={args.seed}", f"plan.n_inv={world.n_steps}", f"plan.n_gen={world.n_steps}",
                 f"model.n_iter={size['epochs']}", f"plan.t0={world.t0}", f"plan.t_edit={world.t_edit}",
                 f"plan.t_boost={world.t_boost}", "logger=csv", "~callbacks.edit_grid",
                 # progress: a bar on a terminal, timed lines (step, ETA, loss) in a log or pipe (asyrp.callbacks.ProgressLog)
                 "++trainer.enable_progress_bar=true", "++trainer.enable_model_summary=false",
                 f"dataset.cache_dir={world.out.parent / '_cache'}"]
    if args.checkpoint:
        overrides.append(f"arch.checkpoint={Path(args.checkpoint).resolve()}")
    if kind == "delta_block" and world.backbone.h_channels % 32:
        overrides.append("hfunction.num_groups=8")
    train_images = args.train_images or (str(ROOT / "data" / "synthfaces" / "train") if args.arch == "synthfaces" else None)
    if train_images:
        overrides += ["dataset=synthfaces", f"dataset.path={Path(train_images).resolve()}",
                      f"dataset.n_images={size['n_train']}", f"dataset.image_size={world.backbone.image_size}",
                      f"dataset.batch_size={min(8, size['n_train'])}", f"dataset.n_val={min(4, size['n_train'])}"]
    else:
        overrides += ["dataset=random_samples", f"dataset.n_images={size['n_train']}",
                      f"dataset.batch_size={min(8, size['n_train'])}", f"dataset.n_val={min(2, size['n_train'])}"]
    overrides += [*args.train_override, *extra]
    # the cache key covers the backbone snapshot and every override (recipe): another recipe never reuses this run
    key = "\n".join([str(world.arch_cfg.get("checkpoint")), *overrides])
    ck = hashlib.sha1(key.encode()).hexdigest()[:6]
    tag = f"{attr}_{kind}_n{size['n_train']}_e{size['epochs']}_s{world.n_steps}_{ck}"
    run_dir = world.out.parent / "_hfunctions" / str(world.arch_cfg.get("name")) / tag
    ckpt = run_dir / "checkpoints" / "hfunction.pt"
    if ckpt.is_file() and not args.retrain:
        log.info("reusing %s", ckpt)
        return ckpt
    log.info("training %s (%s): %s", attr, kind, " ".join(overrides))
    t0 = time.time()
    cfg = compose("train", overrides, output_dir=run_dir)
    metrics, _ = train(cfg)
    (run_dir / "experiment_train.json").write_text(json.dumps({"overrides": overrides, "seconds": time.time() - t0,
                                                               "metrics": metrics}, indent=1))
    if not ckpt.is_file():
        raise SystemExit(f"training finished without {ckpt}")
    world.notes.append(f"trained {attr} ({kind}) in {time.time() - t0:.0f} s: {_rel(ckpt)} "
                       f"(val/clip_direction {metrics.get('val/clip_direction', math.nan):.3f})")
    return ckpt


# -- baseline directions (eps / x space, trained by train_hfunction) ----------------------------------------
def rescale_direction(g, norms: Mapping[int, float]) -> None:
    """Set every entry of a per-timestep GlobalDirection to the norm given for its timestep (in place)."""
    with torch.no_grad():
        for i, t in enumerate(g.timesteps.tolist()):
            n = g.delta_h[i].norm()
            if int(t) in norms and n > 0:
                g.delta_h[i].mul_(norms[int(t)] / n)


# -- measuring what an edit does per step ------------------------------------------------------------------------
@torch.no_grad()
def step_norms(world: World, x_T: torch.Tensor, hfunc, strength: float = 1.0) -> dict[int, dict[str, float]]:
    """Along the Asyrp trajectory from x_T: per editing step t, the mean over images of ||delta_h||,
    ||eps_edit - eps|| (what the shift does to P_t's noise) and of the resulting change of x_{t-1}
    sqrt(a_{t-1}) * sqrt(1 - a_t) / sqrt(a_t) * ||eps_edit - eps||."""
    from .samplers import edit_eps
    from .schedules import alpha_at

    res = world.edit(x_T, hfunc, strength=strength, trajectory=True, batch_size=x_T.shape[0])
    seq = res.seq_gen
    out = {}
    down = list(reversed(seq))
    for i, (t, x_t, _) in enumerate(res.trajectory):
        if t < world.t_edit:
            continue
        ee = edit_eps(world.backbone, x_t, t, hfunc, strength=strength)
        a_t = alpha_at(world.a, t)
        t_next = down[i + 1] if i + 1 < len(down) else -1
        a_n = alpha_at(world.a, t_next)
        d_eps = (ee.eps_edit - ee.eps).flatten(1).norm(dim=1)
        # x_shift by dx moves x_{t-1} by ~ sqrt(a_{t-1} / a_t) dx: the same move as Asyrp's needs
        # ||dx|| = sqrt(1 - a_t) ||eps_edit - eps||
        out[int(t)] = {"h": float(ee.delta_h.flatten(1).norm(dim=1).mean()), "eps": float(d_eps.mean()),
                       "x": float((a_n.sqrt() * (1 - a_t).sqrt() / a_t.sqrt()).item() * d_eps.mean()),
                       "x_shift": float((1 - a_t).sqrt().item() * d_eps.mean())}
    return out


# -- output ------------------------------------------------------------------------------------------------------
def fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def write_table(world: World, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
                title: str, notes: Sequence[str] = ()) -> Path:
    """<out>/<name>.md (a markdown table with the run's settings) and <out>/<name>.csv."""
    md = world.out / f"{name}.md"
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in world.describe().items())]
    lines += ["", "Command: `python " + " ".join([_rel(sys.argv[0])] + sys.argv[1:]) + "`"]
    for n in list(notes) + world.notes:
        lines.append(f"- {n}")
    md.write_text("\n".join(lines) + "\n")
    with open(world.out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    print("\n".join(lines[:len(rows) + 4]))
    print(f"wrote {md}")
    return md


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first markdown table of a file (tests)."""
    rows: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    return cells[0], cells[2:]


def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def save_grid(path: Path, columns: Sequence[torch.Tensor], labels: Sequence[str], n: int = 8,
              title: str | None = None) -> Path:
    """Kinds of images (each (B, 3, H, W) in [-1, 1]) as labelled columns, the first n images as rows
    (asyrp.grid: upscaled to readable cells)."""
    from asyrp.grid import columns_grid, save_grid as write

    cols = [(str(lab), x[:n].detach().cpu().float()) for lab, x in zip(labels, columns, strict=True)]
    return write(path, columns_grid(cols, [f"image {i}" for i in range(min(n, columns[0].shape[0]))], title))
