"""Node-to-node packing: keyframe / observation packets <-> organised ``PointCloud2``, poses <-> arrays.

Keyframe and observation clouds are organised ``H x W`` (working resolution) clouds written by
:func:`online3r_ros.ros.pointcloud.numpy_to_pointcloud2` (keyframes: ``x, y, z, rgb, confidence``;
observations: ``x, y, z, confidence``). Their ``header.stamp`` is the input image's stamp and their
``header.frame_id`` is a metadata string (exact: floats are written with ``repr``)::

    online3r/kf;session=<int>;id=<int>;index=<int>;t=<float s>;N=<int>;N_updates=<int>;prev_obs=<int>;
        anchor=<int>;T_WC=<tx,ty,tz,qx,qy,qz,qw,s>;T_WA=<8 floats | none>;K=<9 floats row-major | none>;
        T_bc=<tx,ty,tz,qx,qy,qz,qw>
    online3r/obs;session=<int>;kf=<int>;seq=<int>;index=<int>;t=<float s>;T_CkCf=<8 floats>

(``anchor`` = the keyframe it was tracked from, its always-kept edge; ``T_WA`` = the anchor's pose as the
tracker knew it, see :class:`~online3r_ros.slam.packets.KeyframePacket`; ``T_bc`` = the tracker's base ->
camera transform, so the mapper expresses its outputs in the same ``map``.) Keyframe poses travel as
``std_msgs/Float64MultiArray`` ``[K, 8]`` (:func:`poses_to_array`; the session id is in the first
dimension's label). ROS-free except for the lazily imported message classes.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from online3r_ros.ros.pointcloud import numpy_to_pointcloud2, pointcloud2_to_numpy
from online3r_ros.slam.packets import KeyframePacket, MapperState, ObservationPacket, PromptUpdate

__all__ = [
    "KF_PREFIX",
    "OBS_PREFIX",
    "MessageFormatError",
    "keyframe_to_cloud",
    "cloud_to_keyframe",
    "observation_to_cloud",
    "cloud_to_observation",
    "poses_to_array",
    "array_to_poses",
    "mapper_state_msg",
    "parse_mapper_state",
    "parse_metadata",
]

KF_PREFIX = "online3r/kf"
OBS_PREFIX = "online3r/obs"
_POSE_LABELS = ("keyframe", "tx_ty_tz_qx_qy_qz_qw_s")


class MessageFormatError(ValueError):
    """A node-to-node message does not follow the documented format (the message names what is wrong)."""


def _floats(values: Any) -> str:
    return ",".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _parse_floats(text: str, n: int, key: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError as exc:
        raise MessageFormatError(f"metadata field {key!r} is not a list of numbers: {text!r}") from exc
    if out.size != n or not np.all(np.isfinite(out)):
        raise MessageFormatError(f"metadata field {key!r} needs {n} finite numbers, got {text!r}")
    return out


def parse_metadata(frame_id: str, prefix: str) -> dict[str, str]:
    """``key=value`` fields of a metadata ``frame_id`` that must start with ``prefix``."""
    parts = str(frame_id).split(";")
    if parts[0] != prefix:
        raise MessageFormatError(f"frame_id must start with {prefix!r}, got {str(frame_id)[:40]!r}")
    out = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise MessageFormatError(f"metadata field without '=': {part!r}")
        out[key] = value
    return out


def _need(meta: dict[str, str], key: str) -> str:
    if key not in meta:
        raise MessageFormatError(f"metadata lacks {key!r} (has {sorted(meta)})")
    return meta[key]


def _int(meta: dict[str, str], key: str) -> int:
    try:
        return int(_need(meta, key))
    except ValueError as exc:
        raise MessageFormatError(f"metadata field {key!r} is not an integer: {meta[key]!r}") from exc


def keyframe_to_cloud(
    pkt: KeyframePacket,
    stamp: Any,
    T_base_camera: np.ndarray,
    fused_stamps_ns: list[int | None] | None = None,
) -> Any:
    """Organised ``PointCloud2`` of a keyframe packet (``stamp``: the keyframe image's stamp;
    ``fused_stamps_ns``: the input stamps of ``pkt.fused_frames``, ``None`` where unknown)."""
    K = "none" if pkt.K is None else _floats(pkt.K.detach().cpu().numpy())
    T_WC = _floats(pkt.T_WC.detach().cpu().numpy())
    T_WA = "none" if pkt.T_WA is None else _floats(pkt.T_WA.detach().cpu().numpy())
    t = T_base_camera
    from online3r_ros.ros.pose import matrix_to_tqs

    tb, qb, _ = matrix_to_tqs(t)
    meta = (
        f"{KF_PREFIX};session={int(pkt.session)};id={int(pkt.kf_id)};index={int(pkt.frame_index)};"
        f"t={float(pkt.timestamp)!r};N={int(pkt.N)};N_updates={int(pkt.N_updates)};"
        f"prev_obs={int(pkt.prev_observations)};anchor={int(pkt.anchor_id)};T_WC={T_WC};T_WA={T_WA};K={K};"
        f"T_bc={_floats(np.concatenate([tb, qb]))}"
    )
    if pkt.fused_frames is not None and len(pkt.fused_frames[0]):  # rows: t, T_CkCf (re-sent working copy)
        ts, rel = pkt.fused_frames
        meta += f";fused={_floats(np.concatenate([np.asarray(ts)[:, None], rel.cpu().numpy()], axis=1))}"
        if fused_stamps_ns is not None:  # exact stamps: float seconds cannot hold nanoseconds
            meta += ";fused_ns=" + ",".join("-1" if v is None else str(int(v)) for v in fused_stamps_ns)

    return numpy_to_pointcloud2(
        pkt.X.detach().cpu().numpy(),
        pkt.colors.detach().cpu().numpy(),
        pkt.C.detach().cpu().numpy(),
        frame_id=meta,
        stamp=stamp,
    )


def cloud_to_keyframe(msg: Any) -> tuple[KeyframePacket, np.ndarray]:
    """``(packet, T_base_camera [4, 4])`` from a keyframe cloud; :class:`MessageFormatError` if malformed."""
    from online3r_ros.ros.pose import tqs_to_matrix

    meta = parse_metadata(msg.header.frame_id, KF_PREFIX)
    arrays = pointcloud2_to_numpy(msg, keep_organised=True)
    if arrays.rgb is None or arrays.confidence is None or arrays.xyz.ndim != 3:
        raise MessageFormatError("keyframe cloud needs an organised x,y,z,rgb,confidence layout")
    K_text = _need(meta, "K")
    K = None if K_text == "none" else torch.from_numpy(_parse_floats(K_text, 9, "K").reshape(3, 3)).float()
    T_WC = _parse_floats(_need(meta, "T_WC"), 8, "T_WC")
    T_WA_text = meta.get("T_WA", "none")  # absent in an older tracker's keyframes: placed by T_WC
    T_WA = None if T_WA_text == "none" else torch.from_numpy(_parse_floats(T_WA_text, 8, "T_WA"))
    T_bc = _parse_floats(_need(meta, "T_bc"), 7, "T_bc")
    pkt = KeyframePacket(
        session=_int(meta, "session"),
        kf_id=_int(meta, "id"),
        frame_index=_int(meta, "index"),
        timestamp=float(_parse_floats(_need(meta, "t"), 1, "t")[0]),
        T_WC=torch.from_numpy(T_WC),
        X=torch.from_numpy(np.ascontiguousarray(arrays.xyz, dtype=np.float32)),
        C=torch.from_numpy(np.ascontiguousarray(arrays.confidence, dtype=np.float32)),
        colors=torch.from_numpy(np.ascontiguousarray(arrays.rgb)),
        K=K,
        N=_int(meta, "N"),
        N_updates=_int(meta, "N_updates"),
        prev_observations=_int(meta, "prev_obs"),
        anchor_id=_int(meta, "anchor") if "anchor" in meta else None,
        T_WA=T_WA,
        fused_frames=_fused_frames(meta),
    )
    return pkt, tqs_to_matrix(T_bc[:3], T_bc[3:])


def _fused_frames(meta: dict[str, str]) -> tuple[np.ndarray, torch.Tensor] | None:
    """The ``fused`` field of a keyframe's metadata: ``(timestamps [M], T_CkCf [M, 8])`` or ``None``."""
    text = meta.get("fused")
    if text is None:
        return None
    rows = _parse_floats(text, text.count(",") + 1, "fused")
    if rows.size % 9:
        raise MessageFormatError(f"metadata field 'fused' needs rows of 9 numbers, got {rows.size} numbers")
    rows = rows.reshape(-1, 9)
    return rows[:, 0].copy(), torch.from_numpy(rows[:, 1:].copy())


