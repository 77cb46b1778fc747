"""TF broadcasting: ``tf2_msgs/TFMessage`` on ``/tf`` and latched ``/tf_static``.

:class:`TfBroadcaster` uses ``tf2_ros.TransformBroadcaster`` / ``StaticTransformBroadcaster`` when ``tf2_ros``
is importable (a sourced ROS 2 distro), else its own publishers with the same QoS as tf2_ros (``/tf``:
reliable, volatile, depth 100; ``/tf_static``: reliable, transient local, depth 1). Static transforms
accumulate by ``child_frame_id`` (a later one for the same child replaces the earlier one) and every
``/tf_static`` message carries all of them, so a late subscriber receives the whole static tree from the
single latched message.

``tf2_msgs`` has no pip wheel; in the pip-only venv the project's setup script builds it (see
:data:`TF2_MSGS_HINT`). It is imported lazily, so this module can be imported without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from online3r_ros.ros.errors import PoseError, RosDependencyError
from online3r_ros.ros.pose import pose_to_tq
from online3r_ros.ros.qos import tf_qos, tf_static_qos

__all__ = ["TF2_MSGS_HINT", "TfBroadcaster", "tf_message", "tf_message_type", "tf2_msgs_available"]

TF2_MSGS_HINT = (
    "tf2_msgs is not importable: in the pip-only environment it is built from its .msg definition by the "
    "project's setup script (scripts/setup.sh); activate the environment it prepares (.venv/bin/activate), "
    "or source a ROS 2 distro that provides tf2_msgs"
)


def tf_message_type() -> type:
    """The ``tf2_msgs.msg.TFMessage`` class; :class:`RosDependencyError` (with the setup hint) if missing."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError as exc:
        raise RosDependencyError(f"{TF2_MSGS_HINT} ({exc})") from exc
    return TFMessage


def tf2_msgs_available() -> bool:
    """True when ``tf2_msgs.msg.TFMessage`` can be imported."""
    try:
        tf_message_type()
    except RosDependencyError:
        return False
    return True


def _validated(transforms: Any) -> list[Any]:
    items = [transforms] if hasattr(transforms, "child_frame_id") else list(transforms)
    for i, tr in enumerate(items):
        parent, child = str(tr.header.frame_id), str(tr.child_frame_id)
        if not parent or not child or parent == child:
            raise PoseError(
                "transform needs distinct, non-empty parent and child frame ids",
                index=i,
                frame_id=parent,
                child_frame_id=child,
            )
        pose_to_tq(tr)  # NaN / non-unit quaternion check
    return items


def tf_message(transforms: Iterable[Any] | Any) -> Any:
    """``TFMessage`` holding the (validated) ``TransformStamped`` list."""
    return tf_message_type()(transforms=_validated(transforms))


class TfBroadcaster:
    """Publish dynamic (``/tf``) and static (``/tf_static``) transforms from a node.

    Args:
        node: the ``rclpy`` node that owns the publishers.
        use_tf2_ros: ``None`` (default) uses tf2_ros when importable; ``False`` forces the built-in
            publishers; ``True`` requires tf2_ros.

    Raises:
        RosDependencyError: ``tf2_msgs`` (or, with ``use_tf2_ros=True``, ``tf2_ros``) is missing.
    """

    def __init__(self, node: Any, *, use_tf2_ros: bool | None = None) -> None:
        self._msg_type = tf_message_type()
        self._node = node
        self._static: dict[str, Any] = {}
        tf2_ros = None
        if use_tf2_ros is not False:
            try:
                import tf2_ros
            except ImportError as exc:
                if use_tf2_ros:
                    raise RosDependencyError(f"tf2_ros is not importable ({exc})") from exc
        self.uses_tf2_ros = tf2_ros is not None
        if tf2_ros is not None:
            self._dynamic_broadcaster = tf2_ros.TransformBroadcaster(node)
            self._static_broadcaster = tf2_ros.StaticTransformBroadcaster(node)
            self._tf_pub = self._tf_static_pub = None
        else:
            self._dynamic_broadcaster = self._static_broadcaster = None
            self._tf_pub = node.create_publisher(self._msg_type, "/tf", tf_qos())
            self._tf_static_pub = node.create_publisher(self._msg_type, "/tf_static", tf_static_qos())

    @property
    def static_transforms(self) -> list[Any]:
        """All static transforms sent so far (one per child frame, latest wins)."""
        return list(self._static.values())

    def send_transform(self, transforms: Iterable[Any] | Any) -> None:
        """Publish one or more ``TransformStamped`` on ``/tf`` (validated first)."""
        items = _validated(transforms)
        if self._dynamic_broadcaster is not None:
            self._dynamic_broadcaster.sendTransform(items)
        else:
            self._tf_pub.publish(self._msg_type(transforms=items))

    def send_static_transform(self, transforms: Iterable[Any] | Any) -> None:
        """Add/replace static transforms (by child frame); publish the full set on latched ``/tf_static``."""
        for tr in _validated(transforms):
            self._static[str(tr.child_frame_id)] = tr
        everything = list(self._static.values())
        if self._static_broadcaster is not None:
            self._static_broadcaster.sendTransform(everything)
        else:
            self._tf_static_pub.publish(self._msg_type(transforms=everything))

    def destroy(self) -> None:
        """Release the publishers created by this broadcaster."""
        for pub in (self._tf_pub, self._tf_static_pub):
            if pub is not None:
                self._node.destroy_publisher(pub)
        self._tf_pub = self._tf_static_pub = None
