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
    p.add_argument("--resume", action="store_true", help="continue the DDPM from <work>/ddpm_state.pt")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="warm-start the DDPM from an exported folder (e.g. assets/synthfaces/ddpm) when no state exists",
    )
    p.add_argument("--work", type=Path, default=WORK, help="resumable training state and loss log (not committed)")
    p.add_argument("--out", type=Path, default=ASSETS, help="where the exported models go (committed)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.what in ("oracle", "all"):
        from .oracle import train_oracle

        train_oracle(args.out / "oracle", threads=args.threads)
    if args.what in ("clip", "all"):
        from .clip import train_clip

        train_clip(args.out / "clip", threads=args.threads)
    if args.what in ("ddpm", "all"):
        from .ddpm import train_ddpm

        train_ddpm(
            args.out / "ddpm",
            args.work,
            steps=args.ddpm_steps,
            max_minutes=args.max_minutes,
            threads=args.threads,
            resume=args.resume,
            init_from=args.init_from,
        )


if __name__ == "__main__":
    main()
