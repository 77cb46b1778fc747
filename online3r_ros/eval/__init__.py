"""Evaluation and output helpers: TUM trajectory I/O, ATE with evo, PLY, timing, progress, JSON reports."""

from __future__ import annotations

from .ate import ALIGNMENTS, AteResult, EvaluationError, compute_ate, evaluate_trajectory
from .consistency import DepthConsistency, depth_pair_consistency
from .ply import PlyError, read_ply, write_ply
from .poses import interpolate_poses, matrix_to_tum, poses_to_matrix, strip_scale, tum_to_matrix
from .progress import progress, progress_enabled
from .reports import (
    METRICS_SCHEMA,
    TIMING_SCHEMA,
    build_metrics,
    build_timing,
    to_jsonable,
    write_json,
    write_metrics_json,
    write_timing_json,
)
from .timing import StageTimer, peak_memory
from .trajectory_io import TrajectoryFileError, read_tum, write_tum
from .umeyama import umeyama_alignment

__all__ = [
    "ALIGNMENTS",
    "METRICS_SCHEMA",
    "TIMING_SCHEMA",
    "AteResult",
    "DepthConsistency",
    "EvaluationError",
    "PlyError",
    "StageTimer",
    "TrajectoryFileError",
    "build_metrics",
    "build_timing",
    "compute_ate",
    "depth_pair_consistency",
    "evaluate_trajectory",
    "interpolate_poses",
    "matrix_to_tum",
    "peak_memory",
    "poses_to_matrix",
    "progress",
    "progress_enabled",
    "read_ply",
    "read_tum",
    "strip_scale",
    "to_jsonable",
    "tum_to_matrix",
    "umeyama_alignment",
    "write_json",
    "write_metrics_json",
    "write_ply",
    "write_timing_json",
    "write_tum",
]
