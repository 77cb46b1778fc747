"""Counters, stage timings, latency and errors of a node -> ``/diagnostics`` and a JSON status topic.

:class:`NodeStats` is ROS-free (tested without DDS); :func:`diagnostic_array` / :func:`status_string` build
the messages (``diagnostic_msgs``/``std_msgs`` imported lazily).

Levels: ``ERROR`` while an input error is fresh (younger than ``error_hold`` s: wrong encoding, size change,
zero size, CameraInfo disagreeing with the image, malformed message), ``WARN`` while a warning is fresh
(inputs lost in transport), or when lost / initialising / no input for ``input_timeout`` s, ``OK`` otherwise.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Any

__all__ = ["NodeStats", "diagnostic_array", "status_string", "OK", "WARN", "ERROR"]

OK, WARN, ERROR = 0, 1, 2
_WINDOW = 100


class NodeStats:
    """Thread-safe counters and running statistics of one node.

    Counters (``count(name)``): e.g. ``received``, ``processed``, ``dropped``, ``rejected``. Stage times
    (``add_times({"track": ms, ...})``) and latency (``add_latency(ms)``) keep the last 100 values.
    ``error(text)`` records an input error with the wall time, ``warning(text)`` a lesser problem (WARN for
    ``error_hold`` s); ``state`` is a free string.
    """

    def __init__(self, name: str, error_hold: float = 5.0, input_timeout: float = 2.0) -> None:
        self.name = name
        self.error_hold = float(error_hold)
        self.input_timeout = float(input_timeout)
        self.state = "initialising"
        self.counters: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self._times: dict[str, deque] = {}
        self._latency: deque = deque(maxlen=_WINDOW)
        self.last_error = ""
        self.last_error_time = -math.inf
        self.n_errors = 0
        self.last_warning = ""
        self.last_warning_time = -math.inf
        self.last_input_time: float | None = None
        self._lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def get(self, key: str) -> int:
        return self.counters.get(key, 0)

    def input_seen(self, now: float | None = None) -> None:
        self.last_input_time = time.monotonic() if now is None else now

    def add_times(self, stages_ms: dict[str, float]) -> None:
        with self._lock:
            for k, v in stages_ms.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._times.setdefault(k, deque(maxlen=_WINDOW)).append(float(v))

    def add_latency(self, ms: float) -> None:
        if math.isfinite(ms):
            with self._lock:
                self._latency.append(float(ms))

    def error(self, text: str, now: float | None = None) -> None:
        with self._lock:
            self.last_error = str(text)
            self.last_error_time = time.monotonic() if now is None else now
            self.n_errors += 1

    def warning(self, text: str, now: float | None = None) -> None:
        with self._lock:
            self.last_warning = str(text)
            self.last_warning_time = time.monotonic() if now is None else now

    def level(self, now: float | None = None) -> tuple[int, str]:
        """``(level, message)`` now."""
        now = time.monotonic() if now is None else now
        if now - self.last_error_time < self.error_hold:
            return ERROR, f"input error: {self.last_error}"
        if now - self.last_warning_time < self.error_hold:
            return WARN, self.last_warning
        if self.last_input_time is not None and now - self.last_input_time > self.input_timeout:
            return WARN, f"no input for {now - self.last_input_time:.1f} s ({self.state})"
        if self.state in ("lost", "initialising"):
            return WARN, self.state
        return OK, self.state

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready dict: state, level, counters, stage and latency statistics (ms), last error."""
        level, message = self.level(now)
        with self._lock:
            times = {
                k: {"mean_ms": sum(v) / len(v), "max_ms": max(v), "last_ms": v[-1]}
                for k, v in self._times.items()
                if v
            }
            lat = list(self._latency)
            out = {
                "node": self.name,
                "state": self.state,
                "level": ("OK", "WARN", "ERROR")[level],
                "message": message,
                **dict(self.counters),
                "stage_ms": times,
                "latency_ms": {"mean": sum(lat) / len(lat), "max": max(lat), "last": lat[-1]} if lat else {},
                "errors": self.n_errors,
                "last_error": self.last_error,
                **self.values,
            }
        return out


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, float):
        out.append((prefix, f"{value:.3f}"))
    else:
        out.append((prefix, str(value)))


def diagnostic_array(stats: NodeStats, stamp: Any, hardware_id: str = "online3r") -> Any:
    """``diagnostic_msgs/DiagnosticArray`` with one status named ``"<node>: slam"``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from std_msgs.msg import Header

    summary = stats.summary()
    level, message = stats.level()
    pairs: list[tuple[str, str]] = []
    _flatten("", {k: v for k, v in summary.items() if k not in ("node", "message", "level")}, pairs)
    status = DiagnosticStatus(
        level=bytes([level]),
        name=f"{stats.name}: slam",
        message=message[:200],
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in pairs],
    )
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def status_string(stats: NodeStats) -> Any:
    from std_msgs.msg import String

    return String(data=json.dumps(stats.summary(), default=str))
