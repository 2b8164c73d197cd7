"""Progress of long work in any output: a bar on a terminal, a line every N seconds in a log file or a pipe.

A tqdm bar only makes sense on a terminal; ``make demo > log`` or ``make demo 2>&1 | cat`` would otherwise stay silent
(tqdm.auto hides itself) or fill the log with carriage returns. So:

- bar: when stderr is a terminal (where tqdm draws);
- lines: when stdout or stderr is not a terminal, one line every ``ASYRP_PROGRESS_EVERY`` seconds (default 15) with
  the step, the total, the rate, the ETA and the key metric, plus a last line when the work ends. They go through
  ``logging`` (Hydra's console handler and the run's .log file) when it is configured, else to stderr.

``ASYRP_PROGRESS=bar|lines|both|off`` overrides the choice (``auto`` by default).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("asyrp.progress")

DEFAULT_EVERY = 15.0

__all__ = ["modes", "LineTicker", "Progress", "progress", "format_seconds", "logging_to"]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def modes() -> tuple[bool, bool]:
    """(draw a bar, write lines) for this process's outputs (see the module docstring)."""
    choice = os.environ.get("ASYRP_PROGRESS", "auto").strip().lower()
    if choice in ("off", "none", "0"):
        return False, False
    if choice in ("bar", "lines", "both"):
        return choice in ("bar", "both"), choice in ("lines", "both")
    err, out = _isatty(sys.stderr), _isatty(sys.stdout)
    return err, not (err and out)


def every_seconds() -> float:
    try:
        return max(float(os.environ.get("ASYRP_PROGRESS_EVERY", DEFAULT_EVERY)), 0.0)
    except ValueError:
        return DEFAULT_EVERY


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _fmt_metrics(metrics: Mapping[str, Any] | None) -> str:
    parts = []
    for k, v in (metrics or {}).items():
        try:
            parts.append(f"{k}={float(v):.4g}")
        except (TypeError, ValueError):
            parts.append(f"{k}={v}")
    return (", " + ", ".join(parts)) if parts else ""


def _emit(text: str) -> None:
    if logging.getLogger().hasHandlers() and log.isEnabledFor(logging.INFO):
        log.info(text)
    else:
        print(text, file=sys.stderr, flush=True)


class LineTicker:
    """Writes '<desc>: 12/64 step (19%), 2.1 s/step, elapsed 25s, ETA 1m41s, loss=0.12' every ``every`` seconds
    (from a daemon thread too, so a long first step is not silent), and a last line at ``close``."""

    def __init__(self, total: float | None, desc: str, unit: str = "it", every: float | None = None):
        self.total = total if total is not None and math.isfinite(float(total)) and total > 0 else None
        self.desc, self.unit = desc, unit
        self.every = every_seconds() if every is None else float(every)
        self.t0 = self.last = time.monotonic()
        self.n = 0
        self.metrics: Mapping[str, Any] | None = None
        self.closed = False
        self._stop = threading.Event()
        if self.every > 0:
            threading.Thread(target=self._beat, name=f"progress-{desc}", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            if time.monotonic() - self.last >= self.every:
                self.last = time.monotonic()
                _emit(self.line())

    def line(self) -> str:
        el = time.monotonic() - self.t0
        rate = el / self.n if self.n else math.nan
        tot = f"/{int(self.total)}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {format_seconds(rate * (self.total - self.n))}" if self.total and self.n else ""
        speed = f", {rate:.2f} s/{self.unit}" if self.n else ""
        return (
            f"{self.desc}: {self.n}{tot} {self.unit}{pct}{speed}, elapsed {format_seconds(el)}{eta}"
            f"{_fmt_metrics(self.metrics)}"
        )

    def set(self, n: int, metrics: Mapping[str, Any] | None = None) -> None:
        self.n = int(n)
        if metrics is not None:
            self.metrics = metrics
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            _emit(self.line())

    def close(self) -> None:
        self._stop.set()
        if not self.closed:
            self.closed = True
            _emit(
                self.line().replace(", ETA 0s", "") + " (done)"
                if self.total and self.n >= self.total
                else self.line() + " (stopped)"
            )


class Progress:
    """A tqdm bar and/or a LineTicker over ``total`` units, as the outputs call for (``modes``)."""

    def __init__(
        self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, every: float | None = None
    ):
        bar, lines = modes() if enabled else (False, False)
        self.n = 0
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self.ticker = LineTicker(total, desc, unit, every) if lines else None

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            if metrics:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()})
        if self.ticker is not None:
            self.ticker.set(self.n, metrics or None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.ticker is not None:
            self.ticker.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(items: Iterable, desc: str, total: int | None = None, unit: str = "it", enabled: bool = True) -> Iterator:
    """Iterate ``items`` with a Progress (bar and/or lines)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled) as p:
        for it in items:
            yield it
            p.update(1)


@contextmanager
def logging_to(logger: logging.Logger, path: str | os.PathLike) -> Iterator[None]:
    """A script's log lines to ``path`` and the console while the block runs; the handlers go afterwards, so a caller
    in the same process (the tests) keeps no open log file."""
    handlers = [logging.FileHandler(Path(path)), logging.StreamHandler()]
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
