"""The serve task (app.py, conf/app.yaml): ``serve(cfg)`` loads the editor and serves its Gradio page (asyrp.app)
until interrupted; ``make_editor(cfg)`` and ``example_images`` are what it builds the page from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..app import build_app, require_gradio
from ..ops import faults
from ..ops.errors import AsyrpUserError

log = logging.getLogger(__name__)

DEMO_HFUNCTION = "outputs/demo/smiling/train_s0/checkpoints/hfunction.pt"
HOW_TO_MAKE = (
    "make it with `make demo` (trains the smiling h-function on synthfaces, a few minutes on 2 CPU cores) "
    "or `python train.py experiment=synthfaces_smiling`, or pass checkpoint=<hfunction.pt | official .pth>"
)


def example_images(
    cfg: DictConfig,
    out: Path,
    world_examples: Callable[[Path, int], list[Path]] | None = None,
) -> list[Path]:
    """The images offered to pick: ``examples`` (a folder or glob, every file accounted for in the log), or the
    world's own example faces that the entry point passes in (synthfaces: faces that do not smile yet)."""
    from ..data.images import scan_images

    n = int(cfg.get("n_examples") or 8)
    if cfg.get("examples"):
        return scan_images(cfg.examples, n, what="examples")[0]
    if world_examples is None:
        return []
    return world_examples(out, n)


def resolve_checkpoints(cfg: DictConfig) -> list[Path]:
    """The h-function files; the default (the demo's) missing gets one message saying how to make it."""
    from omegaconf import OmegaConf

    ck = cfg.get("checkpoint")
    ck = OmegaConf.to_container(ck, resolve=True) if OmegaConf.is_config(ck) else ck
    files = [Path(str(c)).expanduser() for c in (ck if isinstance(ck, list) else [ck]) if c not in (None, "")]
    if not files:
        raise AsyrpUserError(f"checkpoint is not set: {HOW_TO_MAKE}")
    for f in files:
        if not f.is_file():
            if f.as_posix().endswith(DEMO_HFUNCTION):
                raise AsyrpUserError(f"the demo's h-function {f} does not exist yet: {HOW_TO_MAKE}")
            raise AsyrpUserError(
                f"h-function checkpoint not found: {f}. Pass checkpoint=<hfunction.pt | official .pth> "
                f"(checkpoint=[a.pt,b.pt] composes), or {HOW_TO_MAKE}"
            )
    return files


def make_editor(cfg: DictConfig):
    from ..checks import check_arch
    from ..editor import load_editor
    from ..plan import FIELDS

    files = resolve_checkpoints(cfg)
    check_arch(cfg.arch)
    return load_editor(
        cfg.arch,
        files,
        {**{k: cfg.plan.get(k) for k in FIELDS}, "seed": cfg.get("seed")},
        fallback=cfg.plan.get("interval"),
        device=str(cfg.get("device") or "cpu"),
        perf=cfg.get("perf"),
    )


def serve(cfg: DictConfig, world_examples: Callable[[Path, int], list[Path]] | None = None) -> Any:
    """Load the backbone and h-functions, then serve the page on ``host:port`` until interrupted."""
    resolve_checkpoints(cfg)  # the demo's h-function not made yet: say how, before anything loads
    require_gradio()  # missing package: one line before the networks load
    editor = make_editor(cfg)
    out = Path(str(cfg.paths.output_dir))
    examples = example_images(cfg, out / "examples", world_examples)
    app = build_app(editor, examples, list(cfg.strip), float(cfg.max_strength))
    log.info("asyrp editor: http://%s:%s (Ctrl-C to stop)", cfg.host, cfg.port)
    faults.stop_at_once()  # a server has no safe point to wait for: Ctrl-C stops it at once, as Gradio expects
    app.launch(
        server_name=str(cfg.host),
        server_port=int(cfg.port),
        share=False,
        inbrowser=False,
        prevent_thread_lock=bool(cfg.get("background", False)),
        show_error=True,
    )
    return app
