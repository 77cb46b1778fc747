"""Progress bar that stays quiet when output is not a terminal or when disabled."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None, stream=None) -> bool:
    """``enabled`` wins when given; otherwise on only if ``stream`` (stderr) is a TTY and the environment does
    not set ``ONLINE3R_NO_PROGRESS`` (any non-empty value)."""
    if enabled is not None:
        return bool(enabled)
    if os.environ.get("ONLINE3R_NO_PROGRESS"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    **kw,
):
    """Wrap ``iterable`` in a tqdm bar that prints only when :func:`progress_enabled` (otherwise tqdm's
    ``disable=True`` pass-through, so ``set_postfix``/``update`` calls stay valid).
    Extra keyword arguments go to tqdm."""
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, dynamic_ncols=True, disable=not progress_enabled(enabled), **kw
    )
