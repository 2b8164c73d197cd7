"""The exp the experiment scripts measure in: a composed ``train`` config (asyrp.config.compose, the script's
options as overrides) and what asyrp.build makes of it (backbone, alpha_bar, CLIP, attributes, h-functions, the
plan), plus the oracle, the test images, editing and scoring."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import build
from ..plan import EditPlan
from .options import ROOT, rel, run_size, sizes

log = logging.getLogger("experiments")


@dataclass
class Experiment:
    args: argparse.Namespace
    arch_cfg: dict
    backbone: Any
    a: torch.Tensor
    clip: Any
    oracle: Any
    x: torch.Tensor  # test images in [-1, 1]
    image_source: str
    plan: EditPlan  # every walk of the exp: n_inv = n_gen steps from t0, edits for t >= t_edit
    size: dict
    out: Path
    extra_overrides: list = field(default_factory=list)  # the script's own config overrides; training repeats them
    attribute_prefix: str = ""  # "synthfaces_" on synthfaces: its own attribute configs come first
    hf_cache: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def run_size(self) -> str:
        return run_size(self.args)

    @property
    def t0(self) -> int:  # top of the walk: x_t0 is what inversion reaches and generation starts from
        return self.plan.t0

    @property
    def t_edit(self) -> int:
        return self.plan.t_edit

    @property
    def t_boost(self) -> int:
        return self.plan.t_boost

    @property
    def n_steps(self) -> int:
        return self.plan.n_gen

    # -- attributes ------------------------------------------------------------------------------------------
    def resolve_attribute(self, name: str) -> str:
        """'smiling' -> 'synthfaces_smiling' on synthfaces (its own attribute configs first), else 'smiling'."""
        base, pre = ROOT / "conf" / "attribute", self.attribute_prefix
        if pre and not name.startswith(pre) and (base / f"{pre}{name}.yaml").is_file():
            return f"{pre}{name}"
        if (base / f"{name}.yaml").is_file():
            return name
        if (base / f"synthfaces_{name}.yaml").is_file():
            return f"synthfaces_{name}"
        raise SystemExit(f"unknown attribute {name!r}: no conf/attribute/{name}.yaml")

    def attribute(self, name: str) -> dict:
        """The attribute config (composed once per name): name, source / target texts, oracle target, config name."""
        from ..config import compose

        key = self.resolve_attribute(name)
        if key not in self.attributes:
            self.attributes[key] = {**build.attribute(compose("train", [f"attribute={key}"]).attribute), "config": key}
        return self.attributes[key]

    # -- h-functions -----------------------------------------------------------------------------------------
    def hfunction(self, attr: str, kind: str = "delta_block") -> tuple[torch.nn.Module, str]:
        """(h-function, provenance) for an attribute: --hfunction path, else --train, else a seeded random one."""
        from .training import train_hfunction

        key = (self.resolve_attribute(attr), kind)
        if key in self.hf_cache:
            return self.hf_cache[key]
        path = parse_hfunction_args(self.args.hfunction, self.resolve_attribute).get(key)
        if path is None and self.args.train:
            path = train_hfunction(self, key[0], kind)
        if path is not None:
            f, _ = build.trained_hfunction(path, self.backbone, self.arch_cfg.get("name"))
            res = (f, f"trained:{rel(path)}")
        else:
            cfg = {"kind": kind, "seed": zlib.crc32(key[0].encode()) % 10_000}  # distinct per attribute
            if kind == "delta_block":
                cfg["num_groups"] = 8
            elif kind == "global":
                cfg["init_std"] = 0.02
            f = build.hfunction(cfg, self.backbone)
            msg = f"{key[0]} ({kind}): no --hfunction and no --train: using an UNTRAINED random h-function"
            log.warning(msg)
            self.notes.append(msg)
            res = (f.eval().requires_grad_(False), "untrained")
        self.hf_cache[key] = res
        return res

    # -- editing ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def invert(self, x0: torch.Tensor) -> torch.Tensor:
        from ..ddim import ddim_invert

        return ddim_invert(self.backbone, x0, self.plan.seq_inv, self.a)

    def seeds(self, n: int) -> list[int]:
        return [self.args.seed + i for i in range(n)]

    @torch.no_grad()
    def edit(
        self,
        x_T: torch.Tensor,
        hfunc,
        *,
        strength: Any = 1.0,
        mode: str = "asyrp",
        trajectory: bool = False,
        t_edit: int | None = None,
        batch_size: int = 64,
    ):
        """asyrp.samplers.edit from cached x_T (same seeds for every method), in batches of images, on the exp's
        plan (with another t_edit / mode when given)."""
        from ..samplers import edit

        plan = replace(self.plan, t_edit=self.t_edit if t_edit is None else t_edit, mode=mode)
        results = []
        for lo in range(0, x_T.shape[0], batch_size):
            xt = x_T[lo : lo + batch_size]
            results.append(
                edit(
                    self.backbone,
                    None,
                    hfunc,
                    a=self.a,
                    plan=plan,
                    strength=strength,
                    seeds=self.seeds(x_T.shape[0])[lo : lo + xt.shape[0]],
                    x_T=xt,
                    return_trajectory=trajectory,
                )
            )
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
        """The edit scorer of an attribute: the experiment's CLIP and oracle, the attribute's texts and oracle target."""
        from ..metrics import EditScorer

        at = self.attribute(attr)
        return EditScorer(
            clip=self.clip,
            source=at["source"],
            target=at["target"],
            oracle=self.oracle,
            oracle_target=at["oracle_target"],
        )

    @torch.no_grad()
    def score(self, x_src: torch.Tensor, x_edit: torch.Tensor, attr: str, fid_real: torch.Tensor | None = None) -> dict:
        """success / preserved (oracle, NaN without one), CLIP directional and target similarity, PSNR, SSIM to the
        source, oracle confidence (validity) and, with ``fid_real``, FID (oracle features, else CLIP features)."""
        scorer = self.scorer(attr)
        judged = not scorer.absent(["oracle"])
        metrics = [
            "clip_direction",
            "clip_text",
            "psnr",
            "ssim",
            *(["oracle", "validity"] if judged else []),
            *(["fid"] if fid_real is not None else []),
        ]
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
        info = {
            "arch": self.arch_cfg.get("name"),
            "checkpoint": str(self.arch_cfg.get("checkpoint")),
            "clip": self.args.clip,
            "oracle": "yes" if self.oracle is not None else "no",
            "images": f"{self.x.shape[0]} from {self.image_source}",
            "n_steps": self.n_steps,
            "t0": self.t0,
            "t_edit": self.t_edit,
            "t_boost": self.t_boost,
            "run": self.run_size,
        }
        meta = Path(str(self.arch_cfg.get("checkpoint") or "")) / "training.json"
        if meta.is_file():
            try:
                m = json.loads(meta.read_text())
                info["ddpm_training_step"] = f"{m.get('step')} of {m.get('steps')}"
            except ValueError:
                pass
        return info


def parse_hfunction_args(items: Iterable[str], resolve: Callable[[str], str]) -> dict[tuple[str, str], Path]:
    """['smiling=a.pt', 'smiling:global=b.pt'] -> {('synthfaces_smiling', 'delta_block'): a.pt, (..., 'global'): b.pt},
    attribute names through ``resolve`` (Experiment.resolve_attribute)."""
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
        out[(resolve(name), kind)] = p
    return out


# -- images ------------------------------------------------------------------------------------------------------
def load_images(folder: Path, size: int, n: int) -> torch.Tensor:
    """The first ``n`` images of ``folder`` through the library's one reader (asyrp.data.images)."""
    from ..data.images import read_images

    return read_images(folder, size, n, what="--images")


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-frequency noise, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(size // 4, 1), max(size // 4, 1), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


# -- setting up ----------------------------------------------------------------------------------------------------
def setup(
    args: argparse.Namespace, find_oracle: Callable[[Path | None], Any] | None = None, overrides: Sequence[str] = ()
) -> Experiment:
    """The experiment exp from the script's arguments: a composed ``train`` config (``world_overrides``, then the
    script's ``overrides``, e.g. ``arch.config.image_size=16``) built through asyrp.build. ``find_oracle(folder)``
    (None: the default one) returns an attribute oracle or None; the script passes it
    (asyrp.synthfaces.oracle.find_oracle), so this package does not import the toy exp."""
    from ..config import compose, plain

    _process_settings(args)
    synth = args.arch == "synthfaces"
    args.clip = args.clip or ("synthfaces" if synth else "tiny")
    size = sizes(args)
    cfg = compose("train", [*world_overrides(args, size["n_steps"]), *overrides])
    arch_cfg = plain(cfg.arch)
    if args.checkpoint:
        arch_cfg["checkpoint"] = str(Path(args.checkpoint).resolve())
    backbone = build.backbone(arch_cfg, device=args.device)  # (in this order: a random test net takes the seed)
    clip = build.clip(cfg.clip, device=args.device)
    a = build.alpha_bar(arch_cfg).to(args.device)
    oracle = _oracle(args, synth, find_oracle)
    plan, _ = build.plan(cfg)
    x, src = _test_images(args, synth, backbone.image_size, size["n_images"])
    out = args.out or ROOT / "outputs" / "experiments" / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    return Experiment(
        args=args,
        arch_cfg=arch_cfg,
        backbone=backbone,
        a=a,
        clip=clip,
        oracle=oracle,
        x=x.to(args.device),
        image_source=src,
        plan=plan,
        size=size,
        out=out,
        extra_overrides=list(overrides),
        attribute_prefix="synthfaces_" if synth else "",
    )


def world_overrides(args: argparse.Namespace, n_steps: int) -> list[str]:
    """The script's options as overrides of the ``train`` config: arch, CLIP and the plan (its preset's interval,
    the run size's steps, t0, and t_edit / t_boost when given)."""
    synth = args.arch == "synthfaces"
    preset = args.edit_interval or ("synthfaces" if synth else "fixed")
    over = [
        f"arch={args.arch}",
        f"clip={args.clip}",
        f"plan={preset}",
        f"plan.n_inv={n_steps}",
        f"plan.n_gen={n_steps}",
        f"plan.t0={999 if args.t0 is None else int(args.t0)}",
    ]
    if args.t_edit is not None:
        over.append(f"plan.t_edit={int(args.t_edit)}")
    if args.t_boost is not None:
        over.append(f"plan.t_boost={int(args.t_boost)}")
    return over


def _process_settings(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("asyrp.backbones").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ASYRP_ROOT", str(ROOT))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def _oracle(args: argparse.Namespace, synth: bool, find_oracle: Callable[[Path | None], Any] | None) -> Any:
    if args.oracle == "none" or (args.oracle == "auto" and not synth):
        return None
    oracle = find_oracle(None if args.oracle == "auto" else Path(args.oracle)) if find_oracle else None
    if oracle is None and args.oracle != "auto":
        raise SystemExit(f"--oracle {args.oracle}: no oracle.safetensors there")
    return None if oracle is None else oracle.to(args.device)


def _test_images(args: argparse.Namespace, synth: bool, image_size: int, n: int) -> tuple[torch.Tensor, str]:
    images = args.images or (str(ROOT / "data" / "synthfaces" / "test") if synth else "random")
    if images == "random":
        return random_images(n, image_size, args.seed), "random smooth images"
    return load_images(Path(images), image_size, n), rel(images)
