"""Network-like pointmap source built from depth and ground-truth poses (benchmarks and tests).

:class:`DepthOracleSource` stands in for MASt3R where the network is not wanted: it behaves as the network
does towards the pipeline (not metric, not calibrated, not pose dependent: Sim(3) tracking with the
reference's iterative projective matching and ray + distance cost) but its pointmaps come from measured
depth: ``X_ff`` is the frame's back-projected depth and ``X_kf`` the keyframe's, moved into the frame with the
**ground-truth** relative pose given to :meth:`DepthOracleSource.prepare` (what a perfect network would
predict). Descriptors are the RGB-D source's grey-level patches, ``C``/``Q`` its depth confidences. Only
tracking's calls are provided (:meth:`predict_symmetric` raises).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from online3r_ros.geometry.lie import sim3_act, sim3_compose, sim3_from_matrix, sim3_inverse
from online3r_ros.sources.base import (
    AsymmetricPrediction,
    Pointmap,
    PointmapSource,
    SourceError,
    SourceFrame,
    SymmetricPrediction,
)
from online3r_ros.sources.rgbd import RGBDSource

Tensor = torch.Tensor

__all__ = ["DepthOracleSource"]


class DepthOracleSource(PointmapSource):
    """Depth + ground-truth-pose pointmaps presented as an uncalibrated network source.

    Args:
        device: torch device.
        width, height: working resolution (default 512x384, MASt3R's for 4:3 images).
        descriptors: patch descriptors ``D`` (``patch_size^2``-d) for the matching refinement.
        rgbd: further :class:`~online3r_ros.sources.rgbd.RGBDSource` arguments (depth range, noise model).
    """

    metric = False
    calibrated = False
    pose_dependent = False

    def __init__(
        self,
        device: str | torch.device = "cpu",
        width: int = 512,
        height: int = 384,
        descriptors: bool = True,
        **rgbd,
    ) -> None:
        super().__init__(device)
        self._rgbd = RGBDSource(device, width=width, height=height, descriptors=descriptors, **rgbd)
        self.has_descriptors = bool(descriptors)

    def prepare(
        self,
        image: np.ndarray | Tensor,
        *,
        index: int = 0,
        timestamp: float = 0.0,
        depth: np.ndarray | Tensor | None = None,
        K: np.ndarray | Tensor | None = None,
        T_WC: np.ndarray | Tensor | None = None,
    ) -> SourceFrame:
        """As :meth:`RGBDSource.prepare` (depth and ``K`` required), plus the ground-truth camera-to-world
        pose ``T_WC`` (``[4, 4]`` rigid matrix or Sim(3) ``[8]``). The frame's ``K`` is dropped (the source
        is uncalibrated)."""
        if T_WC is None:
            raise SourceError("DepthOracleSource.prepare: the ground-truth pose T_WC is required")
        sf = self._rgbd.prepare(image, index=index, timestamp=timestamp, depth=depth, K=K)
        T = torch.as_tensor(np.asarray(T_WC) if isinstance(T_WC, np.ndarray) else T_WC)
        T = T.to(self.device, torch.float64)
        if tuple(T.shape) == (4, 4):
            T = sim3_from_matrix(T)
        elif tuple(T.shape) != (8,):
            raise SourceError(f"T_WC must be [4, 4] or Sim(3) [8], got {tuple(T.shape)}")
        sf.cache["T_WC"] = T
        sf.K = None
        return sf

    def _own(self, frame: SourceFrame) -> Pointmap:
        c = frame.cache
        if "T_WC" not in c:
            raise SourceError("frame was not prepared by DepthOracleSource")
        return Pointmap(c["X"], c["C"], c.get("D"), c["Q"])

    def predict_mono(self, frame: SourceFrame) -> Pointmap:
        return self._own(frame)

    def predict_asymmetric(
        self, frame: SourceFrame, keyframe: SourceFrame, T_CkCf_guess: Tensor | None = None
    ) -> AsymmetricPrediction:
        """The frame's own pointmap and the keyframe's moved into the frame with the true pose (the guess is
        ignored, as the network ignores it)."""
        own_f, own_k = self._own(frame), self._own(keyframe)
        T_fk = sim3_compose(sim3_inverse(frame.cache["T_WC"]), keyframe.cache["T_WC"]).to(own_k.X.dtype)
        return AsymmetricPrediction(own_f, Pointmap(sim3_act(T_fk, own_k.X), own_k.C, own_k.D, own_k.Q))

    def predict_symmetric(
        self,
        pairs: Sequence[tuple[SourceFrame, SourceFrame]],
        T_CiCj_guesses: Sequence[Tensor] | None = None,
    ) -> list[SymmetricPrediction]:
        raise NotImplementedError("DepthOracleSource serves tracking only")
