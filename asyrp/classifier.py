"""A small image classifier on P_t (the predicted x0) for guide=classifier (asyrp.guide): one binary logit per
labelled attribute (head=value), t given as an extra constant channel t/1000, so one network reads P_t at every t.

Its own generic network, trained on a labelled split of its own (never an oracle's network, weights or labels): a
few strided conv blocks and a global mean + max pool, so it takes any image size. ``fit_classifier`` trains it on
(P_t, t) pairs with BCE and Adam at a fixed seed (the global RNG is left as it was), the split's last images held
out to report its accuracy. The file (``FILE``, ``FORMAT``) holds the state dict, the network's shape and ``meta``
(arch, image size, t it was trained at, accuracies, the labelled split); it loads with weights_only=True, strictly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ops.errors import AsyrpUserError

FORMAT = "asyrp-guide-classifier/1"
FILE = "guide_classifier.pt"
KEY = "model.loss.guide.classifier"


class PtClassifier(nn.Module):
    """logits (B, K) = g(P_t, t): ``depth`` blocks of conv 3x3 + SiLU + strided conv 3x3 + SiLU (widths ``width`` x
    1, 2, 4, 4, ...), then the channel means and maxima to one linear layer."""

    def __init__(self, n_out: int, width: int = 32, depth: int = 3, channels: int = 3, norm: str = "batch"):
        super().__init__()
        self.shape = {"n_out": int(n_out), "width": int(width), "depth": int(depth), "channels": int(channels)}
        self.shape["norm"] = norm
        layers: list[nn.Module] = []
        c_in = channels + 1  # the image and t / 1000
        for i in range(depth):
            c = width * 2 ** min(i, 2)
            for conv in (nn.Conv2d(c_in, c, 3, padding=1), nn.Conv2d(c, c, 3, stride=2, padding=1)):
                n = nn.GroupNorm(min(8, c), c) if norm == "group" else nn.BatchNorm2d(c) if norm == "batch" else None
                layers += [conv, *([n] if n is not None else []), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, n_out)

    def forward(self, P: torch.Tensor, t: Any) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=P.dtype, device=P.device).reshape(-1)
        t = t.expand(P.shape[0]) if t.numel() == 1 else t
        x = torch.cat([P, (t / 1000.0).view(-1, 1, 1, 1).expand(-1, 1, *P.shape[2:])], dim=1)
        f = self.features(x)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode, no parameter takes a gradient: the h-function's loss reads the classifier, never trains it."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    return net


def _accuracy(net: PtClassifier, P: torch.Tensor, ts: Sequence[int], Y: torch.Tensor) -> list[float]:
    """Per attribute, the share of (image, t) pairs whose logit sign matches the label (P: (N, T, 3, H, W))."""
    if P.shape[0] == 0:
        return [float("nan")] * Y.shape[1]
    with torch.no_grad():
        hits = [((net(P[:, j], t) > 0) == Y.bool()).double() for j, t in enumerate(ts)]
    return [round(float(v), 4) for v in torch.stack(hits).mean(dim=(0, 1))]


def fit_classifier(
    P: torch.Tensor,
    ts: Sequence[int],
    Y: torch.Tensor,
    *,
    epochs: int = 5,
    lr: float = 2e-3,
    width: int = 16,
    val_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 32,
    norm: str = "batch",
    flip: bool = True,
) -> tuple[PtClassifier, dict[str, Any]]:
    """Train on P (N, T, 3, H, W): image i's P_t at the T times ``ts``, labels Y (N, K) of 1/0. The last
    ``val_fraction`` of the images are held out (all their t). Returns the frozen network and meta with the fit and
    held-out accuracy and the held-out majority rate per label column."""
    n, T = P.shape[:2]
    n_fit = min(max(int(round(n * (1 - val_fraction))), 2), n)
    Y = Y.float()
    with torch.random.fork_rng(devices=[]):  # the h-function's run keeps its own random stream
        torch.manual_seed(seed)
        net = PtClassifier(Y.shape[1], width=width, channels=P.shape[2], norm=norm)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        pairs = torch.cartesian_prod(torch.arange(n_fit), torch.arange(T))
        t_of = torch.as_tensor(list(ts), dtype=torch.float32)
        net.train()
        for _ in range(epochs):
            for idx in pairs[torch.randperm(len(pairs))].split(batch_size):
                i, j = idx[:, 0], idx[:, 1]
                x = P[i, j]
                if flip:  # mirrored faces carry the same labels: a cheap guard against learning the fit split
                    x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)
                loss = F.binary_cross_entropy_with_logits(net(x, t_of[j]), Y[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
    freeze(net)
    held = Y[n_fit:]
    majority = [round(float(max(c.mean(), 1 - c.mean())), 4) if len(held) else None for c in held.T]
    meta = {
        "fit_accuracy": _accuracy(net, P[:n_fit], ts, Y[:n_fit]),
        "held_out_accuracy": _accuracy(net, P[n_fit:], ts, held),
        "held_out_majority": majority,
        "n_fit": n_fit,
        "n_held_out": n - n_fit,
        "epochs": epochs,
        "lr": lr,
        "flip": flip,
        "seed": seed,
        "t": [int(t) for t in ts],
    }
    return net, meta


def classifier_state(net: PtClassifier, attributes: Sequence[str], meta: dict[str, Any]) -> dict[str, Any]:
    """What ``FILE`` holds: tensors and plain values only (weights_only=True reads it)."""
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "shape": dict(net.shape),
        "attributes": list(attributes),
        "meta": meta,
    }


def load_classifier(path: str | Path, arch_name: str | None) -> tuple[PtClassifier, list[str], dict[str, Any]]:
    """(frozen network, attributes, meta) of a classifier file; one error when it is missing, not one, or was
    trained on another backbone."""
    path = Path(str(path)).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AsyrpUserError(f"{KEY}.file={path} does not exist: pass the {FILE} of a run, or file=null") from None
    except Exception as err:  # noqa: BLE001 - damaged, or pickled code refused by weights_only
        raise AsyrpUserError(f"{KEY}.file={path} is not a readable classifier file ({type(err).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise AsyrpUserError(f"{KEY}.file={path} is not a classifier file ({FORMAT}): pass a run's {FILE}")
    meta = dict(obj.get("meta") or {})
    if arch_name is not None and meta.get("arch") != arch_name:
        raise AsyrpUserError(
            f"{KEY}.file={path} was trained on P_t of arch {meta.get('arch')}, this run is arch {arch_name}: "
            f"train one for this arch ({KEY}.file=null with {KEY}.labelled)"
        )
    net = PtClassifier(**obj["shape"])
    net.load_state_dict(obj["state_dict"], strict=True)
    return freeze(net), list(obj["attributes"]), meta
