"""OpenCV SIFT local features (RootSIFT) for retrieval on any camera, with depth back-projection.

The image is converted to grey and shrunk so that its long side is at most ``max_side`` (OpenCV's SIFT
doubles the image for its first octave, so the cost grows fast with resolution); keypoint coordinates are
mapped back to input pixels. With depth and K, each keypoint also gets its camera-frame 3-D point.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .features import LocalFeatures

__all__ = ["SiftExtractor", "backproject_keypoints", "grey_image", "root_sift"]

KIND = "sift"


def root_sift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, sqrt, L2-normalise; ``[N, D]`` float32."""
    d = np.maximum(np.asarray(desc, dtype=np.float32), 0.0)
    d = np.sqrt(d / (d.sum(axis=1, keepdims=True) + eps))
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + eps)


def backproject_keypoints(xy: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[N, 3]`` (m) at pixels ``xy [N, 2]`` from ``depth [H, W]`` (m) and ``K [3, 3]``.

    Depth is read at the nearest pixel; NaN rows where it is 0, negative, non-finite or outside the image.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth)
    K = np.asarray(K, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    if K.shape != (3, 3):
        raise ValueError(f"K must be [3, 3], got shape {K.shape}")
    h, w = depth.shape
    u = np.rint(xy[:, 0]).astype(np.int64)
    v = np.rint(xy[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    z = np.full(xy.shape[0], np.nan)
    z[inside] = depth[v[inside], u[inside]]
    z[~(np.isfinite(z) & (z > 0))] = np.nan
    x = (xy[:, 0] - K[0, 2] - K[0, 1] * (xy[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0] * z
    y = (xy[:, 1] - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=1).astype(np.float32)


def grey_image(rgb: np.ndarray, max_side: int = 0) -> tuple[np.ndarray, float]:
    """``rgb [H, W, 3]`` (uint8, or float in [0, 1] / [0, 255]; ``[H, W]`` grey too) as a contiguous uint8
    grey image shrunk (area interpolation) so that its long side is at most ``max_side`` (0: never), and
    ``scale`` = input pixels per output pixel.

    >>> g, scale = grey_image(np.zeros((480, 640, 3), np.uint8), 320)
    >>> g.shape, g.dtype, scale
    ((240, 320), dtype('uint8'), 2.0)
    """
    img = np.asarray(rgb)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3]
    elif img.ndim != 2:
        raise ValueError(f"rgb must be [H, W, 3] (or [H, W]), got shape {img.shape}")
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        if f.size and np.nanmax(f) <= 1.0:  # float images in [0, 1]
            f = f * 255.0
        img = np.clip(np.nan_to_num(f), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    h, w = grey.shape
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max(h, w) / max_side
        size = (max(1, round(w / scale)), max(1, round(h / scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        scale = (w / size[0] + h / size[1]) / 2
    return np.ascontiguousarray(grey), scale


class SiftExtractor:
    """SIFT keypoints + (Root)SIFT descriptors of one image, as :class:`LocalFeatures` (``kind="sift"``).

    Args:
        max_features: keep the strongest N keypoints (OpenCV ``nfeatures``; 0 = all).
        max_side: shrink the image so that its long side is at most this many pixels (0 = never).
        root_sift: RootSIFT descriptors (better retrieval) instead of plain L2-normalised SIFT.
        contrast_threshold: OpenCV SIFT ``contrastThreshold`` (lower finds more keypoints on dull images).

    Deterministic: the same image gives the same features. Not thread-safe (one OpenCV detector).
    """

    def __init__(
        self,
        max_features: int = 500,
        max_side: int = 320,
        root_sift: bool = True,
        contrast_threshold: float = 0.04,
    ) -> None:
        if max_features < 0 or max_side < 0:
            raise ValueError("max_features and max_side must be >= 0")
        self.max_features = int(max_features)
        self.max_side = int(max_side)
        self.root_sift = bool(root_sift)
        self._sift = cv2.SIFT_create(nfeatures=self.max_features, contrastThreshold=float(contrast_threshold))

    def extract(
        self, rgb: np.ndarray, depth: np.ndarray | None = None, K: np.ndarray | None = None
    ) -> LocalFeatures:
        """Features of ``rgb [H, W, 3]`` (uint8, or float in [0, 1] / [0, 255]).

        ``depth [H, W]`` (m, 0 = invalid) and ``K [3, 3]`` (input pixels) give ``points [N, 3]``; ``xy`` are
        input-image pixels (x right, y down, pixel centres at integers). ``N`` may be 0 (flat image).
        """
        h, w = np.asarray(rgb).shape[:2]
        grey, scale = grey_image(rgb, self.max_side)
        kps, desc = self._sift.detectAndCompute(grey, None)
        n = len(kps)
        if n == 0 or desc is None:
            desc = np.zeros((0, 128), np.float32)
            xy = np.zeros((0, 2), np.float32)
        else:
            xy = cv2.KeyPoint_convert(kps).astype(np.float64).reshape(n, 2)
            xy = ((xy + 0.5) * scale - 0.5).astype(np.float32)  # working-pixel centres -> input pixels
            desc = (
                root_sift(desc)
                if self.root_sift
                else desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-12)
            )
        points = None
        if depth is not None:
            if K is None:
                raise ValueError("SiftExtractor.extract: depth needs K to back-project the keypoints")
            if np.asarray(depth).shape[:2] != (h, w):
                raise ValueError(f"depth shape {np.asarray(depth).shape} differs from the image's {(h, w)}")
            points = torch.from_numpy(backproject_keypoints(xy, depth, K))
        return LocalFeatures(
            kind=KIND,
            desc=torch.from_numpy(np.ascontiguousarray(desc, dtype=np.float32)),
            xy=torch.from_numpy(xy),
            points=points,
            image_size=(int(h), int(w)),
        )
