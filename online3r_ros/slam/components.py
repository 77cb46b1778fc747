"""The pipeline's parts, built from the configuration in one place for the frontend and the backend.

:func:`resolve_pose_group` (SE(3) for metric sources under ``system.pose_group: auto``),
:func:`uses_calibration`, and the factories of the keyframe store, the frame tracker, the factor graph and
the global optimiser. :func:`apply_determinism` seeds torch (and forces deterministic CUDA kernels).
"""

from __future__ import annotations

import os

import torch

from ..sources.base import PointmapSource
from .config import SlamConfig
from .global_opt import GlobalOptConfig, GlobalOptimizer
from .graph import FactorGraph
from .keyframes import KeyframeStore
from .tracking import FrameTracker

__all__ = [
    "resolve_pose_group",
    "uses_calibration",
    "make_keyframe_store",
    "make_frame_tracker",
    "make_graph",
    "make_optimizer",
    "apply_determinism",
]


def resolve_pose_group(cfg: SlamConfig, source: PointmapSource) -> str:
    """``"se3"`` or ``"sim3"``: ``system.pose_group``, where ``auto`` is SE(3) for metric sources.
    Raises ``ValueError`` for SE(3) with a source without metric scale."""
    group = cfg.system.pose_group
    if group == "auto":
        return "se3" if source.metric else "sim3"
    if group == "se3" and not source.metric:
        raise ValueError(f"system.pose_group 'se3' needs a metric source; {source.name} is not metric")
    return group


def uses_calibration(cfg: SlamConfig, source: PointmapSource) -> bool:
    """Calibrated residuals: ``system.use_calib`` and a source that knows the intrinsics."""
    return bool(cfg.system.use_calib and source.calibrated)


def make_keyframe_store(cfg: SlamConfig, device: torch.device | str) -> KeyframeStore:
    """Keyframe store with the configured fusion rule and offloading (float64 poses)."""
    return KeyframeStore(
        device=device,
        keep_on_device=cfg.keyframes.offload_after,
        pose_dtype=torch.float64,
        fusion_mode=cfg.tracking.filtering_mode,
        score_kind=cfg.tracking.filtering_score,
    )


def make_frame_tracker(cfg: SlamConfig, source: PointmapSource) -> FrameTracker:
    return FrameTracker(source, cfg, resolve_pose_group(cfg, source))


def make_graph(cfg: SlamConfig) -> FactorGraph:
    lo = cfg.local_opt
    return FactorGraph(
        min_match_frac=lo.min_match_frac,
        Q_conf=lo.Q_conf,
        max_points_per_edge=lo.max_points_per_edge,
        seed=cfg.system.seed,
    )


def make_optimizer(cfg: SlamConfig, source: PointmapSource) -> GlobalOptimizer:
    return GlobalOptimizer(
        GlobalOptConfig.from_config(
            cfg, calibrated=uses_calibration(cfg, source), pose_model=resolve_pose_group(cfg, source)
        )
    )


def apply_determinism(seed: int, deterministic: bool, device: torch.device | str = "cpu") -> None:
    """Seed torch; with ``deterministic`` on CUDA also force deterministic kernels (a process-global setting).

    The pipeline's CPU kernels are deterministic already (no atomics), so on CPU nothing else is needed
    (and the costly import behind ``torch.use_deterministic_algorithms`` is avoided).
    """
    torch.manual_seed(seed)
    if deterministic and torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
