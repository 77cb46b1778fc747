"""PLY point clouds: vectorised binary little-endian writer (xyz float32, rgb uint8, optional confidence
float32) and a reader (binary little/big endian and ASCII, vertex element with scalar
properties) for tests and tools.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .poses import to_numpy

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


class PlyError(ValueError):
    """Malformed PLY file or bad arrays to write."""


def _colors_uint8(colors) -> np.ndarray:
    c = np.asarray(colors.detach().cpu() if hasattr(colors, "detach") else colors)
    if c.dtype == np.uint8:
        return c
    c = c.astype(np.float64)
    if c.size and np.nanmax(c) <= 1.0:  # floats in [0, 1]
        c = c * 255.0
    return np.clip(np.rint(np.nan_to_num(c)), 0, 255).astype(np.uint8)


def write_ply(path: str | Path, points, colors=None, confidence=None, drop_nonfinite: bool = True) -> int:
    """Write ``points [N, 3]`` (metres) with optional ``colors [N, 3]`` (uint8, or floats in
    [0, 1] / [0, 255]) and ``confidence [N]`` as a binary little-endian PLY (atomic write).
    NumPy or torch inputs.

    Points with non-finite coordinates are dropped when ``drop_nonfinite`` (else :class:`PlyError`).
    Returns the number of vertices written.
    """
    P = to_numpy(points)
    if P.ndim != 2 or P.shape[1] != 3:
        raise PlyError(f"points must be [N, 3], got {P.shape}")
    n = P.shape[0]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    C = None
    if colors is not None:
        C = _colors_uint8(colors)
        if C.shape != (n, 3):
            raise PlyError(f"colors must be [N, 3] matching points ({n}), got {C.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    Q = None
    if confidence is not None:
        Q = to_numpy(confidence).reshape(-1)
        if Q.shape[0] != n:
            raise PlyError(f"confidence must have {n} values, got {Q.shape[0]}")
        fields += [("confidence", "<f4")]
    keep = np.all(np.isfinite(P), axis=1)
    if not keep.all():
        if not drop_nonfinite:
            raise PlyError(f"{int((~keep).sum())} points have non-finite coordinates")
    data = np.empty(int(keep.sum()), dtype=np.dtype(fields))
    data["x"], data["y"], data["z"] = (P[keep, k] for k in range(3))
    if C is not None:
        data["red"], data["green"], data["blue"] = (C[keep, k] for k in range(3))
    if Q is not None:
        data["confidence"] = Q[keep]
    header = ["ply", "format binary_little_endian 1.0", "comment written by online3r_ros"]
    header.append(f"element vertex {data.shape[0]}")
    names = {"<f4": "float", "u1": "uchar"}
    header += [f"property {names[t]} {name}" for name, t in fields]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    os.replace(tmp, path)
    return int(data.shape[0])


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Read the vertex element of a PLY file -> ``{"points": [N,3] float, "colors": [N,3] uint8 (if any),
    "confidence": [N] (if any), <other property name>: [N]}``. List properties are not supported."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise PlyError(f"{path}: not a PLY file")
        fmt, elements, current = None, [], None
        while True:
            line = f.readline()
            if not line:
                raise PlyError(f"{path}: header has no end_header")
            tok = line.decode("ascii", errors="replace").split()
            if not tok or tok[0] in ("comment", "obj_info"):
                continue
            if tok[0] == "end_header":
                break
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                current = {"name": tok[1], "count": int(tok[2]), "props": []}
                elements.append(current)
            elif tok[0] == "property":
                if current is None:
                    raise PlyError(f"{path}: property before any element")
                if tok[1] == "list":
                    raise PlyError(f"{path}: list properties are not supported ({line!r})")
                if tok[1] not in _PLY_TYPES:
                    raise PlyError(f"{path}: unknown property type {tok[1]!r}")
                current["props"].append((tok[2], _PLY_TYPES[tok[1]]))
        if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
            raise PlyError(f"{path}: unsupported format {fmt!r}")
        if not elements or elements[0]["name"] != "vertex":
            raise PlyError(f"{path}: the first element must be 'vertex'")
        vert = elements[0]
        endian = ">" if fmt == "binary_big_endian" else "<"
        dtype = np.dtype([(name, endian + t) for name, t in vert["props"]])
        if fmt == "ascii":
            rows = np.loadtxt(f, dtype=np.float64, max_rows=vert["count"], ndmin=2)
            data = np.empty(vert["count"], dtype=dtype)
            for k, (name, _) in enumerate(vert["props"]):
                data[name] = rows[:, k]
        else:
            raw = f.read(dtype.itemsize * vert["count"])
            if len(raw) < dtype.itemsize * vert["count"]:
                raise PlyError(f"{path}: truncated ({len(raw)} of {dtype.itemsize * vert['count']} bytes)")
            data = np.frombuffer(raw, dtype=dtype)
    names = [n for n, _ in vert["props"]]
    out: dict[str, np.ndarray] = {}
    if all(k in names for k in ("x", "y", "z")):
        out["points"] = np.stack([data["x"], data["y"], data["z"]], axis=1)
    if all(k in names for k in ("red", "green", "blue")):
        out["colors"] = np.stack([data["red"], data["green"], data["blue"]], axis=1).astype(np.uint8)
    for name in names:
        if name not in ("x", "y", "z", "red", "green", "blue"):
            out[name] = np.array(data[name])
    return out
