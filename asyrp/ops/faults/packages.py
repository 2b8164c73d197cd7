"""Optional packages: a chosen option whose package is missing is named with the extra that installs it (exit 6)."""

from __future__ import annotations

#: optional packages: import name -> (pip extra of asyrp, pip package, what needs it)
OPTIONAL_PACKAGES = {
    "optuna": ("sweep", "hydra-optuna-sweeper", "the Optuna sweeper (hparams_search=...)"),
    "hydra_plugins.hydra_optuna_sweeper": ("sweep", "hydra-optuna-sweeper", "the Optuna sweeper (hparams_search=...)"),
    "wandb": ("wandb", "wandb", "the W&B logger (logger=wandb)"),
    "tensorboard": ("tensorboard", "tensorboard", "the TensorBoard logger (logger=tensorboard)"),
    "lpips": ("lpips", "lpips", "the LPIPS distance"),
    "gradio": ("app", "gradio", "the editor app (app.py)"),
}


class MissingPackage(Exception):
    """An optional package a chosen option needs is not installed (exit 6)."""

    def __init__(self, module: str, what: str | None = None):
        extra, pip_name, need = OPTIONAL_PACKAGES.get(module, (None, module.split(".")[0], module))
        self.module = module
        how = f"pip install 'asyrp[{extra}]' (or pip install {pip_name})" if extra else f"pip install {pip_name}"
        super().__init__(
            f"{what or need} needs the package {pip_name}, which is not installed: {how}, then rerun the same command"
        )


def require(module: str, what: str | None = None) -> None:
    """Raise ``MissingPackage`` if ``module`` cannot be imported (checked before any work)."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingPackage(module, what) from err


def require_logger_packages(logger_cfg) -> None:
    """The packages behind the configured loggers (logger=wandb / tensorboard / many), before any work."""
    targets = []
    for v in (logger_cfg or {}).values() if hasattr(logger_cfg, "values") else []:
        if v is not None and hasattr(v, "get"):
            targets.append(str(v.get("_target_", "")))
    if any(t.endswith("WandbLogger") for t in targets):
        require("wandb")
    if any(t.endswith("TensorBoardLogger") for t in targets):
        require("tensorboard")
