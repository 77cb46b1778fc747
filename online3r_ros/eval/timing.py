"""Per-stage timing accumulator and peak-memory probe for ``timing.json``."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Accumulates wall-clock milliseconds per named stage.

    ``with timer.stage("tracking"): ...`` or ``timer.add("tracking", ms)``. With ``cuda_sync=True`` the CUDA
    stream is synchronised around each stage (accurate GPU timings at a small cost). Stages may nest; each
    name accumulates its own inclusive time.
    """

    def __init__(self, cuda_sync: bool = False) -> None:
        self.cuda_sync = bool(cuda_sync)
        self._total: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._max: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def _sync(self) -> None:
        if self.cuda_sync:
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, (time.perf_counter() - t0) * 1e3)

    def add(self, name: str, ms: float) -> None:
        ms = float(ms)
        self._total[name] = self._total.get(name, 0.0) + ms
        self._count[name] = self._count.get(name, 0) + 1
        self._max[name] = max(self._max.get(name, 0.0), ms)

    def total_ms(self, name: str) -> float:
        return self._total.get(name, 0.0)

    def elapsed_s(self) -> float:
        """Seconds since the timer was created (or :meth:`reset`)."""
        return time.perf_counter() - self._t0

    def reset(self) -> None:
        self.__init__(self.cuda_sync)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"total_ms", "mean_ms", "max_ms", "count"}}`` in insertion order."""
        return {
            k: {
                "total_ms": round(v, 3),
                "mean_ms": round(v / self._count[k], 3),
                "max_ms": round(self._max[k], 3),
                "count": self._count[k],
            }
            for k, v in self._total.items()
        }


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (``cpu_max_rss_mb``, from getrusage) and, when torch with CUDA is
    loaded, ``cuda_max_allocated_mb`` / ``cuda_max_reserved_mb`` (``None`` otherwise). MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = (
        rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0
    )  # bytes on macOS, KiB on Linux
    out: dict[str, float | None] = {
        "cpu_max_rss_mb": round(rss_mb, 1),
        "cuda_max_allocated_mb": None,
        "cuda_max_reserved_mb": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


class Stopwatch:
    """Per-frame stage laps in milliseconds: ``lap(stage)`` charges the time since the previous lap to
    ``stage`` (accumulating); ``total()`` adds ``"total"``. Synchronises CUDA on each lap when
    ``cuda_sync``, so GPU work is charged to its stage."""

    def __init__(self, cuda_sync: bool = False) -> None:
        self.cuda_sync = bool(cuda_sync)
        self.ms: dict[str, float] = {}
        self._t0 = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.cuda_sync:
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.synchronize()
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1000.0 * (now - self._last)
        self._last = now

    def total(self) -> dict[str, float]:
        """The laps and ``"total"`` (ms since the stopwatch started, up to the last lap)."""
        return {**self.ms, "total": 1000.0 * (self._last - self._t0)}
