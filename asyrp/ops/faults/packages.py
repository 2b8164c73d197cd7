"""Optional packages: a chosen option whose package is missing is named with the extra that installs it (exit 6)."""

from __future__ import annotations

#: optional packages: import name -> (pip extra of asyrp, pip package, what needs it)
OPTIONAL_PACKAGES = {
    "optuna": ("sweep", "optuna>=4", "the Optuna sweeper (hparams_search=...)"),  # >= 4: its journal storage
    "hydra_plugins.hydra_joblib_launcher": ("joblib", "hydra-joblib-launcher", "trials=joblib (the joblib launcher)"),
    "hydra_plugins.hydra_submitit_launcher": ("submitit", "hydra-submitit-launcher", "the submitit launcher"),
    "hydra_plugins.hydra_ray_launcher": ("ray", "hydra-ray-launcher", "trials=ray (the Ray launcher)"),
    "wandb": ("wandb", "wandb", "the W&B logger (logger=wandb)"),
    "tensorboard": ("tensorboard", "tensorboard", "the TensorBoard logger (logger=tensorboard)"),
    "lpips": ("lpips", "lpips", "the LPIPS distance"),
    "gradio": ("app", "gradio", "the editor app (app.py)"),
}


class MissingPackage(Exception):
    """An optional package a chosen option needs is not installed (exit 6)."""

    def __init__(self, module: str, what: str | None = None, installed: str | None = None):
        extra, pip_name, need = OPTIONAL_PACKAGES.get(module, (None, module.split(".")[0], module))
        self.module = module
        quoted, up = (f"'{pip_name}'" if ">" in pip_name else pip_name), ("-U " if installed else "")
        how = f"pip install {up}'asyrp[{extra}]' (or pip install {up}{quoted})" if extra else f"pip install {quoted}"
        have = f"{module} {installed} is installed" if installed else "which is not installed"
        super().__init__(f"{what or need} needs the package {pip_name}, {have}: {how}, then rerun the same command")


def require(module: str, what: str | None = None, min_version: str | None = None) -> None:
    """Raise ``MissingPackage`` if ``module`` cannot be imported, or is older than ``min_version`` (checked
    before any work)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingPackage(module, what) from err
    if min_version is not None:
        from packaging.version import Version

        have = str(getattr(mod, "__version__", "0"))
        if Version(have) < Version(min_version):
            raise MissingPackage(module, what, installed=have)


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
