"""The message stream a bag player publishes: ROS 2 CDR bytes per topic, in log-time order, with QoS.

rosbag2 ``cdr`` messages pass through untouched (the bytes a DDS writer sends: a raw-publishing rclpy
publisher needs no deserialisation). ROS 1 messages are converted with ``rosbags``' converter (wire format
translated; ``std_msgs/Header`` loses ``seq``) against :data:`~online3r_ros.bags.messages.TYPESTORE`.
Each topic's QoS comes from the bag's ``offered_qos_profiles``; without it (ROS 1, older rosbag2)
``/tf_static`` and latched ROS 1 topics are reliable + transient local, everything else reliable + volatile,
keep-last 10 (``/tf``: 100). No ROS dependency.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rosbags.convert.converter import generate_message_converter
from rosbags.interfaces import ConnectionExtRosbag1, ConnectionExtRosbag2, Qos, QosDurability

from online3r_ros.bags.errors import BagError
from online3r_ros.bags.messages import TYPESTORE
from online3r_ros.bags.reader import iter_messages, topic_connections
from online3r_ros.bags.writer import make_qos

__all__ = ["PlayTopic", "play_topics", "ros2_messages"]


@dataclass(frozen=True)
class PlayTopic:
    """A topic to publish: ``name``, ``msgtype`` (``pkg/msg/Type``) and the QoS to publish it with."""

    name: str
    msgtype: str
    qos: Qos
    count: int

    @property
    def latched(self) -> bool:
        return self.qos.durability == QosDurability.TRANSIENT_LOCAL


def _default_qos(topic: str, latched: bool) -> Qos:
    if latched or topic.rstrip("/").endswith("tf_static"):
        return make_qos(reliable=True, transient_local=True, depth=1)
    return make_qos(reliable=True, depth=100 if topic == "/tf" else 10)


def _topic_qos(conns: Sequence[Any]) -> Qos:
    """The first offered profile of the topic's connections, or the default for its name."""
    for conn in conns:
        if isinstance(conn.ext, ConnectionExtRosbag2) and conn.ext.offered_qos_profiles:
            return conn.ext.offered_qos_profiles[0]
    latched = any(isinstance(c.ext, ConnectionExtRosbag1) and c.ext.latching for c in conns)
    return _default_qos(conns[0].topic, latched)


def play_topics(reader: Any, topics: Sequence[str] | None = None) -> list[PlayTopic]:
    """The topics of an open reader (all, or those named) with their types, QoS and message counts.

    Raises:
        UnknownTopicError: a named topic is not in the bag.
    """
    names = list(topics) if topics else sorted({c.topic for c in reader.connections})
    out = []
    for name in names:
        conns = topic_connections(reader, name)
        types = {c.msgtype for c in conns}
        if len(types) > 1:
            raise BagError(f"topic {name} holds several message types ({', '.join(sorted(types))})")
        out.append(
            PlayTopic(conns[0].topic, conns[0].msgtype, _topic_qos(conns), sum(c.msgcount for c in conns))
        )
    return out


def _converter(reader: Any, msgtype: str, cache: dict) -> Callable[[bytes], bytes]:
    if reader.is2:
        return bytes
    if msgtype not in TYPESTORE.fielddefs:
        raise BagError(f"cannot play {msgtype} from a ROS 1 bag: no ROS 2 definition of it is known")
    with contextlib.redirect_stdout(io.StringIO()):  # rosbags prints one line per migrated type
        convert = generate_message_converter(
            reader.typestore, TYPESTORE, msgtype, msgtype, cache, src_is2=False, dst_is2=True
        )
    return lambda raw: bytes(convert(raw))


def ros2_messages(reader: Any, topics: Sequence[PlayTopic]) -> Iterator[tuple[PlayTopic, int, bytes]]:
    """``(topic, log time ns, ROS 2 CDR bytes)`` of ``topics`` in log-time order."""
    by_name = {t.name: t for t in topics}
    conns = [c for c in reader.connections if c.topic in by_name]
    cache: dict = {}
    converters = {t.msgtype: _converter(reader, t.msgtype, cache) for t in topics}
    for conn, log_ns, raw in iter_messages(reader, conns):
        yield by_name[conn.topic], int(log_ns), converters[conn.msgtype](raw)
