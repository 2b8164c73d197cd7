"""Keeping credentials out of everything a run writes (logs, saved configs, hparams, checkpoints).

A *secret name* is an environment variable or config key matching ``*_TOKEN``, ``*_KEY``, ``*SECRET*``,
``*PASSWORD*`` / ``*PASSWD*`` (case-insensitive; also the bare ``token`` / ``key`` / ``apikey``). Their values are
*secret values*: the values of such environment variables (WANDB_API_KEY, HF_TOKEN, ...) and of such config keys.

- ``redact(obj)``: a copy of a config container with secret keys' values replaced by ``REDACTED`` and any secret
  value occurring inside another string replaced too (a ``${oc.env:WANDB_API_KEY}`` resolved into some other key).
- ``redact_text(text)``: every secret value in a string replaced.
- ``RedactingFilter``: a logging filter doing the same to every record (installed on the root handlers).
- ``scrub_files(paths)``: rewrite text files (Hydra's .hydra/*.yaml) with secret values replaced.
- ``guard_wandb_init()``: ``wandb.init`` sees a redacted ``sys.argv`` (W&B stores the command line).

Values shorter than ``MIN_LEN`` characters are not treated as secrets (``FOO_KEY=1`` must not blank every "1").
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REDACTED = "***REDACTED***"
MIN_LEN = 6

_NAME = re.compile(r"(?i)(^|[_\-.])(token|key|apikey)$|secret|passw(or)?d")

_extra_values: set[str] = set()


def is_secret_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.search(name))


def _usable(v: Any) -> bool:
    return isinstance(v, str) and len(v) >= MIN_LEN and v.strip() == v


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Secret values known now: from the environment, registered config values and ``extra``; longest first."""
    vals = {v for k, v in os.environ.items() if is_secret_name(k) and _usable(v)}
    vals |= {v for v in _extra_values if _usable(v)}
    vals |= {v for v in extra if _usable(v)}
    return sorted(vals, key=len, reverse=True)


def register(values: Iterable[Any]) -> None:
    """Remember secret values found in a config (so that logs and files written later are redacted too)."""
    _extra_values.update(str(v) for v in values if _usable(str(v)))


def collect_config_secrets(obj: Any, _key: str | None = None) -> list[str]:
    """Values of secret keys in a (plain or OmegaConf) container, and ``key=value`` override strings naming one."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(obj):
        obj = OmegaConf.to_container(obj, resolve=False)
    out: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if is_secret_name(str(k)) and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                out.append(str(v))
            out += collect_config_secrets(v, str(k))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += collect_config_secrets(v, _key)
    elif isinstance(obj, str) and "=" in obj:  # a Hydra override "logger.wandb.api_key=abc"
        k, v = obj.split("=", 1)
        if is_secret_name(k.lstrip("+~").split(".")[-1]):
            out.append(v)
    return out


def redact_text(text: str, extra: Iterable[str] = ()) -> str:
    for v in secret_values(extra):
        if v in text:
            text = text.replace(v, REDACTED)
    return text


def redact(obj: Any, extra: Iterable[str] = ()) -> Any:
    """A copy of ``obj`` (plain containers) with secret keys' values and secret values inside strings redacted."""
    values = secret_values(list(extra) + collect_config_secrets(obj))

    def walk(o: Any, key: str | None = None) -> Any:
        if (
            key is not None
            and is_secret_name(key)
            and o is not None
            and not isinstance(o, (Mapping, list, tuple, bool))
        ):
            return REDACTED
        if isinstance(o, Mapping):
            return {k: walk(v, str(k)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(walk(v) for v in o)
        if isinstance(o, str):
            for v in values:
                if v in o:
                    o = o.replace(v, REDACTED)
        return o

    return walk(obj)


class RedactingFilter(logging.Filter):
    """Replace secret values in log records (message and arguments) before any handler writes them."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = secret_values()
        if not values:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
            return True
        if any(v in msg for v in values):
            record.msg, record.args = redact_text(msg), None
        return True


def install_log_filter() -> None:
    """Attach the filter to the root logger's handlers (Hydra's file and console handlers) once."""
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


def scrub_files(paths: Iterable[str | os.PathLike], extra: Iterable[str] = ()) -> None:
    """Rewrite text files with secret values (and secret keys' values in YAML ``key: value`` lines) redacted."""
    from .io import atomic_write_text

    values = secret_values(extra)
    line = re.compile(r"^(\s*-?\s*)([\w.\-+~]+)(\s*[:=]\s*)(\S.*)$")
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        new_lines = []
        for ln in text.splitlines(keepends=True):
            m = line.match(ln.rstrip("\n"))
            if m and is_secret_name(m.group(2).lstrip("+~").split(".")[-1]) and m.group(4) not in ("null", "???", "''"):
                ln = f"{m.group(1)}{m.group(2)}{m.group(3)}{REDACTED}\n"
            new_lines.append(ln)
        new = "".join(new_lines)
        for v in values:
            new = new.replace(v, REDACTED)
        if new != text:
            atomic_write_text(new, p)


@contextmanager
def redacted_argv() -> Iterator[None]:
    """``sys.argv`` with every secret value replaced, restored on exit.

    W&B records the command line (``sys.argv[1:]``) in the run's metadata when ``wandb.init`` runs, so a key passed
    as an override (``+logger.wandb.api_key=...``) would reach the W&B run files and server. The real argv is put
    back at once: DDP relaunches the script with it.
    """
    saved = list(sys.argv)
    sys.argv[:] = [redact_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv[:] = saved


def guard_wandb_init() -> None:
    """Make ``wandb.init`` (used by Lightning's WandbLogger) run under ``redacted_argv`` (once per process)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - no W&B, nothing to guard
        return
    init = getattr(wandb, "init", None)
    if init is None or getattr(init, "_asyrp_redacts_argv", False):
        return

    @functools.wraps(init)
    def init_with_redacted_argv(*args: Any, **kwargs: Any) -> Any:
        with redacted_argv():
            return init(*args, **kwargs)

    init_with_redacted_argv._asyrp_redacts_argv = True  # type: ignore[attr-defined]
    wandb.init = init_with_redacted_argv
