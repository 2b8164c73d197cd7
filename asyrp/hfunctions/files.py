"""The h-function file format, in one place: what train.py writes and edit.py (and the experiments) read.

- ``hfunction.pt`` (``FORMAT``): {"format", "state_dict", "hfunction" (the config to rebuild it; its ``space`` says
  whether it acts on h or is an image-shaped eps- / x-space direction, h when absent), "arch", "h_shape",
  "emb_dim", "attribute", "edit" (n_inv, n_gen, t0, t_edit, t_boost, mode, strength, spacing)}; ``payload`` builds
  it from a training module, ``save_hfunction`` writes it (and the official layout beside it).
- the official layout ``{"0": state_dict}`` of the Asyrp authors' 35 published files (DDPM or ADM block, read from
  the parameter names), a bare block state dict, or a global delta_h table: ``load_official_hfunction``.
- ``read_hfunction_file`` reads a file once, safely (tensors only), with one clear error per fault;
  ``hfunction_from_payload`` builds the h-function from what was read (either format) and ``probe_hfunction`` runs it
  once on the backbone's bottleneck, so a file for another backbone fails with its shapes before any image is edited.

The top of the package's chain (modules <- build <- files): a stored config is rebuilt through ``build_hfunction``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..ops.errors import AsyrpUserError
from ..ops.io import atomic_save
from .build import _is_state_dict, _torch_load, build_hfunction, hfunction_space, space_shape
from .modules import ADM_KEYS, DDPM_KEYS, DeltaBlock, GlobalDirection, HFunction

log = logging.getLogger(__name__)

FORMAT = "asyrp-hfunction/1"


def payload(hfunc: nn.Module, rebuild_info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``hfunction.pt`` object: the weights (on the CPU) and what rebuilding them needs."""
    state = {k: v.detach().cpu().clone() for k, v in hfunc.state_dict().items()}
    return {"format": FORMAT, "state_dict": state, **rebuild_info}


def save_hfunction(obj: Mapping[str, Any], path: str | Path, official_path: str | Path | None = None) -> None:
    """Write ``hfunction.pt`` atomically, and the same weights in the official layout when ``official_path`` is set
    and the function has no fixed constraint layer (the official block cannot hold one)."""
    atomic_save(dict(obj), path)
    if official_path is not None and not (obj.get("hfunction") or {}).get("constraints"):
        atomic_save({"0": obj["state_dict"]}, official_path)  # (a constrained function has no official layout)


# -- the official layout ------------------------------------------------------------------------------------------
def _delta_block_from_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> DeltaBlock:
    keys = frozenset(sd)
    if keys == DDPM_KEYS:
        width, channels = sd["conv1.weight"].shape[:2]
        k = int(sd["conv1.weight"].shape[-1])
        block = DeltaBlock("ddpm", channels, sd["temb_proj.weight"].shape[1], width=width, kernel_size=k)
    elif keys == ADM_KEYS:
        width, channels = sd["in_layers.2.weight"].shape[:2]
        k = int(sd["in_layers.2.weight"].shape[-1])
        block = DeltaBlock("adm", channels, sd["emb_layers.1.weight"].shape[1], width=width, kernel_size=k)
    else:
        raise ValueError(
            f"{source}: not an Asyrp h-function. Expected the DDPM block keys {sorted(DDPM_KEYS)} or the ADM block "
            f"keys {sorted(ADM_KEYS)}, got {sorted(keys)[:12]}{' ...' if len(keys) > 12 else ''}"
        )
    block.load_state_dict(dict(sd), strict=True)
    return block.eval()


