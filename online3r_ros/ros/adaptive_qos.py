"""Input subscriptions whose reliability follows their publishers' (``image_qos: auto``).

A reliable reader never matches a best-effort writer, and a best-effort reader of a reliable writer loses
large samples: measured on one machine with this project's rmw (Fast DDS 3.2 over UDP, shared memory or
LARGE_DATA alike), 640x480 rgb8 images at 30 Hz reached a best-effort reader 0-12 times in 60, a reliable
reader (history 30) 60 times in 60 (``benchmarks/bench_camera_stream.py``). So the reader is reliable while
every publisher is reliable (most camera drivers: realsense2_camera, usb_cam, orbbec publish with the
system default, reliable) and becomes best effort as soon as one publisher is (it could not connect
otherwise). :meth:`AdaptiveSubscription.refresh`, called periodically by the node, re-creates the
subscription when the publishers change.

:func:`create_input_subscription` also reports the messages DDS lost on the way (the rmw's message-lost
event), so that no input disappears unreported; ``ros/dds.py`` says why large images get lost and what
prevents it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import QoSProfile, ReliabilityPolicy

from online3r_ros.ros.qos import sensor_data_qos

__all__ = ["AdaptiveSubscription", "create_input_subscription", "reliability_for"]

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def reliability_for(publisher_reliabilities: list[ReliabilityPolicy], current: ReliabilityPolicy):
    """The reader reliability that matches every publisher: best effort if one of them is, reliable if all
    are, ``current`` when there is no publisher (nothing to match yet)."""
    if not publisher_reliabilities:
        return current
    return BEST_EFFORT if BEST_EFFORT in publisher_reliabilities else RELIABLE


def create_input_subscription(
    node: Any,
    msg_type: Any,
    topic: str,
    callback: Callable,
    qos: QoSProfile,
    on_lost: Callable[[int], Any] | None = None,
) -> Any:
    """``node.create_subscription``; with ``on_lost``, ``on_lost(n)`` is called (by the executor) whenever
    DDS reports ``n`` more messages of the topic lost before they reached this reader, where the rmw has the
    message-lost event (Fast DDS, Cyclone DDS; silently without it elsewhere)."""
    if on_lost is not None:
        events = SubscriptionEventCallbacks(message_lost=lambda info: on_lost(info.total_count_change))
        try:
            return node.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
        except UnsupportedEventTypeError:
            pass
    return node.create_subscription(msg_type, topic, callback, qos)


class AdaptiveSubscription:
    """``node.create_subscription`` whose reliability follows the topic's publishers (module docstring).

    Starts reliable (keep-last ``depth``); :meth:`refresh` returns a line to log when it switched.
    ``on_lost``: see :func:`create_input_subscription`.
    """

    def __init__(
        self,
        node: Any,
        msg_type: Any,
        topic: str,
        callback: Callable,
        depth: int = 10,
        on_lost: Callable[[int], Any] | None = None,
    ) -> None:
        self.node, self.msg_type, self.callback, self.depth = node, msg_type, callback, int(depth)
        self.on_lost = on_lost
        self.reliability = RELIABLE
        self.subscription = self._subscribe(topic)
        self.topic = self.subscription.topic_name  # resolved (namespace, remappings)

    def _subscribe(self, topic: str) -> Any:
        qos = sensor_data_qos(self.depth, reliable=self.reliability == RELIABLE)
        return create_input_subscription(self.node, self.msg_type, topic, self.callback, qos, self.on_lost)

    def refresh(self) -> str | None:
        """Match the current publishers; returns what changed (``None``: nothing)."""
        found = [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(self.topic)]
        wanted = reliability_for(found, self.reliability)
        if wanted == self.reliability:
            return None
        self.node.destroy_subscription(self.subscription)
        self.reliability = wanted
        self.subscription = self._subscribe(self.topic)
        if wanted == BEST_EFFORT:
            return (
                f"{self.topic}: a publisher is best effort, subscribing best effort (large images are mostly "
                "lost that way on one machine: publish them reliable if you can)"
            )
        return f"{self.topic}: every publisher is reliable, subscribing reliable"
