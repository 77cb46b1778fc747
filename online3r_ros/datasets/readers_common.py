"""Helpers shared by the concrete readers: size checks, K resolution, natural sorting, frame assembly."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .base import DatasetError, Frame, FrameReader, IntrinsicsError, SkipFrame
from .imageio import image_size, read_depth_png, read_rgb
from .intrinsics import as_K, validate_intrinsics


def natural_key(name: str) -> list:
    """Sort key so that ``img2`` < ``img10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


class RGBDReaderBase(FrameReader):
    """Common machinery: the sequence image size (from the first readable image header), K validation,
    per-frame shape checks and depth loading with NaN/invalid handling."""

    depth_scale: float | None = None
    depth_invalid: tuple[int, ...] = (0,)
    _has_depth: bool = False  # readers set these in their constructor
    _has_gt: bool = False

    @property
    def has_depth(self) -> bool:
        return self._has_depth

    @property
    def has_gt(self) -> bool:
        return self._has_gt

    def _init_frame_folder(self, fps: float) -> None:
        """Check that ``self.path`` is a directory and ``fps`` (the frame rate timestamps are made from)
        is positive; sets ``self.fps``. Raises :class:`DatasetError`."""
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: not a directory")
        if fps <= 0:
            raise DatasetError(f"fps must be positive, got {fps}")
        self.fps = float(fps)

    def _init_geometry(self, K: np.ndarray | None, intrinsics_override, first_image: Path | None) -> None:
        """Resolve K (override wins) and the expected image size; validate K against it."""
        self.K = as_K(intrinsics_override) if intrinsics_override is not None else K
        self.image_wh: tuple[int, int] | None = None
        if first_image is not None:
            self.image_wh = image_size(first_image)
        if self.K is not None and self.image_wh is not None:
            src = "intrinsics override" if intrinsics_override is not None else f"{self.layout} intrinsics"
            validate_intrinsics(self.K, *self.image_wh, source=src)

    def _check_size(self, rgb: np.ndarray, path: Path) -> None:
        h, w = rgb.shape[:2]
        if self.image_wh is None:
            self.image_wh = (w, h)
            if self.K is not None:
                try:
                    validate_intrinsics(self.K, w, h, source=f"{self.layout} intrinsics")
                except IntrinsicsError:
                    self.image_wh = None
                    raise
        elif (w, h) != self.image_wh:
            raise SkipFrame(
                f"image is {w}x{h} but the sequence (and its intrinsics) is "
                f"{self.image_wh[0]}x{self.image_wh[1]}",
                path,
            )

    def _load_depth(self, path: Path, rgb_shape: tuple[int, ...], warnings: list[str]) -> np.ndarray:
        depth, n_nonfinite = read_depth_png(path, float(self.depth_scale or 1.0), self.depth_invalid)
        if depth.shape != tuple(rgb_shape[:2]):
            raise SkipFrame(
                f"depth is {depth.shape[1]}x{depth.shape[0]} but colour is {rgb_shape[1]}x{rgb_shape[0]}",
                path,
            )
        if n_nonfinite:
            warnings.append(f"{n_nonfinite} non-finite depth pixels set to 0 (invalid)")
        return depth

    def _setup_undistortion(self, dist, size: tuple[int, int]) -> None:
        """Undistort every frame (colour bilinear, depth nearest) to a pinhole camera without black borders
        (OpenCV ``getOptimalNewCameraMatrix`` with ``alpha = 0``); ``self.K`` becomes the new K and the
        original one is kept in ``self.K_raw`` with ``self.distortion``."""
        w, h = size
        dist = np.asarray(dist, dtype=np.float64)
        K_new, _ = cv2.getOptimalNewCameraMatrix(self.K, dist, (w, h), 0, (w, h), False)
        self.K_raw, self.distortion = self.K, dist
        self._undistort_maps = cv2.initUndistortRectifyMap(self.K, dist, None, K_new, (w, h), cv2.CV_32FC1)
        self.K = np.asarray(K_new, dtype=np.float64)

    def _make_frame(
        self,
        source_index: int,
        timestamp: float,
        rgb_path: Path,
        depth_path: Path | None,
        pose: np.ndarray | None,
        warnings: list[str],
    ) -> Frame:
        rgb = read_rgb(rgb_path)
        self._check_size(rgb, rgb_path)
        depth = None
        if depth_path is not None:
            depth = self._load_depth(depth_path, rgb.shape, warnings)
        maps = getattr(self, "_undistort_maps", None)
        if maps is not None:
            rgb = cv2.remap(rgb, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if depth is not None:
                depth = cv2.remap(depth, maps[0], maps[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        return Frame(
            index=source_index,
            timestamp=float(timestamp),
            rgb=rgb,
            depth=depth,
            K=None if self.K is None else self.K.copy(),
            pose_gt=pose,
            source=str(rgb_path),
            source_index=source_index,
            warnings=tuple(warnings),
        )

    @property
    def calibrated(self) -> bool:
        return self.K is not None
