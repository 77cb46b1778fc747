"""Frame record and the small reader interface every dataset (and the synthetic generator) implements.

Conventions (binding for all readers):

- ``rgb``: ``uint8 [H, W, 3]``, RGB channel order.
- ``depth``: ``float32 [H, W]`` in metres, or ``None`` when the layout has no depth. **Invalid depth is 0.0**:
  readers turn every sensor code for "no data" (0, 65535 in 7-Scenes, NaN, inf, negative values) into 0.0, so
  consumers only need ``depth > 0``.
- ``K``: ``float64 [3, 3]`` pinhole intrinsics of *this* image size; pixel centres sit at integer coordinates
  (OpenCV convention: pixel ``u`` covers ``[u - 0.5, u + 0.5]``). ``None`` only for image folders without
  any intrinsics (uncalibrated; ``reader.calibrated`` is False).
- ``pose_gt``: ``float64 [4, 4]`` ground-truth camera-to-world ``T_WC`` of the camera optical frame
  (z forward, x right, y down), or ``None`` when unknown for this frame.
- ``timestamp``: seconds (float64). Readers only yield frames with strictly increasing timestamps.
- ``index``: 0-based position among the frames the reader *yielded* (consecutive even when frames were
  skipped); ``source_index``: position in the dataset's full, unstrided frame list.

Bad input is never silently turned into frames: every frame a reader drops is recorded in
``reader.skipped`` as a :class:`SkippedFrame` (path + reason), logged on the ``online3r_ros.datasets`` logger,
and, with ``strict=True``, raised as :class:`DatasetError`. Per-frame problems that do not drop the frame
(e.g. NaN depth pixels zeroed, no ground truth for that time) are listed in ``Frame.warnings``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("online3r_ros.datasets")

BAD_DEPTH_POLICIES = ("skip", "keep", "drop")


class DatasetError(ValueError):
    """A dataset cannot be read as requested (unknown layout, no usable frames, strict-mode skip, ...)."""


class IntrinsicsError(DatasetError):
    """Intrinsics are malformed or inconsistent with the images (size mismatch, point outside the image)."""


@dataclass(frozen=True)
class Frame:
    """One RGB(-D) frame. See the module docstring for units and conventions."""

    index: int
    timestamp: float
    rgb: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray | None
    pose_gt: np.ndarray | None = None
    source: str = ""
    source_index: int = -1
    warnings: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass(frozen=True)
class SkippedFrame:
    """A frame the reader dropped: ``source_index`` in the full list (-1 if unknown), its path, and why."""

    source_index: int
    path: str
    reason: str


@dataclass
class SequenceInfo:
    """Static description of a sequence, available before iterating."""

    name: str
    layout: str
    path: str
    n_frames: int
    has_depth: bool
    has_gt: bool
    depth_scale: float | None = None
    extra: dict = field(default_factory=dict)


class FrameReader(ABC):
    """Lazy, re-iterable sequence of :class:`Frame`.

    Subclasses fill ``self._entries`` (anything :meth:`_load` understands) at construction and implement
    :meth:`_load`, which returns a :class:`Frame` (with ``index`` to be overwritten) or raises
    :class:`SkipFrame`. The base class applies stride/max_frames, monotonic-timestamp checks, the bad-depth
    policy and the skip bookkeeping. ``skipped`` holds every frame dropped so far (at construction and during
    the latest iteration).
    """

    layout = "abstract"

    def __init__(
        self,
        path: str | Path,
        *,
        stride: int = 1,
        max_frames: int | None = None,
        bad_depth: str = "skip",
        min_valid_depth_fraction: float = 0.0,
        strict: bool = False,
    ) -> None:
        if int(stride) < 1:
            raise DatasetError(f"stride must be >= 1, got {stride!r}")
        if max_frames is not None and int(max_frames) < 0:
            raise DatasetError(f"max_frames must be >= 0 or None, got {max_frames!r}")
        if bad_depth not in BAD_DEPTH_POLICIES:
            raise DatasetError(f"bad_depth must be one of {BAD_DEPTH_POLICIES}, got {bad_depth!r}")
        if not 0.0 <= float(min_valid_depth_fraction) <= 1.0:
            raise DatasetError(
                f"min_valid_depth_fraction must be in [0, 1], got {min_valid_depth_fraction!r}"
            )
        self.path = Path(path)
        self.stride = int(stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.bad_depth = bad_depth
        self.min_valid_depth_fraction = float(min_valid_depth_fraction)
        self.strict = bool(strict)
        self.skipped: list[SkippedFrame] = []
        self._open_skips: list[SkippedFrame] = []
        self._entries: list = []

    # -- subclass hooks -------------------------------------------------------------------------------
    @abstractmethod
    def _load(self, source_index: int) -> Frame:
        """Load entry ``source_index`` of ``self._entries``; raise :class:`SkipFrame` to drop it."""

    def _entry_path(self, source_index: int) -> str:
        return str(self._entries[source_index])

    @property
    def has_depth(self) -> bool:
        return False

    @property
    def has_gt(self) -> bool:
        return False

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Reference trajectory for evaluation: ``(timestamps [M] s, T_WC [M, 4, 4])`` or ``None``.

        Readers with a separate ground-truth stream (TUM) return it at its own rate (associate it to estimates
        by time); the others return the per-frame poses of all selected frames with a finite pose.
        """
        return None

    # -- shared machinery -----------------------------------------------------------------------------
    def _record_open_skip(self, source_index: int, path: str | Path, reason: str) -> None:
        """Record a frame dropped while indexing the folder (missing file, bad timestamp, ...)."""
        item = SkippedFrame(int(source_index), str(path), reason)
        LOGGER.warning("skipping %s: %s", item.path, reason)
        if self.strict:
            raise DatasetError(f"{item.path}: {reason}")
        self._open_skips.append(item)
        self.skipped.append(item)

    def selected_indices(self) -> list[int]:
        """Source indices the iteration will try, after stride and max_frames (skips may still drop some)."""
        return list(range(0, len(self._entries), self.stride))

    def __len__(self) -> int:
        """Upper bound on the number of frames yielded (frames dropped while loading are not known yet)."""
        n = len(self.selected_indices())
        return n if self.max_frames is None else min(n, self.max_frames)

    def info(self) -> SequenceInfo:
        return SequenceInfo(
            name=self.path.name,
            layout=self.layout,
            path=str(self.path),
            n_frames=len(self),
            has_depth=self.has_depth,
            has_gt=self.has_gt,
        )

    def __iter__(self) -> Iterator[Frame]:
        self.skipped = list(self._open_skips)
        n_yielded = 0
        last_t = -np.inf
        for source_index in self.selected_indices():
            if self.max_frames is not None and n_yielded >= self.max_frames:
                return
            try:
                frame = self._load(source_index)
                frame = self._check_frame(frame, last_t)
            except SkipFrame as skip:
                self._skip(source_index, skip.path or self._entry_path(source_index), str(skip))
                continue
            last_t = frame.timestamp
            yield _replace_index(frame, n_yielded, source_index)
            n_yielded += 1

    def _skip(self, source_index: int, path: str, reason: str) -> None:
        item = SkippedFrame(int(source_index), str(path), reason)
        LOGGER.warning("skipping %s: %s", item.path, reason)
        if self.strict:
            raise DatasetError(f"{item.path}: {reason}")
        self.skipped.append(item)

    def _check_frame(self, frame: Frame, last_t: float) -> Frame:
        if not np.isfinite(frame.timestamp):
            raise SkipFrame(f"non-finite timestamp {frame.timestamp!r}", frame.source)
        if frame.timestamp <= last_t:
            raise SkipFrame(
                f"non-monotonic timestamp {frame.timestamp:.6f} s <= previous frame's {last_t:.6f} s",
                frame.source,
            )
        if frame.depth is None:
            return frame
        valid = frame.depth > 0
        frac = float(valid.mean()) if valid.size else 0.0
        if frac > 0.0 and frac >= self.min_valid_depth_fraction:
            return frame
        reason = (
            "depth has no valid pixel"
            if frac == 0.0
            else f"depth has only {100 * frac:.2f}% valid pixels "
            f"(< {100 * self.min_valid_depth_fraction:.2f}%)"
        )
        if self.bad_depth == "skip":
            raise SkipFrame(reason, frame.source)
        warnings = frame.warnings + (reason,)
        depth = frame.depth if self.bad_depth == "keep" else None
        return Frame(**{**frame.__dict__, "depth": depth, "warnings": warnings})


class SkipFrame(Exception):
    """Raised by a reader's ``_load`` to drop one frame with a reason (recorded in ``skipped``)."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.path = None if path is None else str(path)


def _replace_index(frame: Frame, index: int, source_index: int) -> Frame:
    return Frame(**{**frame.__dict__, "index": int(index), "source_index": int(source_index)})
