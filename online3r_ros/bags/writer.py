"""Write a rosbag2 (MCAP or sqlite3) from serialised ROS 2 messages with ``rosbags``.

:class:`BagWriter` adds one connection per ``(topic, type)`` on first use (message definition and type hash
from :data:`~online3r_ros.bags.messages.TYPESTORE`, or from a ``.msg`` text registered with
:meth:`BagWriter.register_definition` for types the typestore lacks) with the publisher QoS given, and
writes CDR bytes at a log time in nanoseconds. Used by ``online3r bag convert`` and ``online3r bag record``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from online3r_ros.bags.errors import BagError
from online3r_ros.bags.messages import TYPESTORE, serialize

__all__ = ["STORAGES", "BagWriter", "make_qos"]

Storage = Literal["mcap", "sqlite3"]
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_INFINITE = QosTime(sec=9223372036, nsec=854775807)


def make_qos(*, reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A ``rosbags`` QoS profile (keep-last ``depth``, automatic liveliness, no deadline/lifespan)."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """A rosbag2 being written (context manager; the bag is valid once closed).

    Args:
        path: the bag folder to create (must not exist unless ``overwrite``).
        storage: ``"mcap"`` or ``"sqlite3"``.
        overwrite: remove an existing folder at ``path`` first.

    Raises:
        BagError: unknown storage, existing path, or a write to a type without definition.
    """

    def __init__(self, path: str | Path, storage: Storage = "mcap", *, overwrite: bool = False) -> None:
        if storage not in _PLUGINS:
            raise BagError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"{self.path} exists already; choose another --out or remove it")
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
        self.storage = storage
        self._typestore = TYPESTORE
        self._writer = Writer(self.path, version=9, storage_plugin=_PLUGINS[storage])
        self._writer.open()
        self._connections: dict[tuple[str, str], Connection] = {}
        self.counts: dict[str, int] = {}

    def register_definition(self, msgtype: str, definition: str) -> None:
        """Make ``msgtype`` (``pkg/msg/Type``) writable from its ``.msg`` text (sub-types must be known)."""
        if self._typestore is TYPESTORE:  # never mutate the shared store
            self._typestore = get_typestore(Stores.EMPTY)
            self._typestore.register(TYPESTORE.fielddefs)
        self._typestore.register(get_types_from_msg(definition, msgtype))

    def knows(self, msgtype: str) -> bool:
        """True when ``msgtype`` can be written (its definition is known)."""
        return msgtype in self._typestore.fielddefs

    def connection(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> Connection:
        """The connection of ``(topic, msgtype)``, added with ``qos`` on first use."""
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            if not self.knows(msgtype):
                raise BagError(f"cannot write {topic}: message type {msgtype} has no known definition")
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore, offered_qos_profiles=list(qos)
            )
            self._connections[key] = conn
        return conn

    def write_raw(self, topic: str, msgtype: str, log_ns: int, data: bytes, qos: Sequence[Qos] = ()) -> None:
        """Write CDR bytes of ``msgtype`` on ``topic`` at log time ``log_ns``."""
        self._writer.write(self.connection(topic, msgtype, qos), int(log_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msg: Any, log_ns: int, qos: Sequence[Qos] = ()) -> None:
        """Serialise a ``rosbags`` message and write it."""
        self.write_raw(topic, msg.__msgtype__, log_ns, serialize(msg), qos)

    def close(self) -> None:
        """Finish the bag (writes the index and ``metadata.yaml``); idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
