"""The pointmap-source interface driven by the SLAM pipeline (MASt3R network or RGB-D depth).

A *source* turns images into pointmaps, exactly the three calls MASt3R-SLAM makes on the network:

- :meth:`PointmapSource.prepare` — once per input image: resize/crop to the working resolution, keep the
  colours (and depth, intrinsics at working resolution), cache whatever the source needs later (encoder
  features for MASt3R, the back-projected pointmap for RGB-D). Returns a :class:`SourceFrame`.
- :meth:`PointmapSource.predict_mono` — a frame alone (initialisation, relocalisation): ``X, C``.
- :meth:`PointmapSource.predict_asymmetric` — tracking: the (frame, keyframe) pair, both pointmaps in the
  **frame's** camera coordinates: ``X_ff, C_ff, D_ff, Q_ff`` (frame) and ``X_kf, C_kf, D_kf, Q_kf`` (keyframe
  pixels). A source whose prediction depends on the relative pose (RGB-D: it can only move the keyframe's
  measured points into the frame) uses ``T_CkCf_guess``; the network ignores it (``pose_dependent=False``).
- :meth:`PointmapSource.predict_symmetric` — backend edges: for each keyframe pair ``(i, j)`` the four
  pointmaps ``X_ii, X_ji`` (in i's coordinates) and ``X_jj, X_ij`` (in j's coordinates).

Conventions (see notes/CONTRACTS.md): pointmaps are ``X[H, W, 3]`` float32 in the camera optical frame
(x right, y down, z forward), metres when ``metric`` else network units; confidences ``C[H, W] >= 0``
(MASt3R: ``>= 1``; RGB-D: 0 for invalid depth); descriptors ``D[H, W, d]`` L2-normalised (or ``None``) with
confidence ``Q[H, W] >= 0``. ``H, W`` are the working resolution of the source. Poses are Sim(3) ``[8]``
tensors (``online3r_ros.geometry.lie`` layout); ``T_CkCf`` maps frame coordinates to keyframe coordinates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = [
    "SourceError",
    "SourceFrame",
    "Pointmap",
    "AsymmetricPrediction",
    "SymmetricPrediction",
    "PointmapSource",
    "image_to_tensor",
    "intrinsics_tensor",
]


class SourceError(ValueError):
    """Bad input to a pointmap source (wrong shape/dtype, missing depth or intrinsics, ...)."""


@dataclass
class SourceFrame:
    """An input image prepared at the source's working resolution.

    Attributes:
        index: frame index in the input stream.
        timestamp: seconds.
        image: ``[H, W, 3]`` float32 colours in ``[0, 1]`` at working resolution (map colours, descriptors).
        depth: ``[H, W]`` float32 metres at working resolution (0 = invalid) or ``None``.
        K: ``[3, 3]`` float32 intrinsics at working resolution, or ``None`` when uncalibrated.
        cache: source-private data computed once per frame (encoder features, own pointmap, ...).
    """

    index: int
    timestamp: float
    image: Tensor
    depth: Tensor | None = None
    K: Tensor | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def device(self) -> torch.device:
        return self.image.device

    def state_dict(self) -> dict[str, Any]:
        """Plain dict with every tensor on the CPU (``torch.save(weights_only=True)``-safe), for map files."""
        return {
            "index": self.index,
            "timestamp": self.timestamp,
            "image": self.image.cpu(),
            "depth": None if self.depth is None else self.depth.cpu(),
            "K": None if self.K is None else self.K.cpu(),
            "cache": {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in self.cache.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> SourceFrame:
        """Inverse of :meth:`state_dict`, with the tensors moved to ``device``."""
        return cls(
            index=state["index"],
            timestamp=state["timestamp"],
            image=state["image"].to(device),
            depth=None if state["depth"] is None else state["depth"].to(device),
            K=None if state["K"] is None else state["K"].to(device),
            cache={k: (v.to(device) if torch.is_tensor(v) else v) for k, v in state["cache"].items()},
        )


@dataclass
class Pointmap:
    """One predicted pointmap with its confidences (all at working resolution ``H x W``).

    ``X[H, W, 3]`` points, ``C[H, W]`` confidence, ``D[H, W, d]`` unit descriptors or ``None``,
    ``Q[H, W]`` descriptor confidence or ``None`` (treated as "always passes" by the consumers).
    """

    X: Tensor
    C: Tensor
    D: Tensor | None = None
    Q: Tensor | None = None

    def __post_init__(self) -> None:
        if self.X.dim() != 3 or self.X.shape[-1] != 3:
            raise SourceError(f"Pointmap.X must be [H, W, 3], got {tuple(self.X.shape)}")
        hw = tuple(self.X.shape[:2])
        if tuple(self.C.shape) != hw:
            raise SourceError(f"Pointmap.C must be {hw}, got {tuple(self.C.shape)}")
        if self.D is not None and tuple(self.D.shape[:2]) != hw:
            raise SourceError(f"Pointmap.D must be {hw} + (d,), got {tuple(self.D.shape)}")
        if self.Q is not None and tuple(self.Q.shape) != hw:
            raise SourceError(f"Pointmap.Q must be {hw}, got {tuple(self.Q.shape)}")


@dataclass
class AsymmetricPrediction:
    """Tracking prediction for (frame f, keyframe k), both pointmaps in the frame's coordinates.

    ``frame`` holds ``X_ff, C_ff, D_ff, Q_ff`` (frame pixels); ``keyframe`` holds ``X_kf, C_kf, D_kf, Q_kf``
    (keyframe pixels, points expressed in f's camera frame).
    """

    frame: Pointmap
    keyframe: Pointmap


@dataclass
class SymmetricPrediction:
    """Backend prediction for keyframes (i, j): ``ii``/``ji`` in i's coordinates, ``jj``/``ij`` in j's.

    ``ji`` = pixels of j expressed in i's frame, ``ij`` = pixels of i expressed in j's frame.
    """

    ii: Pointmap
    ji: Pointmap
    jj: Pointmap
    ij: Pointmap


class PointmapSource(ABC):
    """Abstract pointmap source. Implementations: RGB-D (sources/rgbd.py), MASt3R (sources/mast3r.py).

    Class/instance flags the pipeline reads:

    - ``metric``: pointmaps are in metres (scale observable) -> SE(3) tracking/optimisation allowed.
    - ``calibrated``: ``SourceFrame.K`` is set (intrinsics known at working resolution).
    - ``has_descriptors``: predictions carry ``D``/``Q`` (descriptor refinement of the matches).
    - ``pose_dependent``: :meth:`predict_asymmetric` / :meth:`predict_symmetric` use the pose guesses
      (the pipeline may call them again after a pose update, ICP-style).
    - ``tunable``: the source has learnable prompts (online prompt tuning): ``net_image(frame)``,
      ``set_prompts(prompts, version)`` and ``prompt_version`` (the MASt3R source).
    """

    metric: bool = False
    calibrated: bool = False
    has_descriptors: bool = False
    pose_dependent: bool = False
    tunable: bool = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def prepare(
        self,
        image: np.ndarray | Tensor,
        *,
        index: int = 0,
        timestamp: float = 0.0,
        depth: np.ndarray | Tensor | None = None,
        K: np.ndarray | Tensor | None = None,
    ) -> SourceFrame:
        """Bring one input image to working resolution.

        Args:
            image: ``[H0, W0, 3]`` RGB, uint8 (0..255) or float (0..1), numpy or torch.
            depth: optional ``[H0, W0]`` metres (0 or NaN = invalid); required by depth sources.
            K: optional ``[3, 3]`` intrinsics of the *input* resolution; required by calibrated sources.
        Raises:
            SourceError: naming the offending argument.
        """

    @abstractmethod
    def predict_mono(self, frame: SourceFrame) -> Pointmap:
        """Pointmap of a frame alone, in its own coordinates (INIT / RELOC)."""

    @abstractmethod
    def predict_asymmetric(
        self, frame: SourceFrame, keyframe: SourceFrame, T_CkCf_guess: Tensor | None = None
    ) -> AsymmetricPrediction:
        """Tracking prediction of (frame, keyframe); see :class:`AsymmetricPrediction`.

        ``T_CkCf_guess`` (Sim(3) ``[8]``, frame -> keyframe) is used by pose-dependent sources only; they
        use the identity when it is ``None``.
        """

    @abstractmethod
    def predict_symmetric(
        self,
        pairs: Sequence[tuple[SourceFrame, SourceFrame]],
        T_CiCj_guesses: Sequence[Tensor] | None = None,
    ) -> list[SymmetricPrediction]:
        """Backend prediction for a batch of keyframe pairs ``(i, j)`` (one result per pair, same order).

        ``T_CiCj_guesses`` (Sim(3) ``[8]`` each, j -> i) are used by pose-dependent sources only.
        """


def image_to_tensor(image: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """``[H, W, 3]`` uint8 / float image (numpy or torch) -> float32 tensor in ``[0, 1]`` on ``device``."""
    t = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    if t.dim() != 3 or t.shape[-1] != 3:
        raise SourceError(f"image must be [H, W, 3], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.to(torch.float32) / 255.0
    elif t.is_floating_point():
        t = t.to(torch.float32)
    else:
        raise SourceError(f"image dtype must be uint8 or float, got {t.dtype}")
    return t.to(device)


def intrinsics_tensor(K: np.ndarray | Tensor, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """``[3, 3]`` intrinsics (numpy or torch) as a tensor on ``device``; :class:`SourceError` unless finite
    with positive focal lengths."""
    Kt = torch.as_tensor(np.asarray(K, dtype=np.float64) if not isinstance(K, Tensor) else K)
    Kt = Kt.detach().to(device, dtype)
    if (
        Kt.shape != (3, 3)
        or not bool(torch.isfinite(Kt).all())
        or float(Kt[0, 0]) <= 0
        or float(Kt[1, 1]) <= 0
    ):
        raise SourceError(f"K must be a finite [3, 3] matrix with positive focal lengths, got {Kt.tolist()}")
    return Kt
