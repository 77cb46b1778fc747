"""``sensor_msgs/CompressedImage`` <-> numpy: jpeg/png (``compressed``) and ``compressedDepth``.

``format`` strings understood (as written by ``compressed_image_transport`` and
``compressed_depth_image_transport``):

* ``"jpeg"``, ``"png"`` (bare, old style), ``"<orig>; jpeg compressed <target>"``, ``"<orig>; png compressed
  <target>"``. OpenCV decodes colour into BGR(A) order; :func:`compressed_image_to_numpy` reports the decoded
  encoding and can convert to ``rgb8``/``bgr8``/``mono8``.
* ``"<orig>; compressedDepth png"`` or ``"<orig>; compressedDepth"`` (png implied), ``orig`` = ``16UC1`` or
  ``32FC1``. The payload is a 12-byte header -- little-endian ``int32`` format enum (0 = ``INV_DEPTH``) and
  two ``float32`` quantisation parameters ``A, B`` -- followed by a 16-bit single-channel PNG:

  - ``16UC1``: the PNG holds the raw millimetre depth (0 = no measurement); ``A, B`` are unused.
  - ``32FC1``: the PNG holds quantised inverse depth ``q = uint16(A / d + B)`` with ``A = z0 (z0 + 1)``,
    ``B = 1 - A / depth_max`` (upstream defaults ``z0 = 100``, ``depth_max = 10`` m); decoding is
    ``d = A / (q - B)`` and ``q == 0`` means no measurement (NaN, as upstream decodes it).

  ``compressedDepth rvl`` is not supported (raises :class:`EncodingError`).
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

from online3r_ros.ros._common import as_uint8_buffer, make_header, new_message, to_byte_array
from online3r_ros.ros.errors import CompressedImageError, EncodingError, ImageLayoutError
from online3r_ros.ros.image import encoding_info

__all__ = [
    "COMPRESSED_DEPTH_HEADER",
    "compressed_depth_to_numpy",
    "compressed_image_to_numpy",
    "numpy_to_compressed_depth",
    "numpy_to_compressed_image",
]

#: Layout of the compressedDepth header: int32 format enum, float32 depthParam[2] (little endian, no padding).
COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")
_INV_DEPTH = 0
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _split_format(fmt: str) -> tuple[str, str]:
    """(original encoding or "", rest lowercased) of a CompressedImage ``format`` string."""
    if ";" in fmt:
        orig, rest = fmt.split(";", 1)
        return orig.strip(), rest.strip().lower()
    return "", fmt.strip().lower()


def _container(payload: bytes, fmt: str) -> str:
    if payload.startswith(_JPEG_MAGIC):
        return "jpeg"
    if payload.startswith(_PNG_MAGIC):
        return "png"
    raise CompressedImageError("payload is neither JPEG nor PNG", format=fmt, first_bytes=payload[:8].hex())


def _decode(payload: np.ndarray, fmt: str) -> np.ndarray:
    image = cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise CompressedImageError("image payload could not be decoded (corrupt data)", format=fmt)
    return image


def compressed_image_to_numpy(msg: Any, desired_encoding: str = "passthrough") -> tuple[np.ndarray, str]:
    """Decode a jpeg/png ``CompressedImage`` (``compressedDepth`` is delegated to
    :func:`compressed_depth_to_numpy`).

    Args:
        msg: anything with ``format`` and ``data``.
        desired_encoding: ``"passthrough"`` (keep what the codec produced) or ``"rgb8"``, ``"bgr8"``,
            ``"mono8"`` (8-bit images only).

    Returns:
        ``(pixels, encoding)``: ``[H, W]`` or ``[H, W, C]`` and its encoding (``bgr8``, ``bgra8``, ``mono8``,
        ``mono16``/``16UC1`` for 16-bit PNGs, or the requested one).

    Raises:
        EncodingError: unknown ``format`` or ``desired_encoding``.
        CompressedImageError: empty/corrupt payload or a payload that disagrees with the declared format.
    """
    fmt = str(msg.format)
    orig, rest = _split_format(fmt)
    if "compresseddepth" in rest:
        return compressed_depth_to_numpy(msg)
    declared = "jpeg" if rest.startswith(("jpeg", "jpg")) else "png" if rest.startswith("png") else None
    if declared is None:
        raise EncodingError("unsupported CompressedImage format (expected jpeg or png)", format=fmt)
    payload = as_uint8_buffer(msg.data)
    if payload.size == 0:
        raise CompressedImageError("CompressedImage has no data", format=fmt)
    container = _container(payload[:8].tobytes(), fmt)
    if container != declared:
        raise CompressedImageError("payload container disagrees with format", format=fmt, payload=container)
    pixels = _decode(payload, fmt)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.dtype == np.uint16:
        if channels != 1:
            raise CompressedImageError("16-bit colour images are not supported", format=fmt)
        encoding = orig if orig in ("16UC1", "mono16") else "mono16"
    else:
        encoding = {1: "mono8", 3: "bgr8", 4: "bgra8"}[channels]
    if desired_encoding in ("passthrough", encoding):
        return pixels, encoding
    if pixels.dtype != np.uint8 or desired_encoding not in ("rgb8", "bgr8", "mono8"):
        raise EncodingError(
            "cannot convert decoded image", decoded=encoding, desired_encoding=desired_encoding
        )
    codes = {
        ("mono8", "rgb8"): cv2.COLOR_GRAY2RGB,
        ("mono8", "bgr8"): cv2.COLOR_GRAY2BGR,
        ("bgr8", "rgb8"): cv2.COLOR_BGR2RGB,
        ("bgr8", "mono8"): cv2.COLOR_BGR2GRAY,
        ("bgra8", "rgb8"): cv2.COLOR_BGRA2RGB,
        ("bgra8", "bgr8"): cv2.COLOR_BGRA2BGR,
        ("bgra8", "mono8"): cv2.COLOR_BGRA2GRAY,
    }
    return cv2.cvtColor(pixels, codes[(encoding, desired_encoding)]), desired_encoding


def numpy_to_compressed_image(
    array: np.ndarray,
    encoding: str,
    fmt: str = "jpeg",
    *,
    jpeg_quality: int = 95,
    png_level: int = 3,
    frame_id: str = "",
    stamp: Any = None,
    header: Any = None,
) -> Any:
    """jpeg/png ``CompressedImage`` from ``rgb8``/``bgr8``/``mono8`` (and ``mono16``/``16UC1`` png) pixels.

    The ``format`` string follows image_transport: ``"<encoding>; <fmt> compressed <bgr8|mono8|mono16>"``
    (colour is stored as BGR inside the file, like upstream).
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise EncodingError("fmt must be 'jpeg' or 'png'", fmt=fmt)
    info = encoding_info(encoding)
    pixels = np.asarray(array)
    expected = (pixels.ndim == 2 and info.channels == 1) or (
        pixels.ndim == 3 and pixels.shape[2] == info.channels
    )
    if not expected or pixels.dtype != info.dtype:
        raise EncodingError(
            "array does not fit encoding", shape=pixels.shape, dtype=str(pixels.dtype), encoding=encoding
        )
    if pixels.shape[0] <= 0 or pixels.shape[1] <= 0:
        raise ImageLayoutError("image height and width must be positive", shape=pixels.shape)
    if encoding == "rgb8":
        pixels, target = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), "bgr8"
    elif encoding in ("bgr8", "mono8"):
        target = encoding
    elif encoding in ("mono16", "16UC1") and fmt == "png":
        target = "mono16"
    else:
        raise EncodingError(f"cannot {fmt}-compress this encoding", encoding=encoding)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        if fmt == "jpeg"
        else [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    )
    ok, buffer = cv2.imencode("." + fmt, pixels, params)
    if not ok:
        raise CompressedImageError("OpenCV failed to encode the image", fmt=fmt, encoding=encoding)
    msg = new_message(CompressedImage)
    msg.header = make_header(frame_id, stamp, header)
    msg.format = f"{encoding}; {fmt} compressed {target}"
    msg.data = to_byte_array(buffer)
    return msg


