"""Dense-map quality against a ground-truth cloud: accuracy, completeness, Chamfer distance, F-score.

The ground-truth cloud is fused from the dataset's depth images at the ground-truth poses
(:func:`fuse_depth_frames`, :func:`dataset_cloud`). Both clouds are voxel-downsampled to the same voxel
(:data:`DEFAULT_VOXEL`) before comparing, so that neither density nor duplicates weigh in; the estimated map
is first moved into the ground truth's frame with the trajectory alignment (``s·R·p + t``, from
:func:`~online3r_ros.eval.ate.compute_ate`). Nearest neighbours: :class:`scipy.spatial.cKDTree`.

- accuracy: distance of each estimated point to the nearest ground-truth point (mean, median; metres);
- completeness: distance of each ground-truth point to the nearest estimated point (mean, median; metres);
- Chamfer: the mean of the two means;
- precision / recall: fraction of estimated / ground-truth points within ``threshold`` of the other cloud;
  F-score: their harmonic mean (:data:`DEFAULT_THRESHOLD`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .ate import DEFAULT_MAX_DIFF, EvaluationError, associate_and_align
from .plot import apply_alignment
from .poses import to_numpy
from .progress import progress
from .umeyama import umeyama_alignment

__all__ = [
    "DEFAULT_DEPTH_MAX",
    "DEFAULT_PIXEL_STRIDE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_VOXEL",
    "ReconstructionResult",
    "backproject_depth",
    "dataset_cloud",
    "fuse_depth_frames",
    "map_alignment",
    "reconstruction_metrics",
    "voxel_downsample",
]

DEFAULT_VOXEL = 0.02  # m, both clouds
DEFAULT_THRESHOLD = 0.05  # m, precision / recall / F-score
DEFAULT_PIXEL_STRIDE = 4  # every 4th pixel of every 4th row of each depth image
DEFAULT_DEPTH_MAX = 4.0  # m, as the RGB-D source's depth_trunc
DEFAULT_MAX_FRAMES = 100  # depth images fused at most (evenly spaced over the evaluated time span)


class ReconstructionError(ValueError):
    """The clouds cannot be compared (empty cloud, bad shapes, no usable depth frame)."""


@dataclass(frozen=True)
class ReconstructionResult:
    """Map quality in metres (see the module docstring); ``n_estimate``/``n_reference`` count the points after
    voxel downsampling; ``voxel`` and ``threshold`` are the settings used."""

    voxel: float
    threshold: float
    n_estimate: int
    n_reference: int
    accuracy_mean: float
    accuracy_median: float
    completeness_mean: float
    completeness_median: float
    chamfer: float
    precision: float
    recall: float
    fscore: float

    def as_dict(self) -> dict:
        return asdict(self)


def _points(points, name: str) -> np.ndarray:
    P = to_numpy(points)
    if P.ndim != 2 or P.shape[1] != 3:
        raise ReconstructionError(f"{name} points must be [N, 3], got {P.shape}")
    return P[np.all(np.isfinite(P), axis=1)]


def voxel_downsample(points, voxel: float) -> np.ndarray:
    """Centroid of the points of each occupied ``voxel``-sized cube: ``[N, 3]`` -> ``[M, 3]`` (M <= N), in
    the lexicographic order of the voxel indices (deterministic). ``voxel <= 0`` returns the finite points."""
    P = _points(points, "voxel_downsample")
    if voxel <= 0 or len(P) == 0:
        return P
    keys = np.floor(P / voxel).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sums = np.zeros((counts.size, 3))
    for k in range(3):
        sums[:, k] = np.bincount(inverse, weights=P[:, k], minlength=counts.size)
    return sums / counts[:, None]


def backproject_depth(
    depth: np.ndarray,
    K: np.ndarray,
    T_WC: np.ndarray,
    pixel_stride: int = DEFAULT_PIXEL_STRIDE,
    depth_max: float = DEFAULT_DEPTH_MAX,
) -> np.ndarray:
    """World points ``[M, 3]`` of the valid pixels (``0 < depth <= depth_max``) of ``depth [H, W]`` (metres)
    on a grid of every ``pixel_stride``-th pixel, through the pinhole ``K [3, 3]`` and camera-to-world
    ``T_WC [4, 4]`` (optical frame: z forward)."""
    D = np.asarray(depth, dtype=np.float64)[::pixel_stride, ::pixel_stride]
    v, u = np.mgrid[0 : depth.shape[0] : pixel_stride, 0 : depth.shape[1] : pixel_stride]
    ok = (D > 0) & (D <= depth_max) & np.isfinite(D)
    z = D[ok]
    x = (u[ok] - K[0, 2]) * z / K[0, 0]
    y = (v[ok] - K[1, 2]) * z / K[1, 1]
    pc = np.stack([x, y, z], axis=1)
    T = np.asarray(T_WC, dtype=np.float64)
    return pc @ T[:3, :3].T + T[:3, 3]


def fuse_depth_frames(
    frames: Iterable,
    voxel: float = DEFAULT_VOXEL,
    pixel_stride: int = DEFAULT_PIXEL_STRIDE,
    depth_max: float = DEFAULT_DEPTH_MAX,
) -> np.ndarray:
    """Ground-truth cloud ``[M, 3]`` (metres, world frame) fused from :class:`~online3r_ros.datasets.Frame`
    objects: each frame's depth back-projected at its ``pose_gt`` (:func:`backproject_depth`), downsampled
    per frame and once more at the end (memory stays bounded by the scene, not the frame count). Frames
    without depth, intrinsics or ground-truth pose are ignored; :class:`ReconstructionError` when none is
    usable."""
    clouds: list[np.ndarray] = []
    for f in frames:
        if f.depth is None or f.K is None or f.pose_gt is None:
            continue
        clouds.append(
            voxel_downsample(backproject_depth(f.depth, f.K, f.pose_gt, pixel_stride, depth_max), voxel)
        )
        if sum(len(c) for c in clouds) > 2_000_000:  # merge now and then: duplicates across frames collapse
            clouds = [voxel_downsample(np.concatenate(clouds), voxel)]
    if not clouds:
        raise ReconstructionError("no frame has depth, intrinsics and a ground-truth pose")
    return voxel_downsample(np.concatenate(clouds), voxel)


def _entry_times(reader) -> np.ndarray | None:
    """Timestamps ``[N]`` of every entry of ``reader`` without decoding images, where the layout knows them
    (7-Scenes: index / fps; TUM: the rgb.txt stamps); ``None`` otherwise."""
    n = len(reader._entries)
    if callable(getattr(reader, "timestamp_of", None)):
        return np.array([reader.timestamp_of(i) for i in range(n)], dtype=np.float64)
    first = reader._entries[0] if n else None
    if isinstance(first, tuple) and isinstance(first[0], (int, float)):
        return np.array([e[0] for e in reader._entries], dtype=np.float64)
    return None


def dataset_cloud(
    path: str | Path,
    timestamps: np.ndarray | None = None,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    voxel: float = DEFAULT_VOXEL,
    pixel_stride: int = DEFAULT_PIXEL_STRIDE,
    depth_max: float = DEFAULT_DEPTH_MAX,
    margin: float = 0.05,
) -> tuple[np.ndarray, int]:
    """Ground-truth cloud of a dataset folder (any layout of :func:`online3r_ros.datasets.open_dataset`
    with depth and ground truth) -> ``(points [M, 3], frames fused)``.

    Only frames within ``[min(timestamps) - margin, max(timestamps) + margin]`` (seconds; all frames when
    ``timestamps`` is None) are used, at most ``max_frames`` of them, evenly spaced: the cloud covers what
    the evaluated run saw. Raises :class:`~online3r_ros.datasets.DatasetError` for unreadable folders and
    :class:`ReconstructionError` when no frame has depth and a pose."""
    from ..datasets import open_dataset
    from ..datasets.views import ReaderView

    reader = open_dataset(path, bad_depth="drop")
    if not reader.has_depth:
        raise ReconstructionError(f"{path}: the dataset has no depth images")
    n = len(reader._entries)
    times = _entry_times(reader)
    idx = np.arange(n)
    if timestamps is not None and times is not None and len(timestamps):
        ts = np.asarray(timestamps, dtype=np.float64)
        idx = idx[(times >= ts.min() - margin) & (times <= ts.max() + margin)]
    if idx.size == 0:
        raise ReconstructionError(f"{path}: no frame lies in the evaluated time span")
    if idx.size > max_frames:  # evenly spaced, first and last included
        idx = idx[np.unique(np.round(np.linspace(0, idx.size - 1, max(1, int(max_frames)))).astype(np.int64))]
    view = ReaderView(reader, idx)
    frames = list(progress(view, total=len(view), desc="ground-truth cloud", unit="frame"))  # quiet off a TTY
    return fuse_depth_frames(frames, voxel, pixel_stride, depth_max), len(frames)


def map_alignment(
    est_timestamps,
    est_poses,
    ref_timestamps,
    ref_poses,
    alignment: str = "se3",
    max_diff: float = DEFAULT_MAX_DIFF,
    reach: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rotation [3, 3], translation [3], scale)`` moving the estimate's world onto the reference's, fitted
    on the associated *poses*, not only the camera centres: Umeyama on each camera centre and the three points
    ``reach`` metres along its axes. A short or straight trajectory leaves the rotation about its own line
    free for a positions-only fit (what the ATE uses), which swings a map metres away; the orientations fix
    it. ``alignment="sim3"`` takes the scale from the positions-only Sim(3) fit first. Raises
    :class:`~online3r_ros.eval.ate.EvaluationError` when the poses do not associate."""
    scale = 1.0
    if alignment == "sim3":
        scale = associate_and_align(
            est_timestamps, est_poses, ref_timestamps, ref_poses, "sim3", max_diff
        ).scale
    a = associate_and_align(est_timestamps, est_poses, ref_timestamps, ref_poses, "none", max_diff)
    E = np.asarray(a.estimate.poses_se3)
    Q = np.asarray(a.reference.poses_se3)
    axes = np.concatenate([np.zeros((1, 3)), reach * np.eye(3)])  # [4, 3]: centre and the three axis tips

    def anchors(T: np.ndarray, s: float) -> np.ndarray:  # [N*4, 3]
        return (s * T[:, None, :3, 3] + np.einsum("nij,kj->nki", T[:, :3, :3], axes)).reshape(-1, 3)

    try:
        R, t, _ = umeyama_alignment(anchors(E, scale), anchors(Q, 1.0), with_scale=False)
    except ValueError as exc:
        raise EvaluationError(f"map alignment failed: {exc}") from exc
    return R, t, float(scale)


