"""The command line every experiment script shares, and the run sizes it selects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..config import CONF_DIR

ROOT = CONF_DIR.parent  # the checkout: conf/, data/, outputs/

# run sizes: images edited, DDIM steps (n_inv = n_gen), training images, training epochs
SIZES = {
    "full": {"n_images": 32, "n_steps": 20, "n_train": 64, "epochs": 4},
    "quick": {"n_images": 8, "n_steps": 10, "n_train": 8, "epochs": 1},
    "smoke": {"n_images": 2, "n_steps": 4, "n_train": 2, "epochs": 1},
}


def base_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="synthfaces", help="conf/arch/<name>.yaml (default synthfaces)")
    ap.add_argument("--checkpoint", default=None, help="override the arch's checkpoint (e.g. a frozen snapshot)")
    ap.add_argument(
        "--clip", default=None, help="conf/clip/<name>.yaml (default: synthfaces for arch synthfaces, else tiny)"
    )
    ap.add_argument("--attribute", default="synthfaces_smiling", help="conf/attribute/<name>.yaml")
    ap.add_argument(
        "--images",
        default=None,
        help="folder of test images, or 'random' (default: data/synthfaces/test for synthfaces, else random)",
    )
    ap.add_argument(
        "--train-images",
        default=None,
        help="folder of training images for --train (default: data/synthfaces/train for synthfaces, "
        "else the backbone's own random samples)",
    )
    ap.add_argument("--n-images", type=int, default=None, help="images edited (default by run size)")
    ap.add_argument("--n-steps", type=int, default=None, help="DDIM steps n_inv = n_gen (default by run size)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for --train (default by run size)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs for --train (default by run size)")
    ap.add_argument(
        "--t0",
        type=int,
        default=None,
        help="invert to t0 and edit in [t0, t_edit] (default 999, the paper's [T, t_edit]); the "
        "synthfaces recipes invert only to their interval's top (conf/experiment/synthfaces_*)",
    )
    ap.add_argument("--t-edit", type=int, default=None, help="default: conf/plan/<--edit-interval> (its interval)")
    ap.add_argument("--t-boost", type=int, default=None)
    ap.add_argument("--edit-interval", default=None, help="conf/plan name (default: synthfaces / fixed)")
    ap.add_argument(
        "--hfunction",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a trained h-function (our hfunction.pt or an official .pth); NAME = attribute config name "
        "(e.g. synthfaces_smiling or smiling), with a :global suffix for the global variant",
    )
    ap.add_argument("--train", action="store_true", help="train missing h-functions through asyrp.tasks.train")
    ap.add_argument("--train-override", action="append", default=[], help="extra Hydra override for --train")
    ap.add_argument("--retrain", action="store_true", help="train even if a cached hfunction.pt exists")
    ap.add_argument(
        "--oracle",
        default="auto",
        help="auto (synthfaces oracle if built and the arch is synthfaces), none, or a folder with oracle.safetensors",
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small run (a few minutes on a CPU)")
    size.add_argument("--smoke", action="store_true", help="tiny run (seconds; for tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default outputs/experiments/{name})")
    ap.set_defaults(experiment=name)
    return ap


def run_size(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def sizes(args: argparse.Namespace) -> dict[str, int]:
    """The run size's numbers, each replaced by its option when given."""
    size = dict(SIZES[run_size(args)])
    for key in size:
        if getattr(args, key, None):
            size[key] = getattr(args, key)
    return size


def rel(p: Any) -> str:
    """A path relative to the checkout when it is inside it (for tables and notes)."""
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)
