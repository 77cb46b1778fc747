"""``sensor_msgs/PointCloud2`` <-> numpy, fully vectorised (no per-point Python).

Layout written by :func:`numpy_to_pointcloud2` (what rviz2 and PCL read):

========== ====== ======== =====
field      offset datatype count
========== ====== ======== =====
x          0      FLOAT32  1
y          4      FLOAT32  1
z          8      FLOAT32  1
rgb        12     FLOAT32  1     (only with colours) bits of uint32 ``0x00RRGGBB``, the rviz "RGB8" convention
confidence 12/16  FLOAT32  1     (only with confidence)
========== ====== ======== =====

``point_step`` = 4 x number of fields, ``row_step = point_step * width``, host byte order (``is_bigendian``
set accordingly). Unorganised clouds have ``height = 1, width = N``; organised ones (``xyz`` given as
``[H, W, 3]``) keep ``H x W``. ``is_dense`` is True iff every xyz is finite.

:func:`pointcloud2_to_numpy` reads any layout (any field order/padding, ``count``, big endian, padded rows).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from online3r_ros.ros._common import as_uint8_buffer, make_header, new_message, to_byte_array
from online3r_ros.ros.errors import PointCloudError

__all__ = [
    "POINTFIELD_DTYPES",
    "PointCloudArrays",
    "numpy_to_pointcloud2",
    "pack_rgb",
    "pointcloud2_dtype",
    "pointcloud2_to_numpy",
    "read_points",
    "unpack_rgb",
]

#: sensor_msgs/PointField datatype constants -> numpy dtype codes (byte order added per message).
POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32 = 7


@dataclass
class PointCloudArrays:
    """Arrays read from a PointCloud2 (leading shape ``[N]``, or ``[H, W]`` with ``keep_organised``).

    Attributes:
        xyz: float32 ``[..., 3]``.
        rgb: uint8 ``[..., 3]`` or None when the cloud has no ``rgb``/``rgba`` field.
        confidence: float32 ``[...]`` or None when the cloud has no confidence field.
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    confidence: np.ndarray | None = None


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` RGB -> uint32 ``[...]`` ``0x00RRGGBB`` (viewed as float32 in the ``rgb`` field)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise PointCloudError("rgb must be uint8 [..., 3]", dtype=str(rgb.dtype), shape=rgb.shape)
    packed = rgb[..., 0].astype(np.uint32) << 16
    packed |= rgb[..., 1].astype(np.uint32) << 8
    packed |= rgb[..., 2]
    return packed


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """uint32 ``[...]`` ``0x00RRGGBB`` -> uint8 ``[..., 3]`` RGB (the alpha byte is ignored)."""
    packed = (
        np.asarray(packed).view(np.uint32) if np.asarray(packed).dtype == np.float32 else np.asarray(packed)
    )
    out = np.empty(packed.shape + (3,), dtype=np.uint8)
    out[..., 0] = packed >> 16
    out[..., 1] = packed >> 8
    out[..., 2] = packed
    return out


def _point_field(name: str, offset: int) -> Any:
    from sensor_msgs.msg import PointField

    return PointField(name=name, offset=offset, datatype=_FLOAT32, count=1)


def numpy_to_pointcloud2(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    *,
    frame_id: str = "",
    stamp: Any = None,
    header: Any = None,
) -> Any:
    """Pack points (and optional colours / confidences) into a ``PointCloud2``.

    Args:
        xyz: ``[N, 3]`` (unorganised) or ``[H, W, 3]`` (organised) real values, cast to float32. NaN/inf
            allowed (invalid points of organised clouds); they make ``is_dense`` False.
        rgb: uint8 with the same leading shape and 3 channels (other dtypes raise: no silent rescaling).
        confidence: real values with the same leading shape, cast to float32.
        frame_id, stamp, header: see :func:`online3r_ros.ros.time.make_header`.

    Raises:
        PointCloudError: shape or dtype mismatch.
    """
    from sensor_msgs.msg import PointCloud2

    points = np.asarray(xyz)
    if points.ndim not in (2, 3) or points.shape[-1] != 3 or points.dtype.kind not in "fiu":
        raise PointCloudError(
            "xyz must be real [N, 3] or [H, W, 3]", shape=points.shape, dtype=str(points.dtype)
        )
    lead = points.shape[:-1]
    height, width = (1, lead[0]) if points.ndim == 2 else lead
    count = height * width
    names = ["x", "y", "z"]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != lead + (3,) or rgb.dtype != np.uint8:
            raise PointCloudError(
                "rgb must be uint8 with the same leading shape as xyz",
                rgb_shape=rgb.shape,
                rgb_dtype=str(rgb.dtype),
                xyz_shape=points.shape,
            )
        names.append("rgb")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != lead or confidence.dtype.kind not in "fiu":
            raise PointCloudError(
                "confidence must be real with the leading shape of xyz",
                confidence_shape=confidence.shape,
                xyz_shape=points.shape,
            )
        names.append("confidence")
    columns = len(names)
    packed = np.empty((count, columns), dtype=np.float32)
    packed[:, :3] = points.reshape(count, 3)
    if rgb is not None:
        packed.view(np.uint32)[:, 3] = pack_rgb(rgb.reshape(count, 3))
    if confidence is not None:
        packed[:, columns - 1] = confidence.reshape(count)
    msg = new_message(PointCloud2)
    msg.header = make_header(frame_id, stamp, header)
    msg.height, msg.width = int(height), int(width)
    msg.fields = [_point_field(name, 4 * i) for i, name in enumerate(names)]
    msg.is_bigendian = sys.byteorder == "big"
    msg.point_step = 4 * columns
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(np.isfinite(packed[:, :3]).all())
    msg.data = to_byte_array(packed)
    return msg


def pointcloud2_dtype(fields: Any, point_step: int, is_bigendian: bool) -> np.dtype:
    """Structured numpy dtype (``itemsize = point_step``) describing one point of a PointCloud2."""
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        if datatype not in POINTFIELD_DTYPES:
            raise PointCloudError("unknown PointField datatype", field=name, datatype=datatype)
        if name in names:
            raise PointCloudError("duplicate PointField name", field=name)
        count = max(count, 1)  # count 0 is treated as 1, like PCL
        base = np.dtype(order + POINTFIELD_DTYPES[datatype])
        if offset < 0 or offset + base.itemsize * count > point_step:
            raise PointCloudError(
                "PointField does not fit inside point_step", field=name, offset=offset, point_step=point_step
            )
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def read_points(msg: Any) -> np.ndarray:
    """Read-only structured view ``[H, W]`` of all fields of a PointCloud2 (file byte order, no copy).

    Raises:
        PointCloudError: bad datatype/offsets, ``point_step`` 0, ``row_step < width * point_step`` or
            ``len(data) != height * row_step``.
    """
    return _read_points(msg)[0]


def _read_points(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise PointCloudError("negative cloud size", height=height, width=width)
    if point_step <= 0 and height * width > 0:
        raise PointCloudError("point_step must be positive", point_step=point_step)
    dtype = pointcloud2_dtype(msg.fields, max(point_step, 1), bool(msg.is_bigendian))
    if row_step < width * point_step:
        raise PointCloudError(
            "row_step is smaller than width * point_step",
            row_step=row_step,
            width=width,
            point_step=point_step,
        )
    buf = as_uint8_buffer(msg.data)
    if buf.size != height * row_step:
        raise PointCloudError(
            "data length disagrees with height * row_step",
            data_length=int(buf.size),
            height=height,
            row_step=row_step,
            expected=height * row_step,
        )
    if height * width == 0:
        return np.zeros((height, width), dtype=dtype), buf
    view = np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(row_step, point_step))
    view.flags.writeable = False
    return view, buf


def _float_columns(view: np.ndarray, buf: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """float32 ``[H, W, len(names)]`` of scalar fields; one strided copy when they are adjacent float32."""
    fields = view.dtype.fields
    first = fields[names[0]]
    adjacent = all(
        fields[n][0].kind == "f" and fields[n][0].itemsize == 4 and fields[n][1] == first[1] + 4 * i
        for i, n in enumerate(names)
    )
    if adjacent and first[0].isnative:
        strided = np.ndarray(
            view.shape + (len(names),),
            dtype=np.float32,
            buffer=buf,
            offset=first[1],
            strides=view.strides + (4,),
        )
        return np.array(strided, dtype=np.float32)
    return np.stack([view[n].astype(np.float32) for n in names], axis=-1)


def pointcloud2_to_numpy(
    msg: Any, *, keep_organised: bool = False, skip_nans: bool = False, confidence_field: str = "confidence"
) -> PointCloudArrays:
    """xyz (+ rgb, + confidence when present) of a PointCloud2 as native-order numpy arrays.

    Colour is read from an ``rgb`` or ``rgba`` field (FLOAT32 or UINT32 holding ``0x00RRGGBB``) or from
    separate ``r``, ``g``, ``b`` UINT8 fields.

    Args:
        msg: the PointCloud2 (duck-typed; rosbags messages work too).
        keep_organised: return ``[H, W, ...]`` instead of flattening to ``[H*W, ...]``.
        skip_nans: drop points whose xyz is not finite (incompatible with ``keep_organised``).
        confidence_field: name of the confidence field.

    Raises:
        PointCloudError: layout problems (see :func:`read_points`), a missing x/y/z field.
    """
    if keep_organised and skip_nans:
        raise ValueError("skip_nans cannot keep the organised [H, W] layout")
    view, buf = _read_points(msg)
    fields = view.dtype.fields
    missing = [n for n in ("x", "y", "z") if n not in fields]
    if missing:
        raise PointCloudError("PointCloud2 lacks coordinate fields", missing=missing, fields=list(fields))
    if view.size == 0:
        xyz = np.zeros(view.shape + (3,), np.float32)
    else:
        xyz = _float_columns(view, buf, ("x", "y", "z"))
    rgb = None
    colour_name = "rgb" if "rgb" in fields else "rgba" if "rgba" in fields else None
    if colour_name is not None:
        kind = fields[colour_name][0]
        if kind.itemsize != 4 or kind.kind not in "fu":
            raise PointCloudError("rgb field must be FLOAT32 or UINT32", field=colour_name, dtype=str(kind))
        bits = view[colour_name].view(kind.str[0] + "u4")  # same bytes, same byte order, as unsigned
        rgb = unpack_rgb(bits.astype(np.uint32))
    elif all(n in fields for n in ("r", "g", "b")):
        rgb = np.stack([view[n] for n in ("r", "g", "b")], axis=-1).astype(np.uint8)
    confidence = None
    if confidence_field in fields:
        confidence = view[confidence_field].astype(np.float32)
    if not keep_organised:
        xyz = xyz.reshape(-1, 3)
        rgb = None if rgb is None else rgb.reshape(-1, 3)
        confidence = None if confidence is None else confidence.reshape(-1)
        if skip_nans:
            keep = np.isfinite(xyz).all(axis=1)
            if not keep.all():
                xyz = xyz[keep]
                rgb = None if rgb is None else rgb[keep]
                confidence = None if confidence is None else confidence[keep]
    return PointCloudArrays(xyz=xyz, rgb=rgb, confidence=confidence)
