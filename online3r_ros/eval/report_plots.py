"""The report's time-series plots (matplotlib, Agg backend, PNG): translation error over time with keyframes
and loop closures marked, a latency histogram, memory (RSS) per node over time. The trajectory figure is
:func:`online3r_ros.eval.plot.plot_trajectories`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["plot_error_over_time", "plot_latency_histogram", "plot_memory"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png")
    _pyplot().close(fig)
    return out


def plot_error_over_time(
    path: str | Path,
    t: np.ndarray,
    error_m: np.ndarray,
    *,
    keyframe_times: np.ndarray | None = None,
    loop_times: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Translation error ``error_m [N]`` (metres, shown in cm) against ``t [N]`` (seconds, from the first
    pose), keyframes as ticks on the time axis and loop closures as vertical lines."""
    t = np.asarray(t, dtype=np.float64).ravel()
    e = np.asarray(error_m, dtype=np.float64).ravel()
    if t.shape != e.shape:
        raise ValueError(f"timestamps {t.shape} and errors {e.shape} differ")
    t0 = float(t[0]) if t.size else 0.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    ax.plot(t - t0, 100 * e, color="tab:red", linewidth=1.2, label="translation error")
    if e.size:
        ax.axhline(100 * np.sqrt(np.mean(e**2)), color="0.3", linestyle=":", linewidth=1.0, label="RMSE")
    kt = np.asarray(keyframe_times if keyframe_times is not None else [], dtype=np.float64).ravel()
    if kt.size:
        ax.plot(
            kt - t0, np.zeros_like(kt), "|", color="tab:blue", markersize=14, label=f"keyframes ({kt.size})"
        )
    lt = np.asarray(loop_times if loop_times is not None else [], dtype=np.float64).ravel()
    for k, x in enumerate(lt):
        ax.axvline(
            x - t0, color="magenta", linewidth=1.2, label=f"loop closures ({lt.size})" if k == 0 else None
        )
    ax.set_xlabel("time since the first pose [s]")
    ax.set_ylabel("error [cm]")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "translation error over time (after alignment)", fontsize=10)
    return _save(fig, path)


def plot_latency_histogram(path: str | Path, latency_ms: np.ndarray, *, title: str = "") -> Path:
    """Histogram of image -> pose latencies ``[N]`` (ms) with the median and 90th percentile marked."""
    a = np.asarray(latency_ms, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    if a.size:
        ax.hist(a, bins=min(50, max(5, a.size // 5)), color="tab:blue", alpha=0.8)
        for q, style in ((50, "-"), (90, "--")):
            v = float(np.percentile(a, q))
            ax.axvline(v, color="black", linestyle=style, linewidth=1.0, label=f"p{q} {v:.0f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency image -> pose [ms]")
    ax.set_ylabel("frames")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"latency ({a.size} frames)", fontsize=10)
    return _save(fig, path)


def plot_memory(
    path: str | Path, memory: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = ""
) -> Path:
    """Resident memory per node: ``{node: (t [K] s, rss_mb [K])}``, one line each, time from the earliest
    sample."""
    series = {
        n: (np.asarray(t, dtype=np.float64).ravel(), np.asarray(r, dtype=np.float64).ravel())
        for n, (t, r) in memory.items()
    }
    starts = [t[0] for t, _ in series.values() if t.size]
    t0 = min(starts) if starts else 0.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    for node, (t, rss) in sorted(series.items()):
        ax.plot(t - t0, rss, linewidth=1.2, label=node)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("RSS [MB]")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    ax.set_title(title or "memory (resident set size) per node", fontsize=10)
    return _save(fig, path)