def reconstruction_metrics(
    estimate,
    reference,
    *,
    voxel: float = DEFAULT_VOXEL,
    threshold: float = DEFAULT_THRESHOLD,
    rotation=None,
    translation=None,
    scale: float = 1.0,
) -> ReconstructionResult:
    """Compare an estimated map ``estimate [N, 3]`` with ``reference [M, 3]`` (metres; NumPy or torch).

    The estimate is first moved by ``scale·rotation·p + translation`` (the trajectory alignment; identity
    when ``rotation`` is None), then both are voxel-downsampled to ``voxel`` metres; precision, recall and
    F-score count distances below ``threshold`` metres. Raises :class:`ReconstructionError` for an empty
    cloud."""
    est = _points(estimate, "estimated")
    ref = _points(reference, "reference")
    if rotation is not None:
        t = np.zeros(3) if translation is None else translation
        est = apply_alignment(est, rotation, t, scale)
    est = voxel_downsample(est, voxel)
    ref = voxel_downsample(ref, voxel)
    if len(est) == 0 or len(ref) == 0:
        raise ReconstructionError(f"empty cloud (estimate: {len(est)} points, reference: {len(ref)})")
    d_acc, _ = cKDTree(ref).query(est, k=1)
    d_comp, _ = cKDTree(est).query(ref, k=1)
    precision = float(np.mean(d_acc < threshold))
    recall = float(np.mean(d_comp < threshold))
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return ReconstructionResult(
        voxel=float(voxel),
        threshold=float(threshold),
        n_estimate=int(len(est)),
        n_reference=int(len(ref)),
        accuracy_mean=float(d_acc.mean()),
        accuracy_median=float(np.median(d_acc)),
        completeness_mean=float(d_comp.mean()),
        completeness_median=float(np.median(d_comp)),
        chamfer=float(0.5 * (d_acc.mean() + d_comp.mean())),
        precision=precision,
        recall=recall,
        fscore=float(fscore),
    )
