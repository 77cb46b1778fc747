"""The dense map: keyframes' canonical pointmaps moved to the world, confidence-filtered (one export for
``SlamSystem.dense_map``, ``online3r run``'s ``map.ply`` and the mapper node's PointCloud2 topics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.lie import sim3_act
from .keyframes import KeyframeStore

__all__ = ["MapPoints", "keyframe_points"]


@dataclass(frozen=True)
class MapPoints:
    """Coloured points in the SLAM world: ``points [P, 3]`` float32, ``colors [P, 3]`` uint8,
    ``confidence [P]`` float32 (average confidence), ``keyframe_ids [P]`` int32 (origin of each point)."""

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    keyframe_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls) -> MapPoints:
        return cls(
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.uint8),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
        )

    def subsample(self, max_points: int) -> MapPoints:
        """At most ``max_points`` points (0: all), every ``ceil(P / max_points)``-th one (deterministic)."""
        if max_points <= 0 or len(self) <= max_points:
            return self
        sel = np.arange(0, len(self), math.ceil(len(self) / max_points))
        return MapPoints(self.points[sel], self.colors[sel], self.confidence[sel], self.keyframe_ids[sel])


def keyframe_points(store: KeyframeStore, ids: Sequence[int], conf_threshold: float) -> MapPoints:
    """Canonical pointmaps of keyframes ``ids`` moved to the world (``T_WC·X``), keeping pixels whose average
    confidence exceeds ``conf_threshold`` and whose point is finite and non-zero (vectorised per keyframe;
    keyframes without colours give white points)."""
    pts, cols, confs, kids = [], [], [], []
    for i in ids:
        kf = store.get(int(i), device="cpu", fields=("colors",))
        conf = kf.average_confidence().reshape(-1).float()
        X = kf.X.reshape(-1, 3).to(torch.float64)
        keep = (conf > conf_threshold) & torch.isfinite(X).all(-1) & (X.norm(dim=-1) > 0)
        n = int(keep.sum())
        if n == 0:
            continue
        pts.append(sim3_act(kf.T_WC.to(torch.float64), X[keep]).float())
        if kf.colors is not None:
            cols.append(kf.colors.reshape(-1, 3)[keep])
        else:
            cols.append(torch.full((n, 3), 255, dtype=torch.uint8))
        confs.append(conf[keep])
        kids.append(torch.full((n,), int(i), dtype=torch.int32))
    if not pts:
        return MapPoints.empty()
    return MapPoints(
        torch.cat(pts).numpy(), torch.cat(cols).numpy(), torch.cat(confs).numpy(), torch.cat(kids).numpy()
    )
