"""Train (or find cached) h-functions up front: python experiments/pretrain.py --train smiling smiling:global ...

Takes the common options (same run size / snapshot as the scripts that will use them) and NAME[:kind] arguments.
"""

from __future__ import annotations

from asyrp import experiment as C
from asyrp.synthfaces.oracle import find_oracle


def main(argv=None) -> int:
    ap = C.base_parser("pretrain", __doc__)
    ap.add_argument("names", nargs="+", help="attribute[:kind]")
    args = ap.parse_args(argv)
    args.train = True
    if args.out is None:
        args.out = C.ROOT / "outputs" / "experiments" / "_pretrain"
    w = C.setup(args, find_oracle)
    for item in args.names:
        name, _, kind = item.partition(":")
        f, prov = w.hfunction(name, kind or "delta_block")
        print(f"{item}: {prov}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
