"""Rebuild the shipped synthfaces models: ``python -m asyrp.synthfaces.build {ddpm,oracle,clip,all}``.

Weights go to assets/synthfaces/ (committed); resumable training state to outputs/synthfaces/ (not committed).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "synthfaces"
WORK = ROOT / "outputs" / "synthfaces"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("what", choices=["ddpm", "oracle", "clip", "all"])
    p.add_argument("--ddpm-steps", type=int, default=6000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop the DDPM early (then export)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.what in ("oracle", "all"):
        from .oracle import train_oracle
        train_oracle(ASSETS / "oracle", threads=args.threads)
    if args.what in ("clip", "all"):
        from .clip import train_clip
        train_clip(ASSETS / "clip", threads=args.threads)
    if args.what in ("ddpm", "all"):
        from .ddpm import train_ddpm
        train_ddpm(ASSETS / "ddpm", WORK, steps=args.ddpm_steps, max_minutes=args.max_minutes, threads=args.threads)


if __name__ == "__main__":
    main()
