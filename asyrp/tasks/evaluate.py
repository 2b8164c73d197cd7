"""The evaluate task (evaluate.py, conf/evaluate.yaml): ``evaluate(cfg, oracle=None) -> dict`` scores the output
folders of edit.py and writes one table row per (run, attribute, strength).

Every folder is read through its manifest.json (what edit.py wrote: sources, h-function files and digests, plan,
coefficient rows); every metric comes from the one scorer, ``asyrp.metrics.EditScorer``, by name, with the networks
and weights the config gives (``clip``, ``scorer.*``; the synthfaces oracle is passed in by the entry point). Bad
input (a folder without a manifest, a metric the scorer cannot compute, a face metric on other images or at a size it
cannot take) is refused in one line before any image is scored; the tables (asyrp.tasks.evaluate_table) are written
only when every row is computed, so a table on disk is always complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import CONF_DIR
from ..ops import faults
from ..ops.errors import AsyrpUserError
from ..ops.io import file_digest

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, oracle: Any = None) -> dict[str, Any]:
    """Score the edit runs of ``cfg.runs`` with ``cfg.metrics``; write <table>.csv, .md, .json (and a W&B table).

    Order: every folder is read and every metric checked (known, applicable, its weights given) before a network
    loads; then every row is computed; then the tables are written (temporary names, renamed at the end)."""
    from .. import build
    from .evaluate_table import write_tables

    runs_cfg = cfg.runs if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    if not runs_cfg:
        raise AsyrpUserError("runs: give one or more edit.py output folders, e.g. runs=[outputs/edit/a/edited]")
    out = Path(str(cfg.output_dir)).expanduser()
    faults.check_writable(out, "output_dir")
    runs = [read_run(r, cfg.get("attribute")) for r in runs_cfg]
    metrics = check_metrics(cfg, runs)
    uses_clip = any(m.startswith("clip") for m in metrics) or ("fid" in metrics and oracle is None)
    clip = build.clip(cfg.clip) if uses_clip and cfg.get("clip") else None
    check_absent(make_scorer(cfg, clip, oracle), metrics)
    fid_ref = _fid_reference(cfg, runs) if "fid" in metrics else {}
    rows = []
    for run in runs:
        with faults.doing(f"scoring {run.folder}"):
            rows += score_run(run, make_scorer(cfg, clip, oracle, run), metrics, fid_ref.get(run.image_size))
        log.info("scored %s: %d rows", run.folder, len(run.outputs))
    settings = {
        "clip_model": clip_name(cfg) if clip is not None else "",
        "fid_features": _fid_name(cfg, oracle, metrics),
    }
    for r in rows:
        r.update(settings)
    paths = write_tables(cfg, rows, metrics, out)
    return {"rows": rows, "metrics": metrics, **paths}


def clip_name(cfg: DictConfig) -> str:
    """The CLIP model S_dir was measured with, as a reader needs it to compare numbers (ViT-B/16 and ViT-L/14 differ)."""
    c = cfg.clip
    return f"{c.get('model')}:{c.get('pretrained') or c.get('weights') or 'random'}"


def _fid_name(cfg: DictConfig, oracle: Any, metrics: Sequence[str]) -> str:
    if "fid" not in metrics:
        return ""
    scorer = cfg.get("scorer") or {}
    if scorer.get("inception"):
        return f"inception ({Path(str(scorer.inception)).name}; close to, not equal to, published FIDs)"
    return (
        "oracle (not comparable with published FIDs)"
        if oracle is not None
        else "clip (not comparable with published FIDs)"
    )


def _fid_reference(cfg: DictConfig, runs: Sequence[EditRun]) -> dict[int, torch.Tensor]:
    """FID's real side per image size: ``fid_reference`` (a folder) when given, else each run's own sources."""
    from ..data.images import read_images

    if not cfg.get("fid_reference"):
        return {}
    return {s: read_images(str(cfg.fid_reference), s, what="fid_reference") for s in {r.image_size for r in runs}}


def score_run(run: EditRun, scorer: Any, metrics: Sequence[str], fid_real: torch.Tensor | None) -> list[dict]:
    """One row per coefficient row of the run: the metric values and what was scored (images and settings)."""
    from ..data.images import read_image_files

    size, man = run.image_size, run.manifest
    x_src = read_image_files(run.sources, size)
    k_rec = run.reconstruction_row()
    x_rec = read_image_files(run.outputs[k_rec], size) if k_rec is not None else None
    src_digests = [file_digest(p) for p in run.sources]
    ckpts = man["checkpoints"]
    rows = []
    for k, coeffs in enumerate(man["coefficients"]):
        x_edit = read_image_files(run.outputs[k], size)
        real = fid_real if fid_real is not None else x_src
        values = scorer.score(x_src, x_edit, metrics, x_rec=x_rec, fid_real=real if "fid" in metrics else None)
        images = [
            {"id": i, "source": str(s), "source_digest": sd, "edit": p.name, "edit_digest": file_digest(p)}
            for i, s, sd, p in zip(run.ids, run.sources, src_digests, run.outputs[k])
        ]
        rows.append(
            {
                "run": str(run.folder),
                "attribute": run.attribute,
                "strength": coeffs[0] if len(coeffs) == 1 else ",".join(f"{c:g}" for c in coeffs),
                **values,
                "source_set": set_digest([(d["id"], d["source_digest"]) for d in images]),
                "image_set": set_digest([(d["id"], d["source_digest"], d["edit_digest"]) for d in images]),
                "plan": run.plan_text(),
                "arch": run.arch,
                "hfunction_digest": ",".join(str(c.get("digest")) for c in ckpts),
                "clip_texts": json.dumps(run.texts),
                "images": images,
            }
        )
    return rows


def set_digest(items: Sequence[Sequence[str]]) -> str:
    """One digest over a set of images (names and content digests, in name order)."""
    import hashlib

    text = json.dumps(sorted([list(i) for i in items]))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class EditRun:
    """One edit output folder as its manifest describes it. ``outputs[k]``: the edited file of every input for
    coefficient row k; ``texts``: the CLIP source / target texts its h-function was trained with."""

    folder: Path
    manifest: dict[str, Any]
    attribute: str
    texts: dict[str, list[str]]
    oracle_target: str | None
    sources: list[Path]
    ids: list[str]
    outputs: list[list[Path]] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return str(self.manifest.get("arch"))

    @property
    def image_size(self) -> int:
        return int(self.manifest.get("image_size") or 0)

    def plan_text(self) -> str:
        m = self.manifest
        keys = ("n_inv", "n_gen", "t0", "t_edit", "t_boost", "mode")
        return " ".join(f"{k}={m.get(k)}" for k in keys) + f" spacing={m.get('spacing', 'official')}"

    def reconstruction_row(self) -> int | None:
        """The coefficient row whose strengths are all 0 (edit.py ``sweep=[0, ...]``): the unedited reconstruction."""
        for k, row in enumerate(self.manifest["coefficients"]):
            if all(float(c) == 0.0 for c in row):
                return k
        return None


def read_run(folder: str | Path, attribute_override: str | None = None) -> EditRun:
    """The edit run of ``folder`` (one line naming the fix when it is not a finished edit.py output)."""
    from ..ops.claims import MANIFEST

    folder = Path(str(folder)).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise AsyrpUserError(
            f"runs: {folder} has no {MANIFEST}: give the output_dir of an edit.py run (the folder holding its "
            f"{MANIFEST}, e.g. outputs/edit/<run>/edited)"
        )
    try:
        man = json.loads(path.read_text())
        items, ckpts, coeffs = man["inputs"], man["checkpoints"], man["coefficients"]
    except (ValueError, KeyError, TypeError) as err:
        raise AsyrpUserError(f"runs: {path} is not an edit.py manifest ({err}): rerun edit.py into {folder}") from err
    if not man.get("complete") or not all(it.get("done") for it in items):
        raise AsyrpUserError(
            f"runs: the edit run in {folder} is unfinished: rerun its edit.py command with output_dir={folder}"
        )
    if man.get("input") == "random":
        raise AsyrpUserError(f"runs: {folder} edited random samples (n_random): evaluate needs image sources")
    names = [(c.get("attribute") or Path(c["path"]).stem) for c in ckpts]
    attr = "+".join(names)
    texts, oracle_target = _attribute_texts(ckpts, attribute_override, folder)
    run = EditRun(
        folder, man, attr, texts, oracle_target, [Path(it["source"]) for it in items], [it["id"] for it in items]
    )
    run.outputs = [[folder / it["outputs"][k] for it in items] for k in range(len(coeffs))]
    for f in [*run.sources, *(p for col in run.outputs for p in col)]:
        if not f.is_file():
            raise AsyrpUserError(f"runs: {f}, named by {path}, is gone: restore it or rerun that edit.py command")
    return run


def _attribute_texts(ckpts: Sequence[Mapping[str, Any]], override: str | None, folder: Path):
    """The CLIP texts of a run's (single) h-function: as stored in the file, else conf/attribute/<attribute>; and
    the attribute's oracle_target (conf/attribute)."""
    from ..hfunctions.files import read_hfunction_file

    if len(ckpts) != 1:
        return {"source": [], "target": []}, None  # a composition has no one text direction
    c = ckpts[0]
    stored = {}
    if Path(c["path"]).is_file() and file_digest(c["path"]) == c.get("digest"):
        obj = read_hfunction_file(Path(c["path"]))
        stored = (obj.get("attribute") or {}) if isinstance(obj, Mapping) and obj.get("format") else {}
    conf = attribute_config(override or stored.get("name") or c.get("attribute"))
    src, tgt = stored.get("source") or conf.get("source"), stored.get("target") or conf.get("target")
    if not (src and tgt):
        log.info("%s: no CLIP texts stored or configured (attribute=<conf/attribute name> gives them)", folder)
    return {"source": list(src or []), "target": list(tgt or [])}, conf.get("oracle_target")


