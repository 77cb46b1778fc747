"""Typed, validated configuration of the SLAM pipeline.

Every key of MASt3R-SLAM's ``config/base.yaml`` is here with the reference default (sections ``dataset``,
``matching``, ``tracking``, ``local_opt``, ``reloc``) that this pipeline uses, plus this project's own options
(``source``, ``system``, ``keyframes``, ``map``). Each field carries its documentation and its valid range in
the dataclass metadata; :func:`load_config` reads YAML, rejects unknown keys and out-of-range values with a
:class:`ConfigError` that names the key and the value, and :func:`documented_yaml` writes the commented
default file (``config/online3r.yaml``).

Source-dependent keys (``by_source`` in their metadata, ``auto`` in ``config/online3r.yaml``): where the
RGB-D source needs another value than the reference's (e.g. ``tracking.match_frac_thresh`` 0.5 instead of
0.333), the key's value is resolved ONCE, when the configuration is loaded: a key the file leaves out or sets
to ``auto`` takes the value for ``source.kind``; any other value is obeyed as written. The resolved values
are what the code reads and what a dumped ``config.yaml`` shows.

Usage::

    cfg = load_config("my.yaml")                       # defaults overridden by the file
    cfg = load_config(overrides={"tracking": {"max_iters": 20}})
    cfg.tracking.match_frac_thresh                      # typed attribute access (0.5: the RGB-D value)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

__all__ = [
    "ConfigError",
    "SlamConfig",
    "DatasetConfig",
    "MatchingConfig",
    "TrackingConfig",
    "LocalOptConfig",
    "ResidualConfig",
    "AUTO",
    "RelocConfig",
    "SourceConfig",
    "SystemConfig",
    "KeyframesConfig",
    "MapConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "validate_config",
    "documented_yaml",
]


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or is out of range (the message names key and value)."""


#: A YAML/dict value of a source-dependent key meaning "the value recommended for ``source.kind``".
AUTO = "auto"


