"""The LightningModule that trains delta_h = f(h, t) for one attribute; backbone and CLIP stay frozen outside it.

Only the h-function is a registered child: it is all that DDP wraps and synchronises, all that ``state_dict`` and
Lightning checkpoints hold, and all the optimiser sees. Backbone and CLIP (and the identity network of
``model.loss.w_id``) are kept in a plain attribute (moved with the module by ``_apply``) and never enter hparams.

Training schedule (official ``run_training``): for a batch, start at the cached x_T and walk the generation steps
t >= t_edit from T down; at every step take ONE optimiser step on
    w_clip * L_direction(P_t^edit, y_trg; x0, y_src) + w_recon * c * |P_t^edit - P_t^orig|
with the gradient truncated to this step (x_t is detached), then continue from the edited x_{t-1}. P_t^orig is the
unedited DDIM walk's prediction, read from the inversion cache (see ``asyrp.data.cache``). Manual optimisation:
``manual_backward`` lets Lightning re-arm DDP's reducer before every backward, so each of the per-timestep
gradients is all-reduced across ranks. The LR scheduler steps once per epoch (the official n_iter loop).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .clip import FrozenCLIP
from .guide import build_guide, guide_record
from .keep import build_keep, keep_record
from .losses import AsyrpLoss, direction_cosine
from .plan import EditPlan, stored_edit

# Lightning's advice about saving pre-optimisation state does not apply: last.ckpt is meant to hold the stepped
# weights (set here, at import, so spawned DDP ranks get it too)
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


class _Frozen:
    """A holder that nn.Module does not look into: its contents are not children, parameters or state."""

    def __init__(self, **items: Any):
        self.__dict__.update(items)


class AsyrpModule(pl.LightningModule):
    def __init__(
        self,
        hfunction: nn.Module,
        backbone: nn.Module,
        clip: FrozenCLIP,
        a: torch.Tensor,
        *,
        source: list[str],
        target: list[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        plan: EditPlan,
        strength: float = 1.0,
        edit_strength: float | None = None,
        loss: Mapping[str, Any] | None = None,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        probes: Any = None,
        guide: Any = None,
        identity: nn.Module | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.hfunc = hfunction
        object.__setattr__(
            self, "_frozen", _Frozen(backbone=backbone, clip=clip, a=a.detach().double().cpu(), identity=identity)
        )
        self._optimizer, self._scheduler = optimizer, scheduler
        self.source, self.target = list(source), list(target)
        if plan.t_edit is None:
            raise ValueError("training needs plan.t_edit: the steps t >= t_edit are the ones trained")
        self.strength, self.seed = float(strength), int(seed)
        # what edit.py uses by default (the file's edit.strength): a recipe's strength chosen on select/
        self.edit_strength = self.strength if edit_strength is None else float(edit_strength)
        loss = dict(loss or {})
        # the plan shared with the inversion cache and edit; training visits (k, t, t_next) for t >= t_edit
        self.plan = plan
        self.train_steps = self.plan.edit_steps()
        text_dir = clip.text_direction(self.source, self.target)
        self.loss_fn = AsyrpLoss(
            clip,
            text_dir,
            clip.text_cosine(self.source, self.target),
            w_clip=float(loss.get("w_clip", 1.0)),
            w_recon=float(loss.get("w_recon", 3.0)),
            recon_scale_by_text_cosine=bool(loss.get("recon_scale_by_text_cosine", True)),
            clip_reference=str(loss.get("clip_reference", "x0")),
            keep=build_keep(loss.get("keep"), clip, probes),  # model.loss.keep (asyrp.keep); probes: keep=probe's
            guide=build_guide(loss.get("guide"), guide),  # model.loss.guide (asyrp.guide); guide: its classifier
            w_id=float(loss.get("w_id", 0.0)),
            identity=identity,  # frozen IR-SE50 features (asyrp.build.identity) for model.loss.w_id
        )
        self.keep = keep_record(loss.get("keep"), self.loss_fn.keep)
        self.guide = guide_record(loss.get("guide"), self.loss_fn.guide)
        # plain containers only: the Lightning checkpoint must load with weights_only=True
        self.save_hyperparameters({"config": dict(config or {})})

    # -- frozen parts ----------------------------------------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        return self._frozen.backbone

    @property
    def clip(self) -> FrozenCLIP:
        return self._frozen.clip

    @property
    def a(self) -> torch.Tensor:
        return self._frozen.a

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() move the frozen networks along with the h-function
        super()._apply(fn, *args, **kwargs)
        self._frozen.backbone._apply(fn)
        self._frozen.clip._apply(fn)
        if self._frozen.identity is not None:
            self._frozen.identity._apply(fn)
        if getattr(self.loss_fn.guide, "net", None) is not None:  # guide=classifier's network (twins have none)
            self.loss_fn.guide.net._apply(fn)
        self.loss_fn.text_dir = (
            fn(self.loss_fn.text_dir) if self.loss_fn.text_dir.is_floating_point() else self.loss_fn.text_dir
        )
        return self

    # -- optimisation ----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self._optimizer(self.hfunc.parameters())
        if self._scheduler is None:
            return opt
        return [opt], [{"scheduler": self._scheduler(opt), "interval": "epoch"}]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from .samplers import asyrp_step

        opt = self.optimizers()
        a = self.a.to(self.device)
        x, P_orig = batch["x_T"], batch["P_orig"]
        if batch_idx == 0:
            cached_t = batch["t"][0].tolist()
            assert all(cached_t[k] == t for k, t, _ in self.train_steps), "inversion cache built for another schedule"
        with torch.no_grad():
            e_x0 = self.clip.encode_image(batch["x0"])
        # guide=twins: the twins' P_t at every step (held to P_t^orig outside the pair's region with hold_outside)
        P_twins = self.loss_fn.guide.targets(batch) if "P_twin" in batch else None
        W_twin = self.loss_fn.guide.weights(batch) if P_twins is not None else None  # (w_outside; same every step)
        sums: dict[str, float] = defaultdict(float)
        for k, t, t_next in self.train_steps:
            step = asyrp_step(self.backbone, x, t, t_next, a, self.hfunc, mode=self.plan.mode, strength=self.strength)
            P_twin = P_twins[:, k] if P_twins is not None else None
            terms = self.loss_fn(e_x0, step.P_edit, P_orig[:, k], step.delta_h, t, P_twin=P_twin, twin_weight=W_twin)
            opt.zero_grad()
            self.manual_backward(terms["loss"])
            opt.step()
            x = step.x_next.detach()  # truncated gradient: the next step does not see through this one
            for name, v in terms.items():
                sums[name] += float(v.detach())
        n, B = max(len(self.train_steps), 1), x.shape[0]
        self.log_dict(
            {f"train/{k}": v / n for k, v in sums.items()},
            on_step=True,
            on_epoch=True,
            batch_size=B,
            prog_bar=True,
            sync_dist=True,
        )
        self.log("train/lr", float(opt.param_groups[0]["lr"]), on_step=True, on_epoch=False, batch_size=B)

    def on_train_epoch_end(self) -> None:
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()

    # -- editing with the current h-function -----------------------------------------------------------------
    @torch.no_grad()
    def edit_batch(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Edit the batch's images from their cached x_T with the core ``edit`` (t_edit / t_boost as configured)."""
        from .samplers import edit

        seeds = [self.seed + int(i) for i in batch["index"]]
        res = edit(
            self.backbone,
            batch["x0"],
            self.hfunc,
            a=self.a.to(self.device),
            plan=self.plan,
            strength=self.strength,
            seeds=seeds,
            x_T=batch["x_T"],
        )
        return res.x_edit

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x_edit = self.edit_batch(batch)
        cos = direction_cosine(
            self.clip.encode_image(x_edit), self.clip.encode_image(batch["x0"]), self.loss_fn.text_dir
        )
        B = x_edit.shape[0]
        self.log("val/clip_direction", cos.mean(), sync_dist=True, batch_size=B, prog_bar=True)
        self.log("val/l1_to_recon", (x_edit - batch["x_rec"]).abs().mean(), sync_dist=True, batch_size=B)

    # -- what a checkpoint needs to rebuild the h-function ---------------------------------------------------
    def rebuild_info(self) -> dict[str, Any]:
        cfg = dict(self.hparams.get("config", {}))
        bb = self.backbone
        hf_cfg = dict(cfg.get("hfunction") or {})
        if hf_cfg.get("layout") == "auto" and hasattr(self.hfunc, "kind"):
            hf_cfg["layout"] = self.hfunc.kind  # as resolved for this backbone: rebuilding must not guess again
        return {
            "hfunction": hf_cfg,
            "arch": cfg.get("arch"),
            "h_shape": [int(v) for v in bb.h_shape],
            "emb_dim": int(bb.emb_dim),
            "attribute": {"name": cfg.get("attribute", {}).get("name"), "source": self.source, "target": self.target},
            "edit": stored_edit(self.plan, self.edit_strength),
            **({"keep": self.keep} if self.keep else {}),
            **({"guide": self.guide} if self.guide else {}),
        }
