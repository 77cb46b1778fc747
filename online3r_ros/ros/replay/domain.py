"""Reserve a DDS domain id that no other cooperating process on this machine is using.

Isolating a run by ``ROS_DOMAIN_ID`` (with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) only works while no
other process picks the same id. Ids derived from a process id or drawn at random collide now and then when
several runs share a machine (CI next to developers' test runs): the two runs then exchange keyframes,
images and TF, and fail in ways that look like SLAM bugs. :func:`reserve_domain_id` takes an exclusive,
non-blocking ``flock`` on ``<lock_dir>/domain_<id>.lock`` for the first free id, scanning from a
process-dependent start; the lease lasts until :meth:`DomainLease.release` (or the process ends: the kernel
drops the lock of a crashed process). Only processes that reserve through this function are excluded.

ROS-free (file locks only). Ids stay in ``1..101`` by default: Fast DDS ports are ``7400 + 250 * id + ...``,
and above ~101 they reach Linux's ephemeral port range.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["DomainLease", "reserve_domain_id", "DEFAULT_LOCK_DIR"]

#: Folder of the per-id lock files (shared by every user of this machine's temp folder).
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "online3r_ros_dds_domains"


class DomainLease:
    """A reserved domain id (``domain_id``); :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, domain_id: int, fd: int | None) -> None:
        self.domain_id = int(domain_id)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops its flock
            self._fd = None

    def __enter__(self) -> DomainLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DomainLease(domain_id={self.domain_id}, held={self._fd is not None})"


def reserve_domain_id(
    low: int = 1, high: int = 101, start: int | None = None, lock_dir: str | os.PathLike | None = None
) -> DomainLease:
    """Reserve the first free domain id in ``low..high`` (inclusive), scanning from ``start`` (default:
    derived from the process id, so concurrent processes rarely contend) and wrapping around.

    Raises:
        ValueError: an empty or out-of-range id range (ids are 0..232).
        RuntimeError: every id in the range is reserved by another lease.
    """
    if not 0 <= low <= high <= 232:
        raise ValueError(f"domain id range {low}..{high} is not within 0..232")
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to coordinate with, take the start id
        n = high - low + 1
        return DomainLease(low + ((os.getpid() if start is None else start) - low) % n, None)
    folder = Path(lock_dir) if lock_dir is not None else DEFAULT_LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = high - low + 1
    first = (os.getpid() * 7) % n if start is None else (int(start) - low) % n
    for k in range(n):
        domain = low + (first + k) % n
        fd = os.open(folder / f"domain_{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return DomainLease(domain, fd)
    raise RuntimeError(f"every DDS domain id in {low}..{high} is reserved (lock files in {folder})")
