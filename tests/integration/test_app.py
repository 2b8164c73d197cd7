"""The Gradio editor, driven through gradio_client on a free localhost port (no browser)."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from asyrp.app import build_app  # noqa: E402
from asyrp.config import compose  # noqa: E402
from asyrp.hfunctions import FORMAT as HFUNCTION_FORMAT  # noqa: E402
from asyrp.hfunctions import build_hfunction  # noqa: E402
from asyrp.synthfaces.render import write_example_faces  # noqa: E402
from asyrp.tasks.serve import example_images, make_editor  # noqa: E402

STEPS = [
    "plan.n_inv=6",
    "plan.n_gen=6",
    "plan.t0=400",
    "plan.t_edit=200",
    "plan.t_boost=0",
]  # short walks: the test takes seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hfunction(path: Path, backbone, seed: int, name: str) -> Path:
    """An untrained h-function for the synthfaces DDPM (PyTorch's default init, so it moves h) in our file format."""
    cfg = {"kind": "delta_block", "layout": "ddpm", "num_groups": 8, "seed": seed}
    hf = build_hfunction(cfg, backbone)
    torch.save(
        {
            "format": HFUNCTION_FORMAT,
            "state_dict": hf.state_dict(),
            "hfunction": cfg,
            "arch": {"name": "synthfaces"},
            "h_shape": list(backbone.h_shape),
            "emb_dim": int(backbone.emb_dim),
            "attribute": {"name": name},
            "edit": {
                "t_edit": 300,
                "t_boost": 0,
                "n_inv": 40,
                "n_gen": 40,
                "t0": 400,
                "mode": "asyrp",
                "strength": 0.9,
            },
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from asyrp import build

    bb = build.backbone(compose("app", [], output_dir=d).arch)
    files = [_hfunction(d / "a.pt", bb, 0, "smiling"), _hfunction(d / "b.pt", bb, 1, "glasses")]
    cfg = compose("app", [f"checkpoint=[{files[0]},{files[1]}]", "strip=[0,1,2]"] + STEPS, output_dir=d / "run")
    editor = make_editor(cfg)
    examples = example_images(cfg, d / "examples", write_example_faces)
    app = build_app(editor, examples, list(cfg.strip), float(cfg.max_strength))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, show_error=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), editor, examples, d
    finally:
        app.close()


def _arr(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_slider_moves_regenerate_from_the_cached_inversion(served):
    client, editor, examples, _ = served
    img = handle_file(str(examples[0]))
    shown, rec, edit, strip, status = client.predict(img, 0.9, 0.0, api_name="/load")
    assert "inverted in" in status and "smiling x0.9" in status
    assert editor.stats["inversions"] == 1
    # input, reconstruction and edit side by side: 32 px upscaled 8x (nearest) for the page
    for p in (shown, rec, edit):
        assert _arr(p).shape == (256, 256, 3)
    inv = next(iter(editor._cache.values()))
    small = ((inv.x_rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(_arr(rec)[::8, ::8], small)  # the reconstruction shown is the cached one
    # slider moves: only generations, the edit changes with the strength, strength 0 is the reconstruction
    outs = {}
    for c in (0.0, 0.5, 1.5):
        outs[c], status = client.predict(img, c, 0.0, api_name="/edit")
        assert "inversion cached" in status
    assert editor.stats["inversions"] == 1
    assert np.abs(_arr(outs[0.0]) - _arr(rec)).max() <= 1
    d05, d15 = (np.abs(_arr(outs[c]) - _arr(rec)).mean() for c in (0.5, 1.5))
    assert 0 < d05 < d15  # a larger strength moves the image further from the reconstruction
    # composition: the second slider changes the edit too
    both, status = client.predict(img, 0.5, 1.0, api_name="/edit")
    assert "smiling x0.5 + glasses x1" in status and np.abs(_arr(both) - _arr(outs[0.5])).mean() > 0
    # the strip: three labelled cells (0x, 1x, 2x) of 128 px
    strip = _arr(client.predict(img, 0.5, 0.0, api_name="/strip"))
    assert strip.shape[1] >= 3 * 128 and strip.shape[0] >= 128
    assert editor.stats["inversions"] == 1


def test_a_bad_file_is_refused_and_the_app_keeps_serving(served):
    client, editor, examples, d = served
    bad = d / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="(?i)image"):  # Gradio's image component refuses it before any network pass
        client.predict(handle_file(str(bad)), 0.5, 0.0, api_name="/edit")
    n = editor.stats["generations"]
    edit, status = client.predict(handle_file(str(examples[1])), 0.5, 0.0, api_name="/edit")
    assert _arr(edit).shape == (256, 256, 3) and editor.stats["generations"] == n + 1
