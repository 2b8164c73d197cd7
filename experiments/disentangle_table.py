"""Issue 24's side-by-side table: per synthfaces attribute and named setting (row), the target-vs-kept matrix on test/.

    python experiments/disentangle_table.py --out outputs/disentangle --threads 1                 # the whole table
    python experiments/disentangle_table.py --out outputs/disentangle --attributes glasses hat --rows paper window \\
        --seeds 0 --no-compose                                                                     # a part of it
    python experiments/disentangle_table.py --out outputs/disentangle --table                    # only the tables

A row is (name, train.py overrides, edit.py overrides, the supervision it needs, the files it needs on main). Each
(attribute, row) is experiments/recipes.py (trained at every --seeds through train.py, reusing finished trainings;
select/ and test/ edited through edit.py at every --strengths; the strength chosen on select/ by leximin over the
seeds' margins; test/ reported), then scored here on test/ at the chosen strength: the PSNR (and LPIPS, given
--lpips-weights) of each edit to the TRUE edited render (asyrp.synthfaces.edits: the same face drawn with the
attribute on), the training seconds as measured (wall time on a shared machine: the load average is recorded), and
the network passes per edited image from the plan (EditPlan.passes: (n_inv - 1) + n_gen full passes, plus one
decoder row per editing step; the inversion is cached, so several strengths share it). --reverse attributes are also
edited backwards on faces that have them. Matched strength: per attribute, each row's test/ kept rate at the strength
whose select/ success is closest to a common target (asyrp.experiment.comparison). --compose: the three attributes'
h-functions of --compose-row composed by edit.py at their chosen strengths on faces that lack all three.

Data: <data>/synthfaces_<attr> (train/ select/ test/ without the attribute), synthfaces_with_<attr> (reverse) and
synthfaces_compose (without all three) are written when absent. Resumable: each finished row is appended to
<out>/rows.jsonl and skipped on a rerun with the same settings; progress in <out>/table.log; <out>/table.md and
<out>/table.csv are rewritten after every row. A row whose options are not on main is listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asyrp.config import compose
from asyrp.data.images import read_image_files
from asyrp.experiment import comparison as cmp
from asyrp.metrics import EditScorer, LPIPSDistance, LPIPSWeightsMissing, composed_score, parse_target
from asyrp.ops.progress import logging_to
from asyrp.plan import plan_of
from asyrp.synthfaces.data import SPLIT_SEEDS, write_masks, write_split, write_twins
from asyrp.synthfaces.edits import ATTRIBUTES, REMOVED, true_edits
from asyrp.synthfaces.oracle import load_oracle

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("disentangle_table")
# kept-attribute prompt pairs per face field (the CLIP keep term names what an edit must not move)
KEEP_PAIRS = {
    "mouth": [["a neutral face", "a smiling face"], ["a neutral face", "a frowning face"]],
    "hair_colour": [
        ["a face with brown hair", "a face with blond hair"],
        ["a face with brown hair", "a face with red hair"],
    ],
    "hair_length": [["a face with short hair", "a face with long hair"]],
    "glasses": [["a face with no glasses", "a face with glasses"]],
    "hat": [["a face with no hat", "a face with a hat"]],
}
# attributes the probe keep term holds (as the data writer records them), those of the edited field left out
PROBE_KEPT = ["mouth=smiling", "mouth=frowning", "hair_colour=blond", "hair_colour=red", "hair_colour=black",
              "hair_length=long", "glasses=True", "hat=True", "skin=dark", "skin=pale"]  # fmt: skip
KEEP_PROBE = ["keep=probe", "model.loss.keep.probe.labelled={labelled}", "model.loss.keep.probe.attributes={probe}"]
WINDOW = ["plan.t0=400", "plan.t_edit=250"]  # the ceiling's window: every attribute reachable by a per-face delta_h
GUIDE = ["guide=classifier", "model.loss.guide.classifier.labelled={labelled}",
         "model.loss.guide.classifier.target={target}", "model.loss.guide.classifier.kept={probe}"]  # fmt: skip
# paired images: the training faces' twins, no CLIP term, no P_t^orig anchor (conf/experiment/*_twins.yaml)
TWINS_LOSS = ["guide=twins", "model.loss.guide.twins.dir={twins}", "model.loss.w_clip=0", "model.loss.w_recon=0"]
LATE = ["plan.t0=300", "plan.t_edit=200"]  # the mouth's window (frowning's CLIP recipe)
HAIR = ["plan.t0=500", "plan.t_edit=300"]  # above the window the others share
MOUTH = ["plan.t0=300", "plan.t_edit=150"]  # LATE reaching lower t, where the mouth is drawn
HOLD = ["model.loss.guide.twins.hold_outside=true"]  # the twin inside the pair's region, P_t^orig outside it
ADAM = ["model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.001"]  # instead of the recipes' SGD


def pt_hold(hold: float = 0.3) -> list[str]:
    """edit.py's override of the plan's P_t hold (P_t^orig where a step changes P_t by <= ``hold`` x its largest)."""
    return [f"plan.hold={hold}"]


PT_HOLD_NOTE = " + P_t held outside the edit's own region (a pixel-space blend of P_t at edit time)"


def twins(window: list[str], n_images: int = 64, epochs: int = 4, zero_init: bool = True, extra=()) -> list[str]:
    """A paired-images row's train.py overrides: the window, the twin loss, the pairs, the epochs, the initialisation."""
    init = ["hfunction.zero_init=true"] if zero_init else []
    return window + TWINS_LOSS + [f"dataset.n_images={n_images}", f"model.n_iter={epochs}"] + init + list(extra)