def load_official_hfunction(path: str | Path) -> HFunction:
    """Load an h-function published with the official implementation (or a bare state dict of one).

    The 35 published files hold the block's state dict under key ``"0"`` (plus optimizer/scheduler states);
    the layout (DDPM or ADM block) is read from the parameter names and loaded strictly. Files of the global
    variant (``{"<t>": delta_h}``, or ``{"0": delta_h}`` without time dependence) become a ``GlobalDirection``.
    Returns a module called ``module(h, emb) -> delta_h`` in eval mode.
    """
    source = str(path)
    try:
        obj = _torch_load(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # unpicklable / not a torch file
        raise ValueError(f"{source}: cannot be read as a weights-only torch file ({e})") from e
    return official_from_object(obj, source)


def official_from_object(obj: Any, source: str) -> HFunction:
    """``load_official_hfunction`` on an object already read from ``source`` (so a file is read once)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict (official checkpoint or state dict), got {type(obj).__name__}")
    if isinstance(obj.get("0"), Mapping):
        return _delta_block_from_state_dict(obj["0"], source)
    if _is_state_dict(obj) and (frozenset(obj) in (DDPM_KEYS, ADM_KEYS)):
        return _delta_block_from_state_dict(obj, source)
    # global delta_h files: numeric keys -> (C, H, W) tensors
    table = {k: v for k, v in obj.items() if str(k).lstrip("-").isdigit() and isinstance(v, torch.Tensor)}
    if table and all(v.dim() == 3 for v in table.values()) and len({tuple(v.shape) for v in table.values()}) == 1:
        shape = next(iter(table.values())).shape
        if len(table) == 1 and int(next(iter(table))) == 0:
            g = GlobalDirection(shape)
            g.delta_h.data.copy_(next(iter(table.values())))
        else:
            ts = sorted(int(k) for k in table)
            g = GlobalDirection(shape, timesteps=ts)
            g.delta_h.data.copy_(torch.stack([table[k] for k in sorted(table, key=int)]))
        return g.eval()
    if _is_state_dict(obj):
        return _delta_block_from_state_dict(obj, source)  # raises the layout error with the keys it found
    raise ValueError(
        f"{source}: unrecognised file. Expected an official Asyrp checkpoint (state dict under key '0'), a bare "
        f"DeltaBlock state dict, or a global delta_h table; top-level keys: {sorted(map(str, obj))[:12]}"
    )


# -- reading either format --------------------------------------------------------------------------------------
def read_hfunction_file(path: str | Path) -> Any:
    """The object stored in an h-function checkpoint, read safely (tensors only), with one clear error per fault."""
    from ..backbones.checkpoints import CheckpointError, load_file

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise AsyrpUserError(
            f"h-function checkpoint not found: {path}. Pass checkpoint=<run>/checkpoints/hfunction.pt "
            "or an official *.pth file."
        )
    try:
        return load_file(path)
    except CheckpointError as err:
        msg = str(err)
        if err.refused:
            raise AsyrpUserError(
                f"h-function checkpoint {path} contains pickled Python objects besides tensors ({err.refused}); loading "
                "it is refused for safety (it could run code). If you trust the file, re-save its tensors only "
                "(torch.save({'0': state_dict}, 'clean.pth')) and pass that file"
            ) from err
        raise AsyrpUserError(
            f"cannot read h-function checkpoint {path}: the file is truncated, damaged or not a torch "
            f"checkpoint ({msg.split(' (')[-1].split(')')[0] if ' (' in msg else msg}); re-download it, "
            "or use the hfunction.pt of another epoch"
        ) from err


def probe_hfunction(
    hfunc: torch.nn.Module, backbone, path: Path, arch_name: str | None, t0: int = 999, space: str = "h"
) -> None:
    """Run the h-function once on a zero bottleneck (or a zero image, for an eps- or x-space direction): a file for
    another backbone fails here, with its shapes."""
    p = next(backbone.parameters())
    h = torch.zeros(1, *space_shape(space, backbone), device=p.device, dtype=p.dtype)
    emb = torch.zeros(1, int(backbone.emb_dim), device=p.device, dtype=p.dtype)
    what = f"{space} of shape {list(h.shape[1:])} / emb {emb.shape[1]}"
    try:
        with torch.no_grad():
            out = hfunc(h, emb, torch.full((1,), int(t0), device=p.device))
    except (RuntimeError, ValueError, IndexError, KeyError) as err:
        raise AsyrpUserError(
            f"h-function checkpoint {path} does not fit the bottleneck of arch {arch_name!r} ({what}): "
            f"{type(err).__name__}: {err}. Pass the arch it was trained for"
        ) from err
    if tuple(out.shape) != tuple(h.shape):
        raise AsyrpUserError(
            f"h-function checkpoint {path} gives delta_h of shape {list(out.shape[1:])} but arch "
            f"{arch_name!r} has {what}: pass the arch it was trained for"
        )


def hfunction_from_payload(
    obj: Any, path: str | Path, backbone, arch_name: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Our ``hfunction.pt`` payload (rebuilt from its stored config, strict) or an official file's object."""
    path = Path(str(path)).expanduser()
    meta: dict[str, Any] = {}
    space = "h"  # official files act on h
    try:
        if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
            arch = (obj.get("arch") or {}).get("name")
            if arch and arch_name and arch != arch_name:  # same shapes, another network: allowed, but say so
                log.warning("%s was trained with arch %r, editing with arch %r", path, arch, arch_name)
            want = (list(obj["h_shape"]), int(obj["emb_dim"]))
            have = (list(backbone.h_shape), int(backbone.emb_dim))
            if want != have:
                raise AsyrpUserError(
                    f"{path} was trained for h of shape {want[0]} / emb {want[1]} (arch {arch!r}) but "
                    f"the backbone gives {have[0]} / {have[1]}: pass arch={arch}"
                )
            hf_cfg = dict(obj["hfunction"] or {})
            hf_cfg["checkpoint"] = None
            space = hfunction_space(hf_cfg)
            hfunc = build_hfunction(hf_cfg, backbone)
            hfunc.load_state_dict(obj["state_dict"], strict=True)
            meta = dict(obj)
        else:
            hfunc = official_from_object(obj, str(path))
    except AsyrpUserError:
        raise
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise AsyrpUserError(
            f"h-function checkpoint {path} does not fit: {err}. Pass an hfunction.pt written by "
            "train.py or an official Asyrp .pth (not a backbone checkpoint)"
        ) from err
    p = next(backbone.parameters())
    hfunc = hfunc.to(device=p.device, dtype=p.dtype).eval()
    probe_hfunction(hfunc, backbone, path, arch_name, int((meta.get("edit") or {}).get("t0", 999)), space)
    return hfunc, meta


def load_hfunction_checkpoint(
    path: str | Path, backbone, arch_name: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An h-function from our ``hfunction.pt`` (rebuilt from its stored config, strict) or an official ``.pth``."""
    return hfunction_from_payload(read_hfunction_file(path), path, backbone, arch_name)
