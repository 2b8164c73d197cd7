"""The tables of the evaluate task: <table>.csv (every column, the scored image list of each row as JSON),
<table>.md (the readable table; its header says when rows score different image sets), <table>.json (rows and
settings) and, with ``wandb`` set, a W&B table. All files go to temporary names first and are renamed only when all
are written: a table on disk is never a partial one."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: the columns that describe what a row scored (after the metric values)
SETTINGS = ("source_set", "image_set", "plan", "arch", "hfunction_digest", "clip_model", "fid_features")
KEYS = ("run", "attribute", "strength")


def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """run, attribute, strength, the metric values in the order first met, then the settings."""
    skip = {*KEYS, *SETTINGS, "images", "clip_texts"}
    values = [k for r in rows for k in r if k not in skip]
    return [*KEYS, *dict.fromkeys(values), *SETTINGS]


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4g}")
    return "" if v is None else str(v)


def image_sets_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the rows were scored on: one set of source images, or (said loudly) several."""
    sets = dict.fromkeys(r["source_set"] for r in rows)
    if len(sets) == 1:
        return f"All rows score the same {int(rows[0].get('n', 0))} source images (source set {next(iter(sets))})."
    return (
        f"**Rows score different image sets** ({len(sets)} source sets: {', '.join(sets)}): compare values only "
        "between rows of the same source_set."
    )


def markdown(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str, command: str) -> str:
    from ..metrics import METRICS

    cols = columns(rows)
    lines = [f"# {title}", "", image_sets_note(rows), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    lines += ["", "Metrics: " + "; ".join(METRICS[m] for m in metrics if m in METRICS) + "."]
    lines += [
        "source_set / image_set: digests over the scored sources / (source, edit) pairs, names and contents; the "
        "file list of each row is in the .csv (images) and .json.",
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = [*columns(rows), "clip_texts", "images"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([json.dumps(r[c]) if c == "images" else r.get(c, "") for c in cols])
    return buf.getvalue()


def command_line() -> str:
    """The command that wrote the table (Hydra's overrides when run by evaluate.py)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return "python evaluate.py " + " ".join(HydraConfig.get().overrides.task)
    except (ValueError, AttributeError):
        return "asyrp.tasks.evaluate.evaluate(cfg) (from Python)"


def write_tables(cfg: DictConfig, rows: list[dict[str, Any]], metrics: Sequence[str], out: Path) -> dict[str, Path]:
    """<out>/<table>.csv, .md and .json, all renamed into place together at the end; then the W&B table."""
    name = str(cfg.get("table") or "evaluation")
    title = str(cfg.get("title") or f"evaluate.py: {len(rows)} rows")
    command = command_line()
    texts = {
        "csv": csv_text(rows),
        "markdown": markdown(rows, metrics, title, command),
        "json": json.dumps({"title": title, "command": command, "metrics": list(metrics), "rows": rows}, indent=1),
    }
    paths = {"csv": out / f"{name}.csv", "markdown": out / f"{name}.md", "json": out / f"{name}.json"}
    out.mkdir(parents=True, exist_ok=True)
    partial = {k: p.with_name(p.name + ".partial") for k, p in paths.items()}
    try:
        for kind, tmp in partial.items():
            with open(tmp, "w") as fh:
                fh.write(texts[kind])
                fh.flush()
                os.fsync(fh.fileno())
        for kind, p in paths.items():
            partial[kind].replace(p)
    finally:
        for tmp in partial.values():
            tmp.unlink(missing_ok=True)
    if cfg.get("wandb"):
        log_wandb(cfg.wandb, rows, name)
    return paths


def log_wandb(wcfg: Any, rows: Sequence[Mapping[str, Any]], name: str) -> None:
    """The table as a W&B table (WANDB_MODE=offline: written under ``wandb.dir``)."""
    from ..ops import secrets
    from ..ops.faults import require

    require("wandb", "evaluate.py wandb=...")
    import wandb

    secrets.guard_wandb_init()
    w = OmegaConf.to_container(wcfg, resolve=True) if OmegaConf.is_config(wcfg) else dict(wcfg)
    cols = columns(rows)
    run = wandb.init(project=w.get("project", "asyrp"), name=w.get("name"), dir=w.get("dir"), job_type="evaluate")
    try:
        run.log({name: wandb.Table(columns=cols, data=[[fmt(r.get(c, "")) for c in cols] for r in rows])})
    finally:
        run.finish()
