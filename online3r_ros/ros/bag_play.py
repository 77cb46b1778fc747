"""Publish a bag over DDS like ``ros2 bag play`` (no ROS distro needed): :func:`play_bag`.

How messages are published: the bag's ROS 2 CDR bytes (:mod:`online3r_ros.bags.stream`; ROS 1 bags are
converted there) go straight to rclpy's raw publishing (``Publisher.publish(bytes)``): no deserialisation,
no per-field copy, bit-identical payloads. A publisher still needs the message's Python type (its type
support): topics whose type is not importable here are skipped and reported.

Timing: message ``i`` leaves at ``t0 + (log_i - log_0) / rate`` on the wall clock (a late message leaves at
once; the schedule is kept). With ``clock_hz`` the player publishes ``rosgraph_msgs/Clock`` on ``/clock``:
the bag time just before every message and at ``clock_hz`` in between, so nodes with ``use_sim_time`` see
the recorded time. ``loop`` replays from the start (the clock jumps back, as ``ros2 bag play --loop``).
QoS per topic is the bag's (see :mod:`online3r_ros.bags.stream`).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosReliability

from online3r_ros.bags.reader import open_bag
from online3r_ros.bags.stream import PlayTopic, play_topics, ros2_messages
from online3r_ros.ros.dds import use_large_data_profile

__all__ = ["PlayReport", "message_class", "play_bag", "standalone_node", "to_rclpy_qos"]


def message_class(msgtype: str) -> type | None:
    """The rclpy message class of ``pkg/msg/Type`` (``None`` when its package is not importable)."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def to_rclpy_qos(qos: Qos) -> QoSProfile:
    """rclpy profile of a ``rosbags`` QoS (history, depth, reliability, durability; the rest default)."""
    history = HistoryPolicy.KEEP_ALL if qos.history == QosHistory.KEEP_ALL else HistoryPolicy.KEEP_LAST
    best_effort = qos.reliability == QosReliability.BEST_EFFORT
    latched = qos.durability == QosDurability.TRANSIENT_LOCAL
    return QoSProfile(
        history=history,
        depth=max(1, int(qos.depth)),
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


@dataclass
class PlayReport:
    """What :func:`play_bag` did: messages published per (output) topic, topics skipped and why, loops."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0


def _remapped(name: str, remap: Mapping[str, str]) -> str:
    for key in (name, name.lstrip("/"), "/" + name.lstrip("/")):
        if key in remap:
            return remap[key]
    return name


def _publishers(node: Any, topics: Sequence[PlayTopic], remap: Mapping[str, str], report: PlayReport) -> dict:
    pubs = {}
    for topic in topics:
        cls = message_class(topic.msgtype)
        if cls is None:
            report.skipped[topic.name] = f"message type {topic.msgtype} is not importable"
            continue
        pubs[topic.name] = node.create_publisher(cls, _remapped(topic.name, remap), to_rclpy_qos(topic.qos))
    return pubs


def _wait_for_subscribers(pubs: Any, timeout: float, settle: float, stop: threading.Event) -> None:
    """Wait until every publisher has a subscriber (at most ``timeout`` s), then ``settle`` s."""
    if timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if all(p.get_subscription_count() > 0 for p in pubs):
            stop.wait(settle)
            return
        time.sleep(0.05)


def _sleep_until(
    deadline: float, stop: threading.Event, tick: Callable[[], None] | None, period: float
) -> None:
    """Sleep until ``deadline`` (monotonic); call ``tick`` every ``period`` seconds meanwhile."""
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, period))
        if tick is not None and deadline - time.monotonic() > 0:
            tick()


def play_bag(
    node: Any,
    path: str | Path,
    *,
    rate: float = 1.0,
    topics: Sequence[str] | None = None,
    remap: Mapping[str, str] | None = None,
    clock_hz: float | None = None,
    loop: bool = False,
    stop: threading.Event | None = None,
    wait_for_subscribers: float = 0.0,
    settle: float = 0.5,
    before_message: Callable[[PlayTopic, int], None] | None = None,
) -> PlayReport:
    """Publish the bag at ``path`` from ``node`` (see the module docstring); returns a :class:`PlayReport`.

    Args:
        rate: playback speed factor (2.0 = twice as fast).
        topics: play only these topics (default: all); remap: ``{bag topic: published name}``.
        clock_hz: publish ``/clock`` (bag time) at this rate and before each message; ``None``: no clock.
        loop: replay until ``stop`` is set.
        stop: set it to end playback early (e.g. from a signal handler or another thread).
        wait_for_subscribers: wait up to this many seconds until every publisher has a subscriber, then
            ``settle`` seconds more: a volatile reader only takes samples sent after it has matched the
            writer too, which the writer cannot see (Fast DDS drops earlier ones for a late joiner).
        before_message: ``f(topic, log_ns)`` called before each message is published (e.g. lock-step pacing).

    Raises:
        BagError: missing / corrupt bag, unknown topic. ``ValueError``: ``rate`` not positive.
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    stop = stop or threading.Event()
    remap = dict(remap or {})
    report = PlayReport()
    t_start = time.monotonic()
    with open_bag(path) as reader:
        selected = play_topics(reader, topics)
        pubs = _publishers(node, selected, remap, report)
        playable = [t for t in selected if t.name in pubs]
        clock_pub = clock_msg = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))
            clock_msg = Clock()
        _wait_for_subscribers(pubs.values(), wait_for_subscribers, settle, stop)
        try:
            while not stop.is_set():
                _play_once(
                    reader, playable, pubs, rate, clock_pub, clock_msg, clock_hz, stop, before_message, report
                )
                report.loops += 1
                if not loop:
                    break
            for pub in pubs.values():
                pub.wait_for_all_acked(Duration(seconds=2.0))
        finally:
            for pub in pubs.values():
                node.destroy_publisher(pub)
            if clock_pub is not None:
                node.destroy_publisher(clock_pub)
    report.wall_s = time.monotonic() - t_start
    return report


