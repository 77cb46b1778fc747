"""Absolute trajectory error (ATE) with evo: association by time, SE(3)/Sim(3) Umeyama alignment, APE RMSE.

This reproduces ``evo_ape tum gt.txt est.txt -a`` (SE(3)) and ``-as`` (Sim(3)): translation part, metres.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np

from .poses import poses_to_matrix, to_numpy

ALIGNMENTS = ("none", "se3", "sim3")
DEFAULT_MAX_DIFF = 0.01  # s, evo_ape's default association window


class EvaluationError(ValueError):
    """Trajectories cannot be compared (too few associated poses, degenerate geometry, bad input)."""


@dataclass(frozen=True)
class AteResult:
    """ATE statistics in metres over the ``n_matched`` associated poses; ``scale`` is the Sim(3) scale
    applied to the estimate (1.0 for SE(3)/none); ``rotation``/``translation`` the alignment applied to
    the estimate."""

    alignment: str
    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    n_matched: int
    n_estimate: int
    n_reference: int
    scale: float
    rotation: tuple
    translation: tuple

    def as_dict(self) -> dict:
        return asdict(self)


def _to_evo(timestamps, poses, name: str):
    from evo.core.trajectory import PoseTrajectory3D

    t = np.asarray(to_numpy(timestamps), dtype=np.float64).ravel()
    T = poses_to_matrix(poses)
    if t.shape[0] != T.shape[0]:
        raise EvaluationError(f"{name}: {t.shape[0]} timestamps but {T.shape[0]} poses")
    finite = np.isfinite(t) & np.all(np.isfinite(T.reshape(T.shape[0], -1)), axis=1)
    t, T = t[finite], T[finite]
    # nearest rotations (SVD): poses read from text (7-Scenes' 7 digits) miss evo's SO(3) check by ~1e-7
    U, _, Vt = np.linalg.svd(T[:, :3, :3])
    U[:, :, 2] *= np.sign(np.linalg.det(U @ Vt))[:, None]
    T = T.copy()
    T[:, :3, :3] = U @ Vt
    order = np.argsort(t, kind="stable")
    return PoseTrajectory3D(poses_se3=list(T[order]), timestamps=t[order], meta={"name": name})


@dataclass(frozen=True)
class Associated:
    """Two evo trajectories of equal length, paired by timestamp, with the estimate aligned to the reference.

    ``reference``/``estimate``: :class:`evo.core.trajectory.PoseTrajectory3D` (``n_matched`` poses each, the
    estimate already moved by ``scale·rotation·p + translation``); ``n_estimate``/``n_reference``: pose
    counts before association."""

    reference: object
    estimate: object
    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    n_estimate: int
    n_reference: int

    @property
    def n_matched(self) -> int:
        return int(self.estimate.num_poses)


def associate_and_align(
    est_timestamps,
    est_poses,
    ref_timestamps,
    ref_poses,
    alignment: str = "se3",
    max_diff: float = DEFAULT_MAX_DIFF,
    min_matches: int = 3,
) -> Associated:
    """Pair estimate and reference poses by nearest timestamp within ``max_diff`` seconds (evo's
    ``associate_trajectories``) and align the estimate with ``alignment`` (``"se3"``, ``"sim3"`` or
    ``"none"``; evo's Umeyama). Inputs as for :func:`compute_ate`. Raises :class:`EvaluationError` with the
    reason when fewer than ``min_matches`` poses associate or the alignment is degenerate."""
    from evo.core import sync

    if alignment not in ALIGNMENTS:
        raise EvaluationError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    est = _to_evo(est_timestamps, est_poses, "estimate")
    ref = _to_evo(ref_timestamps, ref_poses, "reference")
    n_est, n_ref = est.num_poses, ref.num_poses
    if n_est == 0 or n_ref == 0:
        raise EvaluationError(f"empty trajectory (estimate: {n_est} poses, reference: {n_ref})")
    try:
        ref_a, est_a = sync.associate_trajectories(ref, est, max_diff=max_diff)
    except Exception as exc:  # evo raises SyncException when nothing matches
        raise EvaluationError(f"no poses associate within {max_diff} s: {exc}") from exc
    n = est_a.num_poses
    if n < min_matches:
        raise EvaluationError(f"only {n} poses associate within {max_diff} s (need {min_matches})")
    est_a = copy.deepcopy(est_a)
    R, t, s = np.eye(3), np.zeros(3), 1.0
    if alignment != "none":
        spread = np.linalg.svd(ref_a.positions_xyz - ref_a.positions_xyz.mean(0), compute_uv=False)
        if spread[0] < 1e-9:
            raise EvaluationError("reference positions are all identical; alignment is undefined")
        try:
            R, t, s = est_a.align(ref_a, correct_scale=(alignment == "sim3"))
        except Exception as exc:  # evo GeometryException on degenerate input
            raise EvaluationError(f"{alignment} alignment failed: {exc}") from exc
    return Associated(
        reference=ref_a,
        estimate=est_a,
        rotation=np.asarray(R, dtype=np.float64),
        translation=np.asarray(t, dtype=np.float64).ravel(),
        scale=float(s),
        n_estimate=int(n_est),
        n_reference=int(n_ref),
    )


def compute_ate(
    est_timestamps,
    est_poses,
    ref_timestamps,
    ref_poses,
    alignment: str = "se3",
    max_diff: float = DEFAULT_MAX_DIFF,
    min_matches: int = 3,
) -> AteResult:
    """ATE of an estimate against a reference (both camera-to-world, any pose format of
    :func:`~online3r_ros.eval.poses.poses_to_matrix`, NumPy or torch).

    ``alignment``: ``"se3"`` (rigid Umeyama), ``"sim3"`` (with scale) or ``"none"``. Poses are associated by
    nearest timestamp within ``max_diff`` seconds. Raises :class:`EvaluationError` with the reason when fewer
    than ``min_matches`` poses associate or the alignment is degenerate.
    """
    from evo.core import metrics

    a = associate_and_align(
        est_timestamps, est_poses, ref_timestamps, ref_poses, alignment, max_diff, min_matches
    )
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((a.reference, a.estimate))
    st = ape.get_all_statistics()
    return AteResult(
        alignment=alignment,
        rmse=float(st["rmse"]),
        mean=float(st["mean"]),
        median=float(st["median"]),
        std=float(st["std"]),
        min=float(st["min"]),
        max=float(st["max"]),
        n_matched=a.n_matched,
        n_estimate=a.n_estimate,
        n_reference=a.n_reference,
        scale=a.scale,
        rotation=tuple(map(tuple, a.rotation.tolist())),
        translation=tuple(a.translation.tolist()),
    )


def evaluate_trajectory(
    est_timestamps, est_poses, ref_timestamps, ref_poses, max_diff: float = DEFAULT_MAX_DIFF
) -> dict:
    """Both alignments as a JSON-ready dict: ``{"se3": {...}, "sim3": {...}}``; a failed alignment gives
    ``{"error": reason}`` instead of raising (for metrics.json)."""
    out: dict = {}
    for alignment in ("se3", "sim3"):
        try:
            res = compute_ate(est_timestamps, est_poses, ref_timestamps, ref_poses, alignment, max_diff)
            d = res.as_dict()
            d.pop("rotation")
            d.pop("translation")
            out[alignment] = d
        except EvaluationError as exc:
            out[alignment] = {"error": str(exc)}
    return out
