"""rviz markers of the map: keyframe camera frusta and graph edges as ``visualization_msgs/MarkerArray``."""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

__all__ = ["frustum_lines", "map_markers"]


def frustum_lines(
    T_map_cam: np.ndarray, K: np.ndarray | None, size: tuple[int, int], scale: float
) -> np.ndarray:
    """Line-list points ``[N * 16, 3]`` of camera frusta (centre -> 4 corners, and the image rectangle at
    depth ``scale``) for poses ``T_map_cam [N, 4, 4]``, intrinsics ``K`` (None: 60 degree FOV), ``(W, H)``."""
    W, H = size
    if K is None:
        f = 0.5 * W / np.tan(np.radians(30.0))
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    uv = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
    rays = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)], -1) * scale
    local = np.concatenate([np.zeros((1, 3)), rays])  # [5, 3]: centre, 4 corners
    pts = np.einsum("nij,kj->nki", T_map_cam[:, :3, :3], local) + T_map_cam[:, None, :3, 3]  # [N, 5, 3]
    seg = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    return pts[:, seg.reshape(-1)].reshape(-1, 3)


def _lines(header: Any, ns: str, pts: np.ndarray, rgba: tuple[float, ...]) -> Any:
    m = Marker(header=header, ns=ns, id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = 0.005
    m.color = ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])
    m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts]
    return m


def map_markers(
    header: Header,
    T_map_cam: np.ndarray,
    K: np.ndarray | None,
    size: tuple[int, int],
    edges: list[tuple[int, int]],
    frustum_scale: float,
    loops: list[tuple[int, int]] = (),
) -> MarkerArray:
    """Keyframe frusta (``T_map_cam [N, 4, 4]``, intrinsics ``K`` of image ``size`` (W, H)), the graph's
    ``edges`` between the keyframe centres (ns ``edges``, orange) and the loop-closure edges among them (ns
    ``loops``, magenta)."""
    frusta = frustum_lines(T_map_cam, K, size, frustum_scale)
    centres = T_map_cam[:, :3, 3]

    def segments(pairs: list[tuple[int, int]]) -> np.ndarray:
        return centres[np.asarray(pairs, dtype=np.int64).reshape(-1)] if len(pairs) else np.zeros((0, 3))

    loop_set = {tuple(e) for e in loops}
    return MarkerArray(
        markers=[
            _lines(header, "keyframes", frusta, (0.1, 0.6, 1.0, 1.0)),
            _lines(
                header,
                "edges",
                segments([e for e in edges if tuple(e) not in loop_set]),
                (1.0, 0.5, 0.0, 1.0),
            ),
            _lines(header, "loops", segments(list(loop_set)), (1.0, 0.0, 1.0, 1.0)),
        ]
    )
