"""``sensor_msgs/Image`` <-> numpy, with row padding (``step``), byte order and depth semantics.

Supported encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``, ``mono16`` and the generic
OpenCV-style ``{8U,8S,16U,16S,32S,32F,64F}C{1..4}`` family (``16UC1`` = depth in millimetres, ``32FC1`` =
depth in metres, ``32FC3`` = e.g. a pointmap). Anything else (bayer, yuv422, ...) raises
:class:`EncodingError`.

Arrays are ``[H, W]`` for one channel and ``[H, W, C]`` otherwise, always in native byte order; channel order
is the encoding's (``bgr8`` stays BGR; use :func:`image_to_rgb8` for RGB).

Depth: :func:`image_to_numpy` is a raw decoder and returns NaN/inf of a ``32FC1`` image unchanged. Code that
means depth calls :func:`depth_image_to_metres`, whose policy is:

* ``invalid="raise"`` (default): any NaN, +-inf or negative depth raises :class:`InvalidDepthError` naming the
  count and the first offending pixel;
* ``invalid="zero"``: those pixels become ``0.0``, the ROS convention for "no measurement" (as in ``16UC1``).

``16UC1``/``mono16`` depth is millimetres with 0 = no measurement, returned as float32 metres.

Reading functions are duck-typed (rclpy and ``rosbags`` messages both work); building a message imports
``sensor_msgs`` lazily.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Literal

import numpy as np

from online3r_ros.ros._common import as_uint8_buffer, make_header, new_message, to_byte_array
from online3r_ros.ros.errors import EncodingError, ImageLayoutError, InvalidDepthError

__all__ = [
    "DEPTH_ENCODINGS",
    "EncodingInfo",
    "depth_image_to_metres",
    "depth_to_metres",
    "encoding_info",
    "image_to_numpy",
    "image_to_rgb8",
    "metres_to_depth_image",
    "numpy_to_image",
]

InvalidDepthPolicy = Literal["raise", "zero"]

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")

_NAMED = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
}
_GENERIC = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")
_GENERIC_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}


class EncodingInfo:
    """Element dtype (native order) and channel count of an image encoding."""

    __slots__ = ("channels", "dtype", "name")

    def __init__(self, name: str, dtype: np.dtype, channels: int) -> None:
        self.name = name
        self.dtype = dtype
        self.channels = channels

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels

    def __repr__(self) -> str:
        return f"EncodingInfo({self.name!r}, dtype={self.dtype}, channels={self.channels})"


def encoding_info(encoding: str) -> EncodingInfo:
    """Dtype and channels of ``encoding``; raises :class:`EncodingError` for unknown encodings."""
    if encoding in _NAMED:
        code, channels = _NAMED[encoding]
        return EncodingInfo(encoding, np.dtype(code), channels)
    match = _GENERIC.match(encoding) if isinstance(encoding, str) else None
    if match is None:
        supported = sorted(_NAMED) + ["{8U,8S,16U,16S,32S,32F,64F}C{1..4}"]
        raise EncodingError(
            f"unsupported image encoding; supported: {', '.join(supported)}", encoding=encoding
        )
    return EncodingInfo(encoding, np.dtype(_GENERIC_DTYPES[match.group(1)]), int(match.group(2)))


def _check_positive_sizes(height: Any, width: Any) -> tuple[int, int]:
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ImageLayoutError("image height and width must be positive", height=height, width=width)
    return height, width


def image_to_numpy(msg: Any, *, copy: bool = True) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` as a numpy array in native byte order.

    Args:
        msg: the image message (anything with ``height, width, encoding, is_bigendian, step, data``).
        copy: ``True`` (default) returns a fresh C-contiguous array. ``False`` returns a read-only view of the
            message's buffer where possible (native order, any padding kept as strides).

    Returns:
        ``[H, W]`` for single-channel encodings, ``[H, W, C]`` otherwise; dtype per :func:`encoding_info`.

    Raises:
        EncodingError: unknown encoding.
        ImageLayoutError: non-positive height/width, ``step < width * bytes_per_pixel``, or
            ``len(data) != height * step``.
    """
    info = encoding_info(msg.encoding)
    height, width = _check_positive_sizes(msg.height, msg.width)
    step = int(msg.step)
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageLayoutError(
            "step is smaller than width * bytes_per_pixel",
            step=step,
            width=width,
            bytes_per_pixel=info.bytes_per_pixel,
            encoding=msg.encoding,
        )
    buf = as_uint8_buffer(msg.data)
    if buf.size != height * step:
        raise ImageLayoutError(
            "data length disagrees with height * step",
            data_length=int(buf.size),
            height=height,
            step=step,
            expected=height * step,
        )
    stored = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    itemsize = info.dtype.itemsize
    view = np.ndarray(
        (height, width, info.channels),
        dtype=stored,
        buffer=buf,
        strides=(step, info.bytes_per_pixel, itemsize),
    )
    if stored.isnative or itemsize == 1:
        out = np.array(view, dtype=info.dtype, order="C") if copy else view.view(info.dtype)
    else:
        out = view.astype(info.dtype, order="C")  # byte swap always copies
    if not out.flags.owndata and out.flags.writeable:
        out.flags.writeable = False
    return out[..., 0] if info.channels == 1 else out


