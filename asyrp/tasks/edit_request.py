"""What an edit run is, before any network: the inputs, the plan, the coefficient matrix and the fingerprint.

``edit_request(cfg, checkpoints)`` scans the images (every file used or skipped with a reason) or lists seeded random
samples, reads each h-function file once, resolves the plan (asyrp.plan.resolve_plan), reads the (K, n) coefficient
matrix (asyrp.checks.edit_coefficients) and fingerprints the run, so that an output folder is known to hold this very
run's images. It loads no backbone: a test builds it from a config and a folder. ``asyrp.tasks.edit`` runs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..checks import EditCoefficients, check_hfunction_mode, edit_coefficients
from ..constraints import constraint_parts
from ..hfunctions.files import read_hfunction_file
from ..ops.errors import AsyrpUserError
from ..plan import EditPlan

log = logging.getLogger(__name__)


@dataclass
class EditRequest:
    """One edit run as data. ``inputs``: one dict per image (id, source, seed: image i gets seed + i), ``skipped``:
    (file, reason); ``payloads`` / ``metas``: what each h-function file holds (metas: {} for an official file);
    ``windows``: each function's own interval in a composition, else None; ``record``: what the fingerprint covers."""

    cfg: DictConfig
    checkpoints: list[Path]
    image_size: int
    seed: int
    random_inputs: bool
    inputs: list[dict[str, Any]]
    skipped: list[tuple[Path, str]]
    payloads: list[Any]
    metas: list[Mapping[str, Any]]
    plan: EditPlan
    windows: list[dict[str, Any]] | None
    coefficients: EditCoefficients
    record: dict[str, Any]
    fingerprint: str

    def out_names(self, item_id: str) -> list[str]:
        """The files one input gives: its unedited sample (random inputs), then one PNG per coefficient row."""
        k = len(self.coefficients.labels)
        names = [f"{item_id}.png"] if k == 1 else [f"{item_id}_{i:02d}.png" for i in range(k)]
        return ([f"{item_id}_input.png"] if self.random_inputs else []) + names

    def names(self) -> list[str]:
        """The attribute of each h-function (its file name when it records none)."""
        return [(m.get("attribute") or {}).get("name") or c.stem for c, m in zip(self.checkpoints, self.metas)]

    def manifest(self, complete: bool, done: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """manifest.json: the record and fingerprint, and every input with its outputs, whether they are written and
        (``done``: id -> {output: digest}, asyrp/tasks/edit_done.py) the digest of each, which a rerun checks."""
        from ..ops import secrets

        return secrets.redact(
            {
                "format": "asyrp-edit/1",
                "fingerprint": self.fingerprint,
                "complete": complete,
                **self.record,
                "outputs_per_image": ["input (unedited sample)"] * self.random_inputs + self.coefficients.labels,
                "inputs": [
                    dict(it, outputs=self.out_names(it["id"]), done=it["id"] in done)
                    | ({"digests": dict(done[it["id"]])} if it["id"] in done else {})
                    for it in self.inputs
                ],
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
            }
        )


def edit_request(cfg: DictConfig, checkpoints: list[Path]) -> EditRequest:
    """The request of a checked edit config (asyrp.checks.check_edit_config gave ``checkpoints``)."""
    arch_cfg = cfg.arch.get("config") or {}
    size = int(arch_cfg.get("image_size") or arch_cfg.get("sample_size") or 0)
    seed, random_inputs = int(cfg.get("seed", 0)), cfg.get("input_dir") is None
    inputs, skipped = _inputs(cfg, seed, size, random_inputs)
    masks = _masks(cfg, inputs, len(checkpoints), random_inputs, size)
    payloads = [read_hfunction_file(c) for c in checkpoints]  # read safely, once; built when the backbone is there
    metas = [p if isinstance(p, Mapping) and p.get("format") else {} for p in payloads]
    plan, windows = _plan(cfg, checkpoints, metas)
    stored = [(m.get("edit") or {}).get("strength") for m in metas]
    coefficients = edit_coefficients(cfg, len(checkpoints), stored)
    if len(checkpoints) > 1:  # coeffs scale each file's stored strength unless strength= is set: say what results
        log.info(
            "composition strengths per output %s (coeffs %s x %s)",
            [[round(c, 4) for c in row] for row in coefficients.rows],
            cfg.get("coeffs") or "1 each",
            f"strength={cfg.strength}" if cfg.get("strength") is not None else f"the stored strengths {stored}",
        )
    record = _record(cfg, checkpoints, metas, plan, windows, coefficients, seed, random_inputs, size)
    if masks is not None:  # recorded only when set, so earlier runs' fingerprints still match
        record["masks"] = masks
    fingerprint = hashlib.blake2b(json.dumps(record, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()
    return EditRequest(
        cfg=cfg,
        checkpoints=checkpoints,
        image_size=size,
        seed=seed,
        random_inputs=random_inputs,
        inputs=inputs,
        skipped=skipped,
        payloads=payloads,
        metas=metas,
        plan=plan,
        windows=windows,
        coefficients=coefficients,
        record=record,
        fingerprint=fingerprint,
    )


def unique_ids(files: list[Path]) -> list[str]:
    """One output name per file: its stem, else stem_<suffix>, else stem_<n> (a.png and a.jpg both edited)."""
    ids, seen = [], set()
    for f in files:
        base = f.stem
        cand, i = base, 1
        if cand in seen:
            cand = f"{base}_{f.suffix.lstrip('.').lower()}"
        while cand in seen:
            i += 1
            cand = f"{base}_{i}"
        seen.add(cand)
        ids.append(cand)
    return ids


def _inputs(cfg: DictConfig, seed: int, size: int, random_inputs: bool):
    """Image files (unusable ones skipped with a reason), or seeded random samples; image i gets seed + i."""
    from ..data.images import scan_images

    if random_inputs:
        return [{"id": f"sample_{k:05d}", "source": "random", "seed": seed + k} for k in range(int(cfg.n_random))], []
    files, skipped = scan_images(cfg.input_dir, cfg.get("n_images"), size or 32, what="input_dir")
    ids = unique_ids(files)
    return [{"id": i, "source": str(f), "seed": seed + k} for k, (i, f) in enumerate(zip(ids, files))], skipped


def _masks(cfg: DictConfig, inputs: list[dict[str, Any]], n_checkpoints: int, random_inputs: bool, size: int):
    """``masks=``: one folder (one region per image) or one per checkpoint (each function held to its own), each
    with ``<input stem>.png`` for every input; each input item gets its mask files under "masks". Returns what the
    fingerprint records ({folders, digest of every mask file}), or None. Every problem is one error before any
    network; mask files no input uses are reported."""
    from ..masks import read_mask
    from ..ops.io import file_digest

    given = cfg.get("masks")
    if given is None:
        return None
    folders = [Path(str(f)).expanduser() for f in ([given] if isinstance(given, (str, Path)) else list(given))]
    if random_inputs:
        raise AsyrpUserError("masks= holds the edit of given images: set input_dir=<images> or drop masks")
    if len(folders) not in (1, n_checkpoints):
        raise AsyrpUserError(
            f"masks= lists {len(folders)} folders for {n_checkpoints} checkpoints: give one folder (one region per "
            "image) or one per checkpoint, in the checkpoints' order"
        )
    names = [Path(it["source"]).stem + ".png" for it in inputs]
    wanted = set(names)
    for folder in folders:
        if not folder.is_dir():
            raise AsyrpUserError(f"masks folder {folder} does not exist: give a folder of <image stem>.png masks")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise AsyrpUserError(
                f"masks folder {folder} has no mask for {len(missing)} of the {len(inputs)} inputs (first: "
                f"{missing[0]}): add <image stem>.png for every input, white where the edit may act"
            )
        unused = sorted(p.name for p in folder.glob("*.png") if p.name not in wanted)
        if unused:
            log.info(
                "masks folder %s: %d mask files match no input (not used; first: %s)", folder, len(unused), unused[0]
            )
    digests = []
    for it, name in zip(inputs, names):
        it["masks"] = [str(f / name) for f in folders]
        for m in it["masks"]:  # readable and of the edited size, before any network
            read_mask(m, size or None)
        digests.append([file_digest(Path(m)) for m in it["masks"]])
    return {"folders": [str(f) for f in folders], "digests": digests}


def _plan(cfg: DictConfig, checkpoints: list[Path], metas: list[Mapping[str, Any]]):
    """The plan (asyrp.build.plan: asyrp.plan.resolve_plan): the config's plan.*, else the values stored in the first
    file, else plan.interval's; a composition of files trained on different intervals keeps each function in its own."""
    from .. import build

    plan, windows = build.plan(cfg, [dict(m.get("edit") or {}) for m in metas])
    check_hfunction_mode(plan.mode, "plan.mode", [m.get("hfunction") for m in metas])
    for w, c in zip(windows or [], checkpoints):
        w["path"] = str(c)
    if windows:
        log.info(
            "composition: each h-function in its own interval, %s; one walk from t0=%d (%d steps)",
            ", ".join(f"{Path(w['path']).name} [{w['t0']}, {w['t_edit']}]" for w in windows),
            plan.t0,
            plan.n_gen,
        )
    return plan, windows


def _record(cfg, checkpoints, metas, plan, windows, coefficients, seed, random_inputs, size) -> dict[str, Any]:
    """What the fingerprint covers (and the manifest states): files, backbone, plan, coefficients, seed, inputs."""
    from ..ops.io import file_digest

    record = {
        "arch": cfg.arch.get("name"),
        "arch_checkpoint": cfg.arch.get("checkpoint"),
        "checkpoints": [
            {
                "path": str(c),
                "digest": file_digest(c),
                "kind": "asyrp-hfunction" if m else "official",
                "attribute": (m.get("attribute") or {}).get("name") if m else None,
            }
            for c, m in zip(checkpoints, metas)
        ],
        "coefficients": coefficients.rows,
        "labels": coefficients.labels,
        "n_inv": plan.n_inv,
        "n_gen": plan.n_gen,
        "t0": plan.t0,
        "t_edit": plan.t_edit,
        "t_boost": plan.t_boost,
        "mode": plan.mode,
        "seed": seed,
        "input": "random" if random_inputs else "images",
        "image_size": size,
    }
    if plan.spacing != "official":  # recorded only when set, so earlier runs' fingerprints still match
        record["spacing"] = plan.spacing
    if plan.hold:  # likewise
        record.update(hold=plan.hold, hold_dilate=plan.hold_dilate)
    if windows:
        record["intervals"] = [{k: w[k] for k in ("t0", "t_edit", "step_scale")} for w in windows]
    dirs, mask = constraint_parts(cfg.get("constraint"))  # an edit-time constraint (checked here, before any network)
    if dirs or mask:
        record["constraint"] = {"directions": dirs, "mask": mask}
    return record
