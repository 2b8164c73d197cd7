"""The frozen CLIP that scores edits: open_clip models, preprocessing for diffusion images, text directions.

Diffusion images live in [-1, 1]; CLIP wants its own input size and mean/std. ``FrozenCLIP.encode_image`` does that
mapping differentiably (the directional loss back-propagates through it into P_t^edit).

Text directions follow DiffusionCLIP/Asyrp: every prompt is embedded under the 80 ImageNet prompt templates (taken
from open_clip's ``zero_shot_metadata``), the normalised embeddings are averaged and renormalised, and the direction
is normalise(target - source). It is computed once per run (texts and weights do not change).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ops.errors import AsyrpUserError

log = logging.getLogger(__name__)

# a tag is a name open_clip resolves itself (downloading); anything that looks like a file is a local path
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def prompt_templates(kind: str | Sequence[str] | None) -> list[Callable[[str], str]]:
    """'imagenet' (open_clip's 80 OpenAI ImageNet templates, the official choice), 'simple', 'none', or a list of
    format strings with one ``{}``."""
    from open_clip import zero_shot_metadata as meta

    if kind is None or kind == "none":
        return [lambda c: c]
    if kind == "imagenet":
        return list(meta.OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return list(meta.SIMPLE_IMAGENET_TEMPLATES)
    if isinstance(kind, str):
        raise AsyrpUserError(
            f"unknown clip.templates {kind!r}: use imagenet, simple, none or a list of '...{{}}...' strings"
        )
    return [lambda c, f=f: f.format(c) for f in kind]


class FrozenCLIP(nn.Module):
    """An open_clip model in eval mode without gradients, with input handling for images in [-1, 1]."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        templates: str | Sequence[str] | None = "imagenet",
        name: str = "clip",
    ):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.templates = templates
        self.name = name
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenCLIP:
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> CLIP input: centre square crop, bicubic resize (antialiased), mean/std."""
        x = (x.float() + 1) / 2
        h, w = x.shape[-2:]
        if h != w:
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            x = x[..., top : top + s, left : left + s]
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (differentiable w.r.t. ``x``)."""
        return F.normalize(self.model.encode_image(self.preprocess(x)).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def text_embedding(self, texts: Sequence[str], templates: Any = "default") -> torch.Tensor:
        """One unit vector for a list of prompts: each prompt averaged over the templates, then over the prompts."""
        tpl = prompt_templates(self.templates if templates == "default" else templates)
        per_text = [F.normalize(self.encode_text([t(c) for t in tpl]).mean(0), dim=-1) for c in texts]
        return F.normalize(torch.stack(per_text).mean(0), dim=-1)

    @torch.no_grad()
    def text_direction(self, source: Sequence[str], target: Sequence[str]) -> torch.Tensor:
        """normalise(E_T(target) - E_T(source)): the direction the edited image should move along in CLIP space."""
        return F.normalize(self.text_embedding(target) - self.text_embedding(source), dim=-1)

    @torch.no_grad()
    def text_cosine(self, source: Sequence[str], target: Sequence[str]) -> float:
        """cos(E_T(source), E_T(target)) of the raw prompts (no templates), as the official recon weight uses."""
        return float((self.text_embedding(source, None) * self.text_embedding(target, None)).sum())


def _as_dict(cfg: Any) -> dict:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def _looks_like_path(p: str) -> bool:
    return p.endswith(_FILE_SUFFIXES) or "/" in p or p.startswith(".") or p.startswith("~")


def _read_json(path: str) -> dict:
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise AsyrpUserError(f"CLIP model config not found: {p}. Fix clip.model_config (a dict or a json file).")
    return json.loads(p.read_text())


def _load_local_weights(model: nn.Module, path: str) -> None:
    """Strict load of a local safetensors / weights-only torch file into an open_clip model built from its config."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AsyrpUserError(
            f"CLIP weights not found: {p}. Fix clip.weights, or rebuild the shipped synthfaces CLIP "
            "with `python -m asyrp.synthfaces.build clip`."
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise AsyrpUserError(
            f"cannot read CLIP weights {p} ({type(err).__name__}: {err}); re-create the file."
        ) from err
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        raise AsyrpUserError(
            f"CLIP weights {p} do not fit clip.model_config: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, mis-shaped {bad[:3]}; use the model config the weights were saved with."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


def load_clip(cfg: Mapping[str, Any], device: str | torch.device = "cpu") -> FrozenCLIP:
    """Build the frozen CLIP of a ``conf/clip/*.yaml``.

    cfg.model_config given: a randomly initialised open_clip ``CLIP`` from that dict (seeded by ``init_seed`` so
    every process builds the same network; tests/smoke runs, never downloads).
    Otherwise ``open_clip.create_model(cfg.model, pretrained=cfg.pretrained)``: a tag such as 'openai' downloads
    (only when the user asks for it), a file path must exist.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = _as_dict(cfg)
    templates = cfg.get("templates", "imagenet")
    mean = cfg.get("mean") or OPENAI_DATASET_MEAN
    std = cfg.get("std") or OPENAI_DATASET_STD
    if cfg.get("model_config"):
        mc = cfg["model_config"]
        if isinstance(mc, str):  # a model config json next to local weights (e.g. the shipped synthfaces CLIP)
            mc = _read_json(mc)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.get("init_seed", 0)))
            model = open_clip.model.CLIP(**mc)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=mc["text_cfg"].get("context_length", 77))
        image_size = mc["vision_cfg"]["image_size"]
        if cfg.get("weights"):
            _load_local_weights(model, cfg["weights"])
        else:
            log.warning(
                "CLIP %r built with RANDOM weights (clip.model_config set): for tests and smoke runs only",
                cfg.get("name"),
            )
    else:
        name, pretrained = cfg["model"], cfg.get("pretrained")
        if pretrained and _looks_like_path(str(pretrained)):
            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise AsyrpUserError(
                    f"CLIP weights file not found: {path}. Download the {name} weights (e.g. open_clip's "
                    f"'{name}' / 'openai' checkpoint) to that path, or pass clip.pretrained=openai to let open_clip "
                    "download them."
                )
            pretrained = str(path)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
        except (RuntimeError, ValueError, OSError) as err:
            raise AsyrpUserError(f"could not load CLIP {name} (pretrained={pretrained}): {err}") from err
        tokenizer = open_clip.get_tokenizer(name)
        size = getattr(model.visual, "image_size", 224)
        image_size = size[0] if isinstance(size, (tuple, list)) else size
        pp = getattr(model.visual, "preprocess_cfg", None) or {}
        mean = cfg.get("mean") or pp.get("mean", mean)
        std = cfg.get("std") or pp.get("std", std)
    clip = FrozenCLIP(
        model,
        tokenizer,
        image_size=image_size,
        mean=mean,
        std=std,
        templates=templates,
        name=str(cfg.get("name", "clip")),
    )
    return clip.to(device)
