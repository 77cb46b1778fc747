"""``metrics.json`` and ``timing.json`` writers (plain JSON, NaN/inf written as null, atomic).

metrics.json (schema ``online3r_ros.metrics/1``)::

    {"schema": "online3r_ros.metrics/1",
     "dataset": str, "source": str,                # what was run
     "n_frames": int, "n_keyframes": int,
     "ate": {"frames":    {"se3": ATE, "sim3": ATE},
             "keyframes": {"se3": ATE, "sim3": ATE}},   # present when ground truth exists
     "skipped": [{"source_index": int, "path": str, "reason": str}, ...],
     # optional, when the caller has them (online3r evaluate, bag evaluate):
     "rpe": {"frames": {"se3": {"per_metre": RPE, "per_second": RPE}, "sim3": {...}}},
     "frames_with_pose": int, "frames_without_pose": int, "frames_relocalised": int, "frames_dropped": int,
     "latency_ms": {"count", "p50", "p90", "p99", "max", "mean"},    # image -> pose, milliseconds
     "loop_edges": [[kf_i, kf_j], ...], "n_loop_closures": int,
     "reconstruction": {"voxel", "threshold", "n_estimate", "n_reference", "accuracy_mean",
                        "accuracy_median", "completeness_mean", "completeness_median", "chamfer" (metres),
                        "precision", "recall", "fscore"} or {"error": reason},
     ...extra keys given by the caller}
    ATE = {"alignment", "rmse", "mean", "median", "std", "min", "max" (metres), "n_matched", "n_estimate",
           "n_reference", "scale"} or {"error": reason}
    RPE = {"alignment", "delta", "delta_unit" ("m" or "s"), "n_pairs", "n_matched", "scale",
           "translation": {"rmse", "mean", "median", "std", "min", "max"} (metres),
           "rotation": {...} (degrees)} or {"error": reason}

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
from .rpe import evaluate_rpe
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


def latency_stats(latency_ms) -> dict:
    """``{"count", "p50", "p90", "p99", "max", "mean"}`` of latencies ``[N]`` in milliseconds (non-finite
    values left out); ``{}`` when there is none."""
    a = np.asarray(latency_ms, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {}
    p50, p90, p99 = np.percentile(a, (50, 90, 99))
    return {"count": int(a.size), "p50": p50, "p90": p90, "p99": p99, "max": a.max(), "mean": a.mean()}


def build_metrics(
    frames: tuple | None = None,
    keyframes: tuple | None = None,
    reference: tuple | None = None,
    skipped=(),
    max_diff: float = 0.01,
    *,
    rpe: bool = False,
    posed: int | None = None,
    lost: int | None = None,
    relocalised: int | None = None,
    drops: int | None = None,
    latency_ms=None,
    loop_edges=None,
    reconstruction=None,
    **extra,
) -> dict:
    """Metrics dict. ``frames``/``keyframes``/``reference`` are ``(timestamps, poses)`` pairs (any pose format
    of :func:`~online3r_ros.eval.poses.poses_to_matrix`); ATE is computed only when ``reference`` is given.

    The optional keywords add the keys of the module docstring: ``rpe`` (compute the RPE of ``frames``,
    needs ``reference``), the frame counts ``posed``/``lost``/``relocalised``/``drops``, ``latency_ms``
    (``[N]`` image -> pose latencies, ms), ``loop_edges`` (keyframe index pairs, or their number) and
    ``reconstruction`` (a :class:`~online3r_ros.eval.reconstruction.ReconstructionResult` or dict). They win
    over ``extra`` keys of the same name."""
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
        if rpe and frames is not None and len(frames[0]):
            out["rpe"] = {"frames": evaluate_rpe(frames[0], frames[1], reference[0], reference[1], max_diff)}
    for key, value in (
        ("frames_with_pose", posed),
        ("frames_without_pose", lost),
        ("frames_relocalised", relocalised),
        ("frames_dropped", drops),
    ):
        if value is not None:
            out[key] = int(value)
    if latency_ms is not None:
        out["latency_ms"] = latency_stats(latency_ms)
    if loop_edges is not None:
        if isinstance(loop_edges, (int, np.integer)):
            out["n_loop_closures"] = int(loop_edges)
        else:
            out["loop_edges"] = [[int(i), int(j)] for i, j in loop_edges]
            out["n_loop_closures"] = len(out["loop_edges"])
    if reconstruction is not None:
        out["reconstruction"] = reconstruction
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
