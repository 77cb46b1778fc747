"""Evaluation and output helpers: trajectory I/O, ATE and RPE with evo, reconstruction metrics, PLY, timing,
progress, JSON reports (the scoring of a whole run: :mod:`online3r_ros.eval.scoring`).

The names below are imported from their submodules on first use (PEP 562), so a light submodule (e.g.
:mod:`~online3r_ros.eval.poses`, read by the bag tools) does not pull in torch with the package.
"""

from __future__ import annotations

import importlib
from typing import Any

# a function named like its submodule: bound now, so a later import of the submodule cannot shadow it
from .progress import progress as progress

#: exported name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "ALIGNMENTS": "ate",
    "AteResult": "ate",
    "EvaluationError": "ate",
    "associate_and_align": "ate",
    "compute_ate": "ate",
    "evaluate_trajectory": "ate",
    "DepthConsistency": "consistency",
    "depth_pair_consistency": "consistency",
    "PlyError": "ply",
    "read_ply": "ply",
    "write_ply": "ply",
    "interpolate_poses": "poses",
    "matrix_to_tum": "poses",
    "poses_to_matrix": "poses",
    "strip_scale": "poses",
    "tum_to_matrix": "poses",
    "progress_enabled": "progress",
    "ReconstructionResult": "reconstruction",
    "reconstruction_metrics": "reconstruction",
    "METRICS_SCHEMA": "reports",
    "TIMING_SCHEMA": "reports",
    "build_metrics": "reports",
    "build_timing": "reports",
    "to_jsonable": "reports",
    "write_json": "reports",
    "write_metrics_json": "reports",
    "write_timing_json": "reports",
    "RpeResult": "rpe",
    "compute_rpe": "rpe",
    "evaluate_rpe": "rpe",
    "StageTimer": "timing",
    "peak_memory": "timing",
    "read_trajectory_file": "trajectory_files",
    "TrajectoryFileError": "trajectory_io",
    "read_tum": "trajectory_io",
    "write_tum": "trajectory_io",
    "umeyama_alignment": "umeyama",
}

__all__ = sorted([*_EXPORTS, "progress"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
