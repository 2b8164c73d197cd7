"""One command per paper table: train every experiment of a dataset, edit its fixed test images, evaluate, and write
the paper-shaped table (ours beside the paper's published numbers, or a cell saying there is none).

    python experiments/paper_table.py synthfaces                # the six synthfaces recipes, real numbers (CPU)
    python experiments/paper_table.py celeba trainer=gpu --eval scorer.lpips='{...}'   # a paper setting
    python experiments/paper_table.py church debug=smoke        # any dataset's configs end to end on tiny nets
    python experiments/paper_table.py celeba --print            # the train.py / edit.py / evaluate.py commands

The table's definition is experiments/tables/<table>.yaml: which experiments (conf/experiment/<prefix>_*.yaml), the
committed list of test images (<table>_test.txt) or the rule that picks them, the edit strength, the metrics and the
paper's numbers with their source. Overrides after the table name go to every training (debug=smoke, trainer=gpu,
...); --eval KEY=VALUE to evaluate.py (metric weights: scorer.*). A finished training or edit is reused on a rerun.
Writes <out>/evaluation.{csv,md,json} (evaluate.py's rows, strength 0 = the reconstruction) and <out>/table.{md,csv}.

Why a script and not a Hydra multirun: a table joins three entry points (one training and one edit per experiment,
then one evaluation over all edits); a multirun sweeps one entry point and has no step after its jobs. --print gives
the same steps as commands for a cluster launcher (the trainings are independent; edit after each, evaluate last).
"""

from __future__ import annotations

import argparse
import csv
import logging
import shlex
from pathlib import Path

import yaml

from asyrp.config import CONF_DIR, compose
from asyrp.ops.errors import AsyrpUserError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLES = HERE / "tables"
log = logging.getLogger("paper_table")


def load_spec(name: str) -> dict:
    path = TABLES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TABLES.glob("*.yaml"))
        raise AsyrpUserError(f"no table {name!r}: use one of {', '.join(known)} (experiments/tables/<name>.yaml)")
    spec = yaml.safe_load(path.read_text())
    spec["name"] = name
    spec["experiment_names"] = sorted(p.stem for p in (CONF_DIR / "experiment").glob(f"{spec['experiments']}_*.yaml"))
    if spec.get("synthfaces"):  # the attributes the table defines (not variants such as synthfaces_glasses_keep_clip)
        spec["experiment_names"] = [f"synthfaces_{a}" for a in sorted(spec["synthfaces"])]
    return spec


def test_list(spec: dict) -> list[str] | None:
    """The committed test image names (comments skipped), or None when the table picks the first n_test files."""
    if not spec.get("test_images"):
        return None
    lines = (TABLES / spec["test_images"]).read_text().splitlines()
    names = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    return names[: spec["n_test"]] if spec.get("n_test") else names


def attr_of(spec: dict, experiment: str) -> str:
    return experiment.removeprefix(f"{spec['experiments']}_")


