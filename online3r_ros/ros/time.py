"""Time stamps: ``builtin_interfaces/Time`` <-> integer nanoseconds / float seconds.

Integer nanoseconds are the exact, lossless representation: ``stamp_to_ns(ns_to_stamp(n)) == n`` for every
valid ``n``. Float seconds are a convenience: a float64 near the current epoch (~1.7e9 s) resolves about
0.24 microseconds, so ``sec -> stamp`` rounds to the nearest nanosecond of the float's exact value (no
precision is lost beyond the float itself), but a ``stamp -> sec -> stamp`` round trip can move by up to half
an ulp. Use nanoseconds where exactness matters (keys, trajectory files written with 9 decimals).

Reading functions are duck-typed: they accept anything with ``sec``/``nanosec`` attributes (rclpy messages,
``rosbags`` messages) or ``nanoseconds`` (``rclpy.time.Time``). Building a message imports
``builtin_interfaces`` lazily.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from online3r_ros.ros.errors import StampError

__all__ = [
    "MAX_STAMP_NS",
    "make_header",
    "ns_to_sec",
    "ns_to_stamp",
    "sec_to_ns",
    "sec_to_stamp",
    "stamp_to_ns",
    "stamp_to_sec",
]

NS_PER_SEC = 1_000_000_000
#: ``builtin_interfaces/Time.sec`` is an int32: the largest representable stamp in nanoseconds.
MAX_STAMP_NS = (2**31 - 1) * NS_PER_SEC + NS_PER_SEC - 1


def stamp_to_ns(stamp: Any) -> int:
    """Exact integer nanoseconds of a stamp (``Time`` message, rosbags ``Time`` or ``rclpy.time.Time``)."""
    if hasattr(stamp, "nanoseconds") and not hasattr(stamp, "nanosec"):
        ns = int(stamp.nanoseconds)
        if ns < 0:
            raise StampError("time stamp is negative", nanoseconds=ns)
        return ns
    try:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    except AttributeError as exc:
        raise StampError("object is not a time stamp (needs sec/nanosec)", type=type(stamp).__name__) from exc
    if sec < 0:
        raise StampError("time stamp is negative", sec=sec)
    if not 0 <= nanosec < NS_PER_SEC:
        raise StampError("nanosec must lie in [0, 1e9)", nanosec=nanosec)
    return sec * NS_PER_SEC + nanosec


def stamp_to_sec(stamp: Any) -> float:
    """Float seconds of a stamp (nearest float64 to the exact value)."""
    return ns_to_sec(stamp_to_ns(stamp))


def ns_to_sec(ns: int) -> float:
    """Float seconds from integer nanoseconds, correctly rounded (no intermediate float product)."""
    sec, rem = divmod(int(ns), NS_PER_SEC)
    # True division of Python ints is correctly rounded; sec + rem/1e9 would round twice.
    return (sec * NS_PER_SEC + rem) / NS_PER_SEC


def sec_to_ns(sec: float) -> int:
    """Integer nanoseconds nearest to the exact value of the float ``sec`` (ties to even).

    Raises:
        StampError: ``sec`` is NaN/inf, negative or beyond the int32 range of ``Time.sec``.
    """
    value = float(sec)
    if not math.isfinite(value):
        raise StampError("time in seconds is not finite", sec=sec)
    if value < 0:
        raise StampError("time in seconds is negative", sec=sec)
    # as_integer_ratio is exact, so the only rounding is the final one to whole nanoseconds.
    num, den = value.as_integer_ratio()
    q, r = divmod(num * NS_PER_SEC, den)
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        q += 1
    if q > MAX_STAMP_NS:
        raise StampError("time beyond the int32 seconds range of builtin_interfaces/Time", sec=sec)
    return q


def ns_to_stamp(ns: int) -> Any:
    """``builtin_interfaces/msg/Time`` from integer nanoseconds (exact)."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    if ns < 0:
        raise StampError("time stamp is negative", nanoseconds=ns)
    if ns > MAX_STAMP_NS:
        raise StampError("time beyond the int32 seconds range of builtin_interfaces/Time", nanoseconds=ns)
    sec, nanosec = divmod(ns, NS_PER_SEC)
    return Time(sec=sec, nanosec=nanosec)


def sec_to_stamp(sec: float) -> Any:
    """``builtin_interfaces/msg/Time`` from float seconds (rounded to the nearest nanosecond)."""
    return ns_to_stamp(sec_to_ns(sec))


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
    elif isinstance(stamp, bool):
        raise StampError("stamp must be a Time message, int nanoseconds or float seconds", stamp=stamp)
    elif isinstance(stamp, numbers.Integral):
        stamp_msg = ns_to_stamp(int(stamp))
    elif isinstance(stamp, numbers.Real):
        stamp_msg = sec_to_stamp(float(stamp))
    else:
        stamp_msg = stamp
    return Header(frame_id=str(frame_id), stamp=stamp_msg)
