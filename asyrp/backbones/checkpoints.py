"""Reading checkpoints safely and explaining, in one message, why one does not fit.

Everything is read with ``torch.load(weights_only=True)`` (or safetensors): a checkpoint is data, never code. The
published files come in several containers (a bare state dict; DDIM's ``[model, optimizer, epoch, step, ema]`` list;
``{"model": ..., "ema": ...}`` dicts; ``module.`` prefixes from DataParallel); ``read_checkpoint`` reduces them all to
one flat ``{name: tensor}`` dict.

Key layouts: the ddpm and adm families describe their upstream checkpoint as a ``KeyPlan`` (upstream key -> this
module's key(s) and how the tensor is reshaped). The plan gives the exact upstream layout a config expects, so a
mismatch is reported in the checkpoint's own key names, together with the shipped ``conf/arch/*.yaml`` whose layout
does match.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

Layout = dict[str, tuple[int, ...]]

#: conf/arch of the source tree; ASYRP_ARCH_DIR overrides it (installed package, custom config dirs).
ARCH_DIR = Path(os.environ.get("ASYRP_ARCH_DIR", Path(__file__).resolve().parents[2] / "conf" / "arch"))

# Container keys that hold a state dict, most specific first. EMA weights are what the published models sample with.
_EMA_KEYS = ("ema", "ema_model", "model_ema", "ema_state_dict")
_RAW_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")

_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the requested family/config. The message says how to fix it;
    ``refused`` names the pickled object the safe unpickler refused (None for any other fault), so a caller can word
    its own fix without parsing the message."""

    def __init__(self, message: str, refused: str | None = None):
        super().__init__(message)
        self.refused = refused


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------
def load_file(path: str | os.PathLike) -> Any:
    """The raw object stored in a checkpoint file, read without executing any pickled code."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"checkpoint file not found: {path}. Download it (see the arch config's comment) or set "
            "ASYRP_CHECKPOINTS to the folder holding the published checkpoints."
        )
    if path.is_dir():
        hint = (
            " It looks like a diffusers UNet2DModel folder: use family 'diffusers'."
            if (path / "config.json").exists()
            else ""
        )
        raise CheckpointError(f"checkpoint {path} is a directory, not a weights file.{hint}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            tensors = load_safetensors(str(path), device="cpu")
        except Exception as err:  # corrupt header, truncated download
            raise CheckpointError(f"could not read {path} as safetensors ({err}); re-download the file") from err
        # the tensors are views into one buffer at unaligned offsets, which picks different (last-bit) CPU kernels
        # than freshly allocated weights: give each its own storage so results match the original module bitwise
        return {k: v.clone() for k, v in tensors.items()}
    try:
        # the official files were saved on CUDA: always map to CPU, move later
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if m is None:  # not a pickled object the safe unpickler refused: a damaged or foreign file
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
            raise CheckpointError(
                f"could not read {path} as a torch checkpoint ({detail.group(1).strip() if detail else err}): the "
                "file is truncated, damaged or not a checkpoint; re-download the file"
            ) from err
        refused = m.group(1)
        raise CheckpointError(
            f"{path} contains pickled Python objects besides tensors, and loading them is refused for safety "
            "(loading them could run arbitrary code). If you trust the file, convert it once in a separate Python "
            "session: allow exactly the refused class with `torch.serialization.add_safe_globals([<that class>])`, "
            "load the file with torch.load(path, weights_only=True), pick the network's state dict, then "
            "`safetensors.torch.save_file(sd, 'model.safetensors')` and point the arch config at the converted file. "
            f"Refused object: {refused}",
            refused=refused,
        ) from err
    except (
        RuntimeError,
        EOFError,
        IndexError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        OSError,
        UnicodeDecodeError,
        MemoryError,
    ) as err:
        # not a torch archive (truncated download, wrong file): torch's legacy unpickler fails in many ways
        detail = " ".join(str(err).split())
        detail = detail.split(". ", 1)[0][:200] or type(err).__name__  # torch appends paragraphs of advice
        raise CheckpointError(
            f"could not read {path} as a torch checkpoint ({type(err).__name__}: {detail}): the file is truncated, "
            "damaged or not a checkpoint; re-download the file"
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())
    )


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """DataParallel/DDP wrap every key in ``module.``; only stripped when all keys carry it."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _shadow_to_state_dict(shadow: list, model_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """score_sde-style EMA: an unnamed list of parameters in ``model.parameters()`` order.

    Names come from the raw state dict, whose parameters appear in the same order; its buffers (which the EMA does
    not track) are recognised as the entries the next shadow tensor does not fit, and are kept from the raw weights.
    """
    out, i = {}, 0
    for k, v in model_sd.items():
        if i < len(shadow) and torch.is_tensor(shadow[i]) and shadow[i].shape == v.shape and v.is_floating_point():
            out[k] = shadow[i]
            i += 1
        else:
            out[k] = v
    if i != len(shadow):
        raise CheckpointError(
            f"the checkpoint's EMA holds {len(shadow)} unnamed tensors that cannot be matched to its model weights "
            f"(matched {i}); pass ema=False to use the raw weights"
        )
    return out


def _pick(obj: Any, ema: bool | None, where: str) -> dict[str, torch.Tensor]:
    """The network's weights inside a checkpoint container (see ``read_checkpoint`` for the rules)."""
    if _is_state_dict(obj):
        if ema:
            raise CheckpointError(
                f"{where} holds a single state dict, with no separate EMA weights: ema=True cannot be honoured. "
                "Pass ema=None (use what is there) or point to the EMA file."
            )
        return dict(obj)

    raw: Any = None
    avg: Any = None
    if isinstance(obj, (list, tuple)):
        # DDIM training checkpoints: [model, optimizer, epoch, step] plus the EMA shadow last when EMA was on
        dicts = [o for o in obj if _is_state_dict(o)]
        if dicts:
            raw = dicts[0]
            if len(dicts) > 1 and len(obj) >= 5 and _is_state_dict(obj[-1]) and obj[-1] is not dicts[0]:
                avg = obj[-1]
    elif isinstance(obj, Mapping):
        for k in _EMA_KEYS:
            if k in obj:
                avg = obj[k]
                break
        for k in _RAW_KEYS:
            if k in obj:
                raw = obj[k]
                break
        if isinstance(avg, Mapping) and "shadow_params" in avg:  # score_sde ExponentialMovingAverage state
            if not _is_state_dict(raw):
                raise CheckpointError(f"{where}: EMA stored without names and no model state dict to name it")
            avg = _shadow_to_state_dict(list(avg["shadow_params"]), _strip_prefix(dict(raw)))
        # containers nest (Lightning {"state_dict": {...}}, {"model": {"state_dict": ...}})
        if raw is not None and not _is_state_dict(raw):
            raw = _pick(raw, None, where)
        if avg is not None and not _is_state_dict(avg):
            avg = _pick(avg, None, where)

    if raw is None and avg is None:
        kind = type(obj).__name__
        keys = f" with keys {list(obj)[:8]}" if isinstance(obj, Mapping) else ""
        raise CheckpointError(
            f"no state dict found in {where} (a {kind}{keys}). Expected a {{name: tensor}} dict, possibly under "
            f"one of {_RAW_KEYS + _EMA_KEYS}, or DDIM's [model, optimizer, ..., ema] list."
        )
    if ema is False:
        if raw is None:
            raise CheckpointError(f"{where} holds only EMA weights: ema=False cannot be honoured; pass ema=None")
        return dict(raw)
    if ema is True and avg is None:
        raise CheckpointError(f"{where} holds no EMA weights: pass ema=None or ema=False to use the raw weights")
    if avg is not None and raw is not None and ema is None:
        log.info("%s holds raw and EMA weights: using the EMA (pass ema=False for the raw weights)", where)
    return dict(avg if avg is not None else raw)


