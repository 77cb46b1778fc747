"""A live run over DDS (``online3r bag evaluate``) as the :class:`~online3r_ros.eval.scoring.RunOutputs` that
:func:`~online3r_ros.eval.scoring.score_run` scores. ROS-free: the caller passes what it recorded.

- frames: the tracker's per-frame camera poses (``online3r/camera_pose``, map frame, one per posed image,
  stamped with the image stamp): the live estimate a robot uses, and the pose topic ``online3r evaluate``
  picks by default in the output bag, so both commands score the same trajectory;
- keyframes: the mapper's last keyframe path;
- latency image -> pose: the first arrival of a pose minus the moment its image was published (ms; both on
  this process's monotonic clock);
- counts (see :func:`frame_counts`): posed (images with a pose), drops (images the tracker never worked on:
  replaced by a newer one while busy, or never received), lost (the rest: processed or rejected without a
  pose, or still unanswered at the end);
- loop closures: the mapper's loop-closure marker segments, each end matched to the keyframe at that
  position (:func:`loop_edges_from_segments`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .scoring import RunOutputs

__all__ = [
    "first_arrivals",
    "frame_counts",
    "latencies_ms",
    "growth_per_1000_frames",
    "live_run_outputs",
    "loop_edges_from_segments",
    "pose_arrays",
]


def pose_arrays(items: Iterable[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``[(stamp ns, T [4, 4])]`` -> ``(t [N] s, T [N, 4, 4])`` sorted by stamp; a repeated stamp keeps its
    last pose."""
    by_stamp: dict[int, np.ndarray] = {}
    for stamp, T in items:
        by_stamp[int(stamp)] = np.asarray(T, dtype=np.float64)
    if not by_stamp:
        return np.zeros(0), np.zeros((0, 4, 4))
    stamps = sorted(by_stamp)
    return np.array(stamps, dtype=np.int64) / 1e9, np.stack([by_stamp[s] for s in stamps])


def first_arrivals(received: Iterable[tuple[int, float]]) -> dict[int, float]:
    """``[(stamp ns, arrival s)]`` -> ``{stamp: earliest arrival}``."""
    out: dict[int, float] = {}
    for stamp, t in received:
        if stamp not in out or t < out[stamp]:
            out[int(stamp)] = float(t)
    return out


def latencies_ms(sent: Mapping[int, float], received: Iterable[tuple[int, float]]) -> np.ndarray:
    """Image -> pose latency (ms) of every sent stamp that got a pose: first arrival minus send time (both
    seconds on one clock), in stamp order. Poses of stamps never sent are ignored."""
    arrivals = first_arrivals(received)
    stamps = sorted(s for s in arrivals if s in sent)
    return np.array([1e3 * (arrivals[s] - sent[s]) for s in stamps], dtype=np.float64)


def frame_counts(n_sent: int, n_posed: int, tracker_status: Mapping | None) -> dict[str, int | None]:
    """``{"posed", "lost", "drops", "relocalised"}`` of ``n_sent`` published images of which ``n_posed`` got a
    pose, from the tracker's final status counters (``processed``, ``rejected``, ``relocalised``): drops =
    images it never worked on (``n_sent - processed - rejected``; ``None`` without a status), lost =
    ``n_sent - posed - drops``, relocalised = frames posed by a relocalisation."""
    st = tracker_status or {}
    drops = relocalised = None
    if "processed" in st:
        worked = int(st.get("processed") or 0) + int(st.get("rejected") or 0)
        drops = max(0, int(n_sent) - worked)
        relocalised = int(st.get("relocalised") or 0)
    lost = max(0, int(n_sent) - int(n_posed) - (drops or 0))
    return {"posed": int(n_posed), "lost": lost, "drops": drops, "relocalised": relocalised}