def _opt(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple | None = None,
    by_source: dict[str, Any] | None = None,
) -> Any:
    """A dataclass field with documentation and a valid range kept in its metadata.

    ``by_source``: the value this key takes for some ``source.kind`` when a file leaves it out or writes
    ``auto`` (the default applies to the other kinds); resolved once, when the config is loaded.
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "by_source": by_source}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------------
# MASt3R-SLAM reference sections (defaults = config/base.yaml of rmurai0610/MASt3R-SLAM @ b0ae540)
# ----------------------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    """Input handling (reference ``dataset`` section)."""

    subsample: int = _opt(1, "use every N-th frame of the dataset (same as the CLI's --stride)", ge=1)


@dataclass
class MatchingConfig:
    """Iterative projective matching + descriptor refinement (reference ``matching`` section)."""

    max_iter: int = _opt(10, "Levenberg-Marquardt iterations of the projective matching", ge=1)
    lambda_init: float = _opt(1e-8, "initial LM damping of the matching", ge=0.0)
    convergence_thresh: float = _opt(1e-6, "matching stops when the pixel step is below this", gt=0.0)
    dist_thresh: float = _opt(
        1e-1, "3D occlusion/outlier check: max distance between matched points (pointmap units)", gt=0.0
    )
    radius: int = _opt(
        3,
        "descriptor refinement window radius (pixels; RGB-D: 2, its patch descriptors are local)",
        ge=0,
        by_source={"depth": 2},
    )
    dilation_max: int = _opt(
        5, "descriptor refinement: largest dilation of the window (RGB-D: 1)", ge=1, by_source={"depth": 1}
    )


@dataclass
class ResidualConfig:
    """Options shared by the tracking and the keyframe-graph residuals (match gates, noise model)."""

    C_conf: float = _opt(0.0, "minimum pointmap confidence of both points of a residual", ge=0.0)
    Q_conf: float = _opt(1.5, "minimum descriptor (match) confidence of a residual", ge=0.0)
    sigma_ray: float = _opt(0.003, "ray residual standard deviation (unit-ray units)", gt=0.0)
    sigma_dist: float = _opt(10.0, "distance residual standard deviation (pointmap units)", gt=0.0)
    sigma_pixel: float = _opt(1.0, "calibrated pixel residual standard deviation (px)", gt=0.0)
    sigma_depth: float = _opt(
        10.0,
        "calibrated log-depth residual standard deviation (RGB-D: 0.02, metric depth is informative)",
        gt=0.0,
        by_source={"depth": 0.02},
    )
    pixel_border: float = _opt(-10.0, "calibrated projections valid up to -border px outside the image")
    depth_eps: float = _opt(1e-6, "points with depth at or below this are invalid", gt=0.0)


@dataclass
class TrackingConfig(ResidualConfig):
    """Frame-to-keyframe tracking, keyframe selection and local fusion (reference ``tracking`` section)."""

    min_match_frac: float = _opt(
        0.05, "tracking is lost below this fraction of valid matches", ge=0.0, le=1.0
    )
    max_iters: int = _opt(50, "Gauss-Newton iterations of the pose optimisation", ge=1)
    rel_error: float = _opt(1e-3, "convergence: relative cost decrease (matching cost)", gt=0.0)
    delta_norm: float = _opt(1e-3, "convergence: norm of the pose update (matching cost)", gt=0.0)
    huber: float = _opt(1.345, "Huber threshold on whitened residuals", gt=0.0)
    match_frac_thresh: float = _opt(
        0.333,
        "new keyframe when min(match fraction, unique fraction) drops below this (RGB-D: 0.5, i.e. below "
        "50% overlap with the keyframe)",
        ge=0.0,
        le=1.0,
        by_source={"depth": 0.5},
    )
    filtering_mode: str = _opt(
        "weighted_pointmap",
        "keyframe pointmap fusion mode",
        choices=("first", "recent", "best_score", "indep_conf", "weighted_pointmap", "weighted_spherical"),
    )
    filtering_score: str = _opt("median", "score of best_score fusion", choices=("median", "mean"))
    rgbd_cost: str = _opt(
        "icp",
        "(online3r_ros) RGB-D tracking cost: icp (projective point-to-plane) or matching (reference matching "
        "+ calibrated cost)",
        choices=("icp", "matching"),
    )
    icp_dist: float = _opt(0.1, "(online3r_ros) RGB-D ICP: association gate (m)", gt=0.0)
    icp_sigma: float = _opt(
        0.1,
        "(online3r_ros) RGB-D ICP: point-to-plane residual scale (m) at confidence 1; weights grow with "
        "sqrt(C), so with source.depth_sigma_ref equal to it each residual is whitened by its depth noise",
        gt=0.0,
    )
    icp_photo_sigma: float = _opt(
        0.05,
        "(online3r_ros) RGB-D ICP: photometric residual scale, grey levels 0..1, of a photometric term on "
        "every frame (geometry alone lets the pose slide where it barely constrains a direction, and the "
        "map then breaks at the next revisit; 0: none, icp_degenerate_ratio then adds one only on frames "
        "whose geometry alone is degenerate, faster)",
        ge=0.0,
    )
    icp_degenerate_ratio: float = _opt(
        3e-3,
        "(online3r_ros) RGB-D ICP: a frame whose point-to-plane information leaves a pose direction below "
        "this fraction of the best constrained one (eigenvalues, rotation about the points' centroid in "
        "metres, normals from the smoothed depth) is degenerate (a flat wall, a corridor) and gets a "
        "photometric term too (icp_degenerate_photo_sigma); 0: never. Measured: 7-Scenes redkitchen frames "
        "5e-3 or more, flat walls 1-2 m away with Kinect-like depth noise 5e-4 or less. Unused if "
        "icp_photo_sigma > 0",
        ge=0.0,
        lt=1.0,
    )
    icp_degenerate_photo_sigma: float = _opt(
        0.05,
        "(online3r_ros) RGB-D ICP: photometric residual scale (grey levels 0..1) on degenerate frames "
        "(icp_degenerate_ratio)",
        gt=0.0,
    )
    flow_prior: bool = _opt(
        True,
        "(online3r_ros) RGB-D: check the motion model's guess against dense optical flow to the last posed "
        "frame and, where they disagree (flow_agree_px), start ICP from the flow's own pose (DIS flow "
        "lifted by both depth images, RANSAC, verified), so fast or jerky motion still converges (TUM fr3 "
        "cabinet, 7-22 cm between frames: ICP from the previous pose ends > 10 cm off in 19 of 57 pairs, "
        "from this prior in none); 7-Scenes 4.7 ms per frame on average on 2 CPU cores, ~20 ms where the "
        "flow's pose is computed; unverified, the motion model's guess stands (false: always)",
    )
    flow_max_side: int = _opt(
        320, "(online3r_ros) flow prior: long side of the grey images the flow is computed on (px)", ge=32
    )
    flow_points: int = _opt(
        2000, "(online3r_ros) flow prior: correspondences with depth that enter RANSAC", ge=100
    )
    flow_agree_px: float = _opt(
        3.0,
        "(online3r_ros) flow prior: the motion model's guess stands where the forward flow, started from the "
        "flow the guess implies (a repeating texture otherwise traps DIS one period off), lands within this "
        "median distance of where the guess puts the samples (px of the flow image, ~6 px of a 640x480 "
        "image): one fast flow instead of two careful ones and no RANSAC. 7-Scenes redkitchen 0-499: 458 of "
        "499 guesses kept, 5.3 ms per frame on average; 0: the flow's own pose on every frame, ~20 ms",
        ge=0.0,
    )
    flow_max_correction: float = _opt(
        0.25,
        "(online3r_ros) flow prior: the flow's pose replaces the motion model's guess only within this "
        "distance of it (m; 0: no limit). DIS flow can fail at large image motion and RANSAC then verify a "
        "wrong pose: a synthetic orbit at 12 deg and 14 cm per frame gave poses 0.45-0.78 m from a guess "
        "that was right, which ICP followed (0.66 m off; measured before the flow images were blurred and "
        "the check's flow started from the guess, which now keep two laps of that orbit within 1 cm "
        "without the limit); the TUM fr3 cabinet's corrections are at most 0.15 m",
        ge=0.0,
    )
    icp_rel_error: float = _opt(
        1e-4, "(online3r_ros) RGB-D ICP: convergence on relative cost decrease", gt=0.0
    )
    icp_delta_norm: float = _opt(
        1e-4, "(online3r_ros) RGB-D ICP: convergence on the pose update norm", gt=0.0
    )
    keyframe_max_dist: float = _opt(
        0.5,
        "(online3r_ros) RGB-D ICP: a new keyframe also when the frame is more than this far from its "
        "keyframe (m; 0: overlap alone decides, as MASt3R-SLAM). A camera circling an object keeps half the "
        "overlap for a metre, and ICP against a keyframe that far is biased: TUM fr3 cabinet 10.8 -> 2.9 cm "
        "ATE (0.3-0.5: 2.5-3.2 cm, 0.6: 4.2 cm; 7-Scenes unchanged)",
        ge=0.0,
    )
    model_keyframes: int = _opt(
        6,
        "(online3r_ros) RGB-D ICP: besides the current keyframe, up to N other keyframes' fused pointmaps "
        "(the previous keyframe, then the nearest) join the tracking model at their optimised poses "
        "(0: the current keyframe only)",
        ge=0,
    )
    model_max_dist: float = _opt(
        1.5, "(online3r_ros) RGB-D ICP model keyframes: maximum camera distance (m)", gt=0.0
    )
    model_max_angle: float = _opt(
        30.0,
        "(online3r_ros) RGB-D ICP model keyframes: maximum viewing-direction angle (deg; 45 lets keyframes "
        "seen from a side of an object the frame barely sees bias it: TUM fr3 cabinet 4.2 vs 2.4 cm ATE)",
        gt=0.0,
        le=180.0,
    )
    reuse_keyframes: int = _opt(
        2,
        "(online3r_ros) where a new keyframe is due, first track the frame against each of up to N existing "
        "keyframes nearest its pose (within model_max_dist and model_max_angle; metric sources) alone; the "
        "first that covers it (above match_frac_thresh) and places it within reuse_tolerance takes it "
        "instead, so a camera that stays in one place reuses its keyframes and the map stops growing (0: "
        "always a new keyframe, as MASt3R-SLAM)",
        ge=0,
    )
    reuse_tolerance: float = _opt(
        0.03,
        "(online3r_ros) a keyframe is reused only where the map is consistent: the frame tracked against it "
        "alone lands within this of its pose tracked against the current keyframe (m, and rad for the "
        "rotation). Where it does not (a loop the mapper has not closed yet) a new keyframe is made, as "
        "without reuse, and loop closure corrects the map first",
        gt=0.0,
    )


@dataclass
class LocalOptConfig(ResidualConfig):
    """Global (keyframe graph) optimisation (reference ``local_opt`` section)."""

    sigma_pixel: float = _opt(
        1.0,
        "calibrated pixel residual standard deviation (px; RGB-D: 3, its edge matches are rounded "
        "projections at a low working resolution: 7-Scenes ATE 3.9 cm with 3 px vs 4.3 cm with 1 px)",
        gt=0.0,
        by_source={"depth": 3.0},
    )
    pin: int = _opt(1, "number of first keyframes held fixed (gauge)", ge=1)
    min_match_frac: float = _opt(
        0.1, "non-consecutive edges need this valid-match fraction both ways", ge=0.0, le=1.0
    )
    max_iters: int = _opt(10, "Gauss-Newton iterations per optimisation", ge=1)
    window: int = _opt(
        0,
        "(online3r_ros) optimise only the newest N keyframes (and, for a late loop closure, the N up to "
        "its keyframe); older keyframes they share edges with are held fixed: cost and memory per "
        "keyframe stay bounded on long runs (0: every keyframe, as the reference)",
        ge=0,
    )
    delta_norm: float = _opt(1e-8, "stop when the update norm is below this", gt=0.0)
    max_points_per_edge: int = _opt(
        0,
        "(online3r_ros) keep at most this many matches per edge direction (seeded random subset; 0: all)",
        ge=0,
    )
    icp_sigma: float = _opt(
        0.0,
        "(online3r_ros) metric calibrated sources: point-to-plane ICP term between keyframe canonical "
        "pointmaps, re-associated by projection at each iteration, residual sigma in metres (0: off)",
        ge=0.0,
    )
    icp_stride: int = _opt(2, "(online3r_ros) pixel stride of the ICP term's sampled keyframe points", ge=1)
    icp_dist_thresh: float = _opt(
        0.1, "(online3r_ros) ICP association rejected beyond this 3D distance (m)", gt=0.0
    )
    icp_normal_step: float = _opt(
        0.05,
        "(online3r_ros) ICP normals: none across neighbour steps above this (m, plus 5% of depth)",
        gt=0.0,
    )


@dataclass
class RelocConfig:
    """Relocalisation after tracking loss (reference ``reloc`` section)."""

    min_match_frac: float = _opt(0.3, "a relocalisation candidate needs this match fraction", ge=0.0, le=1.0)


# ----------------------------------------------------------------------------------------------------
# This project's options
# ----------------------------------------------------------------------------------------------------


@dataclass
class RetrievalConfig:
    """Place recognition: loop closure, relocalisation from the whole map, the tracking guard."""

    enabled: bool = _opt(True, "ASMK keyframe retrieval: loop closure and relocalisation from the whole map")
    loop_closure: bool = _opt(
        True,
        "add verified loop edges to the pose graph (off: retrieval only relocalises and guards tracking)",
    )
    features: str = _opt(
        "auto",
        "local features: sift (OpenCV, any camera with depth) or mast3r (the retrieval head over the encoder "
        "tokens; needs its checkpoint); auto: mast3r when the MASt3R source has a retrieval checkpoint, "
        "else sift",
        choices=("auto", "sift", "mast3r"),
    )
    checkpoint: str = _opt(
        "",
        "MASt3R retrieval head (.pth); empty: <checkpoint stem>_retrieval_trainingfree.pth beside "
        "source.checkpoint",
    )
    codebook: str = _opt(
        "",
        "visual vocabulary (.npz, or MASt3R's .pkl); empty: the shipped SIFT vocabulary, or for mast3r the "
        "_codebook.pkl beside the retrieval checkpoint",
    )
    max_features: int = _opt(1000, "sift: local features per image", ge=16)
    sift_contrast: float = _opt(
        0.01,
        "sift: contrast threshold of the detector (OpenCV's default 0.04 finds too few keypoints on weakly "
        "textured scenes, e.g. TUM fr3 cabinet)",
        gt=0.0,
    )
    sift_max_side: int = _opt(
        480, "sift: the image is resized so its long side is at most this (px) before detection", ge=64
    )
    k: int = _opt(3, "loop closure: retrieved keyframes per new keyframe (reference retrieval.k)", ge=1)
    min_score: float = _opt(
        5e-3, "retrieved keyframes need this ASMK score (reference retrieval.min_thresh)", ge=0.0
    )
    exclude_recent: int = _opt(
        5, "loop closure: the new keyframe's N predecessors are not loop candidates (already connected)", ge=1
    )
    reloc_candidates: int = _opt(5, "relocalisation: try the N best-scoring keyframes of the whole map", ge=1)
    min_inliers: int = _opt(
        15, "prior-free pose (features with depth): RANSAC inliers needed to accept it", ge=4
    )
    inlier_dist: float = _opt(
        0.02, "prior-free pose: RANSAC inlier distance (m; plus 1% of the depth)", gt=0.0
    )
    guard_match_frac: float = _opt(
        0.6,
        "depth sources: a tracked frame whose match fraction is below this must explain the local feature "
        "matches (else it is tracked again from RANSAC's pose, or lost)",
        ge=0.0,
        le=1.0,
    )


@dataclass
class TuningConfig:
    """Online prompt tuning (Online3R): deep encoder prompts learned at every new keyframe."""

    enabled: bool = _opt(
        False,
        "tune the MASt3R encoder's prompts at every new keyframe (default on with the MASt3R source; the "
        "RGB-D source has no network: refused)",
        by_source={"mast3r": True},
    )
    num_tokens: int = _opt(32, "prompt tokens per encoder layer (Online3R: 32)", ge=1)
    lr: float = _opt(1e-4, "AdamW learning rate (Online3R: 1e-4)", gt=0.0)
    weight_decay: float = _opt(0.0, "AdamW weight decay (not stated by Online3R; Test3R: 0)", ge=0.0)
    iters_per_keyframe: int = _opt(
        1, "optimiser steps per new keyframe (the paper reads as 1 or 32: measure both)", ge=1
    )
    local_weight: float = _opt(0.5, "lambda: loss = lambda * local + (1 - lambda) * global", ge=0.0, le=1.0)
    conf_weighted: bool = _opt(False, "weight the local loss by the fused confidence (the paper: plain l1)")
    grad_checkpointing: bool = _opt(
        True, "recompute block activations in the backward pass (memory bound of a ViT-L step)"
    )
    max_backlog: int = _opt(
        1,
        "in a background tuner: keyframes waiting for a step; older ones are dropped (counted) when more "
        "arrive",
        ge=1,
    )


@dataclass
class SourceConfig:
    """Which pointmap source, and how big its pointmaps are."""

    kind: str = _opt(
        "depth", "pointmap source: depth (RGB-D) or mast3r (network)", choices=("depth", "mast3r")
    )
    checkpoint: str = _opt("", "MASt3R checkpoint file (source.kind: mast3r)")
    img_size: int = _opt(
        512,
        "MASt3R: network input size (512: long side 512, reference default; 224: 224x224)",
        choices=(224, 512),
    )
    precision: str = _opt(
        "auto",
        "MASt3R: weight precision of the encoder, decoder and descriptor MLP (auto: float16 on CUDA, "
        "float32 on CPU; the point/confidence heads stay float32)",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    cuda_graphs: bool = _opt(
        True, "MASt3R on CUDA: replay the per-frame tracking step as a CUDA graph (one launch per frame)"
    )
    cache_size: int = _opt(
        64, "MASt3R: encoder features of this many recent frames kept by the engine (LRU)", ge=1
    )
    width: int = _opt(0, "RGB-D: working width in pixels (0: 160 px wide, input aspect ratio)", ge=0)
    height: int = _opt(0, "RGB-D: working height in pixels (0: from width and the input aspect)", ge=0)
    points_per_frame: int = _opt(
        0,
        "matched points used per frame for tracking (0: every valid pixel; RGB-D: 3000)",
        ge=0,
        by_source={"depth": 3000},
    )
    rematch_iters: int = _opt(
        0, "extra re-matching passes of RGB-D tracking with the matching cost (ICP-style)", ge=0
    )
    depth_trunc: float = _opt(4.0, "RGB-D: depths beyond this (m) are invalid", gt=0.0)
    depth_min: float = _opt(0.1, "RGB-D: depths below this (m) are invalid", ge=0.0)
    depth_scale: float = _opt(
        1.0, "RGB-D: multiplier applied to the input depth (sensor depth-scale calibration; 1: none)", gt=0.0
    )
    depth_sigma_ref: float = _opt(
        0.1,
        "RGB-D: confidence C = 1 + (depth_sigma_ref / sigma_z(z))^2 from the depth noise model sigma_z (m); "
        "0.1 keeps C proportional to the inverse depth variance over a Kinect-type sensor's range",
        gt=0.0,
    )


@dataclass
class SystemConfig:
    """Pipeline behaviour."""

    pose_group: str = _opt(
        "auto",
        "tracking/optimisation group: sim3, se3, or auto (se3 for metric sources)",
        choices=("auto", "sim3", "se3"),
    )
    use_calib: bool = _opt(
        False,
        "calibrated residuals (pixels + log-depth) when intrinsics are known (RGB-D: true)",
        by_source={"depth": True},
    )
    device: str = _opt("cpu", "torch device: cpu, cuda or cuda:N")
    seed: int = _opt(0, "seed of torch/numpy random generators", ge=0)
    deterministic: bool = _opt(
        True, "CUDA: torch deterministic algorithms (identical output for identical input; CPU always is)"
    )
    mapper_thread: bool = _opt(
        False,
        "online3r run: the mapper (edges, global optimisation, tuning) in a thread beside the tracker, which "
        "then never waits for it (as the two ROS nodes); when poses are corrected depends on timing",
    )
    reloc_keyframes: int = _opt(
        3, "relocalisation: try this many most recent keyframes with the motion model (0: never)", ge=0
    )
    max_lost_frames: int = _opt(
        0, "after this many consecutive lost frames start a new map (0: never, keep trying reloc)", ge=0
    )
    proximity_edges: int = _opt(
        3,
        "besides the previous keyframe, connect a new keyframe to up to N earlier keyframes whose current "
        "pose is near (metric sources: a cheap geometric loop-candidate search; 0: off)",
        ge=0,
    )
    proximity_max_dist: float = _opt(1.0, "proximity edges: maximum camera distance (m)", gt=0.0)
    proximity_max_angle: float = _opt(
        30.0, "proximity edges: maximum viewing-direction angle (deg)", gt=0.0, le=180.0
    )
    motion_model: str = _opt(
        "constant_velocity",
        "initial guess of a frame's pose",
        choices=("constant_position", "constant_velocity"),
    )


@dataclass
class KeyframesConfig:
    """Keyframe store."""

    offload_after: int = _opt(
        0, "move bulk data of keyframes older than the last N to the CPU (0: keep all on the device)", ge=0
    )
    store_images: bool = _opt(True, "keep each keyframe's colour image in the map (else: white points)")


@dataclass
class MapConfig:
    """Dense map export."""

    conf_threshold: float = _opt(1.5, "keep points with average confidence above this", ge=0.0)
    max_points: int = _opt(2_000_000, "subsample the exported map to at most this many points (0: all)", ge=0)


_SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "matching": MatchingConfig,
    "tracking": TrackingConfig,
    "local_opt": LocalOptConfig,
    "reloc": RelocConfig,
    "retrieval": RetrievalConfig,
    "tuning": TuningConfig,
    "source": SourceConfig,
    "system": SystemConfig,
    "keyframes": KeyframesConfig,
    "map": MapConfig,
}


@dataclass
class SlamConfig:
    """The whole configuration: one attribute per section."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    local_opt: LocalOptConfig = field(default_factory=LocalOptConfig)
    reloc: RelocConfig = field(default_factory=RelocConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    keyframes: KeyframesConfig = field(default_factory=KeyframesConfig)
    map: MapConfig = field(default_factory=MapConfig)

    def replace(self, **sections: dict[str, Any]) -> SlamConfig:
        """A validated copy with some keys overridden: ``cfg.replace(tracking={"max_iters": 5})``."""
        data = config_to_dict(self)
        _deep_update(data, sections, prefix="")
        return config_from_dict(data)


_SECTION_DOCS = {
    "dataset": "Input handling (MASt3R-SLAM reference section).",
    "matching": "Iterative projective matching (MASt3R-SLAM reference section).",
    "tracking": "Frame-to-keyframe tracking, keyframe selection, fusion (MASt3R-SLAM reference section).",
    "local_opt": "Global keyframe-graph optimisation (MASt3R-SLAM reference section).",
    "reloc": "Relocalisation (MASt3R-SLAM reference section).",
    "retrieval": "Place recognition: loop closure, relocalisation, tracking guard (online3r_ros).",
    "tuning": "Online prompt tuning of the MASt3R encoder (Online3R).",
    "source": "Pointmap source and working resolution (online3r_ros).",
    "system": "Pipeline behaviour (online3r_ros).",
    "keyframes": "Keyframe store (online3r_ros).",
    "map": "Dense map export (online3r_ros).",
}


# ----------------------------------------------------------------------------------------------------
# Conversion and validation
# ----------------------------------------------------------------------------------------------------


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check/convert one YAML value to the field's declared type (ints accepted for floats, not bools)."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-8" as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r}: expected a finite number, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    return value


def _check_range(key: str, value: Any, meta: dict) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(choices)}")
    for name, ok, sym in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"config key {key!r}: {value!r} is out of range (must be {sym} {bound})")


