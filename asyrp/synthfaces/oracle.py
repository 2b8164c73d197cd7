"""The attribute oracle: a small CNN that reads synthfaces attributes. It only *judges* edits, never trains them.

Trained on fresh renders with blur, noise and colour jitter so that DDPM artefacts do not fool it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .render import HEADS, render_array

log = logging.getLogger(__name__)
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "assets" / "synthfaces" / "oracle"
_SIZES = {k: len(v) for k, v in HEADS.items()}


class Oracle(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.GroupNorm(8, o), nn.SiLU())

        self.features = nn.Sequential(
            block(3, w, 1),
            block(w, w, 1),
            block(w, 2 * w, 2),
            block(2 * w, 2 * w, 1),
            block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * w, 128),
            nn.SiLU(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(128, n) for k, n in _SIZES.items()})
        self.width = width

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (usable as an offline FID feature network)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for images in [-1, 1] (resized to 32 x 32 if needed)."""
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=32, mode="bilinear", antialias=True, align_corners=False)
        z = self.features(x)
        return {k: head(z) for k, head in self.heads.items()}

    @property
    def classes(self) -> dict[str, list[str]]:
        """The class names of every head (what asyrp.metrics.OracleEditScore.from_oracle reads targets against)."""
        return {k: [str(c) for c in v] for k, v in HEADS.items()}

    @torch.no_grad()
    def judge(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted class index per head, and the minimum confidence over heads under key 'confidence'."""
        logits = self(x)
        out = {k: v.argmax(1) for k, v in logits.items()}
        out["confidence"] = torch.stack([v.softmax(1).amax(1) for v in logits.values()], 1).amin(1)
        return out


def labels_tensor(faces) -> dict[str, torch.Tensor]:
    labs = [f.labels() for f in faces]
    return {k: torch.tensor([lab[k] for lab in labs]) for k in HEADS}


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    B = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    k = torch.rand(B, 1, 1, 1, generator=g) * 0.7
    x = (1 - k) * x + k * blur
    x = x * (1 + 0.1 * (torch.rand(B, 3, 1, 1, generator=g) - 0.5)) + 0.1 * (torch.rand(B, 3, 1, 1, generator=g) - 0.5)
    x = x + torch.randn(x.shape, generator=g) * torch.rand(B, 1, 1, 1, generator=g) * 0.12
    return x.clamp(-1, 1)


def to_tensor(arr) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def accuracy(oracle: Oracle, seed: int = 7, n: int = 1000) -> dict[str, float]:
    arr, faces = render_array(seed, 0, n)
    pred = oracle.judge(to_tensor(arr))
    labs = labels_tensor(faces)
    return {k: float((pred[k] == labs[k]).float().mean()) for k in HEADS}


def train_oracle(
    out_dir: str | Path = DEFAULT_DIR,
    *,
    steps: int = 2500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
) -> Oracle:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Oracle()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    # oracle training images come from their own dataset seed (100), disjoint from the DDPM's (0)
    arr, faces = render_array(100, 0, 20_000)
    X, Y = to_tensor(arr), labels_tensor(faces)
    for step in range(steps):
        idx = torch.randint(0, len(X), (batch_size,), generator=g)
        logits = model(_augment(X[idx], g))
        loss = sum(F.cross_entropy(logits[k], Y[k][idx]) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            log.info("oracle step %d loss %.4f", step, loss.item())
    model.eval()
    acc = accuracy(model)
    log.info("oracle held-out accuracy: %s", acc)
    save_oracle(model, out_dir, {"heldout_accuracy": acc, "steps": steps})
    return model


def save_oracle(model: Oracle, out_dir: str | Path, meta: dict) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / "oracle.safetensors")
    (out_dir / "oracle.json").write_text(
        json.dumps(
            {"width": model.width, "heads": {k: [str(c) for c in v] for k, v in HEADS.items()}, **meta}, indent=1
        )
    )


def load_oracle(path: str | Path = DEFAULT_DIR) -> Oracle:
    """The shipped oracle (assets/synthfaces/oracle), frozen."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "oracle.safetensors"
    if not weights.is_file():
        from ..ops.errors import AsyrpUserError

        raise AsyrpUserError(
            f"synthfaces oracle not found at {weights}: rebuild it with `python -m asyrp.synthfaces.build oracle`"
        )
    cfg = json.loads((path / "oracle.json").read_text())
    model = Oracle(width=cfg["width"])
    model.load_state_dict(load_file(weights))
    return model.eval().requires_grad_(False)


def find_oracle(folder: str | Path | None = None) -> Oracle | None:
    """The oracle built in ``folder`` (None: the shipped one), or None when it is not there: what entry points pass
    to the library (discover.py, the experiments), which itself does not import the toy world."""
    folder = DEFAULT_DIR if folder is None else Path(folder)
    return load_oracle(folder) if (folder / "oracle.safetensors").is_file() else None


def judge(images: torch.Tensor, oracle: Oracle | None = None) -> dict[str, torch.Tensor]:
    """Oracle readings of images in [-1, 1] (B, 3, H, W): class index per head (see ``HEADS``) and 'confidence' (the
    minimum over heads of the top softmax probability). Loads the shipped oracle unless one is given."""
    return (oracle or _shipped()).judge(images)


_SHIPPED: list = []


def _shipped() -> Oracle:
    if not _SHIPPED:
        _SHIPPED.append(load_oracle())
    return _SHIPPED[0]
