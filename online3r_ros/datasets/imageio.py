"""Image loading helpers shared by the readers: RGB uint8, depth in metres with 0 = invalid.

Errors are raised as :class:`~online3r_ros.datasets.base.SkipFrame` with the offending path, so readers drop
the frame and record why instead of crashing or yielding garbage.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .base import SkipFrame

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise SkipFrame("file is missing", path) from exc
    except OSError as exc:
        raise SkipFrame(f"file is unreadable ({exc.strerror or exc})", path) from exc
    if data.size == 0:
        raise SkipFrame("file is empty", path)
    return data


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image as ``uint8 [H, W, 3]`` RGB. Grey images are replicated to 3 channels."""
    path = Path(path)
    img = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SkipFrame("image cannot be decoded (corrupt or unsupported format)", path)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise SkipFrame(f"unsupported colour image dtype {img.dtype}", path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise SkipFrame(f"unsupported number of channels {img.shape[2]}", path)
    return np.ascontiguousarray(img)


def read_depth_png(
    path: str | Path, scale: float, invalid_values: tuple[int, ...] = (0,)
) -> tuple[np.ndarray, int]:
    """Read a 16-bit depth PNG and convert it to metres (``float32 [H, W]``, 0 = invalid).

    ``scale``: raw units per metre (1000 for millimetres, 5000 for TUM). ``invalid_values`` are raw codes
    meaning "no data" (e.g. 65535 in 7-Scenes). Returns ``(depth, n_nonfinite)``; float depth images (e.g. a
    32-bit TIFF in metres when ``scale == 1``) are accepted and their NaN/inf pixels zeroed and counted.
    """
    path = Path(path)
    raw = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise SkipFrame("depth image cannot be decoded (corrupt or unsupported format)", path)
    if raw.ndim != 2:
        raise SkipFrame(f"depth image must have one channel, got shape {tuple(raw.shape)}", path)
    if raw.dtype in (np.uint16, np.uint8, np.int32):
        invalid = np.isin(raw, np.asarray(invalid_values, dtype=raw.dtype)) if invalid_values else None
        depth = raw.astype(np.float32) / np.float32(scale)
        if invalid is not None:
            depth[invalid] = 0.0
        return depth, 0
    if raw.dtype in (np.float32, np.float64):
        depth, n_bad = sanitize_depth(raw.astype(np.float32) / np.float32(scale))
        return depth, n_bad
    raise SkipFrame(f"unsupported depth dtype {raw.dtype}", path)


def sanitize_depth(depth: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero every non-finite or negative depth value. Returns ``(float32 depth, number of non-finite)``."""
    depth = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(depth)
    n_nonfinite = int(depth.size - np.count_nonzero(finite))
    bad = ~finite | (depth < 0)
    if bad.any():
        depth = np.where(bad, np.float32(0.0), depth)
    return depth, n_nonfinite


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of an image from its header only, or ``None`` if it cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - any failure means "unknown"; the frame load reports the real error
        return None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
