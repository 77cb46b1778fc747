"""Relative pose error (RPE) with evo: drift over segments of fixed length (metres) or duration (seconds).

Poses are first associated by timestamp (and, for ``alignment="sim3"``, rescaled) exactly as for the ATE
(:func:`~online3r_ros.eval.ate.associate_and_align`); an SE(3) alignment does not change an RPE, so none is
fitted for ``"se3"``. Then, as
``evo_rpe tum ref est --delta D --delta_unit m --pairs_from_reference``:

- ``delta_unit="m"``: consecutive segments whose *reference* path is ``delta`` metres long (evo's
  ``filter_pairs_by_path``), so an estimate with a wrong scale is measured over the same segments;
- ``delta_unit="s"`` (evo has no time delta): consecutive segments of ``delta`` seconds, each starting at
  the first pose at least ``delta`` s after the previous start; segments longer than ``delta·(1 + rel_tol)``
  (a gap in the estimate) are left out. evo computes the errors on those pairs.

For each segment ``i -> j``: ``E = (Q_i⁻¹ Q_j)⁻¹ (P_i⁻¹ P_j)`` (reference ``Q``, estimate ``P``); the
translation error is ``|t(E)|`` in metres, the rotation error the angle of ``R(E)`` in degrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .ate import DEFAULT_MAX_DIFF, EvaluationError, associate_and_align

__all__ = ["RPE_DELTAS", "RpeResult", "compute_rpe", "error_stats", "evaluate_rpe", "time_segment_ids"]

# (name in metrics.json, delta, unit): the two RPEs every evaluation reports
RPE_DELTAS = (("per_metre", 1.0, "m"), ("per_second", 1.0, "s"))
DELTA_UNITS = ("m", "s")


@dataclass(frozen=True)
class RpeResult:
    """RPE over ``n_pairs`` segments of ``delta`` ``delta_unit``: ``translation`` (metres) and ``rotation``
    (degrees) are :func:`error_stats` dicts; ``scale`` is the Sim(3) scale applied (1.0 otherwise)."""

    alignment: str
    delta: float
    delta_unit: str
    n_pairs: int
    n_matched: int
    scale: float
    translation: dict
    rotation: dict

    def as_dict(self) -> dict:
        return asdict(self)


def error_stats(errors: np.ndarray) -> dict:
    """``{"rmse", "mean", "median", "std", "min", "max"}`` of ``errors [M]`` (evo's statistics)."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    return {
        "rmse": float(np.sqrt(np.mean(e**2))),
        "mean": float(e.mean()),
        "median": float(np.median(e)),
        "std": float(e.std()),
        "min": float(e.min()),
        "max": float(e.max()),
    }


def time_segment_ids(timestamps: np.ndarray, delta: float, rel_tol: float = 0.1) -> np.ndarray:
    """``[M, 2]`` index pairs ``(i, j)`` of consecutive segments of ``delta`` seconds of sorted
    ``timestamps [N]``: ``j`` is the first pose at least ``delta`` s after ``i``, the next segment starts at
    ``j``; segments longer than ``delta·(1 + rel_tol)`` are dropped. One ``searchsorted`` per segment."""
    t = np.asarray(timestamps, dtype=np.float64).ravel()
    if delta <= 0:
        raise EvaluationError(f"RPE delta must be > 0 s, got {delta}")
    starts = [0]
    eps = 1e-9 * max(1.0, float(delta))
    while t.size:
        j = int(np.searchsorted(t, t[starts[-1]] + delta - eps, side="left"))
        if j >= t.size:
            break
        starts.append(j)
    ids = np.asarray(starts, dtype=np.int64)
    pairs = np.stack([ids[:-1], ids[1:]], axis=1)
    dt = t[pairs[:, 1]] - t[pairs[:, 0]] if len(pairs) else np.zeros(0)
    return pairs[dt <= delta * (1.0 + rel_tol)]