def fused_stamps_ns(msg: Any) -> dict[float, int]:
    """``{timestamp: stamp ns}`` of the fused frames of a keyframe cloud whose input stamps were sent."""
    meta = parse_metadata(msg.header.frame_id, KF_PREFIX)
    fused, text = _fused_frames(meta), meta.get("fused_ns")
    if fused is None or text is None:
        return {}
    try:
        ns = [int(v) for v in text.split(",")]
    except ValueError as exc:
        raise MessageFormatError(f"metadata field 'fused_ns' is not integers: {text[:40]!r}") from exc
    if len(ns) != len(fused[0]):
        raise MessageFormatError(f"metadata field 'fused_ns' has {len(ns)} stamps for {len(fused[0])} frames")
    return {float(t): v for t, v in zip(fused[0], ns, strict=True) if v >= 0}


def observation_to_cloud(pkt: ObservationPacket, stamp: Any) -> Any:
    """Organised ``PointCloud2`` (x, y, z = ``X_kk``, confidence = ``C_kf``) of an observation packet."""
    meta = (
        f"{OBS_PREFIX};session={int(pkt.session)};kf={int(pkt.kf_id)};seq={int(pkt.seq)};"
        f"index={int(pkt.frame_index)};t={float(pkt.timestamp)!r};"
        f"T_CkCf={_floats(pkt.T_CkCf.detach().cpu().numpy())}"
    )
    return numpy_to_pointcloud2(
        pkt.X_kk.detach().cpu().numpy(), None, pkt.C_kf.detach().cpu().numpy(), frame_id=meta, stamp=stamp
    )


