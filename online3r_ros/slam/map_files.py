"""Map files: their format check (:func:`read_map`, for the mapper and a tracker that localises in a map),
and never silently replacing another session's map.

The mapper saves its map to one path (``map_path``). When the tracker starts a new session (a time jump, a
looped bag, a reset) the new map would overwrite the previous session's map at that path. Before a map of
session ``s`` is written where a map of another session lies, :func:`keep_other_session` renames the old
file to ``<stem>.session-<id><suffix>`` (``-2``, ``-3``, ... when that name is taken), so every session's last
map stays on disk and ``load_map`` can name either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import SlamConfig

__all__ = [
    "MAP_FORMAT",
    "MAP_VERSION",
    "check_map",
    "read_map",
    "map_file_session",
    "session_backup_path",
    "keep_other_session",
]

MAP_FORMAT = "online3r_ros.mapper"
MAP_VERSION = 1


def map_file_session(path: str | os.PathLike) -> int | None:
    """Session id stored in the map file ``path``; ``None`` when there is no readable map or no session.

    Reads the pickled header only (tensors are memory-mapped, not loaded)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable file is not a session's map
        return None
    session = state.get("session") if isinstance(state, dict) else None
    return None if session is None else int(session)


def session_backup_path(path: str | os.PathLike, session: int) -> Path:
    """``<stem>.session-<session><suffix>`` beside ``path``, numbered ``-2``, ``-3``, ... if taken."""
    path = Path(path)
    base = path.with_name(f"{path.stem}.session-{session}{path.suffix}")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{path.stem}.session-{session}-{n}{path.suffix}")
    return candidate


def keep_other_session(path: str | os.PathLike, session: int | None) -> Path | None:
    """Before writing ``session``'s map to ``path``: rename a map of another session found there to its
    :func:`session_backup_path`. Returns the backup's path, or ``None`` when nothing had to be kept."""
    old = map_file_session(path)
    if old is None or session is None or old == int(session):
        return None
    backup = session_backup_path(path, old)
    os.replace(path, backup)
    return backup


def check_map(state: dict, config: SlamConfig, origin: str = "map") -> dict:
    """``state`` if it is a mapper map of this version made with ``config``'s source kind, else
    ``ValueError`` naming ``origin``."""
    if not isinstance(state, dict) or state.get("format") != MAP_FORMAT:
        raise ValueError(f"{origin} is not an online3r_ros mapper map")
    if state.get("version") != MAP_VERSION:
        raise ValueError(f"{origin}: unsupported map version {state.get('version')}")
    from .config import config_from_dict

    kind = config_from_dict(state["config"]).source.kind
    if kind != config.source.kind:
        raise ValueError(
            f"{origin}: map made with source {kind!r}, this pipeline uses {config.source.kind!r}"
        )
    return state


def read_map(path: str | os.PathLike, config: SlamConfig) -> dict:
    """The checked state of the map file ``path`` (:meth:`MapperBackend.save`); ``FileNotFoundError`` /
    ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved map at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format problem, reported with the path
        raise ValueError(f"cannot read map {path}: {exc}") from exc
    return check_map(state, config, str(path))
