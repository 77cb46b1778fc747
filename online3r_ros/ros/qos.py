"""QoS profiles used by the nodes (REP-2003 conventions).

=================== ============ =============== ========= ===============================================
profile             reliability  durability      depth     use
=================== ============ =============== ========= ===============================================
sensor_data_qos     BEST_EFFORT  VOLATILE        5         subscribing images / camera_info (matches both
                                                           reliable and best-effort publishers)
reliable_qos        RELIABLE     VOLATILE        10        odometry, poses, paths, status
map_qos             RELIABLE     TRANSIENT_LOCAL 1         maps / clouds: late subscribers get the last one
tf_qos              RELIABLE     VOLATILE        100       ``/tf`` (as tf2_ros' DynamicBroadcasterQoS)
tf_static_qos       RELIABLE     TRANSIENT_LOCAL 1         ``/tf_static`` (as tf2_ros' StaticBroadcasterQoS)
=================== ============ =============== ========= ===============================================

:func:`qos_from_parameter` maps a node parameter string (``"sensor_data"``, ``"reliable"``, ``"best_effort"``,
``"system_default"``, ``"map"``) to a profile so input QoS stays configurable.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = [
    "QOS_PARAMETER_VALUES",
    "map_qos",
    "qos_from_parameter",
    "reliable_qos",
    "sensor_data_qos",
    "tf_qos",
    "tf_static_qos",
]


def _profile(depth: int, reliability: ReliabilityPolicy, durability: DurabilityPolicy) -> QoSProfile:
    if int(depth) < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=reliability, durability=durability
    )


def sensor_data_qos(depth: int = 5, *, reliable: bool = False) -> QoSProfile:
    """Best-effort (or reliable when asked), volatile, keep-last ``depth``: inputs from sensors."""
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return _profile(depth, reliability, DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep-last ``depth``: odometry, poses, paths."""
    return _profile(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)


def map_qos(depth: int = 1) -> QoSProfile:
    """Reliable, transient-local (latched), keep-last ``depth``: maps and map clouds."""
    return _profile(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


def tf_qos(depth: int = 100) -> QoSProfile:
    """Reliable, volatile, keep-last 100: ``/tf``."""
    return _profile(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)


def tf_static_qos(depth: int = 1) -> QoSProfile:
    """Reliable, transient-local, keep-last 1: ``/tf_static`` (each message carries all static transforms)."""
    return _profile(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


QOS_PARAMETER_VALUES = ("sensor_data", "best_effort", "reliable", "system_default", "map")


def qos_from_parameter(name: str, depth: int = 5) -> QoSProfile:
    """Profile for a node parameter value (one of :data:`QOS_PARAMETER_VALUES`, case-insensitive)."""
    key = str(name).strip().lower()
    if key in ("sensor_data", "best_effort"):
        return sensor_data_qos(depth)
    if key in ("reliable", "system_default"):
        return _profile(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    if key == "map":
        return map_qos(depth)
    raise ValueError(f"unknown QoS name {name!r}; expected one of {QOS_PARAMETER_VALUES}")
