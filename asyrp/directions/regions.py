"""Where an attribute's edit concentrates, found without the oracle: a (H, W) score map per pixel, then a mask.

Two sources, both at image resolution:
- ``clip_gradient_map``: |d <E_I(x), text direction> / dx| summed over channels and averaged over the images: where
  CLIP's reading of the attribute is most sensitive (no edit, no training; the first-order directional CLIP loss).
- ``p_t_change_map``: |P_t^edit - P_t| summed over channels, averaged over the images and the edited steps of an
  edited and an unedited walk from the same x_T: where a given edit (a trained h-function, a direction) acts.
``region_mask`` smooths, normalises (max = 1) and thresholds a map into the mask that asyrp.masks writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def clip_gradient_map(
    encode_image: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, text_dir: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """(H, W): mean over the N images x (in [-1, 1]) of the channel-summed |gradient| of <E_I(x), text_dir>."""
    total = torch.zeros(x.shape[-2:], dtype=torch.float64)
    d = text_dir.detach().reshape(-1)
    for lo in range(0, x.shape[0], batch_size):
        xb = x[lo : lo + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            s = (encode_image(xb).float() * d.to(xb.device).float()).sum()
            (g,) = torch.autograd.grad(s, xb)
        total += g.abs().sum(1).sum(0).double().cpu()
    return (total / x.shape[0]).float()


def p_t_change_map(
    edited: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
    reference: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
    t_min: int,
) -> torch.Tensor:
    """(H, W): mean over the steps t >= t_min and the images of sum_c |P_t^edit - P_t| of two walk trajectories
    ((t, x_t, P_t) per step, as ``asyrp.samplers.edit(return_trajectory=True)`` gives them; same steps)."""
    ref = {int(t): P for t, _, P in reference}
    diffs = [(P - ref[int(t)]).abs().sum(1).mean(0) for t, _, P in edited if int(t) >= t_min and int(t) in ref]
    if not diffs:
        raise ValueError(f"no common step t >= {t_min} in the two walks: the edit interval holds no step")
    return torch.stack(diffs).mean(0).float().cpu()


def region_mask(score: torch.Tensor, *, threshold: float = 0.5, blur: int = 1, grow: int = 0) -> torch.Tensor:
    """The mask of a score map: box-blurred over (2 blur + 1)^2 pixels, divided by its maximum, 1 where it reaches
    ``threshold``, then grown by ``grow`` pixels (a max filter). Raises ValueError for a flat map."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold} must lie in (0, 1): the fraction of the map's maximum kept")
    m = score.detach().double().abs()[None, None]
    if blur > 0:
        m = F.avg_pool2d(F.pad(m, (blur,) * 4, mode="replicate"), 2 * blur + 1, stride=1)
    top = float(m.max())
    if not top > 0:
        raise ValueError("the score map is zero everywhere: the edit or the text direction changes no pixel")
    mask = (m / top >= threshold).double()
    if grow > 0:
        mask = F.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
    return mask[0, 0].float()


def normalised(score: torch.Tensor) -> torch.Tensor:
    """The map divided by its maximum (for showing it)."""
    return (score / score.abs().max().clamp_min(1e-30)).float()
