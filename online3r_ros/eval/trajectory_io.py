"""TUM trajectory files: ``t tx ty tz qx qy qz qw`` per line, camera-to-world of the camera optical frame.

Timestamps are written with 9 decimals (nanoseconds); integer timestamps (``np.int64``) are taken as
nanoseconds and written exactly (``sec.nnnnnnnnn``), which keeps ROS stamps lossless. Sim(3) poses are written
with their scale dropped (the rotation block is normalised), as MASt3R-SLAM does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .poses import matrix_to_tum, poses_to_matrix, to_numpy, tum_to_matrix


class TrajectoryFileError(ValueError):
    """A trajectory file or the arrays to write are malformed."""


def format_timestamps(timestamps) -> list[str]:
    """Strings with 9 decimals; integer arrays are nanoseconds and are formatted exactly."""
    arr = np.asarray(timestamps.detach().cpu() if hasattr(timestamps, "detach") else timestamps)
    if np.issubdtype(arr.dtype, np.integer):
        ns = arr.astype(np.int64)
        sign = np.where(ns < 0, "-", "")
        ns_abs = np.abs(ns)
        return [f"{s}{a // 1_000_000_000}.{a % 1_000_000_000:09d}" for s, a in zip(sign, ns_abs, strict=True)]
    arr = arr.astype(np.float64)
    return [f"{t:.9f}" for t in arr]


def write_tum(path: str | Path, timestamps, poses) -> Path:
    """Write a TUM trajectory atomically (temp file + rename).

    ``timestamps``: ``[N]`` seconds (float) or nanoseconds (int); strictly increasing and finite.
    ``poses``: ``[N, 4, 4]`` / ``[N, 3, 4]`` matrices (SE(3) or Sim(3)), or ``[N, 7]`` SE(3) / ``[N, 8]``
    Sim(3) vectors in lietorch layout; NumPy or torch. Raises :class:`TrajectoryFileError` on bad input
    (the file is then not written).
    """
    path = Path(path)
    ts_num = np.asarray(to_numpy(timestamps), dtype=np.float64).ravel()
    try:
        T = poses_to_matrix(poses)
    except ValueError as exc:
        raise TrajectoryFileError(f"{path}: {exc}") from exc
    if T.shape[0] != ts_num.shape[0]:
        raise TrajectoryFileError(f"{path}: {ts_num.shape[0]} timestamps but {T.shape[0]} poses")
    if not np.all(np.isfinite(ts_num)):
        raise TrajectoryFileError(
            f"{path}: non-finite timestamps at rows {np.flatnonzero(~np.isfinite(ts_num))[:10]}"
        )
    if ts_num.size > 1 and np.any(np.diff(ts_num) <= 0):
        bad = np.flatnonzero(np.diff(ts_num) <= 0)[:10] + 1
        raise TrajectoryFileError(f"{path}: timestamps are not strictly increasing at rows {bad}")
    if not np.all(np.isfinite(T)):
        bad = np.flatnonzero(~np.all(np.isfinite(T.reshape(T.shape[0], -1)), axis=1))[:10]
        raise TrajectoryFileError(f"{path}: non-finite poses at rows {bad}")
    tq = matrix_to_tum(T) if T.shape[0] else np.zeros((0, 7))
    ts_str = format_timestamps(timestamps)
    lines = [f"{ts} " + " ".join(f"{v:.9f}" for v in row) for ts, row in zip(ts_str, tq, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("# timestamp tx ty tz qx qy qz qw (camera-to-world, camera optical frame)\n")
        if lines:
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory -> ``(timestamps [N] float64 s, T_WC [N, 4, 4] float64)``.

    Accepts spaces, tabs or commas and ``#`` comments. Raises :class:`TrajectoryFileError` naming the line
    for malformed rows (strict: a trajectory is never partially read).
    """
    path = Path(path)
    if not path.exists():
        raise TrajectoryFileError(f"{path}: file does not exist")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise TrajectoryFileError(
                f"{path}:{lineno}: expected 8 values 't tx ty tz qx qy qz qw', got {len(parts)}"
            )
        try:
            rows.append([float(p) for p in parts])
        except ValueError as exc:
            raise TrajectoryFileError(f"{path}:{lineno}: {exc}") from exc
    if not rows:
        return np.zeros(0), np.zeros((0, 4, 4))
    arr = np.asarray(rows, dtype=np.float64)
    try:
        T = tum_to_matrix(arr[:, 1:])
    except ValueError as exc:
        raise TrajectoryFileError(f"{path}: {exc}") from exc
    if not np.all(np.isfinite(arr[:, 0])):
        raise TrajectoryFileError(f"{path}: non-finite timestamps")
    return arr[:, 0], T
