"""Interactive editing: one inversion per image, then any number of generations with other strengths.

``Editor`` holds a frozen backbone and one or more h-functions (a ``Composition`` when there are several). An image
is inverted once (deterministic DDIM, ``asyrp.ddim.ddim_invert``); x_T and the reconstruction are cached under a
digest of the image and the step settings, so moving a strength slider re-runs only the generation
(``asyrp.samplers.edit`` from the cached x_T). The Gradio app (``asyrp.app``) is a thin view over it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .plan import EditPlan


@dataclass
class Inverted:
    """What one image costs once: x0 as the backbone sees it, x_T and the reconstruction (no edit)."""

    key: str
    x0: torch.Tensor
    x_T: torch.Tensor
    x_rec: torch.Tensor
    seconds: float = 0.0
    hits: int = 0  # how often it was found in the cache


@dataclass
class Editor:
    backbone: Any
    hfunctions: list
    names: list[str]
    a: torch.Tensor
    plan: EditPlan  # the walk of every edit, resolved as edit.py resolves it (``load_editor``)
    seed: int = 0  # the quality-boosting noise of every edit
    defaults: list[float] = field(default_factory=list)  # the strength each h-function was trained with
    cache_size: int = 64
    scales: list[float] = field(default_factory=list)  # per h-function factor on its slider (own_intervals)

    def __post_init__(self):
        from .hfunctions.modules import Composition

        self.hfunc = self.hfunctions[0] if len(self.hfunctions) == 1 else Composition(self.hfunctions)
        self._cache: OrderedDict[str, Inverted] = OrderedDict()
        self.stats = {"inversions": 0, "generations": 0}
        if not self.defaults:
            self.defaults = [1.0] * len(self.hfunctions)
        if not self.scales:
            self.scales = [1.0] * len(self.hfunctions)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.backbone.image_size)

    def key(self, x0: torch.Tensor) -> str:
        p = self.plan
        h = hashlib.blake2b(digest_size=12)
        h.update(x0.detach().float().cpu().contiguous().numpy().tobytes())
        h.update(f"{p.n_inv}|{p.n_gen}|{p.t0}|{p.t_boost}|{self.seed}|{p.spacing}".encode())
        return h.hexdigest()

    @torch.no_grad()
    def invert(self, x0: torch.Tensor) -> Inverted:
        """x0 (3, H, W) in [-1, 1] at the backbone's size -> its cached inversion (computed on first use)."""
        from .samplers import edit

        k = self.key(x0)
        if k in self._cache:
            self._cache.move_to_end(k)
            self._cache[k].hits += 1
            return self._cache[k]
        t = time.perf_counter()
        rec = edit(self.backbone, x0[None].to(self.device), None, a=self.a, plan=self.plan, seeds=[self.seed])
        inv = Inverted(k, x0.cpu(), rec.x_T, rec.x_edit[0].cpu(), time.perf_counter() - t)
        self.stats["inversions"] += 1
        self._cache[k] = inv
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return inv

    @torch.no_grad()
    def generate(self, inv: Inverted, coeffs: Sequence[Sequence[float]]) -> torch.Tensor:
        """(K, 3, H, W): one edit per row of coefficients (one per h-function), from the cached x_T, in one batch."""
        from .samplers import edit

        c = torch.tensor([[float(v) for v in row] for row in coeffs], dtype=torch.float64)
        if c.shape[1] != len(self.hfunctions):
            raise ValueError(f"{c.shape[1]} coefficients for {len(self.hfunctions)} h-functions")
        c = c * torch.tensor(self.scales, dtype=c.dtype)
        out = edit(
            self.backbone, None, self.hfunc, a=self.a, plan=self.plan, strength=c, seeds=[self.seed], x_T=inv.x_T
        ).x_edit
        self.stats["generations"] += 1
        return out[:, 0].cpu()

    def strip(self, inv: Inverted, coeffs: Sequence[float], scales: Sequence[float]) -> torch.Tensor:
        """(K, 3, H, W): the edit at ``scale * coeffs`` for every scale (0 = the reconstruction)."""
        return self.generate(inv, [[float(sc) * float(v) for v in coeffs] for sc in scales])


def load_editor(
    arch: Any,
    checkpoints: Sequence[str | Path],
    overrides: dict[str, Any],
    fallback: dict[str, Any] | None = None,
    device: str = "cpu",
    perf: Any = None,
) -> Editor:
    """Backbone + h-functions (our hfunction.pt or official .pth, through the same loaders as edit.py), with the walk
    settings resolved like edit.py does: explicit ``overrides``, else the first file's, else ``fallback`` (the
    plan's interval preset: t_edit, t_boost), through the one resolver (asyrp.plan.resolve_plan). Files trained on
    different intervals each act in their own, as in edit.py (asyrp.plan.own_intervals)."""
    from . import build
    from .checks import check_hfunction_mode
    from .hfunctions.files import hfunction_from_payload, read_hfunction_file
    from .plan import in_own_intervals, resolve_plan

    payloads = [read_hfunction_file(c) for c in checkpoints]
    torch.manual_seed(int(overrides.get("seed") or 0))  # a random test backbone comes out the same every time
    backbone = build.backbone(arch, device=device, perf=perf)
    fns, names, defaults, edits = [], [], [], []
    for p, c in zip(payloads, checkpoints):
        fn, meta = hfunction_from_payload(p, c, backbone, arch.get("name"))
        fns.append(fn)
        names.append((meta.get("attribute") or {}).get("name") or Path(str(c)).stem)
        edits.append(dict(meta.get("edit") or {}))
        defaults.append(float(edits[-1].get("strength", 1.0)))
    plan, windows = resolve_plan(overrides, edits, fallback)
    check_hfunction_mode(
        plan.mode, "plan.mode", [p.get("hfunction") if isinstance(p, dict) else None for p in payloads]
    )
    scales = [w["step_scale"] for w in windows] if windows else []
    fns = in_own_intervals(fns, windows) if windows else fns
    return Editor(
        backbone,
        fns,
        names,
        build.alpha_bar(arch).to(next(backbone.parameters()).device),
        plan,
        int(overrides.get("seed") or 0),
        defaults,
        scales=scales,
    )
