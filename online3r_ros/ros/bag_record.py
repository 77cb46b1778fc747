"""Record topics from DDS into a rosbag2 like ``ros2 bag record`` (no ROS distro needed).

Subscriptions are raw (``create_subscription(..., raw=True)``): the CDR bytes DDS delivers are written
as they are (:class:`online3r_ros.bags.writer.BagWriter`), with the receive time of the node's clock as log
time. Topics are subscribed as they appear in the graph (their type from discovery), each with a QoS that
matches its publishers: reliable unless one publisher is best effort, transient local when every publisher
is (``/tf_static``, latched maps), keep-last 100. The publishers' profile is stored in the bag's metadata.
Topics named ``latest_only`` restate a whole state in every message (a path, the full map): only the last
message of each is written, at :meth:`BagRecorder.close` (a long run's path re-published after every
optimisation would otherwise make the bag grow with the square of its length).
Types unknown to the ``rosbags`` typestore get their definition from the installed package's ``.msg`` file.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos

from online3r_ros.bags.writer import BagWriter, Storage, make_qos
from online3r_ros.ros.bag_play import message_class

__all__ = ["BagRecorder", "absolute_topic"]


def absolute_topic(name: str) -> str:
    """``name`` with a leading ``/`` (bags store absolute names)."""
    return "/" + name.strip().lstrip("/")


def _definition_text(msgtype: str) -> str | None:
    """The ``.msg`` text of ``pkg/msg/Type`` from the installed package's share folder, or ``None``."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    pkg, kind, name = msgtype.split("/")
    try:
        path = Path(get_package_share_directory(pkg)) / kind / f"{name}.msg"
    except (PackageNotFoundError, ValueError):
        return None
    return path.read_text() if path.is_file() else None


def _match_qos(infos: Sequence[Any]) -> tuple[QoSProfile, Qos]:
    """Subscription profile matching the publishers ``infos`` and the offered profile to store."""
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    depth = max([int(i.qos_profile.depth) for i in infos] or [10])
    profile = QoSProfile(
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )
    return profile, make_qos(reliable=reliable, transient_local=latched, depth=depth)


class BagRecorder:
    """Record ``topics`` (or every topic with ``all_topics``) seen by ``node`` into a new bag at ``out``;
    of the ``latest_only`` topics (recorded when they are among those) only the last message.

    Call :meth:`poll` periodically (it subscribes to the wanted topics that appeared), spin the node, and
    :meth:`close` at the end. Thread-safe: callbacks may run on another executor thread.

    Raises:
        BagError: ``out`` exists, unknown storage.
    """

    def __init__(
        self,
        node: Any,
        out: str | Path,
        topics: Sequence[str] = (),
        *,
        storage: Storage = "mcap",
        all_topics: bool = False,
        overwrite: bool = False,
        latest_only: Sequence[str] = (),
    ) -> None:
        self.node = node
        self.wanted = {absolute_topic(t) for t in topics}
        self.latest_only = {absolute_topic(t) for t in latest_only}
        self._latest: dict[str, tuple[str, int, bytes, Qos]] = {}  # topic -> (type, log time, data, QoS)
        self._received: dict[str, int] = {}  # messages of the latest-only topics received
        self.all_topics = bool(all_topics)
        self.writer = BagWriter(out, storage, overwrite=overwrite)
        self.skipped: dict[str, str] = {}
        self._subs: dict[str, Any] = {}
        self._recorded: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def subscribed(self) -> list[str]:
        """Topics subscribed so far (also after :meth:`close`)."""
        return sorted(self._recorded)

    @property
    def missing(self) -> list[str]:
        """Requested topics not seen (yet)."""
        return sorted(self.wanted - self._recorded - set(self.skipped))

    @property
    def counts(self) -> dict[str, int]:
        """Messages received per topic (of a latest-only topic: all, though one is written)."""
        with self._lock:
            return {**self.writer.counts, **self._received}

    def poll(self) -> list[str]:
        """Subscribe to wanted topics that appeared in the graph; returns the newly subscribed ones."""
        new = []
        for name, types in self.node.get_topic_names_and_types():
            if name in self._subs or name in self.skipped or not (self.all_topics or name in self.wanted):
                continue
            if self.all_topics and name in ("/rosout", "/parameter_events"):
                continue
            if len(types) != 1:
                self.skipped[name] = f"several types ({', '.join(types)})"
                continue
            if self._subscribe(name, types[0]):
                new.append(name)
        return new

    def _subscribe(self, name: str, msgtype: str) -> bool:
        cls = message_class(msgtype)
        if cls is None:
            self.skipped[name] = f"message type {msgtype} is not importable"
            return False
        if not self.writer.knows(msgtype):
            text = _definition_text(msgtype)
            if text is None:
                self.skipped[name] = f"no definition of {msgtype} to store in the bag"
                return False
            self.writer.register_definition(msgtype, text)
        profile, offered = _match_qos(self.node.get_publishers_info_by_topic(name))
        clock = self.node.get_clock()

        latest = name in self.latest_only

        def on_message(data: bytes) -> None:
            stamp = clock.now().nanoseconds
            with self._lock:
                if self._closed:
                    return
                if latest:
                    self._latest[name] = (msgtype, stamp, data, offered)
                    self._received[name] = self._received.get(name, 0) + 1
                else:
                    self.writer.write_raw(name, msgtype, stamp, data, [offered])

        self._subs[name] = self.node.create_subscription(cls, name, on_message, profile, raw=True)
        self._recorded.add(name)
        return True

    def close(self) -> dict[str, int]:
        """Stop recording (writing the latest-only topics' last messages) and finish the bag; returns the
        messages received per topic."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for name, (msgtype, stamp, data, offered) in sorted(self._latest.items()):
                    self.writer.write_raw(name, msgtype, stamp, data, [offered])
                self.writer.close()
            counts = {**self.writer.counts, **self._received}
        for sub in self._subs.values():
            self.node.destroy_subscription(sub)
        self._subs.clear()
        return counts
