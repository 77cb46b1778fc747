"""Place recognition for the pipeline: the configured feature extractor and :class:`PlaceRecognizer`.

:func:`make_describer` builds what turns an input image into
:class:`~online3r_ros.retrieval.features.LocalFeatures` (``retrieval.features``: OpenCV SIFT on the input
image, lifted to 3D with its depth when there is one, or MASt3R's retrieval head over the encoder tokens
the frame already carries); :func:`make_place_recognizer` the keyframe database that the tracker, the loop
closer and the retrieval node each hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..retrieval.codebook import Codebook, load_default_codebook
from ..retrieval.database import ImageDatabase
from ..retrieval.features import LocalFeatures
from ..retrieval.place import PlaceRecognizer
from ..retrieval.relpose import RelPoseConfig
from ..retrieval.sift import SiftExtractor
from ..sources.base import PointmapSource, SourceFrame
from .config import SlamConfig

Tensor = torch.Tensor

__all__ = ["Describer", "SiftDescriber", "make_describer", "make_place_recognizer"]


class Describer(Protocol):
    """Local features of one input image (``sf``: the prepared frame; ``rgb``/``depth``/``K``: the input)."""

    kind: str

    def __call__(self, sf: SourceFrame, rgb, depth, K) -> LocalFeatures: ...


class SiftDescriber:
    """SIFT on the input image; with ``metres`` (the metric source's reading of a depth image: metres, 0 where
    invalid, e.g. :meth:`RGBDSource.metres <online3r_ros.sources.rgbd.RGBDSource.metres>`), depth and ``K``
    the features carry their 3D points. Only a metric source lifts: the prior-free pose is metric, and a
    network source's poses are in its own units."""

    kind = "sift"

    def __init__(
        self,
        max_features: int,
        max_side: int = 480,
        contrast: float = 0.04,
        metres: Callable[[object], Tensor] | None = None,
    ) -> None:
        self.extractor = SiftExtractor(
            max_features=max_features, max_side=max_side, contrast_threshold=contrast
        )
        self.metres = metres

    def __call__(self, sf: SourceFrame, rgb, depth, K) -> LocalFeatures:
        rgb = rgb.detach().cpu().numpy() if torch.is_tensor(rgb) else np.asarray(rgb)
        if self.metres is not None and depth is not None and K is not None:
            d = self.metres(depth).cpu().numpy()
            K = K.detach().cpu().numpy() if torch.is_tensor(K) else np.asarray(K, dtype=np.float64)
            return self.extractor.extract(rgb, d, K)
        return self.extractor.extract(rgb, None, None)


def _features_kind(cfg: SlamConfig) -> str:
    kind = cfg.retrieval.features
    if kind != "auto":
        return kind
    if cfg.source.kind == "mast3r" and _mast3r_checkpoint(cfg) is not None:
        return "mast3r"
    return "sift"


def _mast3r_checkpoint(cfg: SlamConfig) -> Path | None:
    """The retrieval head's file: ``retrieval.checkpoint``, else the one named after ``source.checkpoint``."""
    if cfg.retrieval.checkpoint:
        return Path(cfg.retrieval.checkpoint)
    if not cfg.source.checkpoint:
        return None
    ckpt = Path(cfg.source.checkpoint)
    path = ckpt.with_name(f"{ckpt.stem}_retrieval_trainingfree.pth")
    return path if path.is_file() else None


def make_describer(cfg: SlamConfig, source: PointmapSource) -> Describer | None:
    """The configured feature extractor (``None`` when ``retrieval.enabled`` is off)."""
    if not cfg.retrieval.enabled:
        return None
    if _features_kind(cfg) == "mast3r":
        from .places_mast3r import make_mast3r_describer

        return make_mast3r_describer(cfg, source, _mast3r_checkpoint(cfg))
    rc = cfg.retrieval
    metres = source.metres if source.metric else None  # the metric (RGB-D) source's own depth reading
    return SiftDescriber(rc.max_features, rc.sift_max_side, rc.sift_contrast, metres)


def _codebook(cfg: SlamConfig) -> Codebook:
    if cfg.retrieval.codebook:
        return Codebook.load(cfg.retrieval.codebook)
    if _features_kind(cfg) == "mast3r":
        from ..retrieval.mast3r_files import codebook_path_for

        return Codebook.load(codebook_path_for(_mast3r_checkpoint(cfg)))
    return load_default_codebook()


def make_place_recognizer(cfg: SlamConfig) -> PlaceRecognizer | None:
    """An empty keyframe database for the configured features (``None`` when retrieval is off)."""
    if not cfg.retrieval.enabled:
        return None
    rc = cfg.retrieval
    codebook = _codebook(cfg)
    relpose = RelPoseConfig(
        inlier_thresh_m=rc.inlier_dist, min_inliers=rc.min_inliers, seed=cfg.system.seed, with_scale=False
    )
    return PlaceRecognizer(lambda: ImageDatabase(codebook), relpose, k=rc.k, min_score=rc.min_score)
