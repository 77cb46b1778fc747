"""Score one SLAM output against a ground truth: the library half of ``online3r evaluate`` (and of
``online3r bag evaluate``, which fills a :class:`RunOutputs` from its output bag).

    run = load_run_folder("out/")                       # or load_estimate("traj.tum"), or RunOutputs(...)
    ref = read_trajectory_file("groundtruth.txt")       # (t [M] s, T_WC [M, 4, 4])
    ev = score_run(run, ref, dataset="../shared/data/7scenes_redkitchen_0000_0499", fail_above={"ate": 0.05})
    write_evaluation("eval/", ev)                       # metrics.json, report.md and its PNGs
    ev.passed                                           # False when a threshold failed

:func:`score_run` computes everything (ATE, RPE, counts, latency, reconstruction, verdicts) and writes
nothing; :func:`write_evaluation` only writes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .ate import DEFAULT_MAX_DIFF, EvaluationError, associate_and_align
from .ply import PlyError, read_ply
from .reconstruction import (
    DEFAULT_DEPTH_MAX,
    DEFAULT_MAX_FRAMES,
    DEFAULT_PIXEL_STRIDE,
    DEFAULT_THRESHOLD,
    DEFAULT_VOXEL,
    ReconstructionError,
    dataset_cloud,
    map_alignment,
    reconstruction_metrics,
)
from .reports import build_metrics, write_json
from .trajectory_files import read_trajectory_file
from .trajectory_io import TrajectoryFileError, read_tum
from .verdicts import Verdict, verdicts

__all__ = [
    "Evaluation",
    "ReconstructionSettings",
    "RunOutputs",
    "RunFolderError",
    "load_estimate",
    "load_run_folder",
    "score_run",
    "write_evaluation",
]

# keys of a run's metrics.json that an evaluation recomputes (or that belong to the run's own ground truth)
_RECOMPUTED = {"schema", "ate", "rpe", "online_poses", "n_frames", "n_keyframes", "skipped", "loop_edges"}
_COUNTS = {
    "frames_with_pose": "posed",
    "frames_without_pose": "lost",
    "frames_relocalised": "relocalised",
    "frames_dropped": "drops",
}


class RunFolderError(ValueError):
    """An estimate cannot be loaded: missing folder/file, no trajectory, malformed files."""


@dataclass
class RunOutputs:
    """What an evaluation scores. ``frames``/``keyframes``: ``(timestamps [N] s, T_WC [N, 4, 4])``;
    ``map_points``: ``[M, 3]`` metres in the estimate's world; ``loop_edges``: keyframe index pairs (rows of
    ``keyframes``); ``loop_times``: seconds at which loops closed (derived from ``loop_edges`` when None);
    ``posed``/``lost``/``relocalised``/``drops``: frame counts (unknown: None); ``latency_ms``: ``[K]``
    image -> pose latencies; ``memory``: ``{node: (t [K] s, rss_mb [K])}``; ``pose_group``: ``"se3"``
    (metric source: SE(3) alignment is the headline) or ``"sim3"``; ``info``: keys carried into
    metrics.json (the run's dataset, states, ...); ``source``: what was loaded."""

    frames: tuple[np.ndarray, np.ndarray]
    keyframes: tuple[np.ndarray, np.ndarray] | None = None
    map_points: np.ndarray | None = None
    loop_edges: list | None = None
    loop_times: np.ndarray | None = None
    posed: int | None = None
    lost: int | None = None
    relocalised: int | None = None
    drops: int | None = None
    latency_ms: np.ndarray | None = None
    memory: dict | None = None
    pose_group: str = "se3"
    skipped: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class ReconstructionSettings:
    """How the map is compared (metres): voxel size of both clouds, the precision/recall threshold, and how
    the ground-truth cloud is fused (every ``pixel_stride``-th pixel up to ``depth_max``, at most
    ``max_frames`` depth images)."""

    voxel: float = DEFAULT_VOXEL
    threshold: float = DEFAULT_THRESHOLD
    pixel_stride: int = DEFAULT_PIXEL_STRIDE
    depth_max: float = DEFAULT_DEPTH_MAX
    max_frames: int = DEFAULT_MAX_FRAMES


@dataclass
class Evaluation:
    """Result of :func:`score_run`: ``metrics`` (the metrics.json dict), ``verdicts``, and the series the
    report plots: ``error`` = ``(t [N] s, translation error [N] m)`` of the associated poses after the
    headline alignment, ``aligned`` = ``(t [N], estimate positions [N, 3])`` in the reference frame,
    ``reference`` = ``(t, positions)`` of the ground truth over the estimate's time span, ``loop_times``
    (seconds) of the loop closures."""

    metrics: dict
    verdicts: list[Verdict]
    run: RunOutputs
    alignment: str
    reference: tuple[np.ndarray, np.ndarray]
    aligned: tuple[np.ndarray, np.ndarray] | None = None
    error: tuple[np.ndarray, np.ndarray] | None = None
    loop_times: np.ndarray | None = None

    @property
    def passed(self) -> bool:
        return not any(v.failed for v in self.verdicts)


# --------------------------------------------------------------------------------------------------- loading
def _read_tum_checked(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        return read_tum(path)
    except TrajectoryFileError as exc:
        raise RunFolderError(str(exc)) from exc


def load_run_folder(path: str | Path) -> RunOutputs:
    """An ``online3r run --out DIR`` folder: ``frames.tum`` (needed), ``keyframes.tum``, ``map.ply`` and
    ``metrics.json`` (counts, loop edges, pose group) when present. :class:`RunFolderError` otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: run folder does not exist")
    if not (path / "frames.tum").is_file():
        raise RunFolderError(f"{path}: no frames.tum (not an 'online3r run' output folder)")
    run = RunOutputs(frames=_read_tum_checked(path / "frames.tum"), source=str(path))
    if (path / "keyframes.tum").is_file():
        run.keyframes = _read_tum_checked(path / "keyframes.tum")
    if (path / "map.ply").is_file():
        try:
            run.map_points = read_ply(path / "map.ply").get("points")
        except (PlyError, OSError) as exc:
            raise RunFolderError(f"{path / 'map.ply'}: {exc}") from exc
    if (path / "metrics.json").is_file():
        try:
            m = json.loads((path / "metrics.json").read_text())
        except (ValueError, OSError) as exc:
            raise RunFolderError(f"{path / 'metrics.json'}: not readable JSON ({exc})") from exc
        for key, attr in _COUNTS.items():
            if isinstance(m.get(key), int):
                setattr(run, attr, m[key])
        run.loop_edges = [tuple(e) for e in m.get("loop_edges") or []]
        run.pose_group = m.get("pose_group") or "se3"
        run.skipped = list(m.get("skipped") or [])
        run.info = {k: v for k, v in m.items() if k not in _RECOMPUTED and k not in _COUNTS}
    return run


def load_estimate(path: str | Path, times: str | Path | None = None) -> RunOutputs:
    """A run folder (:func:`load_run_folder`) or a trajectory file of any format of
    :func:`~online3r_ros.eval.trajectory_files.read_trajectory_file`. :class:`RunFolderError` otherwise."""
    path = Path(path)
    if path.is_dir():
        return load_run_folder(path)
    if not path.exists():
        raise RunFolderError(f"{path}: does not exist")
    try:
        t, T = read_trajectory_file(path, times=times)
    except TrajectoryFileError as exc:
        raise RunFolderError(str(exc)) from exc
    return RunOutputs(frames=(t, T), posed=len(t), source=str(path))


# --------------------------------------------------------------------------------------------------- scoring
def _loop_times(run: RunOutputs) -> np.ndarray:
    if run.loop_times is not None:
        return np.asarray(run.loop_times, dtype=np.float64)
    if not run.loop_edges or run.keyframes is None:
        return np.zeros(0)
    kt = run.keyframes[0]
    e = np.asarray(run.loop_edges, dtype=np.int64).reshape(-1, 2)
    e = e[(e >= 0).all(1) & (e < len(kt)).all(1)]
    return kt[e].max(axis=1)


def _reconstruction(run, reference, alignment, dataset, settings: ReconstructionSettings, max_diff) -> dict:
    try:
        cloud, n_fused = dataset_cloud(
            dataset,
            run.frames[0],
            max_frames=settings.max_frames,
            voxel=settings.voxel,
            pixel_stride=settings.pixel_stride,
            depth_max=settings.depth_max,
        )
        R, t, s = map_alignment(*run.frames, *reference, alignment=alignment, max_diff=max_diff)
        res = reconstruction_metrics(
            run.map_points,
            cloud,
            voxel=settings.voxel,
            threshold=settings.threshold,
            rotation=R,
            translation=t,
            scale=s,
        )
    except (ReconstructionError, EvaluationError, ValueError) as exc:  # DatasetError is a ValueError
        return {"error": str(exc)}
    return {**res.as_dict(), **asdict(settings), "frames_fused": n_fused, "alignment": alignment}


def score_run(
    run: RunOutputs,
    reference: tuple[np.ndarray, np.ndarray],
    *,
    dataset: str | Path | None = None,
    fail_above: dict[str, float] | None = None,
    fail_below: dict[str, float] | None = None,
    max_diff: float = DEFAULT_MAX_DIFF,
    reconstruction: ReconstructionSettings | None = None,
    groundtruth_name: str = "",
) -> Evaluation:
    """Score ``run`` against ``reference = (t [M] s, T_WC [M, 4, 4])``: ATE (SE(3) and Sim(3), frames and
    keyframes), RPE (per metre and per second), the frame counts, latency and loop closures the run knows,
    and, when ``dataset`` (a folder with depth and ground truth) is given and the run has a map, the
    reconstruction metrics. Thresholds give the verdicts. Never raises for poor or incomparable results:
    those are ``{"error": reason}`` entries of the metrics."""
    settings = reconstruction or ReconstructionSettings()
    alignment = "sim3" if run.pose_group == "sim3" else "se3"
    recon = None
    if dataset is not None and run.map_points is not None and len(run.map_points):
        recon = _reconstruction(run, reference, alignment, dataset, settings, max_diff)
    elif dataset is not None:
        recon = {"error": f"{run.source or 'the estimate'} has no map points (no map.ply) to compare"}
    memory = None
    if run.memory:
        memory = {
            node: {"first": float(rss[0]), "last": float(rss[-1]), "max": float(np.max(rss))}
            for node, (_, rss) in sorted(run.memory.items())
            if len(rss)
        }
    extra = dict(run.info)
    extra.update(estimate=run.source, groundtruth=groundtruth_name, headline_alignment=alignment)
    if memory:
        extra["memory_rss_mb"] = memory
    metrics = build_metrics(
        run.frames,
        run.keyframes,
        reference,
        skipped=run.skipped,
        max_diff=max_diff,
        rpe=True,
        posed=run.posed,
        lost=run.lost,
        relocalised=run.relocalised,
        drops=run.drops,
        latency_ms=run.latency_ms,
        loop_edges=run.loop_edges,
        reconstruction=recon,
        **extra,
    )
    found = verdicts(metrics, fail_above, fail_below)
    metrics["thresholds"] = {"fail_above": dict(fail_above or {}), "fail_below": dict(fail_below or {})}
    metrics["verdicts"] = [{**asdict(v), "line": v.line()} for v in found]
    metrics["passed"] = not any(v.failed for v in found)
    ev = Evaluation(metrics, found, run, alignment, reference=_reference_span(reference, run.frames[0]))
    ev.loop_times = _loop_times(run)
    try:
        a = associate_and_align(*run.frames, *reference, alignment, max_diff)
        t = np.asarray(a.estimate.timestamps)
        est, ref = a.estimate.positions_xyz, a.reference.positions_xyz
        ev.aligned = (t, est)
        ev.error = (t, np.linalg.norm(est - ref, axis=1))
    except EvaluationError:
        pass  # the metrics say why
    return ev


def _reference_span(reference, t_est: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    t, T = reference
    if len(t_est):
        keep = (t >= t_est.min() - margin) & (t <= t_est.max() + margin)
        t, T = t[keep], T[keep]
    return np.asarray(t), np.asarray(T)[:, :3, 3]


def write_evaluation(out_dir: str | Path, evaluation: Evaluation, *, title: str = "") -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and the report's PNGs into ``out_dir``; returns
    ``{name: path}``."""
    from .report_md import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": write_json(out / "metrics.json", evaluation.metrics)}
    paths.update(write_report(out, evaluation, title=title))
    return paths