def cloud_to_observation(msg: Any) -> ObservationPacket:
    meta = parse_metadata(msg.header.frame_id, OBS_PREFIX)
    arrays = pointcloud2_to_numpy(msg, keep_organised=True)
    if arrays.confidence is None or arrays.xyz.ndim != 3:
        raise MessageFormatError("observation cloud needs an organised x,y,z,confidence layout")
    return ObservationPacket(
        session=_int(meta, "session"),
        kf_id=_int(meta, "kf"),
        seq=_int(meta, "seq"),
        frame_index=_int(meta, "index"),
        timestamp=float(_parse_floats(_need(meta, "t"), 1, "t")[0]),
        T_CkCf=torch.from_numpy(_parse_floats(_need(meta, "T_CkCf"), 8, "T_CkCf")),
        X_kk=torch.from_numpy(np.ascontiguousarray(arrays.xyz, dtype=np.float32)),
        C_kf=torch.from_numpy(np.ascontiguousarray(arrays.confidence, dtype=np.float32)),
    )


def poses_to_array(T_WC: torch.Tensor | np.ndarray, session: int | None) -> Any:
    """``std_msgs/Float64MultiArray`` of Sim(3) poses ``[K, 8]``: dim 0 labelled ``keyframe;session=<int>``
    (the tracker session the map belongs to), dim 1 ``tx_ty_tz_qx_qy_qz_qw_s``."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    P = np.asarray(T_WC.detach().cpu() if torch.is_tensor(T_WC) else T_WC, dtype=np.float64).reshape(-1, 8)
    msg = Float64MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(
            label=f"{_POSE_LABELS[0]};session={-1 if session is None else int(session)}",
            size=int(P.shape[0]),
            stride=int(P.size),
        ),
        MultiArrayDimension(label=_POSE_LABELS[1], size=8, stride=8),
    ]
    msg.layout.data_offset = 0
    msg.data = P.reshape(-1).tolist()
    return msg


def array_to_poses(msg: Any) -> tuple[int, torch.Tensor]:
    """``(session, [K, 8] float64 poses)`` from :func:`poses_to_array`'s message (validated layout, finite,
    ``s > 0``; session -1 = none)."""
    dims = list(msg.layout.dim)
    if len(dims) != 2 or dims[1].size != 8 or not dims[0].label.startswith(_POSE_LABELS[0] + ";session="):
        raise MessageFormatError("keyframe pose array must have dims [keyframe;session=<id>, 8]")
    try:
        session = int(dims[0].label.split("=", 1)[1])
    except ValueError as exc:
        raise MessageFormatError(f"bad session in {dims[0].label!r}") from exc
    data = np.asarray(msg.data, dtype=np.float64)
    n = int(dims[0].size)
    if data.size != 8 * n:
        raise MessageFormatError(f"keyframe pose array holds {data.size} values for {n} keyframes")
    P = data.reshape(n, 8)
    if not np.all(np.isfinite(P)) or np.any(P[:, 7] <= 0):
        raise MessageFormatError("keyframe poses must be finite with positive scale")
    return session, torch.from_numpy(P.copy())


def mapper_state_msg(state: MapperState) -> Any:
    """``std_msgs/String`` with the backend's announcement as JSON (``generation``, ``session``,
    ``num_keyframes``, ``reset``, ``request``)."""
    from std_msgs.msg import String

    return String(
        data=json.dumps(
            {
                "generation": int(state.generation),
                "session": None if state.session is None else int(state.session),
                "num_keyframes": int(state.num_keyframes),
                "reset": bool(state.reset),
                "request": int(state.request),
            }
        )
    )


def parse_mapper_state(msg: Any) -> MapperState:
    """The :class:`MapperState` of :func:`mapper_state_msg`'s message; :class:`MessageFormatError` if not."""
    try:
        state = json.loads(msg.data)
        return MapperState(
            generation=int(state["generation"]),
            session=None if state["session"] is None else int(state["session"]),
            num_keyframes=int(state["num_keyframes"]),
            reset=bool(state.get("reset", False)),
            request=int(state.get("request", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageFormatError(f"mapper state is not the documented JSON: {msg.data[:80]!r}") from exc


PROMPTS_PREFIX = "online3r/prompts"


def round_prompts(update: PromptUpdate) -> PromptUpdate:
    """``update`` with its prompts rounded to bfloat16, as they travel: the mapper then uses exactly the
    prompts the tracker receives."""
    return dataclasses.replace(update, prompts=update.prompts.to(torch.bfloat16).float())


def prompts_to_msg(update: PromptUpdate) -> Any:
    """``std_msgs/UInt8MultiArray``: the prompts as bfloat16 bytes, shape in the layout, version and keyframe
    in dim 0's label."""
    from std_msgs.msg import MultiArrayDimension, UInt8MultiArray

    p = update.prompts.detach().to("cpu", torch.bfloat16).contiguous()
    msg = UInt8MultiArray()
    label = f"{PROMPTS_PREFIX};version={int(update.version)};kf={int(update.kf_id)}"
    sizes = [int(v) for v in p.shape]
    for i, name in enumerate((label, "tokens", "dim")):  # strides in bfloat16 elements (2 bytes each)
        msg.layout.dim.append(MultiArrayDimension(label=name, size=sizes[i], stride=int(np.prod(sizes[i:]))))
    msg.data = p.view(torch.int16).numpy().tobytes()
    return msg


def msg_to_prompts(msg: Any) -> PromptUpdate:
    """Inverse of :func:`prompts_to_msg`; :class:`MessageFormatError` if malformed."""
    dims = list(msg.layout.dim)
    if len(dims) != 3:
        raise MessageFormatError(f"prompts need a 3-d layout, got {len(dims)} dimensions")
    meta = parse_metadata(dims[0].label, PROMPTS_PREFIX)
    shape = tuple(int(d.size) for d in dims)
    raw = bytes(msg.data)
    if len(raw) != 2 * int(np.prod(shape)):
        raise MessageFormatError(f"prompts of shape {shape} need {2 * int(np.prod(shape))} bytes: {len(raw)}")
    t = (
        torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy())
        .view(torch.bfloat16)
        .float()
        .reshape(shape)
    )
    if not bool(torch.isfinite(t).all()):
        raise MessageFormatError("prompts are not finite")
    return PromptUpdate(_int(meta, "version"), t, kf_id=_int(meta, "kf"))
