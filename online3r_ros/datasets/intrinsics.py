"""Pinhole intrinsics: parsing (``--intrinsics fx,fy,cx,cy``), K files, validation against the image size."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import IntrinsicsError

# TUM RGB-D Kinect calibrations of the colour camera (640x480), from the dataset's calibration page
# (the same values MASt3R-SLAM hard-codes). fr3 images are already undistorted; fr1/fr2 images are
# undistorted by the TUM reader (see TumReader(undistort=...)).
TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
}
# Radial-tangential distortion (k1, k2, p1, p2, k3) of the same calibrations; fr3 images are undistorted.
TUM_DISTORTION: dict[str, tuple[float, float, float, float, float]] = {
    "fr1": (0.2624, -0.9531, -0.0054, 0.0026, 1.1633),
    "fr2": (0.2312, -0.7849, -0.0033, -0.0001, 0.9172),
}
TUM_IMAGE_SIZE = (640, 480)
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)


def make_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``float64 [3, 3]`` pinhole matrix from its four parameters (no skew)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def parse_intrinsics(text: str) -> np.ndarray:
    """Parse ``"fx,fy,cx,cy"`` (commas and/or spaces) into K, checking finiteness and positive focal lengths.

    Raises :class:`IntrinsicsError` naming the offending value. The principal point is checked against the
    image size later (:func:`validate_intrinsics`), when the size is known.
    """
    if not isinstance(text, str):
        raise IntrinsicsError(f"intrinsics must be a string 'fx,fy,cx,cy', got {type(text).__name__}")
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if len(parts) != 4:
        raise IntrinsicsError(f"intrinsics must be 4 numbers 'fx,fy,cx,cy', got {len(parts)} in {text!r}")
    names = ("fx", "fy", "cx", "cy")
    values = []
    for name, part in zip(names, parts, strict=True):
        try:
            v = float(part)
        except ValueError as exc:
            raise IntrinsicsError(f"intrinsics {name}={part!r} is not a number (in {text!r})") from exc
        if not np.isfinite(v):
            raise IntrinsicsError(f"intrinsics {name}={part!r} is not finite (in {text!r})")
        values.append(v)
    K = make_K(*values)
    check_K(K, source=repr(text))
    return K


def as_K(value: str | np.ndarray | tuple | list) -> np.ndarray:
    """Accept ``"fx,fy,cx,cy"``, a 4-sequence or a 3x3 matrix; return a checked ``float64 [3, 3]`` K."""
    if isinstance(value, str):
        return parse_intrinsics(value)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (4,):
        K = make_K(*arr.tolist())
    elif arr.shape == (3, 3):
        K = arr.copy()
    else:
        raise IntrinsicsError(
            f"intrinsics must be 'fx,fy,cx,cy', 4 numbers or a 3x3 K, got shape {arr.shape}"
        )
    check_K(K, source="intrinsics argument")
    return K


def check_K(K: np.ndarray, source: str = "K") -> None:
    """Structural checks: shape 3x3, finite, positive focal lengths, last row ``[0, 0, 1]``, no skew."""
    K = np.asarray(K)
    if K.shape != (3, 3):
        raise IntrinsicsError(f"{source}: K must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise IntrinsicsError(f"{source}: K has non-finite entries: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError(f"{source}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or abs(K[1, 0]) > 0 or abs(K[0, 1]) > 1e-9 * K[0, 0]:
        raise IntrinsicsError(f"{source}: K must be [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")


def validate_intrinsics(K: np.ndarray, width: int, height: int, source: str = "K") -> None:
    """Check K against an image of ``width x height``: the principal point must lie inside the image.

    A principal point outside the image almost always means intrinsics for another resolution (e.g. 640x480
    values used on 320x240 images); the error says so.
    """
    check_K(K, source)
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0.0 <= cx <= width - 1 and 0.0 <= cy <= height - 1):
        raise IntrinsicsError(
            f"{source}: principal point (cx={cx}, cy={cy}) is outside the {width}x{height} image; "
            "are these intrinsics for another image size?"
        )


def read_K_file(path: str | Path) -> np.ndarray:
    """Read a whitespace-separated 3x3 matrix (e.g. 7-Scenes ``camera-intrinsics.txt``)."""
    path = Path(path)
    try:
        arr = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise IntrinsicsError(f"{path}: cannot read a 3x3 intrinsics matrix ({exc})") from exc
    if arr.shape == (9,):
        arr = arr.reshape(3, 3)
    if arr.shape == (4,):
        arr = make_K(*arr.tolist())
    if arr.shape != (3, 3):
        raise IntrinsicsError(f"{path}: expected a 3x3 matrix, got shape {arr.shape}")
    check_K(arr, source=str(path))
    return arr


def scale_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics after resizing an image by ``(sx, sy)`` with pixel centres at integer coordinates."""
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def tum_intrinsics_for(path: str | Path) -> tuple[str, np.ndarray] | None:
    """Pick TUM fr1/fr2/fr3 intrinsics from a folder name (``freiburgN`` or ``frN`` in any path component)."""
    text = str(Path(path).resolve()).lower()
    for pattern in (r"freiburg([123])", r"(?<![a-z0-9])fr([123])(?![0-9])"):
        hits = re.findall(pattern, text)
        if hits:
            key = f"fr{hits[-1]}"
            return key, make_K(*TUM_INTRINSICS[key])
    return None
