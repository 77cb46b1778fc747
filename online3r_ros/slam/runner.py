"""Run a dataset through :class:`~online3r_ros.slam.system.SlamSystem` and write the standard outputs.

Library half of ``online3r run`` (the CLI only parses arguments); the replay tool and benchmarks use it too::

    cfg = load_config("my.yaml")
    result = run_dataset("../shared/data/7scenes_redkitchen_0000_0499", cfg, max_frames=100)
    paths = write_outputs(result, "out/")        # frames.tum keyframes.tum map.ply metrics.json timing.json
    print(summary_text(result, paths))

Nothing is written for frames that have no pose: they are listed (with the reason) in ``metrics.json`` /
``timing.json`` and in the summary, together with the frames the dataset reader skipped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..sources.base import PointmapSource, SourceError
from .config import SlamConfig
from .system import SlamState, SlamSystem

__all__ = [
    "InputError",
    "MissingComponentError",
    "RunResult",
    "build_source",
    "build_system",
    "run_dataset",
    "run_frames",
    "write_outputs",
    "summary_text",
]


class InputError(ValueError):
    """The dataset cannot be used: missing/unreadable folder, bad intrinsics, no usable frame."""


class MissingComponentError(RuntimeError):
    """A requested optional component (e.g. the MASt3R source) is not available in this installation."""


@dataclass
class RunResult:
    """Everything a run produced (the system holds the map and the trajectories).

    ``rejected``: ``(index, timestamp, reason)`` of frames the pipeline refused as malformed (source error);
    ``skipped``: ``(path, reason)`` of frames the dataset reader dropped; ``warnings``: per-frame reader
    warnings (``(index, text)``); ``stage_ms``: per-stage lists of milliseconds over the processed frames;
    ``wall_s``: wall time of the whole loop including dataset reading; ``process_s``: time inside
    ``SlamSystem.process``; ``gt``: ``(timestamps, T_WC [M,4,4])`` or ``None``; ``online``:
    ``(timestamp, state, T_WC [4, 4])`` of every posed frame as it was output (before later corrections).
    """

    system: SlamSystem
    dataset: str
    layout: str
    n_input: int = 0
    rejected: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    states: dict = field(default_factory=dict)
    stage_ms: dict = field(default_factory=dict)
    wall_s: float = 0.0
    process_s: float = 0.0
    gt: tuple | None = None
    n_relocalised: int = 0
    online: list = field(default_factory=list)

    @property
    def n_posed(self) -> int:
        return self.system.num_frames - len(self.system.unposed_frames())

    @property
    def n_unposed(self) -> int:
        return len(self.system.unposed_frames())


# ------------------------------------------------------------------------------------------------- building
def build_source(cfg: SlamConfig) -> PointmapSource:
    """The pointmap source named by ``cfg.source.kind`` on ``cfg.system.device``."""
    kind = cfg.source.kind
    device = cfg.system.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingComponentError(
            f"device {device!r} requested but CUDA is not available in this torch build"
        )
    if kind == "depth":
        from ..sources.rgbd import RGBDSource

        return RGBDSource.from_config(cfg, device=device)
    if kind == "mast3r":
        try:
            from ..sources.mast3r import MASt3RSource
        except ImportError as exc:
            raise MissingComponentError(
                f"the MASt3R source is not available in this installation ({exc}); use --source depth"
            ) from exc
        if not cfg.source.checkpoint:
            raise MissingComponentError("source.kind 'mast3r' needs source.checkpoint (--checkpoint FILE)")
        try:
            return MASt3RSource.from_config(cfg, device=device)
        except FileNotFoundError as exc:
            raise InputError(f"MASt3R checkpoint: {exc}") from exc
        except (KeyError, ValueError, RuntimeError, OSError) as exc:
            raise InputError(f"cannot load the MASt3R checkpoint {cfg.source.checkpoint}: {exc}") from exc
    raise MissingComponentError(f"unknown source kind {kind!r}")


def build_system(cfg: SlamConfig, source: PointmapSource | None = None) -> SlamSystem:
    """A :class:`SlamSystem` for ``cfg`` (building the source unless given)."""
    return SlamSystem(cfg, source if source is not None else build_source(cfg))


# -------------------------------------------------------------------------------------------------- running
def run_frames(system: SlamSystem, frames, total: int | None = None, progress: bool = False) -> RunResult:
    """Feed an iterable of dataset frames to ``system``; malformed frames are rejected and recorded.

    ``progress``: show a progress bar (DATA's quiet-when-not-a-terminal tqdm bar) for runs of > 1 frame.
    """
    from ..eval.progress import progress as progress_bar

    result = RunResult(system=system, dataset="", layout="")
    t0 = time.perf_counter()
    show = bool(progress) and (total is None or total > 1)
    bar = progress_bar(frames, total=total, desc="online3r", enabled=None if show else False, unit="frame")
    for frame in bar:
        result.n_input += 1
        for w in getattr(frame, "warnings", ()) or ():
            result.warnings.append((int(getattr(frame, "index", result.n_input - 1)), str(w)))
        tp = time.perf_counter()
        try:
            out = system.process(frame)
        except (SourceError, ValueError) as exc:
            result.rejected.append(
                (result.n_input - 1, float(getattr(frame, "timestamp", math.nan)), str(exc))
            )
            continue
        result.process_s += time.perf_counter() - tp
        result.states[out.state.value] = result.states.get(out.state.value, 0) + 1
        if out.state == SlamState.RELOC:
            result.n_relocalised += 1
        if out.has_pose:
            result.online.append((out.timestamp, out.state.value, out.T_WC_matrix()))
        for stage, ms in out.timings_ms.items():
            result.stage_ms.setdefault(stage, []).append(float(ms))
        if show and hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{out.state.value} kf={system.num_keyframes}", refresh=False)
    tp = time.perf_counter()
    system.flush()  # a mapper thread's last keyframes belong to the run
    result.process_s += time.perf_counter() - tp
    result.wall_s = time.perf_counter() - t0
    return result


def run_dataset(
    path: str | os.PathLike,
    cfg: SlamConfig,
    *,
    max_frames: int | None = None,
    intrinsics=None,
    progress: bool = False,
    system: SlamSystem | None = None,
    frames: str | None = None,
) -> RunResult:
    """Open ``path`` (any layout of :func:`online3r_ros.datasets.open_dataset`), run every frame, return the
    :class:`RunResult`. ``frames``: ``"a-b,c-d"`` feeds those frames in that order (re-timed,
    :class:`~online3r_ros.datasets.views.ReorderedSequence`). Raises :class:`InputError` for unusable
    datasets and :class:`MissingComponentError` when the configured source is unavailable."""
    from ..datasets import DatasetError, open_dataset
    from ..datasets.views import ReorderedSequence, parse_frame_ranges

    bad_depth = "skip" if cfg.source.kind == "depth" else "drop"
    try:
        if frames is None:
            reader = open_dataset(
                path,
                intrinsics=intrinsics,
                stride=cfg.dataset.subsample,
                max_frames=max_frames,
                bad_depth=bad_depth,
            )
        else:
            full = open_dataset(path, intrinsics=intrinsics, bad_depth=bad_depth)
            order = parse_frame_ranges(frames)
            if order and max(order) >= len(full._entries):
                raise DatasetError(f"--frames {frames}: the dataset has frames 0-{len(full._entries) - 1}")
            reader = ReorderedSequence(full, order, stride=cfg.dataset.subsample, max_frames=max_frames)
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    if cfg.source.kind == "depth" and not reader.has_depth:
        raise InputError(
            f"{path}: the depth source needs depth images, and this {reader.layout} dataset has none"
        )
    system = system if system is not None else build_system(cfg)
    try:
        result = run_frames(system, iter(reader), total=len(reader), progress=progress)
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    result.dataset = str(Path(path))
    result.layout = reader.layout
    result.skipped = [(s.path, s.reason) for s in reader.skipped]
    if result.n_input == 0:
        reasons = "; ".join(f"{p}: {r}" for p, r in result.skipped[:5])
        raise InputError(f"{path}: no usable frames ({len(result.skipped)} skipped: {reasons})")
    gt = reader.gt_trajectory()
    if gt is not None and len(gt[0]) > 0:
        result.gt = (np.asarray(gt[0], dtype=np.float64), np.asarray(gt[1], dtype=np.float64))
    return result


# -------------------------------------------------------------------------------------------------- outputs
def _stage_stats(stage_ms: dict) -> dict:
    out = {}
    for stage, values in sorted(stage_ms.items()):
        a = np.asarray(values, dtype=np.float64)
        out[stage] = {
            "count": int(a.size),
            "mean_ms": float(a.mean()),
            "median_ms": float(np.median(a)),
            "max_ms": float(a.max()),
            "total_ms": float(a.sum()),
        }
    return out


def timing_report(result: RunResult) -> dict:
    """Per-stage milliseconds, frames per second (processing only, and including dataset reading), memory."""
    from ..eval.reports import TIMING_SCHEMA
    from ..eval.timing import peak_memory

    n = sum(result.states.values())
    return {
        "schema": TIMING_SCHEMA,
        "n_frames": n,
        "fps": n / result.process_s if result.process_s > 0 else None,
        "fps_including_io": n / result.wall_s if result.wall_s > 0 else None,
        "process_seconds": result.process_s,
        "wall_seconds": result.wall_s,
        "stages": _stage_stats(result.stage_ms),
        "peak_memory": peak_memory(),
        "keyframe_store": {
            k: v for k, v in result.system.keyframes.memory_report().items() if k != "per_keyframe"
        },
        "device": str(result.system.device),
        "torch_threads": torch.get_num_threads(),
        **_tuning_times(result.system.tuning),
    }


def _tuning_times(tuning) -> dict:
    """``{"prompt_tuning": ...}``: time per prompt-tuning step (ms; in the mapper, off the tracking path
    with a mapper thread); ``{}`` without tuning."""
    if tuning is None:
        return {}
    ms = np.asarray([u["time_ms"] for u in tuning.stats.history], dtype=np.float64)
    stats = {"steps": int(ms.size), "dropped": tuning.stats.dropped, "failed": tuning.stats.failed}
    if ms.size:
        stats |= {"mean_ms": float(ms.mean()), "max_ms": float(ms.max()), "total_ms": float(ms.sum())}
    return {"prompt_tuning": stats}


def metrics_report(result: RunResult) -> dict:
    """Frame counts and, with ground truth, ATE RMSE (SE(3), Sim(3)) of frames and keyframes (evo)."""
    system = result.system
    traj = system.trajectory()
    kf = system.keyframe_trajectory()
    from ..eval.reports import METRICS_SCHEMA

    report: dict = {
        "schema": METRICS_SCHEMA,
        "dataset": result.dataset,
        "layout": result.layout,
        "n_frames": len(traj),
        "n_keyframes": len(kf),
        "keyframes_reused": system.frontend.n_reused,
        "frames_input": result.n_input,
        "frames_with_pose": len(traj),
        "frames_without_pose": result.n_unposed,
        "frames_rejected": len(result.rejected),
        "frames_skipped_by_reader": len(result.skipped),
        "frames_relocalised": result.n_relocalised,
        "states": dict(result.states),
        "pose_group": system.pose_group,
        "source": system.source.name,
        "unposed": [{"index": i, "timestamp": t, "reason": r} for i, t, r in system.unposed_frames()],
        "rejected": [{"index": i, "timestamp": t, "reason": r} for i, t, r in result.rejected],
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
    }
    report["loop_edges"] = [list(e) for e in system.backend.loop_edges]
    if system.tuning is not None:
        report["prompt_tuning"] = {**system.tuning.stats.as_dict(), "updates": system.tuning.stats.history}
    if system.frontend.place is not None:
        report["place_recognition"] = system.frontend.place.stats()
    if system.frontend.flow is not None:
        report["flow_prior"] = system.frontend.flow.stats()
    if result.gt is not None:
        from ..eval.ate import EvaluationError, evaluate_trajectory
        from ..eval.online import online_pose_errors

        gt_t, gt_T = result.gt
        report["ate"] = {
            "frames": evaluate_trajectory(traj.timestamps, traj.T_WC, gt_t, gt_T) if len(traj) else None,
            "keyframes": evaluate_trajectory(kf.timestamps, kf.T_WC, gt_t, gt_T) if len(kf) else None,
        }
        if len(result.online) >= 3:
            ts, states, poses = zip(*result.online, strict=True)
            try:
                report["online_poses"] = online_pose_errors(
                    np.array(ts), np.stack(poses), list(states), gt_t, gt_T
                )
            except EvaluationError as exc:
                report["online_poses"] = {"error": str(exc)}
    return report


def write_outputs(result: RunResult, out_dir: str | os.PathLike, conf_threshold: float | None = None) -> dict:
    """Write ``frames.tum``, ``keyframes.tum``, ``map.ply``, ``timing.json``, ``config.yaml`` and (with ground
    truth) ``metrics.json`` into ``out_dir``; returns ``{name: path}``. ``metrics.json`` is written without
    ground truth too (counts and the reasons for frames without pose), but has no ``ate`` key then."""
    from ..eval.ply import write_ply
    from ..eval.reports import write_json
    from ..eval.trajectory_io import write_tum
    from .config import documented_yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    system = result.system
    paths: dict[str, Path] = {}
    traj = system.trajectory()
    paths["frames"] = write_tum(out / "frames.tum", traj.timestamps, traj.T_WC)
    kf = system.keyframe_trajectory()
    paths["keyframes"] = write_tum(out / "keyframes.tum", kf.timestamps, kf.T_WC)
    dmap = system.dense_map(conf_threshold)
    write_ply(out / "map.ply", dmap.points, dmap.colors, dmap.confidence)
    paths["map"] = out / "map.ply"
    metrics = metrics_report(result)
    metrics["map_points"] = len(dmap)
    write_json(out / "metrics.json", metrics)
    paths["metrics"] = out / "metrics.json"
    write_json(out / "timing.json", timing_report(result))
    paths["timing"] = out / "timing.json"
    (out / "config.yaml").write_text(documented_yaml(system.config))
    paths["config"] = out / "config.yaml"
    if result.system.backend.prompts is not None:  # the tuned prompts, to warm-start the next run here
        paths["prompts"] = result.system.save_prompts(out / "prompts.pt")
    return paths


def summary_text(result: RunResult, paths: dict | None = None) -> str:
    """Human-readable summary: counts, ATE, speed, and what was skipped/unposed and why."""
    system = result.system
    t = timing_report(result)
    lines = [
        f"dataset {result.dataset} ({result.layout}): {result.n_input} frames read, "
        f"{len(result.skipped)} skipped by the reader, {len(result.rejected)} rejected",
        f"poses: {result.n_posed} frames, {result.n_unposed} without pose, {system.num_keyframes} keyframes, "
        f"{result.n_relocalised} relocalised; group {system.pose_group}; states {result.states}",
    ]
    if t["fps"]:
        lines.append(f"speed: {t['fps']:.2f} frames/s processing ({t['fps_including_io']:.2f} with reading)")
    if result.gt is not None and paths is not None and "metrics" in paths:
        m = json.loads(Path(paths["metrics"]).read_text())
        ate = m.get("ate") or {}
        for what in ("frames", "keyframes"):
            d = ate.get(what) or {}
            parts = []
            for al in ("se3", "sim3"):
                v = d.get(al) or {}
                parts.append(
                    f"{al} {v['rmse']:.4f} m" if "rmse" in v else f"{al} n/a ({v.get('error', '-')})"
                )
            lines.append(f"ATE RMSE {what}: " + ", ".join(parts))
    groups: dict[str, int] = {}
    for _, _, reason in system.unposed_frames():
        key = reason.split(";")[0].split("(")[0].strip()
        groups[key] = groups.get(key, 0) + 1
    for key, count in sorted(groups.items()):
        lines.append(f"  no pose ({count}): {key}")
    for p, r in result.skipped[:10]:
        lines.append(f"  skipped {p}: {r}")
    if len(result.skipped) > 10:
        lines.append(f"  ... {len(result.skipped) - 10} more skipped (see metrics.json)")
    for i, _, r in result.rejected[:10]:
        lines.append(f"  rejected frame {i}: {r}")
    warn_groups: dict[str, int] = {}
    for _, w in result.warnings:
        warn_groups[w.split(":")[0]] = warn_groups.get(w.split(":")[0], 0) + 1
    for w, c in sorted(warn_groups.items()):
        lines.append(f"  warning ({c} frames): {w}")
    if paths:
        lines.append(
            "wrote "
            + ", ".join(str(Path(p).name) for p in paths.values())
            + f" to {Path(next(iter(paths.values()))).parent}"
        )
    return "\n".join(lines)
