"""Latency of the interactive editor (``python app.py``) per slider move, measured through its HTTP API.

    python experiments/editor_latency.py [checkpoint=...] [any conf/app.yaml override]

Serves the same page as app.py on a free localhost port, picks the example images, loads each one (inversion +
reconstruction + edit + strip, once per image) and then moves the strength slider ``--moves`` times (each move is a
generation from the cached inversion, as in the browser), timing every call through gradio_client. Prints one JSON
line per phase and writes outputs/editor_latency.json. Wall times depend on the machine and its load: say which.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="conf/app.yaml overrides, e.g. checkpoint=... plan.n_gen=20")
    ap.add_argument("--images", type=int, default=3, help="example images to load")
    ap.add_argument("--moves", type=int, default=10, help="slider moves per image")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "editor_latency.json")
    args = ap.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    import torch
    from gradio_client import Client, handle_file

    from asyrp.app import build_app
    from asyrp.config import compose
    from asyrp.synthfaces.render import write_example_faces
    from asyrp.tasks.serve import example_images, make_editor

    cfg = compose("app", list(args.overrides), output_dir=ROOT / "outputs" / "editor_latency")
    editor = make_editor(cfg)
    examples = example_images(cfg, ROOT / "outputs" / "editor_latency" / "examples", write_example_faces)[: args.images]
    app = build_app(editor, examples, list(cfg.strip), float(cfg.max_strength))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    n_fn = len(editor.names)
    loads, moves = [], []
    try:
        for ex in examples:
            img = handle_file(str(ex))
            t = time.perf_counter()
            client.predict(img, *editor.defaults, api_name="/load")
            loads.append(time.perf_counter() - t)
            for k in range(args.moves):
                c = [(-1.0 + 3.0 * k / max(args.moves - 1, 1))] * n_fn  # sweep -1 .. 2 like a dragged slider
                t = time.perf_counter()
                client.predict(img, *c, api_name="/edit")
                moves.append(time.perf_counter() - t)
    finally:
        app.close()
    s = editor.plan
    res = {
        "arch": cfg.arch.get("name"),
        "hfunctions": editor.names,
        "n_inv": s.n_inv,
        "n_gen": s.n_gen,
        "t0": s.t0,
        "t_edit": s.t_edit,
        "t_boost": s.t_boost,
        "threads": torch.get_num_threads(),
        "images": len(examples),
        "inversions": editor.stats["inversions"],
        "load_s": {"median": statistics.median(loads), "max": max(loads)},
        "slider_move_s": {"median": statistics.median(moves), "min": min(moves), "max": max(moves), "n": len(moves)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