def compressed_depth_to_numpy(msg: Any) -> tuple[np.ndarray, str]:
    """Decode a ``compressedDepth`` png ``CompressedImage``.

    Returns:
        ``(depth, encoding)``: ``uint16 [H, W]`` millimetres for ``16UC1`` (0 = no measurement), or
        ``float32 [H, W]`` metres for ``32FC1`` with NaN where no measurement was stored (as upstream).
        Convert with :func:`online3r_ros.ros.image.depth_to_metres` and an explicit NaN policy.

    Raises:
        EncodingError: not a compressedDepth format, rvl compression, or an original encoding other than
            16UC1/32FC1.
        CompressedImageError: payload shorter than the header, unknown format enum, PNG that is not 16-bit
            single-channel, or non-finite quantisation parameters.
    """
    fmt = str(msg.format)
    orig, rest = _split_format(fmt)
    if not rest.startswith("compresseddepth"):
        raise EncodingError("not a compressedDepth format", format=fmt)
    compression = rest[len("compresseddepth") :].strip() or "png"
    if compression != "png":
        raise EncodingError("only png compressedDepth is supported", format=fmt)
    if orig not in ("16UC1", "32FC1"):
        raise EncodingError("compressedDepth original encoding must be 16UC1 or 32FC1", format=fmt)
    payload = as_uint8_buffer(msg.data)
    header_size = COMPRESSED_DEPTH_HEADER.size
    if payload.size <= header_size:
        raise CompressedImageError(
            "compressedDepth payload shorter than its 12-byte header + PNG", data_length=int(payload.size)
        )
    kind, quant_a, quant_b = COMPRESSED_DEPTH_HEADER.unpack(payload[:header_size].tobytes())
    if kind != _INV_DEPTH:
        raise CompressedImageError(
            "unknown compressedDepth format enum (expected 0 = INV_DEPTH)", format_enum=kind
        )
    image = payload[header_size:]
    if _container(image[:8].tobytes(), fmt) != "png":
        raise CompressedImageError("compressedDepth image is not a PNG", format=fmt)
    decoded = _decode(image, fmt)
    if decoded.dtype != np.uint16 or decoded.ndim != 2:
        raise CompressedImageError(
            "compressedDepth PNG must be 16-bit single channel", dtype=str(decoded.dtype), shape=decoded.shape
        )
    if orig == "16UC1":
        return decoded, "16UC1"
    if not (np.isfinite(quant_a) and np.isfinite(quant_b)) or quant_a == 0:
        raise CompressedImageError(
            "invalid compressedDepth quantisation parameters", depth_quant_a=quant_a, depth_quant_b=quant_b
        )
    inverse = decoded.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (inverse - np.float32(quant_b))
    depth[decoded == 0] = np.nan
    return depth.astype(np.float32, copy=False), "32FC1"


