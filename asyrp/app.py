"""The interactive editor (``python app.py``, conf/app.yaml): a Gradio page over ``asyrp.editor.Editor``.

Pick or upload an image, move one strength slider per h-function (several compose), and see the input, its
reconstruction (the inversion, cached per image) and the edit side by side, plus a labelled strip of strengths.
A slider move re-runs only the generation from the cached x_T. Offline: no analytics, no share link, localhost.

``build_app(editor, examples)`` returns the ``gr.Blocks`` (tests launch it on a free port and drive it with
gradio_client through the named endpoints ``/load``, ``/edit`` and ``/strip``); the task that serves it is
``asyrp.tasks.serve.serve``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .ops import faults
from .ops.errors import AsyrpUserError

log = logging.getLogger(__name__)


def require_gradio():
    """gradio, imported offline (no analytics); missing: one line naming the extra to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    try:
        import gradio as gr
    except ImportError as err:  # one line, exit 6 (asyrp/ops/faults): which extra to install
        raise faults.MissingPackage("gradio") from err
    return gr


class EditorView:
    """What the page shows for an image and the slider values (plain functions: the endpoints call them)."""

    def __init__(self, editor, strip: Sequence[float]):
        self.editor, self.strip_scales = editor, [float(s) for s in strip]

    def _read(self, path: str | None):
        from .data.images import ImageProblem, read_image

        if not path:
            raise ValueError("no image: upload one or pick an example")
        try:
            x0, notes = read_image(path, self.editor.image_size)
        except ImageProblem as err:
            raise ValueError(err.reason) from None
        return self.editor.invert(x0), notes

    @staticmethod
    def _show(x: torch.Tensor):
        from .grid import MIN_CELL, to_pil, upscale_factor

        return to_pil(x, upscale_factor(min(x.shape[-2:]), 2 * MIN_CELL))

    def _strip(self, inv, coeffs: Sequence[float]):
        from .grid import strength_label, table_grid

        xs = self.editor.strip(inv, coeffs, self.strip_scales)
        labels = [strength_label(self.editor.names, [s * c for c in coeffs]) for s in self.strip_scales]
        return table_grid(
            [list(xs)], labels, title="strip: the edit at " + ", ".join(f"{s:g}x" for s in self.strip_scales)
        )

    def _edit(self, inv, coeffs: Sequence[float]):
        t = time.perf_counter()
        x = self.editor.generate(inv, [list(coeffs)])[0]
        dt = time.perf_counter() - t
        how = (
            f"inversion cached, computed once in {inv.seconds:.2f} s"
            if inv.hits
            else f"inverted in {inv.seconds:.2f} s"
        )
        return self._show(x), f"edit {self._label(coeffs)}: generated in {dt:.2f} s ({how})"

    def edit(self, path: str | None, *coeffs: float):
        """The slider endpoint: the edit at these strengths (generation only when the image is cached)."""
        inv, _ = self._read(path)
        return self._edit(inv, coeffs)

    def load(self, path: str | None, *coeffs: float):
        """A new image: invert (once), show input, reconstruction, edit and the strip."""
        inv, notes = self._read(path)
        edit, status = self._edit(inv, coeffs)
        note = f"; input: {', '.join(notes)}" if notes else ""
        return self._show(inv.x0), self._show(inv.x_rec), edit, self._strip(inv, coeffs), status + note

    def strip(self, path: str | None, *coeffs: float):
        inv, _ = self._read(path)
        return self._strip(inv, coeffs)

    def _label(self, coeffs: Sequence[float]) -> str:
        from .grid import strength_label

        return strength_label(self.editor.names, coeffs)


def _guard(fn):
    """One clear message in the page for a bad input (not a traceback)."""
    gr = require_gradio()

    def run(*args):
        try:
            return fn(*args)
        except (ValueError, AsyrpUserError) as err:
            raise gr.Error(str(err)) from None

    run.__name__ = fn.__name__
    return run


def build_app(
    editor,
    examples: Sequence[str | Path] = (),
    strip: Sequence[float] = (-1, -0.5, 0, 0.5, 1, 1.5),
    max_strength: float = 2.0,
):
    """The page: image in, one slider per h-function, input | reconstruction | edit, and the strip."""
    gr = require_gradio()
    view = EditorView(editor, strip)
    s = editor.plan
    with gr.Blocks(title="asyrp editor", analytics_enabled=False) as app:
        gr.Markdown(
            f"## asyrp: edit in h-space\nh-functions: {', '.join(editor.names)} · {s.n_inv} inversion / "
            f"{s.n_gen} generation steps to t0={s.t0}, edit while t >= {s.t_edit}, boost below {s.t_boost}. "
            "The inversion of an image is computed once; a slider move re-runs only the generation."
        )
        with gr.Row():
            image = gr.Image(
                value=str(examples[0]) if examples else None,
                type="filepath",
                label="image (upload or pick below)",
                height=256,
            )
            with gr.Column():
                sliders = [
                    gr.Slider(-max_strength, max_strength, value=d, step=0.05, label=f"{n} strength")
                    for n, d in zip(editor.names, editor.defaults)
                ]
                status = gr.Markdown("pick an image")
        with gr.Row():
            shown = gr.Image(type="pil", label="input", format="png")
            rec = gr.Image(type="pil", label="reconstruction (inversion, no edit)", format="png")
            out = gr.Image(type="pil", label="edit", format="png")
        strip_img = gr.Image(type="pil", label="strip of strengths", format="png")
        strip_btn = gr.Button("redraw the strip at these strengths")
        if examples:
            gr.Examples([[str(e)] for e in examples], inputs=[image], label="examples")
        image.change(_guard(view.load), [image, *sliders], [shown, rec, out, strip_img, status], api_name="load")
        for sl in sliders:
            sl.release(_guard(view.edit), [image, *sliders], [out, status], api_name="edit")
        strip_btn.click(_guard(view.strip), [image, *sliders], [strip_img], api_name="strip")
        if examples:  # the page opens with the first example edited
            app.load(_guard(view.load), [image, *sliders], [shown, rec, out, strip_img, status], api_name=False)
    app.view = view  # for callers that want the plain functions
    return app