def attribute_config(name: str | None) -> dict[str, Any]:
    """conf/attribute/<name>.yaml as a plain dict ({} when there is none): the texts and oracle target of an
    attribute named by an h-function file (read by name inside a running Hydra app, where compose cannot run)."""
    path = CONF_DIR / "attribute" / f"{name}.yaml"
    if not name or not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def check_metrics(cfg: DictConfig, runs: Sequence[EditRun]) -> list[str]:
    """The asked metrics (``n`` first), each known to the scorer and applicable to every run; one line each fault."""
    from ..metrics import METRICS
    from ..metrics.scorer import FACE_METRICS

    asked = ["n"] + [str(m) for m in cfg.metrics if str(m) != "n"]
    unknown = [m for m in asked if m not in METRICS]
    if unknown:
        raise AsyrpUserError(
            f"metrics: {', '.join(unknown)} not known to this version's EditScorer: use some of {', '.join(METRICS)}"
        )
    faces = {str(a) for a in cfg.face_archs}
    for run in runs:
        face = [m for m in asked if m in FACE_METRICS]
        if face and run.arch not in faces:
            raise AsyrpUserError(
                f"metrics: {', '.join(face)} judge faces, and {run.folder} edited {run.arch} images (face datasets: "
                f"face_archs={sorted(faces)}): drop {', '.join(face)} from metrics for this run"
            )
        for m in face:
            need = FACE_METRICS[m]
            if need and run.image_size != need:
                raise AsyrpUserError(
                    f"metrics: {m} crops faces from {need}x{need} images and {run.folder} holds "
                    f"{run.image_size}x{run.image_size} ones: drop {m} from metrics for this run"
                )
        rec = [m for m in asked if m.endswith("_rec")]
        if rec and run.reconstruction_row() is None:
            raise AsyrpUserError(
                f"metrics: {', '.join(rec)} compare edits with the reconstruction, and {run.folder} has no strength-0 "
                "output: edit with sweep=[0,<strengths>] (the 0 is the reconstruction) or drop them"
            )
        if "oracle" in asked and not run.oracle_target:
            raise AsyrpUserError(
                f"metrics: oracle judges an attribute's oracle_target, and {run.attribute} ({run.folder}) has none "
                "(synthfaces attributes have one): drop oracle for this run"
            )
        if "clip_direction" in asked and not (run.texts["source"] and run.texts["target"]):
            raise AsyrpUserError(
                f"metrics: clip_direction needs the attribute's texts, and {run.folder}'s h-function gives none: "
                "pass attribute=<a conf/attribute name>"
            )
    return asked


def make_scorer(cfg: DictConfig, clip: Any, oracle: Any, run: EditRun | None = None):
    """The one scorer for ``run``'s attribute; ``scorer.*`` are EditScorer's weight arguments (lpips, ...)."""
    from ..metrics import EditScorer

    extra = OmegaConf.to_container(cfg.scorer, resolve=True) if cfg.get("scorer") else {}
    texts = run.texts if run else {"source": ["x"], "target": ["y"]}
    return EditScorer(
        clip=clip,
        source=texts["source"],
        target=texts["target"],
        oracle=oracle,
        oracle_target=run.oracle_target if run else "x=y",
        **{k: v for k, v in extra.items() if v is not None},
    )


def check_absent(scorer: Any, metrics: Sequence[str]) -> None:
    """Every metric whose network or weights are not given, named in one line with the key that gives it."""
    missing = scorer.absent(metrics)
    if missing:
        raise AsyrpUserError(
            "metrics without their networks or weights: "
            + "; ".join(f"{k}: {v}" for k, v in missing.items())
            + " (give them in evaluate.py's config: clip=<conf/clip>, scorer.lpips={net,backbone_weights,"
            "lin_weights}, ...; README 'Reproducing a table') or drop them from metrics"
        )
