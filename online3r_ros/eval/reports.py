"""``metrics.json`` and ``timing.json`` writers (plain JSON, NaN/inf written as null, atomic).

metrics.json (schema ``online3r_ros.metrics/1``)::

    {"schema": "online3r_ros.metrics/1",
     "dataset": str, "source": str,                # what was run
     "n_frames": int, "n_keyframes": int,
     "ate": {"frames":    {"se3": ATE, "sim3": ATE},
             "keyframes": {"se3": ATE, "sim3": ATE}},   # present when ground truth exists
     "skipped": [{"source_index": int, "path": str, "reason": str}, ...],
     ...extra keys given by the caller}
    ATE = {"alignment", "rmse", "mean", "median", "std", "min", "max" (metres), "n_matched", "n_estimate",
           "n_reference", "scale"} or {"error": reason}

timing.json (schema ``online3r_ros.timing/1``)::

    {"schema": "online3r_ros.timing/1",
     "n_frames": int, "wall_s": float, "fps": float,     # frames processed / wall seconds
     "stages": {name: {"total_ms", "mean_ms", "max_ms", "count"}},
     "peak_memory": {"cpu_max_rss_mb", "cuda_max_allocated_mb", "cuda_max_reserved_mb"},
     ...extra keys given by the caller (device, resolution, ...)}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from .ate import evaluate_trajectory
from .timing import StageTimer, peak_memory

METRICS_SCHEMA = "online3r_ros.metrics/1"
TIMING_SCHEMA = "online3r_ros.timing/1"


def to_jsonable(obj):
    """Recursively convert NumPy/torch scalars/arrays, dataclasses, paths, tuples; non-finite -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(to_jsonable(data), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def build_metrics(
    frames: tuple | None = None,
    keyframes: tuple | None = None,
    reference: tuple | None = None,
    skipped=(),
    max_diff: float = 0.01,
    **extra,
) -> dict:
    """Metrics dict. ``frames``/``keyframes``/``reference`` are ``(timestamps, poses)`` pairs (any pose format
    of :func:`~online3r_ros.eval.poses.poses_to_matrix`); ATE is computed only when ``reference`` is given."""
    out: dict = {"schema": METRICS_SCHEMA}
    out.update(extra)
    if frames is not None:
        out.setdefault("n_frames", len(frames[0]))
    if keyframes is not None:
        out.setdefault("n_keyframes", len(keyframes[0]))
    if reference is not None:
        ate = {}
        for name, traj in (("frames", frames), ("keyframes", keyframes)):
            if traj is not None and len(traj[0]):
                ate[name] = evaluate_trajectory(traj[0], traj[1], reference[0], reference[1], max_diff)
        out["ate"] = ate
    out["skipped"] = [
        {"source_index": s.source_index, "path": s.path, "reason": s.reason} if hasattr(s, "reason") else s
        for s in skipped
    ]
    return out


def write_metrics_json(path: str | Path, metrics: dict) -> Path:
    """Write a metrics dict (see the module docstring; :func:`build_metrics` makes one)."""
    data = dict(metrics)
    data.setdefault("schema", METRICS_SCHEMA)
    return write_json(path, data)


def build_timing(timer: StageTimer, n_frames: int, wall_s: float | None = None, **extra) -> dict:
    wall = timer.elapsed_s() if wall_s is None else float(wall_s)
    out = {
        "schema": TIMING_SCHEMA,
        "n_frames": int(n_frames),
        "wall_s": round(wall, 4),
        "fps": (n_frames / wall) if wall > 0 else None,
        "stages": timer.summary(),
        "peak_memory": peak_memory(),
    }
    out.update(extra)
    return out


def write_timing_json(
    path: str | Path, timer: StageTimer, n_frames: int, wall_s: float | None = None, **extra
) -> Path:
    """Write timing.json from a :class:`StageTimer` (see the module docstring for keys)."""
    return write_json(path, build_timing(timer, n_frames, wall_s, **extra))