def read_checkpoint(source: str | os.PathLike | Mapping | list, *, ema: bool | None = None) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` state dict from a path or an in-memory object.

    Containers are unwrapped: ``state_dict`` / ``model`` / ``ema`` / ``ema_model`` dicts (nested too), DDIM's list
    (``[0]`` is the raw model, the last element the EMA when the list has one), and a common ``module.`` prefix.
    Where both raw and EMA weights exist, ``ema=None`` (default) and ``ema=True`` take the EMA, which is what the
    published models sample with; ``ema=False`` takes the raw weights. ``ema=True`` on a file without EMA is an error.
    """
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        obj = load_file(source)
    else:
        where = "the in-memory checkpoint"
        obj = source
    sd = _pick(obj, ema, where)
    sd = _strip_prefix(sd)
    return sd


def layout_of(sd: Mapping[str, torch.Tensor]) -> Layout:
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------------------------
# key plans: upstream key -> this module's keys
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One upstream tensor and where it goes.

    kind: "copy"; "squeeze" (a 1x1 conv, stored with trailing singleton dims, becomes a Linear weight);
    "qkv" (a fused q/k/v projection split into ``dst = (q, k, v)``; ``heads`` > 0 means the legacy per-head
    interleaving [q_h; k_h; v_h], heads == 0 plain [q; k; v] blocks).
    """

    src: str
    dst: tuple[str, ...]
    kind: str = "copy"
    singleton_dims: int = 0
    heads: int = 0

    def upstream_shape(self, target: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
        shape = target[self.dst[0]]
        if self.kind == "qkv":
            shape = (3 * shape[0],) + shape[1:]
        return shape + (1,) * self.singleton_dims

    def convert(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "copy":
            return {self.dst[0]: t}
        if self.kind == "squeeze":
            return {self.dst[0]: t.reshape(t.shape[: t.dim() - self.singleton_dims])}
        if self.kind == "qkv":
            t = t.reshape(t.shape[: t.dim() - self.singleton_dims])
            C = t.shape[0] // 3
            if self.heads:
                # legacy order: per head, q, k and v rows are stacked -> (heads, 3, C/heads, ...)
                split = t.reshape(self.heads, 3, C // self.heads, *t.shape[1:])
                parts = [split[:, i].reshape(C, *t.shape[1:]) for i in range(3)]
            else:
                parts = list(t.chunk(3, dim=0))
            return {d: p.contiguous() for d, p in zip(self.dst, parts)}
        raise ValueError(f"unknown rule kind {self.kind!r}")


class KeyPlan:
    """The full mapping for one config: ordered rules plus the target shapes they were derived from."""

    def __init__(self, rules: Iterable[Rule], target: Mapping[str, tuple[int, ...]], family: str):
        self.rules = list(rules)
        self.target = dict(target)
        self.family = family
        covered = [d for r in self.rules for d in r.dst]
        if sorted(covered) != sorted(self.target):  # a bug in a family's plan, not a user error
            missing = sorted(set(self.target) - set(covered))[:5]
            extra = sorted(set(covered) - set(self.target))[:5]
            raise AssertionError(f"{family} key plan does not cover the module: missing {missing}, extra {extra}")

    def upstream_layout(self) -> Layout:
        return {r.src: r.upstream_shape(self.target) for r in self.rules}

    def convert(self, sd: Mapping[str, torch.Tensor], what: str = "") -> dict[str, torch.Tensor]:
        check_layout(layout_of(sd), self.upstream_layout(), family=self.family, what=what)
        out: dict[str, torch.Tensor] = {}
        for r in self.rules:
            out.update(r.convert(sd[r.src]))
        return out


# ---------------------------------------------------------------------------------------------------------------
# mismatch messages
# ---------------------------------------------------------------------------------------------------------------
def _fmt(keys: list[str], n: int = 4) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def describe_mismatch(found: Layout, expected: Layout) -> str | None:
    """None if the layouts agree, else the first few missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return None
    parts = []
    if misshaped:
        shown = "; ".join(f"{k}: checkpoint {tuple(found[k])}, expected {tuple(expected[k])}" for k in misshaped[:3])
        more = f"; ... ({len(misshaped)} in all)" if len(misshaped) > 3 else ""
        parts.append(f"mis-shaped keys: {shown}{more}")
    if missing:
        parts.append(f"missing keys: {_fmt(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_fmt(unexpected)}")
    return "; ".join(parts)


def check_layout(found: Layout, expected: Layout, *, family: str, what: str = "") -> None:
    """Raise a CheckpointError naming the offending keys and the arch config that fits, if the layouts differ."""
    problem = describe_mismatch(found, expected)
    if problem is None:
        return
    src = f" ({what})" if what else ""
    raise CheckpointError(
        f"checkpoint{src} does not fit family {family!r} with the given config: {problem}. {suggestion_text(found)}"
    )


# ---------------------------------------------------------------------------------------------------------------
# which shipped arch config fits a checkpoint
# ---------------------------------------------------------------------------------------------------------------
def _read_arch(path: Path) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


@cache
def _arch_layout(path: str, mtime: float) -> tuple[str, Layout | None]:
    """(family, the upstream key layout that arch config expects), None when it cannot be computed cheaply."""
    from . import family_module

    arch = _read_arch(Path(path))
    family = arch.get("family", "?")
    try:
        module = family_module(family)
        if hasattr(module, "upstream_layout"):
            return family, module.upstream_layout(arch.get("config"))
    except Exception as err:  # a broken or foreign arch file must not hide the real error
        log.debug("no layout for %s: %s", path, err)
    return family, None


def arch_layouts(arch_dir: Path | None = None) -> dict[str, tuple[str, Layout]]:
    """name -> (family, expected upstream layout) for every shipped arch config with a computable layout."""
    arch_dir = Path(arch_dir or ARCH_DIR)
    out = {}
    for p in sorted(arch_dir.glob("*.yaml")):
        family, layout = _arch_layout(str(p), p.stat().st_mtime)
        if layout is not None:
            out[p.stem] = (family, layout)
    return out


def suggest_arch(
    found: Layout, arch_dir: Path | None = None
) -> tuple[list[tuple[str, str]], tuple[str, str, float] | None]:
    """Arch configs whose layout equals the checkpoint's exactly ([(name, family)]), and the closest one otherwise.

    Closeness is the share of (key, shape) pairs in common; several published configs share one layout
    (e.g. the LSUN and CelebA-HQ SDEdit models), so all exact matches are listed.
    """
    exact, best = [], None
    found_items = {(k, tuple(s)) for k, s in found.items()}
    for name, (family, layout) in arch_layouts(arch_dir).items():
        items = {(k, tuple(s)) for k, s in layout.items()}
        if items == found_items:
            exact.append((name, family))
            continue
        score = len(items & found_items) / max(len(items | found_items), 1)
        if best is None or score > best[2]:
            best = (name, family, score)
    return exact, best


def suggestion_text(found: Layout) -> str:
    try:
        exact, best = suggest_arch(found)
    except Exception as err:  # the suggestion is a courtesy; never let it mask the mismatch itself
        log.debug("arch suggestion failed: %s", err)
        return ""
    if exact:
        names = ", ".join(f"arch={n} (family {f})" for n, f in exact)
        return f"Its key layout matches the shipped config(s) {names} in conf/arch/: use one of those."
    if best is not None and best[2] > 0.2:
        return (
            f"No shipped arch config matches it exactly; the closest is arch={best[0]} (family {best[1]}, "
            f"{best[2]:.0%} of keys and shapes in common): check the config's hyperparameters against the checkpoint."
        )
    return "No shipped arch config in conf/arch/ resembles it: check the family and write a config for it."
