"""Speed options for the frozen backbone (GPU-oriented, off on CPU by default) and a pass counter.

``PerfConfig`` (``conf/perf/default.yaml``) holds the options; ``with_perf(backbone, cfg)`` puts a Backbone
behind them (a ``PerfBackbone``: the same call), ``inference_context(cfg, device)`` is the context editing
runs under and ``loader_kwargs`` the DataLoader options. ``"auto"`` means: on when the input sits on a CUDA
device, off otherwise.

  autocast        bf16 / fp16 autocast inside ``encode`` and ``decode`` only: the DDIM arithmetic, the h-function and
                  the CLIP loss keep the input dtype (h, emb and the output are cast back to it).
  channels_last   NHWC weights and inputs (faster convolutions on tensor cores).
  sdpa            ``F.scaled_dot_product_attention`` in attention. diffusers' ``Attention`` (ddpm, adm, diffusers
                  families) already uses it by default (``AttnProcessor2_0``); the native ncsnpp ``AttnBlock`` only
                  when switched on. ``false`` forces the explicit softmax(q k^T) v everywhere (reference numerics).
  compile         ``torch.compile`` of ``encode`` and ``decode`` (``compile_mode``, ``compile_backend``).
  inference_mode  editing under ``torch.inference_mode`` rather than ``torch.no_grad`` (results cannot enter autograd).
  pin_memory      DataLoader pinned host memory; ``num_workers`` loader processes (``None``: keep the dataset's).

Every option changes the arithmetic at most within a stated tolerance (tests/integration/test_perf.py): channels_last, sdpa and
inference_mode to float32 round-off, bf16 autocast to about 1% of the output scale.

``PassCounter`` instruments a backbone (wraps ``encode`` / ``decode`` on the instance) and records every call with its
batch rows, timestep and wall time: the bench and the tests count network passes with it instead of by formula.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .backbones.base import Backbone, Encoding

AUTO = "auto"


@dataclass
class PerfConfig:
    autocast: str | bool | None = AUTO  # auto | bf16 | fp16 | null/false
    channels_last: bool | str = AUTO
    sdpa: bool | str = AUTO
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    inference_mode: bool | str = AUTO
    pin_memory: bool | str = AUTO
    num_workers: int | None = None

    @classmethod
    def from_any(cls, cfg: PerfConfig | Mapping[str, Any] | None) -> PerfConfig:
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        try:
            from omegaconf import OmegaConf

            if OmegaConf.is_config(cfg):
                cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover
            pass
        names = {f.name for f in fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise ValueError(f"unknown perf option(s) {sorted(unknown)}: the options are {sorted(names)}")
        return cls(**dict(cfg))


def _on(value: Any, device: torch.device) -> bool:
    """Resolve an on/off/auto option: auto = on for CUDA."""
    if value == AUTO:
        return device.type == "cuda"
    return bool(value)


def autocast_dtype(value: Any, device: torch.device) -> torch.dtype | None:
    if value == AUTO:
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if value in (None, False, "null", "none", "fp32", "float32"):
        return None
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        True: torch.bfloat16,
    }
    if value not in table:
        raise ValueError(f"perf.autocast={value!r}: use auto, bf16, fp16 or null")
    return table[value]


def set_sdpa(backbone: torch.nn.Module, on: bool | None) -> int:
    """Switch every attention layer to SDPA (True) or to the explicit softmax (False); None leaves diffusers' default
    (SDPA) alone and keeps the native blocks explicit. Returns how many layers were set."""
    n = 0
    for m in backbone.modules():
        if hasattr(m, "use_sdpa"):  # native ncsnpp AttnBlock
            m.use_sdpa = bool(on)
            n += 1
        elif hasattr(m, "set_processor") and hasattr(m, "processor") and on is not None:  # diffusers Attention
            from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

            m.set_processor(AttnProcessor2_0() if on else AttnProcessor())
            n += 1
    return n


def _cast_encoding(enc: Encoding, dtype: torch.dtype) -> Encoding:
    # h and emb go to the h-function (kept in the input dtype); the skips only come back to the decoder
    return Encoding(h=enc.h.to(dtype), skips=enc.skips, emb=enc.emb.to(dtype), extra=enc.extra)


class PerfBackbone(Backbone):
    """A backbone behind the speed options: the same call (``encode`` / ``decode`` / ``backbone(x, t)``, ``h_shape``,
    ``eps`` ...), wrapped once where the backbone is built, like the per-family wrappers wrap their nets.

    ``auto`` options, the autocast device and the weights' layout (sdpa, channels_last) follow the device of the
    input, resolved at the first call on each device type: a wrapper built on the CPU (where the inversion cache is
    built) and moved by Lightning to its training device needs nothing re-applied, and it pickles (no closures; the
    ``torch.compile`` results are rebuilt in the receiving process).
    """

    def __init__(self, backbone: Backbone, cfg: PerfConfig | Mapping[str, Any] | None = None):
        super().__init__(backbone.config, out_channels=backbone.out_channels, eps_channels=backbone.eps_channels)
        self.inner = backbone
        self.family = backbone.family
        self.perf = PerfConfig.from_any(cfg)
        self._set_for: str | None = None  # device type the options were last resolved for
        self._compiled: dict[str, Callable] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_set_for"], state["_compiled"] = None, {}  # resolved again (and compiled again) where it lands
        return state

    @property
    def image_size(self) -> int:
        return self.inner.image_size

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return self.inner.h_shape

    @property
    def emb_dim(self) -> int:
        return self.inner.emb_dim

    @property
    def in_channels(self) -> int:
        return self.inner.in_channels

    def eps(self, out: torch.Tensor) -> torch.Tensor:
        return self.inner.eps(out)

    def options(self, device: torch.device | str) -> dict[str, Any]:
        """The options in effect on ``device``: sdpa (None = each family's default), channels_last, autocast dtype,
        compile."""
        dev, cfg = torch.device(device), self.perf
        sdpa = None if cfg.sdpa == AUTO and dev.type != "cuda" else _on(cfg.sdpa, dev)
        return {
            "sdpa": sdpa,
            "channels_last": _on(cfg.channels_last, dev),
            "autocast": autocast_dtype(cfg.autocast, dev),
            "compile": bool(cfg.compile),
        }

    def _resolve(self, device: torch.device) -> dict[str, Any]:
        opts = self.options(device)
        if self._set_for != device.type:
            set_sdpa(self.inner, opts["sdpa"])
            fmt = torch.channels_last if opts["channels_last"] else torch.contiguous_format
            self.inner.to(memory_format=fmt)
            self._set_for = device.type
        return opts

    def _fn(self, name: str) -> Callable:
        fn = getattr(self.inner, name)
        if not self.perf.compile:
            return fn
        if name not in self._compiled:
            kw = {"backend": self.perf.compile_backend}
            if self.perf.compile_mode:
                kw["mode"] = self.perf.compile_mode
            self._compiled[name] = torch.compile(fn, **kw)
        return self._compiled[name]

    def encode(self, x: torch.Tensor, t: Any, *args: Any, **kw: Any) -> Encoding:
        opts = self._resolve(x.device)
        if opts["channels_last"] and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = opts["autocast"]
        if amp is None:
            return self._fn("encode")(x, t, *args, **kw)
        with torch.autocast(x.device.type, dtype=amp):
            enc = self._fn("encode")(x, t, *args, **kw)
        return _cast_encoding(enc, x.dtype)

    def decode(self, enc: Encoding, h: torch.Tensor | None = None) -> torch.Tensor:
        ref = h if h is not None else enc.h
        amp = self._resolve(ref.device)["autocast"]
        if amp is None:
            return self._fn("decode")(enc, h)
        with torch.autocast(ref.device.type, dtype=amp):
            out = self._fn("decode")(enc, h)
        return out.to(ref.dtype)


def with_perf(backbone: Backbone, cfg: PerfConfig | Mapping[str, Any] | None = None) -> PerfBackbone:
    """``backbone`` behind the speed options ``cfg`` (a wrapped backbone is re-wrapped from its inner one)."""
    while isinstance(backbone, PerfBackbone):
        backbone = backbone.inner
    return PerfBackbone(backbone, cfg)


def inference_context(
    cfg: PerfConfig | Mapping[str, Any] | None = None, device: torch.device | str = "cpu"
) -> contextlib.AbstractContextManager:
    """torch.inference_mode() when ``inference_mode`` is on (auto: on CUDA), else torch.no_grad()."""
    cfg = PerfConfig.from_any(cfg)
    return torch.inference_mode() if _on(cfg.inference_mode, torch.device(device)) else torch.no_grad()


def loader_kwargs(cfg: PerfConfig | Mapping[str, Any] | None = None, device: torch.device | str | None = None) -> dict:
    """DataLoader options: pin_memory (auto: when CUDA is available) and num_workers (if set)."""
    cfg = PerfConfig.from_any(cfg)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kw: dict[str, Any] = {"pin_memory": _on(cfg.pin_memory, dev)}
    if cfg.num_workers is not None:
        kw["num_workers"] = int(cfg.num_workers)
    return kw


# ---------------------------------------------------------------------------------------------------------------
# counting passes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Call:
    kind: str  # "encode" | "decode"
    rows: int  # batch rows the call processed
    t: float | None  # timestep of an encode (first row), None for decode
    start: float
    end: float
    grad: bool  # recorded for autograd
    enc_rows: int = 0  # rows of the encoding a decode started from (rows / enc_rows copies decoded in one call)
    phase: str | None = None  # the counter's ``phase`` when the call ran (set by whoever drives it, e.g. a bench)


@dataclass
class PassCounter:
    """Records every ``encode`` / ``decode`` of a backbone while active (``with PassCounter(bb) as c: ...``).

    ``forward`` is ``decode(encode(...))`` and is therefore counted as one encode plus one decode. Pass counts are in
    image-passes: a call on R rows counts R.
    """

    backbone: Backbone
    calls: list[Call] = field(default_factory=list)
    sync: bool = False  # torch.cuda.synchronize around calls (accurate GPU timing)
    phase: str | None = None

    def __enter__(self) -> PassCounter:
        bb = self.backbone
        self._saved = {n: bb.__dict__.get(n) for n in ("encode", "decode")}
        enc_fn, dec_fn = bb.encode, bb.decode
        sync = self.sync and torch.cuda.is_available()

        def clock() -> float:
            if sync:
                torch.cuda.synchronize()
            return time.perf_counter()

        def encode(x, t, *args, **kw):
            t0 = clock()
            out = enc_fn(x, t, *args, **kw)
            tt = torch.as_tensor(t)
            self.calls.append(
                Call(
                    "encode",
                    int(x.shape[0]),
                    float(tt.reshape(-1)[0]),
                    t0,
                    clock(),
                    torch.is_grad_enabled(),
                    int(x.shape[0]),
                    self.phase,
                )
            )
            return out

        def decode(enc, h=None):
            t0 = clock()
            out = dec_fn(enc, h)
            rows = int((h if h is not None else enc.h).shape[0])
            self.calls.append(
                Call("decode", rows, None, t0, clock(), torch.is_grad_enabled(), int(enc.h.shape[0]), self.phase)
            )
            return out

        object.__setattr__(bb, "encode", encode)
        object.__setattr__(bb, "decode", decode)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self._saved.items():
            if fn is None:
                self.backbone.__dict__.pop(name, None)
            else:
                object.__setattr__(self.backbone, name, fn)

    def reset(self) -> None:
        self.calls.clear()

    def rows(self, kind: str) -> int:
        return sum(c.rows for c in self.calls if c.kind == kind)

    def seconds(self, kind: str | None = None) -> float:
        return sum(c.end - c.start for c in self.calls if kind is None or c.kind == kind)
