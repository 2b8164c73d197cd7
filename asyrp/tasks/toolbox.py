"""Config -> objects for the tasks (moved here from asyrp/tasks.py; asyrp.build takes them over)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..ops.errors import AsyrpUserError


# -- building blocks -------------------------------------------------------------------------------------------
def build_backbone(arch: Mapping[str, Any], device: str | torch.device = "cpu"):
    from ..backbones import load_backbone

    ckpt = arch.get("checkpoint")
    try:
        return load_backbone(arch["family"], arch.get("config"), ckpt, device=device)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        where = f" from {ckpt}" if ckpt and str(ckpt) not in str(err) else ""
        raise AsyrpUserError(f"could not load backbone {arch.get('name')!r}{where}: {err}") from err


def alphas(arch: Mapping[str, Any]) -> torch.Tensor:
    from ..schedules import alphas_cumprod, make_betas

    return alphas_cumprod(make_betas(arch.get("beta_schedule", "linear")))


def instantiate_list(group: Any) -> list:
    """Instantiate every entry of a callbacks/logger group that has a _target_ (None entries are switched off)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]
