"""Open any bag with ``rosbags``' AnyReader and describe it: rosbag2 folders (sqlite3 or MCAP), bare ``.mcap``
/ ``.db3`` files and ROS 1 ``.bag`` files.

Every failure becomes a one-line :class:`~online3r_ros.bags.errors.BagError`: a missing path
(:class:`BagNotFoundError`), a truncated or corrupt file (:class:`CorruptBagError`, also when the damage is
only found while reading messages), an unknown topic (:class:`UnknownTopicError`, listing the bag's topics).
Bags without message definitions (older rosbag2 sqlite3) are read with :data:`messages.TYPESTORE`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection

from online3r_ros.bags.errors import BagError, BagNotFoundError, CorruptBagError, UnknownTopicError
from online3r_ros.bags.messages import TYPESTORE

__all__ = [
    "BagSummary",
    "TopicInfo",
    "bag_summary",
    "describe_topics",
    "deserialize",
    "iter_messages",
    "list_topics",
    "open_bag",
    "resolve_bag_path",
    "topic_connections",
    "topics_text",
]

_STORAGE_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag: ``name``, message type (``pkg/msg/Type``) and number of messages."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagSummary:
    """What a bag holds: its path, format (``rosbag1``/``sqlite3``/``mcap``), time range (ns) and topics."""

    path: str
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: tuple[TopicInfo, ...]

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


def resolve_bag_path(path: str | Path) -> Path:
    """The path AnyReader opens: a rosbag2 folder, or its single storage file when the folder has no
    ``metadata.yaml``. Raises :class:`BagNotFoundError` / :class:`CorruptBagError`."""
    path = Path(path)
    if not path.exists():
        raise BagNotFoundError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(p for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES)
        if len(files) != 1:
            raise CorruptBagError(
                f"{path}: a folder without metadata.yaml and with {len(files)} .mcap/.db3 files is not a bag"
            )
        return files[0]
    if path.is_file() and path.suffix not in (*_STORAGE_SUFFIXES, ".bag"):
        raise CorruptBagError(f"{path}: unknown bag format (expected a rosbag2 folder, .mcap, .db3 or .bag)")
    return path


def _storage_name(path: Path) -> str:
    if path.suffix == ".bag":
        return "rosbag1"
    if path.suffix in _STORAGE_SUFFIXES:
        return "mcap" if path.suffix == ".mcap" else "sqlite3"
    files = [p for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES]
    return "mcap" if files and files[0].suffix == ".mcap" else "sqlite3"


def _corrupt(path: Path, exc: BaseException) -> CorruptBagError:
    reason = str(exc) or type(exc).__name__
    return CorruptBagError(f"{path}: not a readable bag, truncated or corrupt ({reason.rstrip('.')})")


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open ``path`` for reading (context manager yielding an open ``AnyReader``)."""
    bag = resolve_bag_path(path)
    try:
        reader = AnyReader([bag], default_typestore=TYPESTORE)
        reader.open()
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags, mcap, sqlite3 and yaml errors alike: a bad bag
        raise _corrupt(bag, exc) from exc
    try:
        yield reader
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged file may fail too; the first error matters
            pass


def iter_messages(
    reader: AnyReader, connections: Sequence[Connection] | None = None
) -> Iterator[tuple[Connection, int, bytes]]:
    """``(connection, log time ns, raw bytes)`` of ``connections`` (``None``: all; empty: none) in log-time
    order; damage found on the way raises :class:`CorruptBagError` (not the storage library's exception)."""
    if connections is not None and not connections:
        return
    it = reader.messages(connections=list(connections or ()))
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - truncated chunk, bad record, sqlite error ...
            raise _corrupt(Path(reader.paths[0]), exc) from exc
        yield item


def deserialize(reader: AnyReader, raw: bytes, msgtype: str) -> Any:
    """A ``rosbags`` message from raw bytes; undecodable data raises :class:`CorruptBagError`."""
    try:
        return reader.deserialize(raw, msgtype)
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(Path(reader.paths[0]), exc) from exc


def describe_topics(reader: AnyReader) -> tuple[TopicInfo, ...]:
    """Topics of an open reader, sorted by name."""
    return tuple(
        TopicInfo(name, info.msgtype or "<mixed types>", int(info.msgcount))
        for name, info in sorted(reader.topics.items())
    )


def list_topics(path: str | Path) -> list[TopicInfo]:
    """Topics of the bag at ``path``: ``[TopicInfo(name, msgtype, count)]`` sorted by name."""
    with open_bag(path) as reader:
        return list(describe_topics(reader))


def bag_summary(path: str | Path) -> BagSummary:
    """Format, time range, message count and topics of the bag at ``path``."""
    bag = resolve_bag_path(path)
    with open_bag(bag) as reader:
        topics = describe_topics(reader)
        count = int(reader.message_count)
        start, end = (int(reader.start_time), int(reader.end_time)) if count else (0, 0)
    return BagSummary(str(path), _storage_name(bag), start, end, count, topics)


def topics_text(topics: Iterable[TopicInfo]) -> str:
    """``"/a (pkg/msg/T, 3), /b (...)"``: a bag's content for error messages."""
    items = [f"{t.name} ({t.msgtype}, {t.count})" for t in topics]
    return ", ".join(items) if items else "no topics"


def topic_connections(reader: AnyReader, topic: str) -> list[Connection]:
    """Connections of ``topic`` (a leading ``/`` is optional); :class:`UnknownTopicError` when absent."""
    names = {c.topic for c in reader.connections}
    name = topic if topic in names else next((n for n in names if n.strip("/") == topic.strip("/")), None)
    if name is None:
        raise UnknownTopicError(
            f"topic {topic} is not in the bag; it holds {topics_text(describe_topics(reader))}"
        )
    return [c for c in reader.connections if c.topic == name]
