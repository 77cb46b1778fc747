"""Covered-lens frames: a view of any reader whose frames ``frames`` are replaced by what a camera sees
with its lens covered, ground truth kept (the camera still moves), for tracking-loss / relocalisation
tests.

- ``mode="blank"``: colour uniform dark grey (``grey``), depth all invalid (0.0). With the wrapped reader's
  default ``bad_depth="skip"`` the reader would drop such frames, so the view defaults to ``"keep"``: they
  reach the pipeline (pass ``bad_depth="skip"`` to model a driver that drops them).
- ``mode="near"``: an object right in front of the lens: colour a smooth, nearly flat skin-like shade (no
  texture to match), depth ``near_depth`` everywhere. The default 0.08 m is below the RGB-D source's
  ``source.depth_min`` (0.1 m, valid when ``depth >= depth_min``), so the source sees no valid depth while
  the reader still counts the pixels as valid (> 0); ``near_depth=0.1`` is exactly at the limit, i.e. valid.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..datasets.base import Frame, FrameReader
from ..datasets.views import ReaderView

OCCLUSION_MODES = ("blank", "near")


def near_object_rgb(height: int, width: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` of a lens covered by a close object: a skin-like shade with a soft vignette and a
    gentle gradient (no detail above ~1/4 of the image)."""
    v, u = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    shade = 0.8 + 0.12 * u - 0.06 * v - 0.15 * (u * u + v * v) / 2
    base = np.array([200.0, 150.0, 130.0])
    return np.clip(shade[..., None] * base, 0, 255).astype(np.uint8)


class OccludedSequence(ReaderView):
    """``reader`` with its entries ``frames`` (indices into the full frame list, e.g. ``range(40, 60)``)
    covered (see the module doc for ``mode``); every other frame, all timestamps, intrinsics and the ground
    truth (:meth:`gt_trajectory`, ``frame.pose_gt``) are the reader's."""

    def __init__(
        self,
        reader: FrameReader,
        frames: Iterable[int],
        mode: str = "blank",
        near_depth: float = 0.08,
        grey: int = 40,
        bad_depth: str = "keep",
        **kwargs,
    ) -> None:
        if mode not in OCCLUSION_MODES:
            raise ValueError(f"mode must be one of {OCCLUSION_MODES}, got {mode!r}")
        if not near_depth > 0:
            raise ValueError(f"near_depth must be positive, got {near_depth}")
        super().__init__(reader, bad_depth=bad_depth, **kwargs)
        self.covered = frozenset(int(i) for i in frames)
        outside = sorted(i for i in self.covered if not 0 <= i < len(self._entries))
        if outside:
            raise ValueError(f"covered frames {outside[:5]} are outside 0..{len(self._entries) - 1}")
        self.mode = mode
        self.near_depth = float(near_depth)
        self.grey = int(grey)

    def is_covered(self, source_index: int) -> bool:
        return int(source_index) in self.covered

    def _view_frame(self, source_index: int, frame: Frame) -> Frame:
        if source_index not in self.covered:
            return frame
        h, w = frame.rgb.shape[:2]
        if self.mode == "blank":
            rgb = np.full((h, w, 3), self.grey, dtype=np.uint8)
            depth_value = 0.0
        else:
            rgb = near_object_rgb(h, w)
            depth_value = self.near_depth
        depth = None if frame.depth is None else np.full((h, w), depth_value, dtype=np.float32)
        return Frame(**{**frame.__dict__, "rgb": rgb, "depth": depth})

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.reader.gt_trajectory()
