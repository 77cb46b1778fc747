"""Private helpers shared by the converters: byte buffers of ``uint8[]`` fields and message headers."""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from online3r_ros.ros.errors import ConversionError
from online3r_ros.ros.time import ns_to_stamp, sec_to_stamp


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


def make_header(frame_id: str = "", stamp: Any = None, header: Any = None) -> Any:
    """``std_msgs/Header`` from a frame id and a stamp.

    Args:
        frame_id: the header's frame id (ignored when ``header`` is given).
        stamp: ``None`` (zero time), a ``builtin_interfaces/Time`` message, integer nanoseconds, or float
            seconds.
        header: an existing header, returned unchanged (lets callers forward an input image's header).
    """
    if header is not None:
        return header
    from std_msgs.msg import Header

    if stamp is None:
        stamp_msg = ns_to_stamp(0)
    elif isinstance(stamp, (bool, np.bool_)):
        raise ConversionError("stamp must be a Time message, int nanoseconds or float seconds", stamp=stamp)
    elif isinstance(stamp, (int, np.integer)):
        stamp_msg = ns_to_stamp(int(stamp))
    elif isinstance(stamp, (float, np.floating)):
        stamp_msg = sec_to_stamp(float(stamp))
    else:
        stamp_msg = stamp
    return Header(frame_id=str(frame_id), stamp=stamp_msg)
