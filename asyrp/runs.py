"""Who owns an output folder: a training run folder (``hydra.run.dir``) or an edit ``output_dir``.

One folder holds the outputs of one run. A rerun with the same settings resumes it (train: from its own
``last.ckpt``; edit: only the images not done yet); another run's outputs are refused with one error line unless
``overwrite=true``. The train run folder is recognised by its stamp (``.asyrp_run.json``, a fingerprint of the
config), the edit folder by the fingerprint in its ``manifest.json``.

Used by the tasks (asyrp/tasks.py) and by the Hydra callback that checks a train run folder before Hydra writes its
``.hydra/`` files into it (asyrp/utils/hydra_callbacks.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .utils.errors import AsyrpUserError

log = logging.getLogger(__name__)

RUN_STAMP = ".asyrp_run.json"
MANIFEST = "manifest.json"
_VOLATILE = ("hydra", "ckpt_path", "overwrite", "progress", "perf")  # perf: how fast, not what is trained


# -- train: the run folder ------------------------------------------------------------------------------------------
def run_fingerprint(cfg: DictConfig) -> str:
    """Digest of the task config as composed (interpolations unresolved; resume/overwrite switches left out)."""
    node = {k: cfg._get_node(k) for k in cfg if k not in _VOLATILE}
    text = OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in node.items()}), resolve=False)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def check_run_dir(run_dir: str | Path, fingerprint: str, overwrite: bool = False) -> str:
    """"new" (nothing there), "same" (a previous attempt of this very run: resume) or "overwrite" (another run's
    outputs, replaced because overwrite=true); another run's outputs without overwrite=true is an error."""
    run_dir = Path(run_dir)
    stamp = run_dir / RUN_STAMP
    ours = [run_dir / d for d in ("checkpoints", "images")]
    if stamp.is_file():
        try:
            old = json.loads(stamp.read_text()).get("fingerprint")
        except (OSError, ValueError):
            old = None
        if old == fingerprint:
            return "same"
    elif not any(d.is_dir() and any(d.iterdir()) for d in ours):
        return "new"
    if overwrite:
        return "overwrite"
    raise AsyrpUserError(f"{run_dir} already holds the outputs of another training run (other settings): pass "
                         "overwrite=true to replace them, or choose another hydra.run.dir (rerunning the same command "
                         "with the same hydra.run.dir resumes it)")


def claim_train_dir(cfg: DictConfig, write: bool = True) -> Path | None:
    """Check the run folder (see ``check_run_dir``), stamp it, and return last.ckpt when the same run resumes.
    ``write=False`` (DDP ranks > 0 re-running the script) only reads: the launching rank has stamped it already."""
    from .utils.io import atomic_write_json

    out = Path(str(cfg.paths.output_dir))
    fp = run_fingerprint(cfg)
    state = check_run_dir(out, fp, bool(cfg.get("overwrite", False)))
    last = out / "checkpoints" / "last.ckpt"
    if not write:
        return last if state == "same" and cfg.get("ckpt_path") is None and last.is_file() else None
    if state == "overwrite":
        for d in ("checkpoints", "images", "csv"):
            shutil.rmtree(out / d, ignore_errors=True)
        log.warning("overwrite=true: removed the previous run's checkpoints/images/csv in %s", out)
    atomic_write_json({"task": "train", "fingerprint": fp}, out / RUN_STAMP)
    if state == "same" and cfg.get("ckpt_path") is None and last.is_file():
        log.warning("%s holds an unfinished attempt of this run: resuming from %s", out, last)
        return last
    return None


# -- edit: the output folder ----------------------------------------------------------------------------------------
def claim_edit_dir(out: str | Path, fingerprint: str, overwrite: bool = False) -> bool:
    """True when ``out`` holds an earlier attempt of this very edit run (resume); False when it is new, or when
    another run's listed outputs were removed because ``overwrite=true``. Another edit run's outputs, or PNGs no
    edit run wrote, without overwrite=true: one error, nothing touched."""
    out = Path(out)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            prev = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            prev = {}
        if prev.get("fingerprint") == fingerprint and not overwrite:
            return True
        if not overwrite:
            raise AsyrpUserError(f"{out} holds the outputs of another edit run (other settings or h-functions): "
                                 "pass overwrite=true to replace them, or choose another output_dir (rerunning "
                                 "with the same settings resumes)")
        prev_files = [n for it in prev.get("inputs", []) for n in it.get("outputs", [])] + ["grid.png"]
        for name in prev_files:
            (out / str(name)).unlink(missing_ok=True)
        log.warning("overwrite=true: removed the outputs of the previous run in %s", out)
        return False
    if out.is_dir() and any(p.suffix.lower() == ".png" for p in out.iterdir()) and not overwrite:
        raise AsyrpUserError(f"{out} already holds PNG files that are not from an edit run: pass overwrite=true to "
                             "write there anyway, or choose another output_dir")
    return False
