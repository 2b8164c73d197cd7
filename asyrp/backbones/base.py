"""The frozen network behind one call, split at its bottleneck (h-space).

Every family (ddpm, adm, ncsnpp, diffusers) presents the same object: ``backbone(x, t)`` is the full upstream output,
``encode`` runs up to and including the middle block and ``decode`` finishes the pass from there. Asyrp edits the
middle-block output ``h``, so the split is the whole point: one encode can feed several decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Encoding:
    """What the decoder needs: the bottleneck ``h``, the skip activations and the time embedding ``emb``.

    Tensors are never modified in place by ``decode``, so one encoding can be decoded any number of times.
    ``extra`` carries family-specific state (e.g. the input for an input-skip), batched like the rest.
    """

    h: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    emb: torch.Tensor
    extra: tuple[torch.Tensor, ...] = ()

    @property
    def batch_size(self) -> int:
        return self.h.shape[0]

    def repeat(self, k: int) -> Encoding:
        """The encoding stacked k times along the batch (copy i of image b sits at i * B + b)."""
        if k == 1:
            return self
        rep = lambda x: x.repeat(k, *([1] * (x.dim() - 1)))  # noqa: E731
        return Encoding(
            h=rep(self.h),
            skips=tuple(rep(s) for s in self.skips),
            emb=rep(self.emb),
            extra=tuple(rep(e) for e in self.extra),
        )

    def with_h(self, h: torch.Tensor) -> Encoding:
        """This encoding with ``h`` replaced; if ``h`` holds k stacked copies of the batch, the rest is repeated to match."""
        B = self.batch_size
        if h.shape[0] % B != 0 or h.shape[1:] != self.h.shape[1:]:
            raise ValueError(
                f"h of shape {tuple(h.shape)} does not fit an encoding with h of shape {tuple(self.h.shape)}: "
                "pass a tensor with the same per-image shape and a batch that is a multiple of the encoding's."
            )
        return replace(self.repeat(h.shape[0] // B), h=h)


def family_config(
    family: str, config: dict[str, Any], defaults: dict[str, Any], required: tuple[str, ...], ignored: set[str]
) -> dict[str, Any]:
    """An upstream family's hyperparameters, checked and completed: an unknown or missing key is one error naming the
    known ones (a typo would otherwise build a different network), upstream keys of no use here (``ignored``) dropped."""
    unknown = set(config) - set(defaults) - set(required) - ignored
    if unknown:
        raise ValueError(
            f"unknown {family} config keys {sorted(unknown)}; known: {sorted(set(defaults) | set(required))}"
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{family} config lacks {missing}")
    return {**defaults, **{k: v for k, v in config.items() if k not in ignored}}


def _as_timesteps(t: torch.Tensor | float | int, x: torch.Tensor) -> torch.Tensor:
    """Broadcast ``t`` (scalar or one per image, on the 0..T-1 scale) to a float vector of the batch size."""
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


class Backbone(nn.Module):
    """A frozen diffusion U-Net with a bottleneck split.

    Subclasses implement ``encode`` and ``decode``; ``forward`` is their composition, so the full pass and the split
    pass are the same computation by construction.
    """

    family: str = "?"

    def __init__(self, config: dict[str, Any], *, out_channels: int, eps_channels: int = 3):
        super().__init__()
        self.config = dict(config)
        self.out_channels = out_channels
        self.eps_channels = eps_channels
        self._h_shape: tuple[int, int, int] | None = None
        self._emb_dim: int | None = None

    # -- the split -------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, t: torch.Tensor | float | int) -> Encoding:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, enc: Encoding, h: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        return self.decode(self.encode(x, t))

    # -- what callers need to know ---------------------------------------------------------------------------
    def eps(self, out: torch.Tensor) -> torch.Tensor:
        """The noise prediction inside a full output (learned-variance models append variance channels)."""
        return out[:, : self.eps_channels]

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size", 0))

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 3))

    def _probe(self) -> None:
        p = next(self.parameters())
        size = self.image_size
        x = torch.zeros(1, self.in_channels, size, size, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            enc = self.encode(x, torch.zeros(1, device=p.device))
        self._h_shape = tuple(enc.h.shape[1:])  # type: ignore[assignment]
        self._emb_dim = int(enc.emb.shape[1])

    @property
    def h_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of h at the configured image size."""
        if self._h_shape is None:
            self._probe()
        return self._h_shape  # type: ignore[return-value]

    @property
    def h_channels(self) -> int:
        return self.h_shape[0]

    @property
    def emb_dim(self) -> int:
        """Width of the time embedding after its MLP (what the h-function is conditioned on)."""
        if self._emb_dim is None:
            self._probe()
        return self._emb_dim  # type: ignore[return-value]

    def freeze(self) -> Backbone:
        """Eval mode and no gradients: the backbone is never trained in asyrp."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> Backbone:
        # A frozen backbone stays in eval mode even inside a module that is put in train mode (dropout off).
        return super().train(False)


class UNet2DBackbone(Backbone):
    """A diffusers ``UNet2DModel`` split at its mid block (used by the ddpm, adm and diffusers families).

    ``encode``/``decode`` follow ``UNet2DModel.forward`` section by section; families whose input is not mapped by the
    net itself (e.g. score_sde centring) do it in ``encode``.
    """

    def __init__(self, unet: nn.Module, config: dict[str, Any], *, eps_channels: int = 3):
        super().__init__(config, out_channels=unet.config.out_channels, eps_channels=eps_channels)
        self.unet = unet
        if getattr(unet.config, "time_embedding_type", "positional") == "fourier":
            raise ValueError("UNet2DModel with fourier time embedding (NCSN++ VE) is not a supported backbone")
        for blk in list(unet.down_blocks) + list(unet.up_blocks):
            if hasattr(blk, "skip_conv"):
                raise ValueError(f"{type(blk).__name__} (progressive skip blocks) is not supported by UNet2DBackbone")

    @property
    def image_size(self) -> int:
        size = self.config.get("image_size") or self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def encode(
        self, x: torch.Tensor, t: torch.Tensor | float | int, class_labels: torch.Tensor | None = None
    ) -> Encoding:
        unet = self.unet
        # 0. input
        if unet.config.center_input_sample:
            x = 2 * x - 1.0
        # 1. time embedding
        t = _as_timesteps(t, x)
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=x.dtype))
        if unet.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this backbone is class-conditional: pass class_labels to encode")
            emb = emb + unet.class_embedding(class_labels).to(dtype=x.dtype)
        # 2. down path, every residual output kept as a skip
        sample = unet.conv_in(x)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        # 3. middle block: its output is h
        h = unet.mid_block(sample, emb)
        return Encoding(h=h, skips=skips, emb=emb)

    def decode(self, enc: Encoding, h: torch.Tensor | None = None) -> torch.Tensor:
        unet = self.unet
        if h is not None:
            enc = enc.with_h(h)
        sample, skips, emb = enc.h, enc.skips, enc.emb
        # 4. up path: each block takes its len(resnets) skips from the end
        for block in unet.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            sample = block(sample, res, emb)
        # 5. output
        sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
        return sample