def inputs_folder(spec: dict, experiment: str, args, smoke: bool) -> Path:
    """A folder holding exactly the table's test images of this experiment (links to them; smoke: tiny stand-ins
    named as the list's first two), so that edit.py edits the fixed list and nothing else."""
    from asyrp.data.images import scan_images

    names = test_list(spec)
    folder = args.out / "inputs" / (attr_of(spec, experiment) if "synthfaces" in spec else "all")
    if smoke:
        import torch

        from asyrp.ops.io import atomic_write_png

        folder.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        for n in (names or ["test_0.png", "test_1.png"])[:2]:
            atomic_write_png(torch.rand(3, 32, 32, generator=g) * 2 - 1, folder / Path(n).with_suffix(".png").name)
        return folder
    src = synthfaces_data(spec, experiment, args) / "test" if "synthfaces" in spec else args.data / spec["test_dir"]
    if names is None:
        names = [p.name for p in scan_images(src, spec["n_test"], 32, what="test_dir")[0]]
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise AsyrpUserError(
            f"{len(missing)} of the {len(names)} test images of {spec['test_images']} are not in {src} (first: "
            f"{missing[0]}): put the dataset's test images there or pass --data <folder holding {spec.get('test_dir')}>"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        link = folder / n
        if not link.exists():
            link.symlink_to((src / n).resolve())
    return folder


def synthfaces_data(spec: dict, experiment: str, args) -> Path:
    """data/synthfaces_<attr>: train/ (the recipe's n_images) and test/ (64 held-out faces), the attribute excluded."""
    from asyrp.synthfaces.data import SPLIT_SEEDS, write_split

    attr = attr_of(spec, experiment)
    key, value = spec["synthfaces"][attr]["exclude"].split("=")
    folder = args.data / f"synthfaces_{attr}"
    n_train = int(compose("train", [f"experiment={experiment}"]).dataset.n_images)
    for split, n in (("train", n_train), ("test", len(test_list(spec) or []))):
        if len(list((folder / split).glob("*.png"))) < n:
            write_split(folder / split, SPLIT_SEEDS[split], n, exclude={key: value})
    return folder


def steps(spec: dict, args) -> list[dict]:
    """Per experiment: the train.py and edit.py overrides and run folders."""
    smoke = "debug=smoke" in args.overrides
    out = []
    for e in spec["experiment_names"]:
        train_dir = args.out / "train" / e
        over = [f"experiment={e}", *args.overrides, f"dataset.cache_dir={args.out / 'cache'}"]
        if "synthfaces" in spec and not smoke:
            over.append(f"dataset.path={args.data / f'synthfaces_{attr_of(spec, e)}' / 'train'}")
        strength = spec["synthfaces"][attr_of(spec, e)]["strength"] if "synthfaces" in spec else spec["strength"]
        out.append({"experiment": e, "train_dir": train_dir, "train": over, "strength": strength})
    return out


def edit_overrides(step: dict, arch: str, inputs: Path, args) -> list[str]:
    ckpt = step["train_dir"] / "checkpoints" / "hfunction.pt"
    return [
        f"arch={arch}",
        f"checkpoint={ckpt}",
        f"input_dir={inputs}",
        f"sweep=[0,{step['strength']}]",  # 0: the reconstruction, for the metrics to it
        "strength=1",  # the sweep's strengths are absolute, whatever edit strength the file records
        f"cache_dir={args.out / 'cache'}",
        "batch_size=16",
        "progress=false",
        "grid_rows=8",
        "overwrite=true",  # this table's own folder: a new training's edits replace the old ones
    ]


def train_and_edit(spec: dict, step: dict, args) -> Path:
    """The experiment's h-function (reused when its training finished before) and its edits of the test images."""
    from asyrp.ops.io import atomic_write_json
    from asyrp.tasks.edit import edit
    from asyrp.tasks.train import train

    smoke = "debug=smoke" in args.overrides
    if "synthfaces" in spec and not smoke:
        synthfaces_data(spec, step["experiment"], args)  # its train/ and test/ faces, before the training reads them
    cfg = compose("train", step["train"], output_dir=step["train_dir"])
    arch = cfg.hydra.runtime.choices.arch
    done = step["train_dir"] / "table_trained.json"  # written when the training returned (hfunction.pt is per epoch)
    if done.is_file():
        log.info("%s: reusing its training in %s", step["experiment"], step["train_dir"])
    else:
        log.info("%s: training (%s)", step["experiment"], " ".join(step["train"]))
        metrics, _ = train(cfg)  # a stopped training resumes from its last.ckpt
        atomic_write_json({"overrides": step["train"], "metrics": metrics}, done)
    inputs = inputs_folder(spec, step["experiment"], args, smoke)
    edit_dir = args.out / "edit" / step["experiment"]
    res = edit(compose("edit", edit_overrides(step, arch, inputs, args), output_dir=edit_dir))
    return Path(res["output_dir"])


def metrics_for(spec: dict, runs: list[Path], args, oracle) -> tuple[list[str], list[str]]:
    """The table's metrics; under debug=smoke only those the tiny nets can give, the others named with the reason."""
    from asyrp.tasks.evaluate import check_absent, check_metrics, make_scorer, read_run

    if "debug=smoke" not in args.overrides:
        return list(spec["metrics"]), []
    read = [read_run(r) for r in runs]
    keep, absent = [], []
    for m in spec["metrics"]:
        cfg = compose("evaluate", ["runs=[x]", f"metrics=[{m}]", "clip=tiny", *args.eval])
        try:
            check_metrics(cfg, read)
            check_absent(make_scorer(cfg, object(), oracle), [m])
            keep.append(m)
        except AsyrpUserError as err:
            absent.append(f"{m}: {err}")
    return keep, absent


def run_table(spec: dict, args) -> Path:
    from asyrp.tasks.evaluate import evaluate

    oracle = None
    if "oracle" in spec["metrics"]:
        from asyrp.synthfaces.oracle import find_oracle

        oracle = find_oracle()
    smoke = "debug=smoke" in args.overrides
    if not smoke:
        preflight(spec, args, oracle)  # a metric without weights fails now, not after hours of training
    runs = [train_and_edit(spec, s, args) for s in steps(spec, args)]
    metrics, absent = metrics_for(spec, runs, args, oracle)
    clip = "tiny" if smoke else spec["clip"]
    title = f"{spec['name']}: Asyrp edits of the fixed test images ({'debug=smoke: tiny nets' if smoke else 'real'})"
    over = [f"runs=[{','.join(map(str, runs))}]", f"metrics=[{','.join(metrics)}]", f"clip={clip}", *args.eval]
    res = evaluate(compose("evaluate", [*over, f"title='{title}'"], output_dir=args.out), oracle)
    return write_paper_table(spec, res["rows"], args, absent)


def preflight(spec: dict, args, oracle) -> None:
    from asyrp.tasks.evaluate import check_absent, make_scorer

    cfg = compose(
        "evaluate", ["runs=[x]", f"metrics=[{','.join(spec['metrics'])}]", f"clip={spec['clip']}", *args.eval]
    )
    from asyrp.metrics import METRICS

    unknown = [m for m in spec["metrics"] if m not in METRICS]
    if unknown:
        raise AsyrpUserError(
            f"table {spec['name']}: metrics {', '.join(unknown)} are not in this version's EditScorer; run with "
            f"debug=smoke, or drop them from experiments/tables/{spec['name']}.yaml"
        )
    check_absent(make_scorer(cfg, object(), oracle), [m for m in spec["metrics"] if m != "oracle" or oracle])


def fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_paper_table(spec: dict, rows: list[dict], args, absent: list[str]) -> Path:
    """table.md / table.csv: one row per attribute at the table's strength; per metric ours, then the paper's."""
    from asyrp.ops.io import atomic_write_text

    cols = dict(spec["columns"])
    paper = spec.get("paper") or {}
    head = ["attribute", "strength", "n"] + [x for c in cols.values() for x in (f"{c} (ours)", f"{c} (paper)")]
    table = []
    for r in rows:
        if r["strength"] in (0, 0.0):
            continue  # the reconstruction row: in evaluation.md
        pv = (paper.get("values") or {}).get(r["attribute"], {})
        cells = [r["attribute"], fmt(r["strength"]), fmt(int(r["n"]))]
        for key in cols:
            cells.append(fmt(r[key]) if key in r else "absent")
            cells.append(f"{pv[key]} ({pv.get('source', '')})" if key in pv else "none¹")
        table.append(cells)
    sets = {r["source_set"] for r in rows}
    lines = [f"# {spec['name']}: the paper's table, ours beside the published numbers", ""]
    if len(sets) > 1:
        lines += [
            f"**Rows score different image sets** ({len(sets)} source sets; each row's files: evaluation.csv).",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c) + " |" for c in table]
    lines += ["", f"¹ {paper.get('note', 'no published number')}", ""]
    lines += [f"Absent metrics (debug=smoke): {'; '.join(absent)}"] if absent else []
    lines += [f"Command: `python experiments/paper_table.py {shlex.join(args.argv)}`"]
    md = atomic_write_text("\n".join(lines) + "\n", args.out / "table.md")
    with open(args.out / "table.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([head, *table])
    print("\n".join(lines))
    return md


def print_commands(spec: dict, args) -> None:
    """The steps as entry-point commands (a cluster launcher runs the trainings in parallel, each edit after its
    training, evaluate.py last); the test-image folder is made by this script (or by hand: links to the list)."""
    runs = []
    for s in steps(spec, args):
        arch = compose("train", s["train"]).hydra.runtime.choices.arch
        print(f"python train.py {shlex.join(s['train'])} hydra.run.dir={s['train_dir']}")
        inputs = args.out / "inputs" / (attr_of(spec, s["experiment"]) if "synthfaces" in spec else "all")
        edit_dir = args.out / "edit" / s["experiment"]
        print(f"python edit.py {shlex.join(edit_overrides(s, arch, inputs, args))} hydra.run.dir={edit_dir}")
        runs.append(str(edit_dir / "edited"))
    over = [f"runs=[{','.join(runs)}]", f"metrics=[{','.join(spec['metrics'])}]", f"clip={spec['clip']}", *args.eval]
    print(f"python evaluate.py {shlex.join(over)} hydra.run.dir={args.out}")


def main(argv: list[str] | None = None) -> None:
    import sys

    from asyrp.ops.cli import run_cli

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="experiments/tables/<table>.yaml: " + ", ".join(p.stem for p in TABLES.glob("*.yaml")))
    p.add_argument("overrides", nargs="*", help="train.py overrides for every experiment (debug=smoke, trainer=gpu)")
    p.add_argument("--eval", action="append", default=[], help="an evaluate.py override (scorer.lpips=...)")
    p.add_argument("--out", type=Path, default=None, help="default outputs/tables/<table>[_smoke]")
    p.add_argument("--data", type=Path, default=ROOT / "data", help="the folder holding the datasets")
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="some of the table's experiments (attribute or experiment names), run in this order",
    )
    p.add_argument("--n-test", type=int, default=None, help="only the first N test images of the table's list")
    p.add_argument("--print", action="store_true", help="print the commands instead of running them")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = run_cli(load_spec, args.table)
    if args.n_test:
        spec["n_test"] = args.n_test
    if args.only:
        pick = {attr_of(spec, e): e for e in spec["experiment_names"]} | {e: e for e in spec["experiment_names"]}
        unknown = [o for o in args.only if o not in pick]
        if unknown:
            p.error(f"--only {' '.join(unknown)}: not in this table ({', '.join(spec['experiment_names'])})")
        spec["experiment_names"] = [pick[o] for o in args.only]  # in the order given
    smoke = "debug=smoke" in args.overrides
    args.out = (args.out or ROOT / "outputs" / "tables" / f"{args.table}{'_smoke' if smoke else ''}").resolve()
    args.data = args.data.resolve()
    if args.print:
        print_commands(spec, args)
        return
    run_cli(run_table, spec, args)


if __name__ == "__main__":
    main()
