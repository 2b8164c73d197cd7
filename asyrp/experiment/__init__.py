"""The experiment: what the scripts in experiments/ share (a backbone config, CLIP, oracle, images and
h-functions, the eps- / x-space baselines among them, all trained through asyrp.tasks.train; editing; scoring;
markdown tables and plots).

Every script takes the same options (``base_parser``): ``--arch`` / ``--clip`` (conf/arch, conf/clip names, any
backbone), ``--attribute`` (conf/attribute names), ``--images`` (a folder, or ``random`` for smooth random images),
``--hfunction NAME=PATH`` (trained h-functions) or ``--train`` (train them through ``asyrp.tasks.train`` with a
composed ``train`` config), ``--quick`` / ``--smoke`` (smaller runs), ``--out``. The experiment is a composed ``train``
config (``setup``: the options become Hydra overrides) built through asyrp.build.

Without ``--hfunction`` and ``--train`` an h-function is a seeded *random* one: its rows are labelled
``untrained`` and measure nothing about the paper (for the tiny test configs only).

Modules: ``options`` (command line, run sizes), ``shared`` (Experiment, setup), ``training`` (train_hfunction and the
per-step measurements), ``tables`` (markdown / CSV tables, plots, grids).
"""

from .options import ROOT, SIZES, base_parser
from .shared import Experiment, load_images, random_images, setup
from .tables import fmt, plt, read_table, save_grid, write_table
from .training import rescale_direction, step_norms, train_hfunction

__all__ = [
    "ROOT",
    "SIZES",
    "base_parser",
    "Experiment",
    "setup",
    "load_images",
    "random_images",
    "train_hfunction",
    "rescale_direction",
    "step_norms",
    "fmt",
    "write_table",
    "read_table",
    "plt",
    "save_grid",
]
