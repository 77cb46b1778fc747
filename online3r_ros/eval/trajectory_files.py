"""Read a trajectory file of any common format -> ``(timestamps [N] s, T [N, 4, 4])``.

Formats, recognised by the file's name and its first data line:

- TUM (``t tx ty tz qx qy qz qw``, 8 values a line): :func:`~online3r_ros.eval.trajectory_io.read_tum`;
- EuRoC ground truth (``.csv``: ``t_ns, px, py, pz, qw, qx, qy, qz, ...``): evo's
  ``read_euroc_csv_trajectory`` (nanoseconds -> seconds);
- KITTI poses (12 values a line: the first three rows of each matrix; no timestamps): evo's
  ``read_kitti_poses_file`` with the times from ``times`` or, when not given, from ``<stem>_times.txt`` or
  ``times.txt`` beside the file (one value in seconds a line, as KITTI ships them).

Every failure is a :class:`~online3r_ros.eval.trajectory_io.TrajectoryFileError` with the path and reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .trajectory_io import TrajectoryFileError, read_tum

__all__ = ["TRAJECTORY_FORMATS", "detect_trajectory_format", "read_trajectory_file"]

TRAJECTORY_FORMATS = ("tum", "euroc", "kitti")


def _first_data_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    return line
    except UnicodeDecodeError as exc:
        raise TrajectoryFileError(f"{path}: not a text trajectory file ({exc.reason})") from exc
    except OSError as exc:
        raise TrajectoryFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    raise TrajectoryFileError(f"{path}: holds no pose (empty or only comments)")


def detect_trajectory_format(path: str | Path) -> str:
    """``"tum"``, ``"euroc"`` or ``"kitti"`` for ``path`` (see the module docstring);
    :class:`TrajectoryFileError` when it is none of them."""
    path = Path(path)
    if not path.is_file():
        raise TrajectoryFileError(f"{path}: " + ("is a folder" if path.is_dir() else "file does not exist"))
    line = _first_data_line(path)
    n = len(line.replace(",", " ").split())
    if path.suffix.lower() == ".csv" and "," in line and n >= 8:
        return "euroc"
    if n == 8:
        return "tum"
    if n == 12:
        return "kitti"
    raise TrajectoryFileError(
        f"{path}: unknown trajectory format ({n} value{'s' * (n != 1)} in the first line; expected TUM "
        "'t tx ty tz qx qy qz qw' (8), KITTI poses (12) or an EuRoC .csv)"
    )


def _kitti_times(path: Path, times: str | Path | None, n: int) -> np.ndarray:
    candidates = [Path(times)] if times is not None else [path.with_name(f"{path.stem}_times.txt")]
    if times is None:
        candidates.append(path.with_name("times.txt"))
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise TrajectoryFileError(
            f"{path}: KITTI poses have no timestamps and no times file was found "
            f"(looked for {', '.join(c.name for c in candidates)})"
        )
    try:
        t = np.loadtxt(found, dtype=np.float64, ndmin=1, comments="#")
    except ValueError as exc:
        raise TrajectoryFileError(
            f"{found}: not a times file (one value in seconds per line): {exc}"
        ) from exc
    if t.ndim != 1 or t.size != n:
        raise TrajectoryFileError(f"{found}: {t.size} times for {n} KITTI poses in {path.name}")
    return t


def read_trajectory_file(
    path: str | Path, *, fmt: str | None = None, times: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``path`` -> ``(timestamps [N] float64 s, T [N, 4, 4] float64)``, sorted by time.

    ``fmt``: one of :data:`TRAJECTORY_FORMATS` (detected when None); ``times``: the KITTI times file.
    Raises :class:`TrajectoryFileError` for missing, unreadable or malformed files."""
    from evo.tools import file_interface

    path = Path(path)
    fmt = detect_trajectory_format(path) if fmt is None else fmt
    if fmt not in TRAJECTORY_FORMATS:
        raise TrajectoryFileError(f"{path}: unknown format {fmt!r} (one of {TRAJECTORY_FORMATS})")
    if fmt == "tum":
        t, T = read_tum(path)
    else:
        try:
            if fmt == "euroc":
                traj = file_interface.read_euroc_csv_trajectory(str(path))
                t = np.asarray(traj.timestamps, dtype=np.float64)
            else:
                traj = file_interface.read_kitti_poses_file(str(path))
                t = _kitti_times(path, times, traj.num_poses)
            T = np.asarray(traj.poses_se3, dtype=np.float64).reshape(-1, 4, 4)
        except file_interface.FileInterfaceException as exc:
            raise TrajectoryFileError(f"{path}: {exc}") from exc
        except (ValueError, IndexError, UnicodeDecodeError) as exc:  # ragged rows, bad numbers
            raise TrajectoryFileError(f"{path}: malformed {fmt} file ({exc})") from exc
    if len(t) == 0:
        raise TrajectoryFileError(f"{path}: holds no pose")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(T))):
        raise TrajectoryFileError(f"{path}: non-finite timestamps or poses")
    order = np.argsort(t, kind="stable")
    return t[order], T[order]