def numpy_to_compressed_depth(
    depth: np.ndarray,
    encoding: str,
    *,
    depth_max: float = 10.0,
    depth_quantization: float = 100.0,
    png_level: int = 1,
    frame_id: str = "",
    stamp: Any = None,
    header: Any = None,
) -> Any:
    """``compressedDepth`` png ``CompressedImage`` with upstream semantics (see module docstring).

    ``16UC1``: ``uint16`` millimetres, values above ``depth_max * 1000`` become 0. ``32FC1``: float metres;
    NaN/inf, non-positive and ``>= depth_max`` depths become "no measurement"; quantised inverse depths above
    65535 (depth closer than ``A / (65535 - B)``) are clipped to 65535.
    """
    from sensor_msgs.msg import CompressedImage

    values = np.asarray(depth)
    if values.ndim != 2 or values.shape[0] <= 0 or values.shape[1] <= 0:
        raise ImageLayoutError("depth must be a non-empty [H, W] array", shape=values.shape)
    if encoding == "16UC1":
        if values.dtype != np.uint16:
            raise EncodingError("16UC1 depth must be uint16", dtype=str(values.dtype))
        limit = int(depth_max * 1000.0)
        quantised = np.where(values > limit, 0, values).astype(np.uint16)
        header_bytes = COMPRESSED_DEPTH_HEADER.pack(_INV_DEPTH, 0.0, 0.0)
    elif encoding == "32FC1":
        if values.dtype.kind != "f":
            raise EncodingError("32FC1 depth must be a float array", dtype=str(values.dtype))
        z0, dmax = np.float32(depth_quantization), np.float32(depth_max)
        quant_a = np.float32(z0 * (z0 + np.float32(1.0)))
        quant_b = np.float32(np.float32(1.0) - quant_a / dmax)
        metres = values.astype(np.float32)
        valid = np.isfinite(metres) & (metres > 0) & (metres < dmax)
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = quant_a / np.where(valid, metres, np.float32(1.0)) + quant_b
        quantised = np.where(valid, np.clip(inverse, 0, 65535), 0).astype(np.uint16)  # truncation, as C++
        header_bytes = COMPRESSED_DEPTH_HEADER.pack(_INV_DEPTH, float(quant_a), float(quant_b))
    else:
        raise EncodingError("compressedDepth needs 16UC1 or 32FC1", encoding=encoding)
    ok, png = cv2.imencode(".png", quantised, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise CompressedImageError("OpenCV failed to encode the depth PNG", encoding=encoding)
    msg = new_message(CompressedImage)
    msg.header = make_header(frame_id, stamp, header)
    msg.format = f"{encoding}; compressedDepth png"
    msg.data = to_byte_array(np.concatenate([np.frombuffer(header_bytes, np.uint8), png.reshape(-1)]))
    return msg
