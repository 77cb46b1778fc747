"""Resident memory (RSS) of processes over time, read from ``/proc`` (Linux; elsewhere nothing is sampled).

:class:`RssSampler` samples a set of named processes every ``period`` seconds in a daemon thread:
``sampler.series() -> {name: (t [K] s since start, rss [K] MB)}``. A process that ended stops adding samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["RssSampler", "rss_mb"]


def rss_mb(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MB (``VmRSS`` of ``/proc/<pid>/status``), ``None`` when the
    process does not exist (or ``/proc`` is not there)."""
    try:
        text = Path(f"/proc/{int(pid)}/status").read_text()
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return float(parts[1]) / 1024.0 if len(parts) >= 2 else None  # kB -> MB
    return None


class RssSampler:
    """Sample the RSS of ``pids`` (``{name: pid}``, replaceable with :meth:`set_pids`) every ``period`` s.
    Sample times are seconds since ``t0`` (the monotonic clock at :meth:`start`).

    Use as a context manager or call :meth:`start` / :meth:`stop`; :meth:`series` may be called any time.
    """

    def __init__(self, pids: Mapping[str, int] | None = None, period: float = 1.0) -> None:
        if not period > 0:
            raise ValueError(f"period must be positive, got {period}")
        self.period = float(period)
        self._pids = dict(pids or {})
        self._samples: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = time.monotonic()

    def set_pids(self, pids: Mapping[str, int]) -> None:
        """Sample these processes from now on (e.g. after a node was restarted)."""
        with self._lock:
            self._pids = dict(pids)

    def sample(self) -> None:
        """Take one sample of every process now."""
        now = time.monotonic() - self.t0
        with self._lock:
            pids = dict(self._pids)
        for name, pid in pids.items():
            rss = rss_mb(pid)
            if rss is not None:
                with self._lock:
                    self._samples.setdefault(name, []).append((now, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def start(self) -> RssSampler:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="online3r-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0 + self.period)

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{name: (t [K] s since start, rss [K] MB)}`` of the processes sampled at least once."""
        with self._lock:
            samples = {k: list(v) for k, v in self._samples.items()}
        return {
            name: (np.array([s[0] for s in rows]), np.array([s[1] for s in rows]))
            for name, rows in samples.items()
            if rows
        }
