"""Which images of an edit run are done, known by content: each finished image is recorded with the digest of each
of its output files, and a rerun counts an image as done only when every one of those files is there with that digest.

While a run edits, each process (each rank of ``devices=N``, or the one process) appends a line per finished image to
its own journal in the output folder (``.edit-done.<rank>.jsonl``: the run's fingerprint, the image's id and
{output file: digest}) right after the image's PNGs are written, so a kill loses at most the image being written; a
torn last line is skipped. When the run ends (finished, failed or stopped), the launching process folds the journals
into manifest.json (each input's ``done`` and ``digests``), then removes them. Why journals and not the manifest:
ranks writing one manifest would overwrite each other's progress, and rewriting it after every batch costs a write of
every image's entry per batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..ops.claims import JOURNALS, MANIFEST
from ..ops.io import append_line, atomic_write_json, file_digest
from .edit_request import EditRequest

Done = dict[str, dict[str, str]]  # image id -> {output file name: digest}


def record_done(out: Path, rank: int, fingerprint: str, item_id: str, paths: list[Path]) -> dict[str, str]:
    """Journal one finished image (its PNGs are on disk); returns {file name: digest}."""
    digests = {p.name: file_digest(p) for p in paths}
    entry = {"fingerprint": fingerprint, "id": item_id, "digests": digests}
    append_line(json.dumps(entry), out / JOURNALS.replace("*", str(rank)))
    return digests


def _recorded(out: Path, fingerprint: str) -> Done:
    """What this run's manifest and the journals record as done (later records win)."""
    found: Done = {}
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if isinstance(manifest, dict) and manifest.get("fingerprint") == fingerprint:
        for it in manifest.get("inputs", []):
            if it.get("done") and isinstance(it.get("digests"), dict):
                found[str(it.get("id"))] = it["digests"]
    for journal in sorted(out.glob(JOURNALS)):
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry: Any = json.loads(line)
            except ValueError:  # the torn last line of a killed process
                continue
            if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
                if isinstance(entry.get("digests"), dict):
                    found[str(entry.get("id"))] = entry["digests"]
    return found


def _digest(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def done_images(req: EditRequest, out: Path, check_files: bool = True) -> Done:
    """The images of ``req`` recorded as done whose outputs are all on disk with the recorded digests
    (``check_files=False``: as recorded, for the records a run has just made of files it wrote)."""
    records, done = _recorded(out, req.fingerprint), {}
    for it in req.inputs:
        names, rec = req.out_names(it["id"]), records.get(it["id"])
        if not rec or sorted(rec) != sorted(names):
            continue
        if not check_files or all(_digest(out / n) == rec[n] for n in names):
            done[it["id"]] = rec
    return done


def close_journals(req: EditRequest, out: Path, complete: bool) -> Done:
    """Fold the journals into manifest.json (``complete`` only when every image is done), then remove them and the
    temporary files a killed writer left; called once every process of the run has ended. Returns the done images."""
    done = done_images(req, out, check_files=False)
    atomic_write_json(req.manifest(complete and len(done) == len(req.inputs), done), out / MANIFEST)
    for stale in [*out.glob(JOURNALS), *out.glob(".*.tmp")]:
        stale.unlink(missing_ok=True)
    return done
