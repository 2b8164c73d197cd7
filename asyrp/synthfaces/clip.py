"""A tiny open_clip CLIP trained contrastively on synthfaces captions, so the CLIP loss works offline.

Captions mention a random subset of attributes ("a smiling face", "a face with long red hair and glasses", ...), so
short prompts such as "a smiling face" mean something. In-batch contrastive targets are multi-positive: an image
matches every caption whose mentioned attributes it has.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .oracle import to_tensor
from .render import HAIR_COLOURS, MOUTHS, Face, render_array

log = logging.getLogger(__name__)
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "assets" / "synthfaces" / "clip"

MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 96, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def random_caption(face: Face, r: random.Random) -> tuple[str, dict]:
    """A caption naming a random subset of the face's attributes, and that subset."""
    said: dict = {}
    head = "a "
    if r.random() < 0.75:
        said["mouth"] = face.mouth
        head += face.mouth + " "
    parts = []
    hc, hl = r.random() < 0.5, r.random() < 0.4
    if hc or hl:
        words = ([face.hair_length] if hl else []) + ([face.hair_colour] if hc else [])
        parts.append(" ".join(words) + " hair")
        if hc:
            said["hair_colour"] = face.hair_colour
        if hl:
            said["hair_length"] = face.hair_length
    for key, phrase in (("glasses", "glasses"), ("hat", "a hat")):
        if r.random() < 0.4:
            said[key] = getattr(face, key)
            parts.append(phrase if getattr(face, key) else "no " + phrase.replace("a ", ""))
    r.shuffle(parts)
    return head + "face" + (" with " + " and ".join(parts) if parts else ""), said


def _matches(faces: list[Face], said: list[dict]) -> torch.Tensor:
    """M[i, j] = image j has every attribute caption i mentions."""
    return torch.tensor(
        [[all(getattr(f, k) == v for k, v in s.items()) for f in faces] for s in said], dtype=torch.float32
    )


def zero_shot_prompts() -> dict[str, list[tuple[str, object]]]:
    return {
        "mouth": [(f"a {m} face", m) for m in MOUTHS],
        "hair_colour": [(f"a face with {c} hair", c) for c in HAIR_COLOURS],
        "glasses": [("a face with no glasses", False), ("a face with glasses", True)],
        "hat": [("a face with no hat", False), ("a face with a hat", True)],
    }


@torch.no_grad()
def zero_shot_accuracy(clip, seed: int = 8, n: int = 500) -> dict[str, float]:
    """Per attribute: fraction of fresh renders whose correct prompt scores highest. ``clip`` is a FrozenCLIP."""
    arr, faces = render_array(seed, 0, n)
    img = clip.encode_image(to_tensor(arr))
    out = {}
    for key, prompts in zero_shot_prompts().items():
        txt = clip.encode_text([p for p, _ in prompts])
        pred = (img @ txt.T).argmax(1)
        truth = torch.tensor([[v for _, v in prompts].index(getattr(f, key)) for f in faces])
        out[key] = float((pred == truth).float().mean())
    return out


def train_clip(
    out_dir: str | Path = DEFAULT_DIR,
    *,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
):
    import open_clip

    from ..clip import FrozenCLIP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    r = random.Random(seed)
    model = open_clip.model.CLIP(**MODEL_CONFIG)
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=MODEL_CONFIG["text_cfg"]["context_length"])
    arr, faces = render_array(200, 0, 20_000)  # CLIP's own dataset seed
    X = to_tensor(arr)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(X), (batch_size,), generator=g).tolist()
        fb = [faces[i] for i in idx]
        caps = [random_caption(f, r) for f in fb]
        x = (X[idx] + 1) / 2
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        img = F.normalize(model.encode_image((x - mean) / std), dim=-1)
        txt = F.normalize(model.encode_text(tok([c for c, _ in caps])), dim=-1)
        logits = model.logit_scale.exp() * txt @ img.T  # (captions, images)
        m = _matches(fb, [s for _, s in caps])
        loss = 0.5 * (
            F.cross_entropy(logits, m / m.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, m.T / m.T.sum(1, keepdim=True))
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if step % 200 == 0:
            log.info("clip step %d loss %.4f", step, loss.item())
    model.eval()
    frozen = FrozenCLIP(model, tok, image_size=32, mean=MEAN, std=STD, templates="none", name="synthfaces")
    acc = zero_shot_accuracy(frozen)
    log.info("CLIP zero-shot accuracy: %s", acc)
    save_clip(model, out_dir, {"zero_shot_accuracy": acc, "steps": steps})
    return frozen


def save_clip(model, out_dir: str | Path, meta: dict) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}  # fp16 keeps it under 8 MB
    save_file(sd, out_dir / "clip.safetensors")
    (out_dir / "model_config.json").write_text(json.dumps(MODEL_CONFIG, indent=1))
    (out_dir / "training.json").write_text(json.dumps(meta, indent=1))
