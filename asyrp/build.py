"""The one place where a config becomes objects: backbone, alpha_bar, CLIP, identity network, attribute, h-function
(and the plan).

Every entry point, task and experiment script builds through these functions, so a backbone is loaded one way
(family + config + checkpoint, frozen, behind the speed options), a noise schedule means one thing (alpha_bar) and a
bad config fails with one ``AsyrpUserError`` naming it. The arguments are config groups as composed by Hydra
(``cfg.arch``, ``cfg.clip``, ``cfg.identity``, ``cfg.attribute``, ``cfg.hfunction``; DictConfig or plain dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .ops.errors import AsyrpUserError


def backbone(arch: Mapping[str, Any], *, device: str | torch.device = "cpu", perf: Any = None):
    """The frozen backbone of a ``conf/arch`` entry (``checkpoint: null`` = random weights from the torch seed the
    caller set), behind the speed options ``perf`` (a ``conf/perf`` group, asyrp.perf); ``perf=None`` returns the bare
    backbone (the experiments and the bench measure it without options)."""
    from .backbones import load_backbone

    ckpt = arch.get("checkpoint")
    try:
        net = load_backbone(arch["family"], arch.get("config"), ckpt, device=device)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        where = f" from {ckpt}" if ckpt and str(ckpt) not in str(err) else ""
        raise AsyrpUserError(f"could not load backbone {arch.get('name')!r}{where}: {err}") from err
    if perf is None:
        return net
    from .checks import check_perf
    from .perf import with_perf

    return with_perf(net, check_perf(perf))


def alpha_bar(arch: Mapping[str, Any]) -> torch.Tensor:
    """alpha_bar_t for t = 0..999 of the arch's ``beta_schedule`` (linear unless it says cosine)."""
    from .schedules import alphas_cumprod, make_betas

    return alphas_cumprod(make_betas(arch.get("beta_schedule", "linear")))


def clip(cfg: Mapping[str, Any], *, device: str | torch.device = "cpu"):
    """The frozen CLIP of a ``conf/clip`` entry (asyrp.clip.load_clip)."""
    from .clip import load_clip

    return load_clip(cfg, device=device)


def identity(cfg: Mapping[str, Any], *, device: str | torch.device = "cpu"):
    """The frozen ArcFace IR-SE50 identity features of a ``conf/identity`` entry (its ``weights``: the user's
    model_ir_se50.pth), through asyrp.metrics.identity.load_irse50; a missing file is one AsyrpUserError."""
    from .metrics.identity import load_irse50

    weights = cfg.get("weights")
    if not weights:
        raise AsyrpUserError("identity.weights is not set: point it at model_ir_se50.pth (README, 'Identity')")
    return load_irse50(weights).to(device)


def attribute(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """An attribute of ``conf/attribute``: its name, the CLIP source / target texts and what an oracle checks."""
    try:
        return {
            "name": cfg.get("name"),
            "source": [str(s) for s in cfg["source"]],
            "target": [str(s) for s in cfg["target"]],
            "oracle_target": cfg.get("oracle_target"),
        }
    except KeyError as err:
        raise AsyrpUserError(f"attribute config has no {err}: give name, source and target (conf/attribute/)") from err


def hfunction(cfg: Any, backbone_: Any, constraint: Any = None, *, arch_name=None, target=None) -> torch.nn.Module:
    """A new h-function sized for ``backbone_`` from a ``conf/hfunction`` entry (asyrp.hfunctions.build_hfunction),
    behind the fixed layer of a ``conf/constraint`` entry when one applies (asyrp.constraints.constrain; ``arch_name``
    and the attribute's oracle ``target`` check its direction files)."""
    from .constraints import constrain
    from .hfunctions.build import build_hfunction, hfunction_space

    try:
        f = build_hfunction(cfg, backbone_)
    except (ValueError, FileNotFoundError) as err:
        raise AsyrpUserError(f"could not build the h-function from hfunction config: {err}") from err
    if constraint and constraint.get("use", "none") != "none" and hfunction_space(cfg) != "h":
        raise AsyrpUserError(f"constraint.use={constraint.get('use')} acts on h: use an h-space hfunction")
    return constrain(f, constraint, backbone_, arch_name=arch_name, target=target)


def trained_hfunction(path: str | Path, backbone_: Any, arch_name: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(h-function, stored meta) from a file train.py or discover.py wrote, or an official .pth, frozen and in eval
    mode (asyrp.hfunctions.load_hfunction_checkpoint)."""
    from .hfunctions.files import load_hfunction_checkpoint

    f, meta = load_hfunction_checkpoint(path, backbone_, arch_name)
    return f.eval().requires_grad_(False), meta


def instances(group: Any) -> list:
    """Every entry of a ``callbacks`` / ``logger`` group that has a ``_target_``, instantiated (None entries are
    switched off)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def plan(cfg: Mapping[str, Any], stored: Sequence[Mapping[str, Any]] | None = None) -> tuple[Any, list[dict] | None]:
    """(EditPlan, windows) of a composed config's ``plan`` group, through asyrp.plan. Without ``stored`` the group is
    complete (train, discover, the experiment scripts): ``plan_of``, no windows. With the ``edit`` entries stored in the
    h-function files (edit.py, app.py: a null field = as stored): ``resolve_plan`` (the group, else the first file,
    else plan.interval); ``windows``: a composition of files trained on different intervals, each in its own."""
    from .plan import FIELDS, plan_of, resolve_plan

    group = cfg["plan"]
    if stored is None:
        return plan_of(group), None
    return resolve_plan({k: group.get(k) for k in FIELDS}, stored, group.get("interval"))
