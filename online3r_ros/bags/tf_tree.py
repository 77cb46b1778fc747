"""A TF tree read from a bag: static and dynamic edges, a frame-to-frame chain, sampled over time.

``/tf_static`` edges hold one transform each (the latest wins, as tf2 does); ``/tf`` edges are time series.
:meth:`TfTree.trajectory` finds the chain between two frames (edges may be walked backwards: their
transforms are inverted) and samples it at the stamps of its densest dynamic edge that lie inside every
other dynamic edge's time range; the other dynamic edges are interpolated (lerp translation, slerp rotation;
no extrapolation, as tf2). No ROS dependency.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from online3r_ros.bags.errors import NoTrajectoryError
from online3r_ros.eval.poses import interpolate_poses

__all__ = ["TfTree"]

Edge = tuple[str, str]


@dataclass
class TfTree:
    """Transforms ``parent <- child`` (``T_parent_child``, ``[4, 4]``) collected from TF messages."""

    static: dict[Edge, np.ndarray] = field(default_factory=dict)
    dynamic: dict[Edge, list[tuple[int, np.ndarray]]] = field(default_factory=dict)

    def add(self, parent: str, child: str, stamp_ns: int, T: np.ndarray, *, is_static: bool) -> None:
        """Record one transform (``parent``/``child`` without a leading ``/``, as tf2 stores them)."""
        key = (parent.lstrip("/"), child.lstrip("/"))
        if is_static:
            self.static[key] = T
        else:
            self.dynamic.setdefault(key, []).append((int(stamp_ns), T))

    @property
    def frames(self) -> list[str]:
        """Every frame id, sorted."""
        return sorted({f for edge in (*self.static, *self.dynamic) for f in edge})

    def edges(self) -> list[tuple[str, str, int, bool]]:
        """``(parent, child, samples, is_static)`` of every edge, dynamic ones first, then by name."""
        dyn = [(p, c, len(v), False) for (p, c), v in sorted(self.dynamic.items())]
        return dyn + [(p, c, 1, True) for (p, c) in sorted(self.static)]

    def chain(self, source: str, target: str) -> list[tuple[Edge, bool]]:
        """Edges from ``source`` to ``target``: ``[(edge, forward)]``; ``forward`` = walked parent -> child.

        Raises:
            NoTrajectoryError: a frame is unknown or the two are not connected.
        """
        source, target = source.lstrip("/"), target.lstrip("/")
        known = set(self.frames)
        for name in (source, target):
            if name not in known:
                raise NoTrajectoryError(
                    f"frame {name!r} is not in the bag's TF tree; "
                    f"frames: {', '.join(sorted(known)) or 'none'}"
                )
        neighbours: dict[str, list[tuple[str, Edge, bool]]] = {}
        for parent, child in (*self.static, *self.dynamic):
            neighbours.setdefault(parent, []).append((child, (parent, child), True))
            neighbours.setdefault(child, []).append((parent, (parent, child), False))
        previous: dict[str, tuple[str, Edge, bool] | None] = {source: None}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            for nxt, edge, forward in neighbours.get(frame, []):
                if nxt not in previous:
                    previous[nxt] = (frame, edge, forward)
                    queue.append(nxt)
        if target not in previous:
            raise NoTrajectoryError(
                f"frames {source!r} and {target!r} are not connected in the bag's TF tree"
            )
        steps: list[tuple[Edge, bool]] = []
        frame = target
        while previous[frame] is not None:
            frame, edge, forward = previous[frame]
            steps.append((edge, forward))
        return steps[::-1]

    def _series(self, edge: Edge) -> tuple[np.ndarray, np.ndarray]:
        items = sorted(self.dynamic[edge], key=lambda x: x[0])
        t = np.array([s for s, _ in items], dtype=np.int64)
        T = np.stack([m for _, m in items])
        keep = np.ones(t.size, dtype=bool)
        keep[:-1] = t[1:] != t[:-1]  # a repeated stamp: the last transform wins
        return t[keep], T[keep]

    def trajectory(self, parent: str, child: str) -> tuple[np.ndarray, np.ndarray]:
        """``(stamps ns int64 [N], T_parent_child [N, 4, 4])`` along the chain (see the module docstring).

        A chain of static edges only gives one pose (stamp 0).

        Raises:
            NoTrajectoryError: unknown / disconnected frames, dynamic edges whose time ranges don't overlap.
        """
        steps = self.chain(parent, child)
        dynamic = [edge for edge, _ in steps if edge in self.dynamic]
        series = {edge: self._series(edge) for edge in dynamic}
        if dynamic:
            driver = max(dynamic, key=lambda e: series[e][0].size)
            t = series[driver][0]
            for edge in dynamic:
                te = series[edge][0]
                t = t[(t >= te[0]) & (t <= te[-1])]
            if t.size == 0:
                raise NoTrajectoryError(
                    f"the TF edges between {parent!r} and {child!r} never overlap in time"
                )
        else:
            t = np.zeros(1, dtype=np.int64)
        out = np.tile(np.eye(4), (t.size, 1, 1))
        t0 = int(t[0])  # seconds relative to the first sample keep float64 exact to the nanosecond range
        for edge, forward in steps:
            if edge in self.dynamic:
                te, Te = series[edge]
                span = max(1.0, (te[-1] - te[0]) / 1e9)
                T, _ = interpolate_poses((te - t0) / 1e9, Te, (t - t0) / 1e9, max_difference=span)
            else:
                T = np.broadcast_to(self.static[edge], (t.size, 4, 4))
            out = out @ (T if forward else np.linalg.inv(T))
        return t, out
