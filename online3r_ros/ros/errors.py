"""Typed exceptions raised by the ROS message conversion layer.

Every conversion validates its input and raises a subclass of :class:`ConversionError` naming the offending
fields and their values (``err.fields`` holds them as a dict), so bad input never produces silently wrong
arrays. ``ConversionError`` derives from ``ValueError`` so generic ``except ValueError`` handlers still
catch it.

This module has no ROS dependency.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CameraInfoError",
    "CompressedImageError",
    "ConversionError",
    "EncodingError",
    "ImageLayoutError",
    "InvalidDepthError",
    "PointCloudError",
    "PoseError",
    "RosDependencyError",
    "ScaleError",
    "StampError",
]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConversionError(ValueError):
    """Base class: a message or array could not be converted.

    Args:
        reason: what is wrong, in words.
        **fields: offending field names (dotted message paths such as ``"K[0]"`` are passed via a dict
            unpacking) and their values; they are listed in the message and kept in ``self.fields``.
    """

    def __init__(self, reason: str, **fields: Any) -> None:
        self.reason = reason
        self.fields: dict[str, Any] = dict(fields)
        if fields:
            listed = ", ".join(f"{name}={_short(value)}" for name, value in fields.items())
            super().__init__(f"{reason} ({listed})")
        else:
            super().__init__(reason)


class EncodingError(ConversionError):
    """Unknown or unsupported ``encoding``/``format`` string, or an array whose dtype/channels don't match."""


class ImageLayoutError(ConversionError):
    """Image sizes, ``step`` or data length are inconsistent (size <= 0, short step, wrong length)."""


class InvalidDepthError(ConversionError):
    """A depth image holds NaN/inf or negative values and the caller did not opt in to masking them."""


class CompressedImageError(ConversionError):
    """A ``CompressedImage`` payload could not be decoded (corrupt data, bad compressedDepth header)."""


class CameraInfoError(ConversionError):
    """``CameraInfo`` is unusable: fx/fy not positive, unknown distortion model, wrong coefficient count,
    or a size that disagrees with the image."""


class PointCloudError(ConversionError):
    """``PointCloud2`` layout or input arrays are inconsistent (shapes, fields, point_step, row_step)."""


class PoseError(ConversionError):
    """A pose is invalid: NaN/inf values, non-unit quaternion, non-orthonormal rotation, bad matrix shape."""


class ScaleError(PoseError):
    """A Sim(3) pose with scale != 1 was given where only a rigid pose fits (use ``split_sim3`` first)."""


class StampError(ConversionError):
    """A time stamp is negative, NaN/inf or out of the ``builtin_interfaces/Time`` range."""


class RosDependencyError(ImportError):
    """A ROS 2 Python package needed for this call (e.g. ``tf2_msgs``) is not importable."""