def numpy_to_image(
    array: np.ndarray,
    encoding: str,
    *,
    frame_id: str = "",
    stamp: Any = None,
    header: Any = None,
    step: int | None = None,
    is_bigendian: bool | None = None,
) -> Any:
    """Build a ``sensor_msgs/Image`` from pixels.

    Args:
        array: ``[H, W]`` or ``[H, W, C]`` with ``C`` the encoding's channel count. Integer encodings need the
            exact dtype (no silent re-scaling); float encodings accept any float dtype (cast).
        encoding: target encoding (see :func:`encoding_info`).
        frame_id, stamp, header: see :func:`online3r_ros.ros.time.make_header`.
        step: row length in bytes; default ``W * bytes_per_pixel``; larger values pad each row with zeros.
        is_bigendian: byte order of ``data``; default the host's.

    Raises:
        EncodingError: unknown encoding, wrong dtype or channel count.
        ImageLayoutError: empty image or ``step`` too small.
    """
    from sensor_msgs.msg import Image

    info = encoding_info(encoding)
    values = np.asarray(array)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[2] != info.channels:
        raise EncodingError(
            f"array shape does not fit encoding ({info.channels} channel(s))",
            shape=tuple(np.shape(array)),
            encoding=encoding,
        )
    if values.dtype != info.dtype and not (info.dtype.kind == "f" and values.dtype.kind == "f"):
        raise EncodingError("array dtype does not fit encoding", dtype=str(values.dtype), encoding=encoding)
    height, width = _check_positive_sizes(values.shape[0], values.shape[1])
    row_bytes = width * info.bytes_per_pixel
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageLayoutError(
            "step is smaller than width * bytes_per_pixel", step=step, width=width, encoding=encoding
        )
    big = sys.byteorder == "big" if is_bigendian is None else bool(is_bigendian)
    stored = values.astype(info.dtype.newbyteorder(">" if big else "<"), copy=False)
    pixels = np.ascontiguousarray(stored).reshape(height, row_bytes // info.dtype.itemsize)
    if step == row_bytes:
        raw = pixels.view(np.uint8)
    else:
        raw = np.zeros((height, step), dtype=np.uint8)
        raw[:, :row_bytes] = pixels.view(np.uint8)
    msg = new_message(Image)
    msg.header = make_header(frame_id, stamp, header)
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(big)
    msg.step = step
    msg.data = to_byte_array(raw)
    return msg


def image_to_rgb8(msg: Any) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB from rgb8/bgr8/rgba8/bgra8/mono8/mono16 images (alpha dropped, mono16 >> 8).

    Raises:
        EncodingError: any other encoding (the channel order of generic ``8UC3`` is unknown).
    """
    encoding = msg.encoding
    if encoding not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"):
        raise EncodingError("cannot interpret encoding as colour", encoding=encoding)
    pixels = image_to_numpy(msg, copy=False)
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    if encoding in ("mono8", "mono16"):
        return np.repeat(pixels[..., None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(pixels[..., :3])


def depth_to_metres(depth: np.ndarray, encoding: str, *, invalid: InvalidDepthPolicy = "raise") -> np.ndarray:
    """float32 metres from a raw depth array (``16UC1``/``mono16`` millimetres or ``32FC1`` metres).

    0 means "no measurement" in both encodings. NaN, +-inf and negative values follow ``invalid``
    (``"raise"``: :class:`InvalidDepthError`; ``"zero"``: set to 0).
    """
    if invalid not in ("raise", "zero"):
        raise ValueError(f"invalid must be 'raise' or 'zero', got {invalid!r}")
    if encoding in ("16UC1", "mono16"):
        if depth.dtype != np.uint16:
            raise EncodingError("millimetre depth must be uint16", dtype=str(depth.dtype), encoding=encoding)
        return depth.astype(np.float32) * np.float32(1e-3)
    if encoding != "32FC1":
        raise EncodingError(f"not a depth encoding; expected one of {DEPTH_ENCODINGS}", encoding=encoding)
    metres = np.array(depth, dtype=np.float32, copy=True)
    bad = ~(metres >= 0)  # catches NaN too
    bad |= np.isinf(metres)
    if bad.any():
        if invalid == "raise":
            rows, cols = np.nonzero(bad)
            raise InvalidDepthError(
                "depth holds NaN/inf/negative values; pass invalid='zero' to mask them as 'no measurement'",
                count=int(bad.sum()),
                first_pixel=(int(rows[0]), int(cols[0])),
                first_value=float(metres[rows[0], cols[0]]),
            )
        metres[bad] = 0.0
    return metres


def depth_image_to_metres(msg: Any, *, invalid: InvalidDepthPolicy = "raise") -> np.ndarray:
    """float32 ``[H, W]`` metres from a ``16UC1``/``mono16``/``32FC1`` Image (see the module docstring)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise EncodingError(f"not a depth encoding; expected one of {DEPTH_ENCODINGS}", encoding=msg.encoding)
    return depth_to_metres(image_to_numpy(msg, copy=False), msg.encoding, invalid=invalid)


def metres_to_depth_image(
    depth_m: np.ndarray,
    encoding: str = "32FC1",
    *,
    invalid: InvalidDepthPolicy = "raise",
    frame_id: str = "",
    stamp: Any = None,
    header: Any = None,
) -> Any:
    """Depth Image (``32FC1`` metres or ``16UC1`` millimetres, rounded) from float depth in metres.

    NaN/inf/negative input follows ``invalid``; for ``16UC1`` depths beyond 65.535 m raise
    :class:`InvalidDepthError` (they cannot be represented).
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ImageLayoutError("depth must be [H, W]", shape=tuple(depth.shape))
    metres = depth_to_metres(depth.astype(np.float32, copy=False), "32FC1", invalid=invalid)
    if encoding == "32FC1":
        return numpy_to_image(metres, "32FC1", frame_id=frame_id, stamp=stamp, header=header)
    if encoding != "16UC1":
        raise EncodingError("depth images are published as 32FC1 or 16UC1", encoding=encoding)
    millimetres = np.rint(metres.astype(np.float64) * 1000.0)
    too_far = millimetres > np.iinfo(np.uint16).max
    if too_far.any():
        raise InvalidDepthError(
            "depth beyond 65.535 m cannot be stored as 16UC1 millimetres",
            count=int(too_far.sum()),
            max_depth_m=float(metres.max()),
        )
    return numpy_to_image(
        millimetres.astype(np.uint16), "16UC1", frame_id=frame_id, stamp=stamp, header=header
    )
