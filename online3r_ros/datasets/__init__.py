"""Dataset readers behind one lazy interface (see :mod:`online3r_ros.datasets.base` for the conventions).

Use :func:`open_dataset` to auto-detect the layout::

    reader = open_dataset("../shared/data/7scenes_redkitchen_0000_0499", stride=2, max_frames=100)
    for frame in reader:           # Frame(index, timestamp, rgb, depth, K, pose_gt, source, ...)
        ...
    reader.skipped                 # [SkippedFrame(source_index, path, reason)] of dropped frames
    reader.gt_trajectory()         # (timestamps, T_WC) reference for evaluation, or None
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    BAD_DEPTH_POLICIES,
    DatasetError,
    Frame,
    FrameReader,
    IntrinsicsError,
    SequenceInfo,
    SkipFrame,
    SkippedFrame,
)
from .image_folder import ImageFolderReader
from .imageio import is_image_file
from .intrinsics import (
    TUM_INTRINSICS,
    as_K,
    make_K,
    parse_intrinsics,
    read_K_file,
    scale_K,
    validate_intrinsics,
)
from .seven_scenes import SevenScenesReader, find_seven_scenes_frames
from .tum import TumKeyframesReader, TumReader, associate_timestamps

LAYOUTS = {
    "7scenes": SevenScenesReader,
    "tum": TumReader,
    "tum_keyframes": TumKeyframesReader,
    "images": ImageFolderReader,
}


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (a key of :data:`LAYOUTS`); :class:`DatasetError` when unknown."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: does not exist")
    if not path.is_dir():
        raise DatasetError(f"{path}: expected a dataset folder, got a file")
    if (path / "rgb.txt").exists():
        return "tum"
    if (path / "raw_imgs").is_dir():
        return "tum_keyframes"
    if find_seven_scenes_frames(path):
        return "7scenes"
    if any(is_image_file(p) for p in path.iterdir()):
        return "images"
    seqs = sorted(p.name for p in path.iterdir() if p.is_dir() and find_seven_scenes_frames(p))
    if seqs:
        raise DatasetError(f"{path}: holds several sequences {seqs[:5]}; pass one of them")
    raise DatasetError(
        f"{path}: unknown dataset layout (expected TUM rgb.txt, 7-Scenes frame-XXXXXX.color.*, "
        "raw_imgs/ + depth_imgs/, or a folder of images)"
    )


def open_dataset(
    path: str | Path,
    intrinsics=None,
    stride: int = 1,
    max_frames: int | None = None,
    *,
    layout: str | None = None,
    **kwargs,
) -> FrameReader:
    """Open a dataset folder, auto-detecting its layout (or forcing ``layout``).

    ``intrinsics``: ``"fx,fy,cx,cy"`` string, 4 numbers or a 3x3 K; overrides the dataset's own.
    ``stride``/``max_frames``: take every ``stride``-th frame, at most ``max_frames`` of them.
    Other keyword arguments go to the reader: ``bad_depth`` ("skip" | "keep" | "drop" frames whose depth has
    no/too few valid pixels), ``min_valid_depth_fraction``, ``strict`` (raise instead of skipping), ``fps``
    (7-Scenes / image folders), ``max_difference`` (TUM association, s).
    """
    name = layout or detect_layout(path)
    if name not in LAYOUTS:
        raise DatasetError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name](path, intrinsics=intrinsics, stride=stride, max_frames=max_frames, **kwargs)


__all__ = [
    "BAD_DEPTH_POLICIES",
    "LAYOUTS",
    "DatasetError",
    "Frame",
    "FrameReader",
    "ImageFolderReader",
    "IntrinsicsError",
    "SequenceInfo",
    "SevenScenesReader",
    "SkipFrame",
    "SkippedFrame",
    "TUM_INTRINSICS",
    "TumKeyframesReader",
    "TumReader",
    "as_K",
    "associate_timestamps",
    "detect_layout",
    "make_K",
    "open_dataset",
    "parse_intrinsics",
    "read_K_file",
    "scale_K",
    "validate_intrinsics",
]
