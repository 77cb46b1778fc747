"""Evaluation and output helpers: trajectory I/O, ATE and RPE with evo, reconstruction metrics, PLY, timing,
progress, JSON reports (the scoring of a whole run: :mod:`online3r_ros.eval.scoring`)."""

from __future__ import annotations

from .ate import ALIGNMENTS, AteResult, EvaluationError, associate_and_align, compute_ate, evaluate_trajectory
from .consistency import DepthConsistency, depth_pair_consistency
from .ply import PlyError, read_ply, write_ply
from .poses import interpolate_poses, matrix_to_tum, poses_to_matrix, strip_scale, tum_to_matrix
from .progress import progress, progress_enabled
from .reconstruction import ReconstructionResult, reconstruction_metrics
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
from .rpe import RpeResult, compute_rpe, evaluate_rpe
from .timing import StageTimer, peak_memory
from .trajectory_files import read_trajectory_file
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
    "ReconstructionResult",
    "RpeResult",
    "StageTimer",
    "TrajectoryFileError",
    "build_metrics",
    "associate_and_align",
    "build_timing",
    "compute_ate",
    "compute_rpe",
    "depth_pair_consistency",
    "evaluate_rpe",
    "evaluate_trajectory",
    "interpolate_poses",
    "matrix_to_tum",
    "peak_memory",
    "poses_to_matrix",
    "progress",
    "progress_enabled",
    "read_ply",
    "read_trajectory_file",
    "read_tum",
    "reconstruction_metrics",
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
