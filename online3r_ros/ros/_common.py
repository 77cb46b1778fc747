"""Private helpers shared by the converters: ``uint8[]`` byte buffers, message construction, headers."""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from online3r_ros.ros.errors import ConversionError
from online3r_ros.ros.time import make_header  # noqa: F401  (re-exported for the converters)


def as_uint8_buffer(data: Any, field: str = "data") -> np.ndarray:
    """Zero-copy ``uint8`` 1-D view of a message's ``uint8[]`` field.

    Accepts what the message libraries hand out: ``array.array('B')`` (rclpy), ``numpy`` arrays (rosbags),
    ``bytes``/``bytearray``/``memoryview``; a plain list is converted (and range-checked).
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ConversionError(f"'{field}' must hold uint8 bytes", **{f"{field}.dtype": str(data.dtype)})
        return data.reshape(-1)
    if isinstance(data, (array.array, bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    values = np.asarray(data)
    if values.size and (values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255):
        raise ConversionError(
            f"'{field}' must hold integers in [0, 255]", **{f"{field}.dtype": str(values.dtype)}
        )
    return values.astype(np.uint8).reshape(-1)


def to_byte_array(values: np.ndarray) -> array.array:
    """``array.array('B')`` holding the raw bytes of ``values`` (one copy), the type rclpy stores."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8).data)
    return out


def new_message(cls: type) -> Any:
    """A message instance whose ``uint8[]`` setter stores an ``array.array('B')`` without copying it.

    rclpy (Jazzy and later) copies ``array.array`` values in the setter unless the message was built with
    ``check_fields=True`` (then it only type-checks and keeps the array): for an 80 MB cloud that copy costs
    more than the packing. Older generators (Humble) reject the keyword and always keep the array.
    """
    try:
        return cls(check_fields=True)
    except (AssertionError, TypeError):
        return cls()