def _section_from_dict(name: str, cls: type, data: Any) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {name!r}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {name + '.' + str(unknown[0])!r} (value {data[unknown[0]]!r}); "
            f"known keys of {name!r}: {sorted(known)}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    obj = cls(**kwargs)
    for f in fields(cls):
        _check_range(f"{name}.{f.name}", getattr(obj, f.name), dict(f.metadata))
    return obj


def _resolve_source_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` (nested sections) where every source-dependent key that is missing or ``auto``
    holds its value for ``source.kind`` (keys without a value for that kind are left to their default)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    source = out.get("source")
    kind = source.get("kind", SourceConfig.kind) if isinstance(source, dict) else SourceConfig.kind
    for name, cls in _SECTIONS.items():
        section = out.get(name)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            continue  # reported by _section_from_dict
        for f in fields(cls):
            by_source = f.metadata.get("by_source")
            if by_source is None or section.get(f.name, AUTO) != AUTO:
                continue
            if kind in by_source:
                section[f.name] = by_source[kind]
            else:
                section.pop(f.name, None)
        out[name] = section
    return out


def _cross_checks(cfg: SlamConfig) -> None:
    if (cfg.source.width == 0) != (cfg.source.height == 0):
        raise ConfigError(
            f"config keys 'source.width'/'source.height' must both be 0 or both be set "
            f"(got {cfg.source.width} x {cfg.source.height})"
        )
    if cfg.source.depth_min >= cfg.source.depth_trunc:
        raise ConfigError(
            f"config key 'source.depth_min': {cfg.source.depth_min!r} must be below "
            f"source.depth_trunc ({cfg.source.depth_trunc!r})"
        )
    dev = cfg.system.device
    if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
        raise ConfigError(f"config key 'system.device': {dev!r} is not cpu, cuda or cuda:N")
    if cfg.tuning.enabled and cfg.source.kind != "mast3r":
        raise ConfigError(
            "config key 'tuning.enabled': prompt tuning needs the MASt3R source (source.kind: mast3r); the "
            f"{cfg.source.kind!r} source has no network to tune"
        )
    if cfg.source.kind == "mast3r" and cfg.system.pose_group == "se3":
        raise ConfigError("config key 'system.pose_group': 'se3' needs a metric source (source.kind: depth)")


def config_from_dict(data: dict[str, Any] | None) -> SlamConfig:
    """Build a validated :class:`SlamConfig` from nested dicts: missing keys take their defaults, and
    source-dependent keys that are missing or ``auto`` their value for ``source.kind``."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"configuration must be a mapping of sections, got {data!r}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown config section {unknown[0]!r} (value {data[unknown[0]]!r}); known: {sorted(_SECTIONS)}"
        )
    data = _resolve_source_keys(data)
    cfg = SlamConfig(
        **{name: _section_from_dict(name, cls, data.get(name)) for name, cls in _SECTIONS.items()}
    )
    _cross_checks(cfg)
    return cfg


def config_to_dict(cfg: SlamConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dicts of every key (for YAML/JSON dumps)."""
    return dataclasses.asdict(cfg)


def validate_config(cfg: SlamConfig) -> SlamConfig:
    """Re-validate a config that was edited in place; returns it or raises :class:`ConfigError`."""
    return config_from_dict(config_to_dict(cfg))


def _deep_update(base: dict, new: dict, prefix: str) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value, prefix=f"{prefix}{key}.")
        else:
            base[key] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    """The sections of the YAML file ``path`` (empty sections dropped); :class:`ConfigError` if malformed."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {loaded!r}")
    for name, section in loaded.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown config section {name!r} in {path} (value {section!r}); known: {sorted(_SECTIONS)}"
            )
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"config section {name!r} in {path}: expected a mapping, got {section!r}")
    return {k: copy.deepcopy(v) for k, v in loaded.items() if v is not None}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SlamConfig:
    """Defaults, then the YAML file at ``path`` (if given), then ``overrides`` (nested dict); source-dependent
    keys resolved for the resulting ``source.kind`` (module docstring); validated.

    Raises:
        ConfigError: unreadable/invalid YAML, unknown keys, wrong types or out-of-range values.
        FileNotFoundError: ``path`` does not exist.
    """
    data: dict[str, Any] = {} if path is None else _read_yaml(Path(path))
    if overrides:
        _deep_update(data, copy.deepcopy(overrides), prefix="")
    return config_from_dict(data)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "E" in text:
            mant, exp = text.lower().split("e")
            if "." not in mant:
                mant += ".0"
            text = f"{mant}e{int(exp):+d}"
        return text
    if isinstance(value, str):
        return yaml.safe_dump(value, default_style=None).strip().removesuffix("...").strip() or "''"
    return str(value)


def documented_yaml(cfg: SlamConfig | None = None) -> str:
    """YAML text of ``cfg`` with each key's documentation and range as comments; without ``cfg``: the
    defaults, source-dependent keys written as ``auto`` (``config/online3r.yaml``)."""
    auto = cfg is None
    cfg = SlamConfig() if cfg is None else cfg
    lines = [
        "# online3r_ros pipeline configuration: every key with its " + ("default." if auto else "value."),
        "# Load with `online3r run ... --config FILE`; a file may list only the keys it changes.",
        "# Unknown keys and out-of-range values are rejected. Regenerate this file with",
        "#   python -m online3r_ros.slam.config > config/online3r.yaml",
        "",
    ]
    for name in _SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"# {_SECTION_DOCS[name]}")
        lines.append(f"{name}:")
        for f in fields(section):
            meta = dict(f.metadata)
            rng = []
            for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if meta.get(key) is not None:
                    rng.append(f"{sym} {meta[key]}")
            if meta.get("choices"):
                rng.append("one of " + ", ".join(str(c) for c in meta["choices"]))
            by_source = meta.get("by_source")
            if by_source:
                kinds = ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in by_source.items())
                rng.append(f"auto = {kinds}; else {_yaml_scalar(f.default)}")
            note = meta["doc"] + (f" [{'; '.join(rng)}]" if rng else "")
            value = AUTO if (by_source and auto) else _yaml_scalar(getattr(section, f.name))
            lines.append(f"  # {note}")
            lines.append(f"  {f.name}: {value}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(documented_yaml(), end="")