KEEP_CLIP = ["keep=clip", "model.loss.keep.clip.w_keep=2.0", "model.loss.keep.clip.pairs={keep_pairs}"]
# name, train.py overrides, edit.py overrides, supervision, files it needs on main, why it is skipped (if it is)
ROWS = [
    ("paper", [], [], "CLIP text only", [], None),
    ("paper_128", ["dataset.n_images=128"], [], "CLIP text only", [], None),  # half the recipe's faces (make demo)
    ("keep_clip", KEEP_CLIP, [], "CLIP text only", ["conf/keep/clip.yaml"], None),
    ("keep_probe", KEEP_PROBE, [], "labelled images", ["conf/keep/probe.yaml"], None),
    ("project", ["constraint=project", "constraint.directions={directions}"], [], "labelled images",
     ["conf/constraint/project.yaml"], None),
    ("mask", ["constraint=mask", "constraint.mask={mask}"], [], "CLIP text only (region from CLIP's gradient)",
     ["conf/constraint/mask.yaml"], None),
    ("loco", [], [], "CLIP text only (region from CLIP's gradient)", ["conf/method/loco.yaml"], "LOCO Edit's x_t "
     "edit has no training seeds and edits test/ at its chosen strength only: run experiments/loco.py beside this"),
    ("window", WINDOW, [], "CLIP text only", [], None),
    ("window_keep_clip", WINDOW + KEEP_CLIP, [], "CLIP text only", ["conf/keep/clip.yaml"], None),
    ("guided", GUIDE, [], "labelled images", ["conf/guide/classifier.yaml"], None),
    ("window_guided", WINDOW + GUIDE, [], "labelled images", ["conf/guide/classifier.yaml"], None),
    ("window_guided_masked", WINDOW + GUIDE + ["constraint=mask", "constraint.mask={mask}", "dataset.n_images=64",
     "model.n_iter=4"], [], "labelled images + a mask from CLIP's gradient", ["conf/guide/classifier.yaml"], None),
    ("window_twins", twins(WINDOW, zero_init=False), [], "paired images (64 twins)", ["conf/guide/twins.yaml"], None),
    ("window_twins_masked", twins(WINDOW, zero_init=False, extra=["constraint=mask", "constraint.mask={mask}"]), [],
     "paired images (64 twins) + a mask from CLIP's gradient", ["conf/guide/twins.yaml"], None),
    ("window_twins_zero", twins(WINDOW), [], "paired images (64 twins)",
     ["conf/guide/twins.yaml"], None),  # f starts from delta_h = 0 (no random shift to unlearn)
    ("window_twins_zero_256", twins(WINDOW, n_images=256), [], "paired images (256 twins)", ["conf/guide/twins.yaml"],
     None),  # 4x the pairs
    ("late_twins_zero", twins(LATE), [], "paired images (64 twins)", ["conf/guide/twins.yaml"], None),
    ("late_twins_zero_e12", twins(LATE, epochs=12), [], "paired images (64 twins)", ["conf/guide/twins.yaml"], None),
    ("late_twins_zero_e16", twins(LATE, epochs=16), [], "paired images (64 twins)", ["conf/guide/twins.yaml"], None),
    ("window_twins_zero_e12", twins(WINDOW, epochs=12), [], "paired images (64 twins)", ["conf/guide/twins.yaml"],
     None),  # 3x the epochs
    ("window_twins_hold", twins(WINDOW, extra=HOLD), [], "paired images (64 twins; the pair's region held outside)",
     ["conf/guide/twins.yaml"], None),
    ("window_twins_hold_e12", twins(WINDOW, epochs=12, extra=HOLD), [],
     "paired images (64 twins; the pair's region held outside)", ["conf/guide/twins.yaml"], None),
    ("late_twins_hold_e12", twins(LATE, epochs=12, extra=HOLD), [],
     "paired images (64 twins; the pair's region held outside)", ["conf/guide/twins.yaml"], None),
    ("late_twins_hold_e12_w50", twins(LATE, epochs=12, extra=HOLD + ["model.loss.guide.twins.w_twin=50"]), [],
     "paired images (64 twins; the pair's region held outside)", ["conf/guide/twins.yaml"], None),  # 5x the step
    # two rows above edited with the plan's P_t hold (same training: copy their s<seed>/train folders here to reuse them)
    ("window_twins_hold_e12_pthold", twins(WINDOW, epochs=12, extra=HOLD), pt_hold(),
     "paired images (64 twins; the pair's region held outside)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    ("late_twins_zero_e12_pthold", twins(LATE, epochs=12), pt_hold(), "paired images (64 twins)" + PT_HOLD_NOTE,
     ["conf/guide/twins.yaml"], None),
    ("window_twins_hold_e12_pthold40", twins(WINDOW, epochs=12, extra=HOLD), pt_hold(0.4),
     "paired images (64 twins; the pair's region held outside)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    ("late_twins_zero_e12_pthold40", twins(LATE, epochs=12), pt_hold(0.4),
     "paired images (64 twins)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),  # a higher hold
    ("late_twins_zero_e12_pthold50", twins(LATE, epochs=12), pt_hold(0.5),
     "paired images (64 twins)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    # frowning's misses are weak frowns (dark skin, smiling sources): a window reaching lower t, or twice the pairs
    ("mouth_twins_zero_e12_pthold50", twins(MOUTH, epochs=12), pt_hold(0.5),
     "paired images (64 twins)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    ("late_twins_zero_e12_128_pthold50", twins(LATE, n_images=128, epochs=12), pt_hold(0.5),
     "paired images (128 twins)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    ("window_twins_zero_pthold", twins(WINDOW), pt_hold(), "paired images (64 twins)" + PT_HOLD_NOTE,
     ["conf/guide/twins.yaml"], None),  # make demo's glasses recipe
    ("paper_128_pthold", ["dataset.n_images=128"], pt_hold(), "CLIP text only" + PT_HOLD_NOTE, [], None),
    # hair colour moves mouth and glasses in [400, 250]: an earlier window, where hair colour forms before them
    ("hair_twins_zero_e12_pthold", twins(HAIR, epochs=12), pt_hold(), "paired images (64 twins)" + PT_HOLD_NOTE,
     ["conf/guide/twins.yaml"], None),
    # make demo's two recipes with fewer epochs (its compute: the trainings are most of it)
    ("window_twins_zero_e3_pthold", twins(WINDOW, epochs=3), pt_hold(), "paired images (64 twins)" + PT_HOLD_NOTE,
     ["conf/guide/twins.yaml"], None),
    ("paper_128_e3_pthold", ["dataset.n_images=128", "model.n_iter=3"], pt_hold(), "CLIP text only" + PT_HOLD_NOTE, [],
     None),
    # hair colour moves the skin: a 1x1 f gives a cell that straddles hair and skin one shift; 3x3 sees the neighbours
    ("window_twins_hold_e12_k3_pthold", twins(WINDOW, epochs=12, extra=HOLD + ["hfunction.kernel_size=3"]), pt_hold(),
     "paired images (64 twins; the pair's region held outside)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    # ... or the held outside weighs more in the twin loss (the skin, mouth and glasses the hair's f moved)
    ("window_twins_hold4_e12_pthold", twins(WINDOW, epochs=12, extra=HOLD + ["model.loss.guide.twins.w_outside=4"]),
     pt_hold(), "paired images (64 twins; the pair's region held outside, x4)" + PT_HOLD_NOTE,
     ["conf/guide/twins.yaml"], None),
    # the held blond loss was still falling after 12 epochs (1.6 -> 1.15, -1.4% per epoch): train it further
    ("window_twins_hold_e36_pthold", twins(WINDOW, epochs=36, extra=HOLD), pt_hold(),
     "paired images (64 twins; the pair's region held outside)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
    # per-image masks at edit time (the renderer's regions, as a face parser would give on photos): P_t^edit only
    # inside each face's mask; in a composition each function decoded on its own and held to its own mask
    ("window_twins_hold_e12_masks", twins(WINDOW, epochs=12, extra=HOLD), ["masks={data}/masks/{attr}/{split}"],
     "paired images (64 twins) + per-image masks (a pixel-space blend of P_t inside them)", ["conf/guide/twins.yaml"],
     None),
    ("window_twins_hold_e12_adam_pthold", twins(WINDOW, epochs=12, extra=HOLD + ADAM), pt_hold(),
     "paired images (64 twins; the pair's region held outside)" + PT_HOLD_NOTE, ["conf/guide/twins.yaml"], None),
]  # fmt: skip
ROW_NAMES = [r[0] for r in ROWS]


def python(args: list[str], logfile: Path, threads: int) -> bool:
    """Run ``python <args>`` in the repository with ``threads`` threads, its output to ``logfile``; False on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    log.info("$ python %s  (log: %s)", " ".join(args), logfile)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as fh:
        rc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        log.info("FAILED (exit %d): python %s (log: %s)", rc, " ".join(args), logfile)
    return rc == 0


def skipped(row) -> str | None:
    """Why a row cannot run on this tree (None: it can)."""
    name, _, _, _, needs, why = row
    missing = [n for n in needs if not (ROOT / n).exists()]
    if missing:
        return f"needs {', '.join(missing)} (not on main yet)"
    return why


def off_target(attr: str) -> str:
    """The oracle's reading of a face the attribute was removed from."""
    field, value = ATTRIBUTES[attr]
    return f"{field}=False" if value is True else f"{field}!={value}"


def data(a, name: str, exclude: dict | None = None, only: dict | None = None, splits=("train", "select", "test")):
    """<data>/<name> with the splits the table edits (written once: an existing folder is used as it is)."""
    root = a.data / name
    for split in splits:
        n = {"train": a.n_train, "labelled": a.n_labelled}.get(split, a.n_faces)
        if not (root / split / "attributes.json").is_file():
            write_split(root / split, SPLIT_SEEDS[split], n, exclude or {}, only=only)
    return root


def masks(root: Path, attr: str, splits) -> list[Path]:
    """<root>/masks/<attr>/<split>: where the renderer draws ``attr`` on each face (written once), for masks=."""
    out = []
    for split in splits:
        folder = root / "masks" / attr / split
        if not folder.is_dir() or not any(folder.glob("*.png")):
            write_masks(root / split, attr, folder)
        out.append(folder)
    return out


def fill(a, attr: str, overrides: list[str]) -> list[str] | None:
    """The row's overrides with its placeholders filled ({keep_pairs}: the prompt pairs of the other fields; {probe}:
    the probe's (and the guide's) kept attributes of the other fields, {labelled}: the labelled split it trains on;
    {twins}: train/'s twins (the same faces with the attribute);
    {target}: the attribute as the data writer records it (head=value);
    {directions}: discover.py's mean-difference directions of the other fields' attributes; {mask}: the attribute's
    region found by discover.py method=region); None if one of them failed."""
    field = ATTRIBUTES[attr][0]
    pairs = [p for f, ps in KEEP_PAIRS.items() if f != field for p in ps]
    out = []
    for o in overrides:
        if "{probe}" in o:
            o = o.replace("{probe}", "[" + ",".join(f"'{k}'" for k in PROBE_KEPT if k.split("=")[0] != field) + "]")
        if "{target}" in o:
            o = o.replace("{target}", f"'{field}={ATTRIBUTES[attr][1]}'")
        if "{labelled}" in o:
            o = o.replace("{labelled}", str(data(a, "synthfaces_labelled", splits=("labelled",)) / "labelled"))
        if "{twins}" in o:  # train/'s faces drawn with the attribute, same names (guide=twins)
            root = data(a, f"synthfaces_{attr}", exclude={field: str(ATTRIBUTES[attr][1])})
            if not (root / "twins" / "attributes.json").is_file():
                write_twins(root / "train", attr)
            o = o.replace("{twins}", str(root / "twins"))
        if "{keep_pairs}" in o:
            o = o.replace("{keep_pairs}", "[" + ",".join(f"['{s}','{t}']" for s, t in pairs) + "]")
        if "{directions}" in o:
            files = []
            for k in (k for k, (f, _) in ATTRIBUTES.items() if f != field):
                if (found := discovered(a, k, "mean_diff")) is None:
                    return None
                files.append(found)
            o = o.replace("{directions}", "[" + ",".join(str(f) for f in files) + "]")
        if "{mask}" in o:
            if (mask := discovered(a, attr, "region")) is None:
                return None
            o = o.replace("{mask}", str(mask))
        out.append(o)
    return out


def discovered(a, attr: str, method: str) -> Path | None:
    """A file discover.py makes once per attribute: method=mean_diff, its h direction on the labelled split (labels
    from the data writer, never the oracle); method=region, the mask of where CLIP reads it on train/ (mask.pt)."""
    out = a.out / method / attr
    found = sorted(out.glob("mask.pt" if method == "region" else "*.pt"))
    if found:
        return found[0]
    args = ["discover.py", f"method={method}", f"attribute=synthfaces_{attr}", f"output_dir={out}"]
    if method == "region":
        field, value = ATTRIBUTES[attr]
        train = data(a, f"synthfaces_{attr}", exclude={field: str(value)}) / "train"
        args += [f"input_dir={train}", f"n_images={min(a.n_train, 64)}"]
    else:
        labelled = data(a, "synthfaces_labelled", splits=("labelled",)) / "labelled"
        args += ["labels=writer", "dataset=synthfaces_labelled", f"dataset.path={labelled}", f"n_images={a.n_labelled}"]
    ok = python([*args, f"cache_dir={a.cache}", f"hydra.run.dir={out}/run"], out / "discover.log", a.threads)
    found = sorted(out.glob("mask.pt" if method == "region" else "*.pt"))
    return found[0] if ok and found else None


def recipe(a, attr: str, row, overrides: list[str]) -> Path | None:
    """experiments/recipes.py for one (attribute, row); its summary.json, or None if it failed."""
    name, _, edit_overrides, *_ = row
    field, value = ATTRIBUTES[attr]
    out = a.out / name / attr
    args = ["experiments/recipes.py", "--experiment", f"synthfaces_{attr}", "--out", str(out), "--cache", str(a.cache)]
    args += ["--data", str(data(a, f"synthfaces_{attr}", exclude={field: str(value)}))]
    args += ["--seeds", *map(str, a.seeds), "--strengths", *map(str, a.strengths)]
    if attr in a.reverse:
        rev = data(a, f"synthfaces_with_{attr}", only={field: str(value)}, splits=("select", "test"))
        args += ["--reverse-data", str(rev), "--reverse-target", off_target(attr)]
    for e in edit_overrides:
        args += ["--edit-override", e.replace("{attr}", attr)]
    if any("masks=" in e for e in edit_overrides):  # per-image masks beside the faces each split edits
        for root in [Path(args[args.index("--data") + 1])] + ([rev] if attr in a.reverse else []):
            masks(root, attr, ("select", "test"))
    ok = python([*args, "--", *overrides, *a.extra], out / "recipes.log", a.threads)
    return out / "summary.json" if ok else None


def true_scores(scorer: EditScorer, edited: Path, index: int, attrs, on: bool = True) -> dict:
    """PSNR (and LPIPS) of the ``index``-th output of every input of an edit run to the true edited render."""
    man = json.loads((edited / "manifest.json").read_text())
    srcs = [it["source"] for it in man["inputs"]]
    x_edit = read_image_files([edited / it["outputs"][index] for it in man["inputs"]], 32)
    names = ["psnr", *(["lpips"] if scorer.lpips else [])]
    res = scorer.score(true_edits(srcs, attrs, on), x_edit, names)
    return {k: round(float(v), 4) for k, v in res.items()}


def passes(attr: str, row, overrides: list[str]) -> list[int]:
    """(encoder, decoder) passes per edited image of the row's plan (its edit overrides of plan.* applied last)."""
    plan_edits = [o for o in row[2] if o.startswith("plan.")]
    cfg = compose("train", [f"experiment=synthfaces_{attr}", *overrides, *plan_edits])
    return list(plan_of(OmegaConf.to_container(cfg.plan, resolve=True)).passes())


def score_row(a, attr: str, row, overrides: list[str], summary_path: Path, scorer: EditScorer) -> dict:
    """The table row of a finished recipe: the test/ matrix per seed at the chosen strength, distances to the true
    render, seconds, load, passes; the reverse edit's the same way."""
    s = json.loads(summary_path.read_text())
    out = {
        "attribute": attr,
        "row": row[0],
        "supervision": row[3],
        "overrides": overrides,
        "edit_overrides": row[2],
        "seeds": a.seeds,
        "strengths": a.strengths,
        "summary": str(summary_path),
        "chosen_strength": s["chosen_strength"],
        "train_seconds": {k: v["train_seconds"] for k, v in s["seeds"].items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "passes": passes(attr, row, overrides + a.extra),
    }
    k = s["strengths"].index(s["chosen_strength"])
    out["test"] = {seed: cmp.matrix(r) for seed, r in s["test_at_chosen"].items()}
    out["true"] = {
        seed: true_scores(scorer, summary_path.parent / f"s{seed}" / "test" / "edited", k, [attr])
        for seed in s["seeds"]
    }
    if "reverse_chosen_strength" in s:
        rk = [-abs(x) for x in s["strengths"]].index(s["reverse_chosen_strength"])
        out["reverse"] = {
            "target": s["reverse_target"],
            "chosen_strength": s["reverse_chosen_strength"],
            "test": {seed: cmp.matrix(r) for seed, r in s["reverse_test_at_chosen"].items()},
        }
        if attr in REMOVED:
            out["reverse"]["true"] = {
                seed: true_scores(
                    scorer, summary_path.parent / f"s{seed}" / "reverse_test" / "edited", rk, [attr], False
                )
                for seed in s["seeds"]
            }
    return out


class Rows:
    """rows.jsonl (one finished (attribute, row) per line, appended) and the tables rewritten from it."""

    def __init__(self, out: Path):
        self.path = out / "rows.jsonl"
        self.rows = [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.is_file() else []

    def done(self, attr: str, name: str, spec: dict) -> bool:
        """Whether the latest line of (attribute, row) was made with these settings."""
        return any(r["attribute"] == attr and r["row"] == name and all(r.get(k) == v for k, v in spec.items())
                   for r in cmp.latest(self.rows))  # fmt: skip

    def add(self, row: dict) -> None:
        self.rows = [r for r in self.rows if (r["attribute"], r["row"]) != (row["attribute"], row["row"])] + [row]
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def composition(a, store: Rows, scorer: EditScorer) -> dict | None:
    """--compose's attributes, --compose-row's h-functions of each seed composed by edit.py at each attribute's
    chosen strength on faces that lack all three: all succeed / every other head kept / both, per seed."""
    rows = cmp.latest(store.rows)
    mine = {r["attribute"]: r for r in rows if r["row"] == a.compose_row and r["attribute"] in a.compose}
    if len(mine) < len(a.compose):
        log.info("composition waits for rows %s of %s", sorted(set(a.compose) - set(mine)), a.compose_row)
        return None
    exclude = {ATTRIBUTES[k][0]: str(ATTRIBUTES[k][1]) for k in a.compose}
    if len(exclude) < len(a.compose):
        raise SystemExit(f"--compose {a.compose}: two attributes share one face field; compose different fields")
    faces = data(a, "synthfaces_compose_" + "_".join(a.compose), exclude=exclude, splits=("test",)) / "test"
    coeffs = [mine[k]["chosen_strength"] for k in a.compose]
    # the chosen strengths are absolute: strength=1 keeps edit.py from scaling them by each file's stored strength
    # (before 2026-12-05 it did: smiling composed at 0.6 x its chosen strength; those lines lack "absolute")
    if store.done(
        "+".join(a.compose), f"compose:{a.compose_row}", {"seeds": a.seeds, "coeffs": coeffs, "absolute": True}
    ):
        log.info("composition %s of %s: done", a.compose, a.compose_row)
        return None
    oracle = load_oracle()
    targets = [parse_target(compose("train", [f"experiment=synthfaces_{k}"]).attribute.oracle_target, oracle.classes)
               for k in a.compose]  # fmt: skip
    res = {"attribute": "+".join(a.compose), "row": f"compose:{a.compose_row}", "coeffs": coeffs, "absolute": True}
    res["seeds"] = a.seeds
    for seed in a.seeds:
        ckpts = [a.out / a.compose_row / k / f"s{seed}" / "train" / "checkpoints" / "hfunction.pt" for k in a.compose]
        dst = a.out / "compose" / a.compose_row / f"s{seed}"
        args = ["edit.py", "arch=synthfaces", "plan=synthfaces", "checkpoint=[" + ",".join(map(str, ckpts)) + "]"]
        args += [f"coeffs=[{','.join(map(str, coeffs))}]", "strength=1", f"input_dir={faces}", f"cache_dir={a.cache}"]
        args += ["batch_size=32", "progress=false", "grid_rows=8", f"hydra.run.dir={dst}", "overwrite=true"]
        for e in next(r[2] for r in ROWS if r[0] == a.compose_row):  # the row's edit overrides (e.g. its P_t hold)
            if "masks=" in e:  # one mask folder per composed function: each held to its own region
                e = "masks=[" + ",".join(str(masks(faces.parent, k, ("test",))[0]) for k in a.compose) + "]"
            args.append(e)
        if not python(args, dst / "edit.log", a.threads):
            return None
        man = json.loads((dst / "edited" / "manifest.json").read_text())
        x_src = read_image_files([it["source"] for it in man["inputs"]], 32)
        x_edit = read_image_files([dst / "edited" / it["outputs"][0] for it in man["inputs"]], 32)
        with torch.no_grad():
            verdict = composed_score(oracle.judge(x_src), oracle.judge(x_edit), targets, list(oracle.classes))
        res[str(seed)] = {**verdict, **true_scores(scorer, dst / "edited", 0, a.compose)}
    return res


def ordered(rows: list[dict]) -> list[dict]:
    """The latest line of each (attribute, row), in the order of ATTRIBUTES and ROWS (compositions last)."""
    order = {name: i for i, name in enumerate([*ATTRIBUTES, *ROW_NAMES])}
    return sorted(cmp.latest(rows), key=lambda r: (order.get(r["attribute"], 99), order.get(r["row"], 99)))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/disentangle"))
    p.add_argument(
        "--data", type=Path, default=Path("data"), help="where the synthfaces splits are (written if absent)"
    )
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=list(ATTRIBUTES))
    p.add_argument("--rows", nargs="+", default=ROW_NAMES, choices=ROW_NAMES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0, 1.2, 1.4])
    p.add_argument("--reverse", nargs="*", default=["smiling", "glasses"], choices=list(ATTRIBUTES))
    p.add_argument("--compose", nargs="*", default=["smiling", "glasses", "blond_hair"], choices=list(ATTRIBUTES))
    p.add_argument("--compose-row", default="paper", choices=ROW_NAMES)
    p.add_argument("--no-compose", dest="compose", action="store_const", const=[])
    p.add_argument("--match-success", type=float, default=None, help="common select/ success (default: the highest "
                   "every row of the attribute reaches)")  # fmt: skip
    p.add_argument("--n-faces", type=int, default=64, help="faces of select/ and test/ (written splits)")
    p.add_argument("--n-train", type=int, default=256, help="faces of train/ (the recipes use their dataset.n_images)")
    p.add_argument("--n-labelled", type=int, default=128, help="faces of the labelled split (probes, directions)")
    p.add_argument("--lpips-weights", default=None, help="torchvision alexnet weights file: LPIPS to the true render")
    p.add_argument("--extra", nargs="*", default=[], help="train.py overrides appended to every row (tiny runs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="only rewrite the tables from <out>/rows.jsonl")
    a = p.parse_args(argv)
    a.out, a.data = a.out.resolve(), a.data.resolve()  # the subprocesses run in the repository
    a.cache = a.out / "cache"
    return a


def lpips_of(a) -> dict | None:
    """The LPIPS settings when its weights are there (else the LPIPS column stays empty, said once)."""
    try:
        LPIPSDistance("alex", backbone_weights=a.lpips_weights)
    except LPIPSWeightsMissing as e:
        log.info("no LPIPS to the true render: %s", e)
        return None
    return {"net": "alex", "backbone_weights": a.lpips_weights}


def run(a) -> None:
    """Every (attribute, row) of the command line not yet in rows.jsonl, then the composition and the tables."""
    torch.set_num_threads(a.threads)
    rows, notes = Rows(a.out), []
    scorer = EditScorer(lpips=None if a.table else lpips_of(a))
    for row in (r for r in ROWS if r[0] in a.rows and not a.table):
        if why := skipped(row):
            notes.append(f"row {row[0]} skipped: {why}")
            log.info(notes[-1])
            continue
        for attr in a.attributes:
            overrides = fill(a, attr, row[1])
            spec = {
                "overrides": overrides,
                "edit_overrides": row[2],
                "seeds": a.seeds,
                "strengths": a.strengths,
                "extra": a.extra,
            }
            if overrides is None or rows.done(attr, row[0], spec):
                log.info(
                    "%s / %s: %s", attr, row[0], "done" if overrides is not None else "its directions or mask failed"
                )
                continue
            summary = recipe(a, attr, row, overrides)
            if summary is not None:
                rows.add({**score_row(a, attr, row, overrides, summary, scorer), "extra": a.extra})
                log.info("ROW %s / %s: %s", attr, row[0], json.dumps(rows.rows[-1]["test"]))
                cmp.write_tables(a.out, ordered(rows.rows), notes, a.match_success)
    if a.compose and not a.table and (res := composition(a, rows, scorer)) is not None:
        rows.add(res)
    cmp.write_tables(a.out, ordered(rows.rows), notes, a.match_success)
    log.info("tables: %s, %s", a.out / "table.md", a.out / "table.csv")


def main(argv=None) -> None:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with logging_to(log, a.out / "table.log"):
        run(a)


if __name__ == "__main__":
    main()
