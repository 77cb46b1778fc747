"""PNG plot of estimated vs reference trajectories: top view + one panel per axis (matplotlib, Agg backend).

    from online3r_ros.eval.plot import plot_trajectories
    plot_trajectories("traj.png", {"ground truth": (t_gt, xyz_gt), "estimate": (t_est, xyz_est)})

Positions are ``[N, 3]`` in one frame (align the estimate first, e.g. with :func:`apply_alignment` and the
``rotation``/``translation``/``scale`` of :func:`online3r_ros.eval.ate.compute_ate`). The top view shows the
two axes along which the first trajectory spreads most (for camera-optical worlds, y points down, so this is
usually x-z). Works headless: matplotlib is switched to Agg inside :func:`plot_trajectories` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["apply_alignment", "plot_trajectories", "top_view_axes"]

_STYLES = (
    {"color": "0.2", "linestyle": "--", "linewidth": 1.5},
    {"color": "tab:red", "linestyle": "-", "linewidth": 1.5},
    {"color": "tab:blue", "linestyle": "-", "linewidth": 1.0},
    {"color": "tab:green", "linestyle": "-", "linewidth": 1.0},
)
_AXES = "xyz"


def apply_alignment(positions: np.ndarray, rotation, translation, scale: float = 1.0) -> np.ndarray:
    """``s·R·p + t`` for ``positions [N, 3]`` (``rotation [3, 3]``, ``translation [3]``)."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    return float(scale) * p @ R.T + t


def top_view_axes(positions: np.ndarray) -> tuple[int, int]:
    """Indices of the two axes with the largest spread of ``positions [N, 3]`` (ascending order)."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        return 0, 2
    spread = np.ptp(p, axis=0)
    a, b = sorted(np.argsort(-spread, kind="stable")[:2].tolist())
    return int(a), int(b)


def _checked(label: str, t, xyz) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] != t.shape[0]:
        raise ValueError(
            f"trajectory {label!r}: need timestamps [N] and positions [N, 3], got {t.shape} and {xyz.shape}"
        )
    return t, xyz


def plot_trajectories(
    path: str | Path,
    trajectories: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str = "",
    subtitle: str = "",
    units: str = "m",
    segments: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a PNG: top view (left) and x/y/z against time (right), one line per trajectory.

    Args:
        path: output file (``.png``); parent folders are created.
        trajectories: ``{label: (timestamps [N] s, positions [N, 3])}``; the first one (usually the ground
            truth) is dashed and decides the top-view axes; empty trajectories are listed but not drawn.
        title, subtitle: figure title and a smaller second line (e.g. the ATE).
        units: axis unit label.
        segments: ``{label: [M, 2, 3] end points}`` drawn as line segments on the top view (e.g. loop-closure
            edges between keyframes), in the trajectories' frame.

    Raises:
        ValueError: no trajectory, or a trajectory whose shapes disagree.
    """
    if not trajectories:
        raise ValueError("plot_trajectories needs at least one trajectory")
    data = {label: _checked(label, t, xyz) for label, (t, xyz) in trajectories.items()}
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    first = next(iter(data.values()))[1]
    ax_a, ax_b = top_view_axes(first if len(first) else np.concatenate([x for _, x in data.values()]))
    fig = plt.figure(figsize=(12, 6.5), dpi=100)
    grid = fig.add_gridspec(3, 2, width_ratios=(1.1, 1.0))
    top = fig.add_subplot(grid[:, 0])
    sides = [fig.add_subplot(grid[i, 1]) for i in range(3)]
    for k, (label, (t, xyz)) in enumerate(data.items()):
        style = _STYLES[k % len(_STYLES)]
        shown = f"{label} ({len(t)} poses)"
        if len(t) == 0:
            top.plot([], [], label=f"{label} (no poses)", **style)
            continue
        top.plot(xyz[:, ax_a], xyz[:, ax_b], label=shown, **style)
        top.plot(xyz[:1, ax_a], xyz[:1, ax_b], marker="o", color=style["color"], markersize=5)
        for i, ax in enumerate(sides):
            ax.plot(t, xyz[:, i], **style)
    for k, (label, seg) in enumerate((segments or {}).items()):
        seg = np.asarray(seg, dtype=np.float64).reshape(-1, 2, 3)
        color = ("magenta", "black", "tab:olive")[k % 3]
        for n, (a, b) in enumerate(seg):
            top.plot(
                [a[ax_a], b[ax_a]],
                [a[ax_b], b[ax_b]],
                color=color,
                linewidth=2.0,
                label=f"{label} ({len(seg)})" if n == 0 else None,
            )
    top.set_xlabel(f"{_AXES[ax_a]} [{units}]")
    top.set_ylabel(f"{_AXES[ax_b]} [{units}]")
    top.set_aspect("equal", adjustable="datalim")
    top.grid(True, alpha=0.3)
    top.legend(loc="best", fontsize=8)
    top.set_title(f"top view ({_AXES[ax_a]}-{_AXES[ax_b]}; o = start)", fontsize=10)
    for i, ax in enumerate(sides):
        ax.set_ylabel(f"{_AXES[i]} [{units}]")
        ax.grid(True, alpha=0.3)
        if i < 2:
            ax.tick_params(labelbottom=False)
    sides[-1].set_xlabel("time [s]")
    heading = title + (f"\n{subtitle}" if subtitle else "")
    if heading:
        fig.suptitle(heading, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
