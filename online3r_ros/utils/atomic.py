"""Atomic ``torch.save``: a crash or a full disk never leaves a half-written file at the target path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["save_atomic"]


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable; best effort (some filesystems refuse directory fds)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_atomic(obj: object, path: str | os.PathLike, *, sync_dir: bool = False) -> Path:
    """``torch.save(obj)`` to a temp file next to ``path``, fsync it, then ``os.replace`` it onto ``path``.

    Args:
        obj: anything ``torch.save`` accepts.
        path: target file; its parent folders are created.
        sync_dir: also fsync the parent folder so the rename itself survives a power loss.

    Returns:
        ``path`` as a :class:`~pathlib.Path`. On any error the temp file is removed and the error re-raised;
        an existing file at ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(path.parent)
    return path
