"""Views of another reader: its frames picked and re-ordered (:class:`ReorderedSequence`), or altered one
by one (subclasses of :class:`ReaderView`, e.g. :class:`online3r_ros.synthetic.OccludedSequence`).

A view is itself a :class:`~online3r_ros.datasets.base.FrameReader` (iteration, ``stride``, ``max_frames``,
bad-depth policy, ``skipped``), so the pipeline (``run_frames(system, iter(view))``) and the evaluation
(``view.gt_trajectory()``) take it like any dataset. It works over every reader (7-Scenes, TUM, image
folders, synthetic sequences, other views): entries are the wrapped reader's *full, unstrided* frame list
(``reader._entries``), loaded with its ``_load``, so the wrapped reader's own stride and max_frames do not
apply. Kidnapped-camera test on real data::

    reader = open_dataset("shared/data/7scenes_redkitchen_0000_0499")
    view = ReorderedSequence(reader, [*range(0, 300), *range(60, 140), *range(300, 500)])
    view.original_index(300)      # -> 60: the jump back
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import DatasetError, Frame, FrameReader, SkipFrame

_POLICY_KEYS = ("bad_depth", "min_valid_depth_fraction", "strict")


def parse_frame_ranges(text: str) -> list[int]:
    """Frame indices of ``"a-b,c,d-e"`` (inclusive ranges, in the order written; repeats allowed):
    ``"0-2,1"`` -> ``[0, 1, 2, 1]``. :class:`DatasetError` for anything else.

    >>> parse_frame_ranges("0-2,10,5-4")
    [0, 1, 2, 10, 5, 4]
    """
    out: list[int] = []
    for part in str(text).split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi if sep else lo)
        except ValueError as exc:
            raise DatasetError(f"frame range {part!r} is not N or N-M (in {text!r})") from exc
        if a < 0 or b < 0:
            raise DatasetError(f"frame range {part!r}: indices must be >= 0")
        out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
    return out


def entry_pose(reader: FrameReader, source_index: int) -> np.ndarray | None:
    """Ground-truth ``T_WC`` of entry ``source_index`` of ``reader`` (``None`` when unknown or the frame is
    unreadable), cheaply where the reader allows: ``reader.gt_pose(i)`` (synthetic sequences, views), the
    7-Scenes pose file alone; otherwise the frame is loaded."""
    gt_pose = getattr(reader, "gt_pose", None)
    if callable(gt_pose):
        return gt_pose(source_index)
    read_pose = getattr(reader, "_read_pose", None)  # 7-Scenes: frame-XXXXXX.pose.txt, no image decoding
    if callable(read_pose):
        return read_pose(source_index, [])
    try:
        pose = reader._load(source_index).pose_gt
    except SkipFrame:
        return None
    return None if pose is None else np.asarray(pose, dtype=np.float64).copy()


class ReaderView(FrameReader):
    """Entries ``order`` (default: all, in order) of ``reader``'s full frame list, as a reader.

    Entry ``i`` of the view is entry ``original_indices[i]`` of ``reader``; ``frame.source_index`` is the
    position in the view and ``frame.source`` the original file. Subclasses change frames in
    :meth:`_view_frame`. ``stride``/``max_frames`` apply to the view; ``bad_depth``,
    ``min_valid_depth_fraction`` and ``strict`` default to the wrapped reader's.
    """

    def __init__(self, reader: FrameReader, order: Iterable[int] | None = None, **kwargs) -> None:
        if not isinstance(reader, FrameReader):
            raise DatasetError(f"a reader view needs a FrameReader, got {type(reader).__name__}")
        for key in _POLICY_KEYS:
            kwargs.setdefault(key, getattr(reader, key))
        super().__init__(reader.path, **kwargs)
        n = len(reader._entries)
        idx = np.arange(n) if order is None else np.asarray(list(order), dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise DatasetError("a reader view needs at least one frame")
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise DatasetError(f"frame indices {bad[:5].tolist()} are outside 0..{n - 1} of {reader.path}")
        self.reader = reader
        self.original_indices = idx
        self._entries = idx.tolist()
        self.layout = reader.layout

    # -- pass-through properties ------------------------------------------------------------------------
    @property
    def has_depth(self) -> bool:
        return self.reader.has_depth

    @property
    def has_gt(self) -> bool:
        return self.reader.has_gt

    @property
    def calibrated(self) -> bool:
        return bool(getattr(self.reader, "calibrated", True))

    @property
    def K(self) -> np.ndarray | None:
        return getattr(self.reader, "K", None)

    # -- frames ----------------------------------------------------------------------------------------
    def original_index(self, source_index: int) -> int:
        """Index in the wrapped reader's full frame list of the view's entry ``source_index``."""
        return int(self.original_indices[source_index])

    def _entry_path(self, source_index: int) -> str:
        return self.reader._entry_path(self.original_index(source_index))

    def _view_frame(self, source_index: int, frame: Frame) -> Frame:
        """The view's frame ``source_index`` made from the wrapped reader's ``frame`` (identity here)."""
        return frame

    def _load(self, source_index: int) -> Frame:
        frame = self._view_frame(source_index, self.reader._load(self.original_index(source_index)))
        return Frame(**{**frame.__dict__, "index": int(source_index), "source_index": int(source_index)})

    def __getitem__(self, source_index: int) -> Frame:
        """Entry ``source_index`` of the view (no stride, no checks; :class:`SkipFrame` if unreadable)."""
        source_index = int(source_index)
        if not 0 <= source_index < len(self._entries):
            raise IndexError(f"frame {source_index} outside 0..{len(self._entries) - 1}")
        return self._load(source_index)

    def gt_pose(self, source_index: int) -> np.ndarray | None:
        """Ground-truth ``T_WC`` of the view's entry ``source_index`` (see :func:`entry_pose`)."""
        return entry_pose(self.reader, self.original_index(source_index))


class ReorderedSequence(ReaderView):
    """``reader``'s frames in the order ``order`` (indices into its full frame list; repeats and jumps
    allowed: a kidnapped camera, a revisit), re-timed so the pipeline accepts them: entry ``k`` gets the
    timestamp ``t0 + k / fps`` (``fps`` defaults to the reader's, else 30 Hz). Ground truth, intrinsics and
    images are those of the original frames; :meth:`original_index` maps back and
    :meth:`gt_trajectory` gives the poses at the new timestamps."""

    def __init__(
        self, reader: FrameReader, order: Iterable[int], fps: float | None = None, t0: float = 0.0, **kwargs
    ) -> None:
        super().__init__(reader, order, **kwargs)
        self.fps = float(fps if fps is not None else getattr(reader, "fps", None) or 30.0)
        if not self.fps > 0:
            raise DatasetError(f"fps must be positive, got {self.fps}")
        self.timestamps = float(t0) + np.arange(len(self._entries), dtype=np.float64) / self.fps

    def _view_frame(self, source_index: int, frame: Frame) -> Frame:
        return Frame(**{**frame.__dict__, "timestamp": float(self.timestamps[source_index])})

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(timestamps, T_WC)`` of every entry of the view with a known pose, at the view's timestamps."""
        if not self.has_gt:
            return None
        ts, Ts = [], []
        for k in range(len(self._entries)):
            T = self.gt_pose(k)
            if T is not None and np.all(np.isfinite(T)):
                ts.append(self.timestamps[k])
                Ts.append(np.asarray(T, dtype=np.float64))
        if not ts:
            return None
        return np.asarray(ts), np.stack(Ts)
