"""Plain folder of images: naturally sorted, no depth, no ground truth; intrinsics optional.

K comes from the ``intrinsics`` argument, else from ``intrinsics.txt`` / ``camera-intrinsics.txt`` /
``calibration.txt`` in the folder (3x3 matrix or ``fx fy cx cy``), else it is ``None`` (uncalibrated:
``Frame.K is None`` and ``reader.calibrated is False``). Timestamps are ``i / fps`` (30 Hz).
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, Frame, SkipFrame
from .imageio import is_image_file
from .intrinsics import read_K_file
from .readers_common import RGBDReaderBase, natural_key

K_FILE_NAMES = ("intrinsics.txt", "camera-intrinsics.txt", "calibration.txt")


class ImageFolderReader(RGBDReaderBase):
    layout = "images"

    def __init__(self, path: str | Path, intrinsics=None, fps: float = 30.0, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self._init_frame_folder(fps)
        files = sorted(
            (p for p in self.path.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name)
        )
        if not files:
            raise DatasetError(f"{self.path}: no image files")
        self._entries = files
        K = None
        if intrinsics is None:
            for name in K_FILE_NAMES:
                if (self.path / name).exists():
                    K = read_K_file(self.path / name)
                    break
        self._init_geometry(K, intrinsics, files[0])

    def _load(self, source_index: int) -> Frame:
        path = self._entries[source_index]
        if not path.exists():
            raise SkipFrame("image is missing", path)
        return self._make_frame(source_index, source_index / self.fps, path, None, None, [])