def _evo_rpe_errors(ref, est, relation, delta: float, unit: str, rel_tol: float) -> np.ndarray:
    from evo.core import metrics
    from evo.core.units import Unit

    if unit == "m":
        rpe = metrics.RPE(relation, delta, Unit.meters, rel_tol, all_pairs=False, pairs_from_reference=True)
        rpe.process_data((ref, est))
        return np.asarray(rpe.error, dtype=np.float64)
    pairs = time_segment_ids(ref.timestamps, delta, rel_tol)
    if len(pairs) == 0:
        raise EvaluationError(
            f"no segment of {delta} s (the trajectories span {np.ptp(ref.timestamps):.3g} s)"
        )
    ids = np.unique(pairs.ravel())  # consecutive segments share end/start: evo's delta of 1 frame on these
    rpe = metrics.RPE(relation, 1, Unit.frames, all_pairs=False)
    ref_s, est_s = _subset(ref, ids), _subset(est, ids)
    rpe.process_data((ref_s, est_s))
    keep = np.isin(ids[:-1], pairs[:, 0]) & np.isin(ids[1:], pairs[:, 1])
    return np.asarray(rpe.error, dtype=np.float64)[keep]


def _subset(traj, ids: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D

    poses = np.asarray(traj.poses_se3)[ids]
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=np.asarray(traj.timestamps)[ids])


def compute_rpe(
    est_timestamps,
    est_poses,
    ref_timestamps,
    ref_poses,
    delta: float = 1.0,
    delta_unit: str = "m",
    alignment: str = "se3",
    max_diff: float = DEFAULT_MAX_DIFF,
    rel_tol: float = 0.1,
) -> RpeResult:
    """RPE of an estimate against a reference (timestamps ``[N]`` s, camera-to-world poses in any format of
    :func:`~online3r_ros.eval.poses.poses_to_matrix`) over segments of ``delta`` metres (``delta_unit="m"``)
    or seconds (``"s"``); see the module docstring. Raises :class:`EvaluationError` when the poses do not
    associate or no segment of that length exists."""
    from evo import EvoException
    from evo.core import metrics

    if delta_unit not in DELTA_UNITS:
        raise EvaluationError(f"RPE delta unit must be one of {DELTA_UNITS}, got {delta_unit!r}")
    # a rigid alignment leaves every relative pose unchanged: skip it (and its degenerate cases, e.g. a line)
    fit = "none" if alignment == "se3" else alignment
    a = associate_and_align(est_timestamps, est_poses, ref_timestamps, ref_poses, fit, max_diff)
    errors = {}
    for name, relation in (
        ("translation", metrics.PoseRelation.translation_part),
        ("rotation", metrics.PoseRelation.rotation_angle_deg),
    ):
        try:
            errors[name] = _evo_rpe_errors(a.reference, a.estimate, relation, delta, delta_unit, rel_tol)
        except EvoException as exc:  # FilterException (no segment), MetricsException, LieAlgebraException
            raise EvaluationError(f"RPE over {delta} {delta_unit}: {exc}") from exc
        if errors[name].size == 0:
            raise EvaluationError(f"RPE over {delta} {delta_unit}: no segment of that length")
    return RpeResult(
        alignment=alignment,
        delta=float(delta),
        delta_unit=delta_unit,
        n_pairs=int(errors["translation"].size),
        n_matched=a.n_matched,
        scale=a.scale,
        translation=error_stats(errors["translation"]),
        rotation=error_stats(errors["rotation"]),
    )


def evaluate_rpe(
    est_timestamps,
    est_poses,
    ref_timestamps,
    ref_poses,
    max_diff: float = DEFAULT_MAX_DIFF,
    alignments: tuple[str, ...] = ("se3", "sim3"),
) -> dict:
    """The :data:`RPE_DELTAS` for each alignment as a JSON-ready dict:
    ``{"se3": {"per_metre": RPE, "per_second": RPE}, "sim3": {...}}`` with ``RPE`` =
    :meth:`RpeResult.as_dict` or ``{"error": reason}`` (never raises for bad trajectories)."""
    out: dict = {}
    for alignment in alignments:
        out[alignment] = {}
        for name, delta, unit in RPE_DELTAS:
            try:
                res = compute_rpe(
                    est_timestamps, est_poses, ref_timestamps, ref_poses, delta, unit, alignment, max_diff
                )
                out[alignment][name] = res.as_dict()
            except EvaluationError as exc:
                out[alignment][name] = {"error": str(exc)}
    return out