def growth_per_1000_frames(
    t_rss: np.ndarray, rss_mb: np.ndarray, t_frames: np.ndarray, warmup: float = 0.2
) -> float | None:
    """Memory growth in MB per 1,000 frames: the least-squares slope of RSS against the number of frames
    sent by each sample time, over the samples taken while frames were sent, after the first ``warmup``
    fraction of them (imports, first keyframes, allocator pools). ``t_rss``/``t_frames``: seconds on one
    clock. ``None`` with fewer than 3 such samples or a span under 50 frames."""
    t_frames = np.sort(np.asarray(t_frames, dtype=np.float64))
    n = np.searchsorted(t_frames, np.asarray(t_rss, dtype=np.float64), side="right")
    keep = (n >= max(1, warmup * len(t_frames))) & (n < len(t_frames))
    if keep.sum() < 3 or np.ptp(n[keep]) < 50:
        return None
    slope = np.polyfit(n[keep].astype(np.float64), np.asarray(rss_mb, dtype=np.float64)[keep], 1)[0]
    return float(1000.0 * slope)


def loop_edges_from_segments(
    segments: np.ndarray | None, keyframe_xyz: np.ndarray | None, tol: float = 0.01
) -> list[tuple[int, int]]:
    """Keyframe index pairs ``(i < j)`` of loop-closure segments ``[M, 2, 3]`` (their ends are keyframe
    positions, metres, the same map frame as ``keyframe_xyz [K, 3]``); an end farther than ``tol`` m from
    every keyframe drops its segment. Sorted, without repeats."""
    if segments is None or keyframe_xyz is None or len(keyframe_xyz) == 0:
        return []
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 3)
    kf = np.asarray(keyframe_xyz, dtype=np.float64).reshape(-1, 3)
    if len(seg) == 0:
        return []
    d = np.linalg.norm(seg[:, :, None, :] - kf[None, None, :, :], axis=-1)  # [M, 2, K]
    nearest = d.argmin(axis=-1)
    ok = (np.take_along_axis(d, nearest[..., None], axis=-1)[..., 0] <= tol).all(axis=1)
    pairs = {tuple(sorted((int(a), int(b)))) for (a, b), good in zip(nearest, ok, strict=True) if good}
    return sorted(p for p in pairs if p[0] != p[1])


def live_run_outputs(
    *,
    sent: Mapping[int, float],
    camera_poses: Sequence[tuple[int, np.ndarray, float]],
    keyframe_path: Sequence[tuple[int, np.ndarray]] = (),
    map_points: np.ndarray | None = None,
    loop_segments: np.ndarray | None = None,
    tracker_status: Mapping | None = None,
    memory: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    info: Mapping | None = None,
    pose_group: str = "se3",
    source: str = "",
) -> RunOutputs:
    """The :class:`RunOutputs` of a live run (see the module docstring).

    Args:
        sent: ``{image stamp ns: send time s}`` of every published image.
        camera_poses: ``[(stamp ns, T_map_camera [4, 4], arrival s)]`` as received (same clock as ``sent``).
        keyframe_path: the last keyframe path ``[(stamp ns, T)]``.
        map_points: ``[M, 3]`` the last full map (metres, map frame).
        loop_segments: ``[L, 2, 3]`` the loop-closure marker segments.
        tracker_status: the tracker's last status (JSON dict).
        memory: ``{node: (t [K] s, rss [K] MB)}``.
        info: extra keys for metrics.json; pose_group: ``"se3"`` (metric source) or ``"sim3"``.
    """
    frames = pose_arrays((s, T) for s, T, _ in camera_poses if s in sent)
    keyframes = pose_arrays(keyframe_path) if len(keyframe_path) else None
    counts = frame_counts(len(sent), len(frames[0]), tracker_status)
    kf_xyz = keyframes[1][:, :3, 3] if keyframes is not None else None
    return RunOutputs(
        frames=frames,
        keyframes=keyframes,
        map_points=None if map_points is None or len(map_points) == 0 else np.asarray(map_points),
        loop_edges=loop_edges_from_segments(loop_segments, kf_xyz),
        posed=counts["posed"],
        lost=counts["lost"],
        relocalised=counts["relocalised"],
        drops=counts["drops"],
        latency_ms=latencies_ms(sent, ((s, t) for s, _, t in camera_poses)),
        memory=dict(memory) if memory else None,
        pose_group=pose_group,
        info=dict(info or {}),
        source=source,
    )