def _play_once(
    reader, topics, pubs, rate, clock_pub, clock_msg, clock_hz, stop, before_message, report
) -> None:
    """One pass over the bag."""
    t0 = log0 = None
    bag_now = 0

    def publish_clock(ns: int | None = None) -> None:
        ns = ns if ns is not None else log0 + int((time.monotonic() - t0) * rate * 1e9)
        clock_msg.clock.sec, clock_msg.clock.nanosec = divmod(max(ns, bag_now), 1_000_000_000)
        clock_pub.publish(clock_msg)

    tick = publish_clock if clock_pub is not None else None
    period = 1.0 / clock_hz if clock_hz else 0.05
    for topic, log_ns, data in ros2_messages(reader, topics):
        if stop.is_set():
            return
        if t0 is None:
            t0, log0 = time.monotonic(), log_ns
        _sleep_until(t0 + (log_ns - log0) / 1e9 / rate, stop, tick, period)
        if before_message is not None:
            before_message(topic, log_ns)
        bag_now = log_ns
        if clock_pub is not None:
            publish_clock(log_ns)
        pubs[topic.name].publish(data)
        name = pubs[topic.name].topic_name
        report.published[name] = report.published.get(name, 0) + 1


@contextmanager
def standalone_node(name: str, *, use_sim_time: bool = False, domain_id: int | None = None) -> Iterator[Any]:
    """An rclpy node in its own context (domain ``domain_id``, default ``ROS_DOMAIN_ID``), without rclpy's
    signal handlers so Ctrl-C arrives as ``KeyboardInterrupt``; shut down on exit. Full-size images leave
    in one piece (:func:`~online3r_ros.ros.dds.use_large_data_profile`)."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    use_large_data_profile()
    context = rclpy.Context()
    # args: never let rcl parse this process's command line (a "--remap a:=b" would read as a ROS remap)
    rclpy.init(
        args=[name], context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO
    )
    overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if use_sim_time else []
    node = rclpy.create_node(name, context=context, parameter_overrides=overrides)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
