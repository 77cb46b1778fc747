"""Place-recognition packing: keyframe features and loop candidates <-> standard multi-arrays.

- keyframe features (tracker -> retrieval): ``std_msgs/Float32MultiArray`` ``[N, C]``, one row per local
  feature, columns ``x y`` (when the features have pixel positions), ``X Y Z`` (camera-frame metres, NaN =
  no depth; when they have depth), then the ``D`` descriptor values. Dim 0's label is the metadata
  ``online3r/feat;session=<int>;id=<int>;kind=<name>;H=<int>;W=<int>;xy=<0|1>;points=<0|1>``.
- loop candidates (retrieval -> mapper): ``std_msgs/Float64MultiArray`` ``[M, 10]``, one row per verified
  candidate ``kf_id score has_pose tx ty tz qx qy qz qw s`` (the prior-free pose query -> candidate, zeros
  when ``has_pose`` is 0); dim 0's label ``online3r/loops;session=<int>;kf=<int>`` names the query keyframe.

ROS-free except for the lazily imported message classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from online3r_ros.retrieval.features import LocalFeatures
from online3r_ros.retrieval.place import PlaceCandidate
from online3r_ros.ros.nodes.msgs import MessageFormatError, _int, parse_metadata

__all__ = [
    "FEAT_PREFIX",
    "LOOPS_PREFIX",
    "features_to_array",
    "array_to_features",
    "loops_to_array",
    "array_to_loops",
]

FEAT_PREFIX = "online3r/feat"
LOOPS_PREFIX = "online3r/loops"
_LOOP_COLUMNS = "kf_score_haspose_tx_ty_tz_qx_qy_qz_qw_s"


def _dims(label: str, rows: int, cols: str, ncols: int) -> list:
    from std_msgs.msg import MultiArrayDimension

    return [
        MultiArrayDimension(label=label, size=int(rows), stride=int(rows * ncols)),
        MultiArrayDimension(label=cols, size=int(ncols), stride=int(ncols)),
    ]


def features_to_array(session: int, kf_id: int, feats: LocalFeatures) -> Any:
    """``Float32MultiArray`` of keyframe ``kf_id``'s features (layout in the module docstring)."""
    from std_msgs.msg import Float32MultiArray

    parts = [t for t in (feats.xy, feats.points) if t is not None] + [feats.desc]
    table = torch.cat([t.detach().to("cpu", torch.float32).reshape(len(feats), -1) for t in parts], dim=1)
    H, W = feats.image_size
    meta = (
        f"{FEAT_PREFIX};session={int(session)};id={int(kf_id)};kind={feats.kind};H={int(H)};W={int(W)};"
        f"xy={int(feats.xy is not None)};points={int(feats.points is not None)}"
    )
    msg = Float32MultiArray()
    msg.layout.dim = _dims(meta, table.shape[0], "feature", table.shape[1])
    msg.data = table.numpy().reshape(-1).tolist()
    return msg


def array_to_features(msg: Any) -> tuple[int, int, LocalFeatures]:
    """``(session, kf_id, features)`` of :func:`features_to_array`'s message; :class:`MessageFormatError`."""
    dims = list(msg.layout.dim)
    if len(dims) != 2:
        raise MessageFormatError("keyframe features need a 2-D layout [N, C]")
    meta = parse_metadata(dims[0].label, FEAT_PREFIX)
    n, c = int(dims[0].size), int(dims[1].size)
    data = np.asarray(msg.data, dtype=np.float32)
    if data.size != n * c:
        raise MessageFormatError(f"keyframe features hold {data.size} values for [{n}, {c}]")
    table = torch.from_numpy(data.reshape(n, c).copy())
    has_xy, has_points = _int(meta, "xy") == 1, _int(meta, "points") == 1
    lead = 2 * has_xy + 3 * has_points
    if c <= lead:
        raise MessageFormatError(f"keyframe features have {c} columns, no room for descriptors")
    xy = table[:, :2] if has_xy else None
    points = table[:, 2 * has_xy : lead] if has_points else None
    desc = table[:, lead:]
    if not torch.isfinite(desc).all():
        raise MessageFormatError("keyframe feature descriptors must be finite")
    feats = LocalFeatures(
        kind=meta.get("kind", ""),
        desc=desc,
        xy=xy,
        points=points,
        image_size=(_int(meta, "H"), _int(meta, "W")),
    )
    return _int(meta, "session"), _int(meta, "id"), feats


def loops_to_array(session: int, kf_id: int, candidates: list[PlaceCandidate]) -> Any:
    """``Float64MultiArray`` of keyframe ``kf_id``'s verified loop candidates (module docstring)."""
    from std_msgs.msg import Float64MultiArray

    rows = np.zeros((len(candidates), 11))
    for r, c in enumerate(candidates):
        rows[r, :3] = (c.kf_id, c.score, c.T_kf_query is not None)
        if c.T_kf_query is not None:
            rows[r, 3:] = c.T_kf_query.detach().cpu().numpy().reshape(8)
    msg = Float64MultiArray()
    msg.layout.dim = _dims(
        f"{LOOPS_PREFIX};session={int(session)};kf={int(kf_id)}", len(rows), _LOOP_COLUMNS, 11
    )
    msg.data = rows.reshape(-1).tolist()
    return msg


def array_to_loops(msg: Any) -> tuple[int, int, list[PlaceCandidate]]:
    """``(session, kf_id, candidates)`` of :func:`loops_to_array`'s message; :class:`MessageFormatError`."""
    dims = list(msg.layout.dim)
    if len(dims) != 2 or int(dims[1].size) != 11:
        raise MessageFormatError("loop candidates need a layout [M, 11]")
    meta = parse_metadata(dims[0].label, LOOPS_PREFIX)
    data = np.asarray(msg.data, dtype=np.float64)
    if data.size != 11 * int(dims[0].size) or not np.all(np.isfinite(data)):
        raise MessageFormatError("loop candidates must be M x 11 finite numbers")
    out = []
    for row in data.reshape(-1, 11):
        T = torch.from_numpy(row[3:].copy()) if row[2] else None
        if T is not None and T[7] <= 0:
            raise MessageFormatError("loop candidate pose needs a positive scale")
        out.append(PlaceCandidate(int(row[0]), float(row[1]), T))
    return _int(meta, "session"), _int(meta, "kf"), out
