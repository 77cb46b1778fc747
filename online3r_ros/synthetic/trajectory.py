"""Camera trajectories for the synthetic scene (camera-to-world ``T_WC``; optical frame z forward, y down)."""

from __future__ import annotations

import numpy as np


def look_at(
    eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """``[N, 4, 4]`` camera-to-world poses at ``eye [N, 3]`` looking at ``target [N, 3]`` (world z up).

    Camera axes: z = forward, x = right = forward × up, y = down = z × x.
    """
    eye = np.atleast_2d(np.asarray(eye, dtype=np.float64))
    target = np.atleast_2d(np.asarray(target, dtype=np.float64))
    z = target - eye
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = np.cross(z, np.asarray(up, dtype=np.float64)[None])
    nx = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(nx < 1e-9):
        raise ValueError("look_at: viewing direction is parallel to 'up'")
    x /= nx
    y = np.cross(z, x)
    T = np.tile(np.eye(4), (eye.shape[0], 1, 1))
    T[:, :3, 0], T[:, :3, 1], T[:, :3, 2], T[:, :3, 3] = x, y, z, eye
    return T


def heading_forward(heading: np.ndarray, pitch: float | np.ndarray = 0.0) -> np.ndarray:
    """Unit forward vectors ``[N, 3]`` for world-frame ``heading`` angles (radians from +x towards +y) tilted
    by ``pitch`` radians (negative = looking down)."""
    heading = np.asarray(heading, dtype=np.float64).reshape(-1)
    pitch = np.broadcast_to(np.asarray(pitch, dtype=np.float64), heading.shape)
    return np.stack([np.cos(heading) * np.cos(pitch), np.sin(heading) * np.cos(pitch), np.sin(pitch)], axis=1)


def orbit_trajectory(
    n_frames: int,
    radii: tuple[float, float] = (0.8, 0.6),
    center: tuple[float, float, float] = (0.0, 0.0, 1.4),
    laps: float = 1.0,
    yaw_offset: float = 0.6,
    pitch: float = -0.1,
    bob: float = 0.05,
    look_distance: float = 2.0,
    endpoint: bool = True,
) -> np.ndarray:
    """Camera moving along an ellipse (``radii`` in x/y, around ``center``) and looking outwards.

    The heading at angle θ is ``θ + yaw_offset`` (0 = radially outwards, π/2 = along the path), tilted by
    ``pitch`` radians (negative = looking down); the height bobs by ``bob`` metres with ``sin(2θ)``.
    With ``endpoint=True`` frame ``n_frames - 1`` is at angle ``2π·laps``: for ``laps = 1`` the last pose
    equals the first exactly (a closed loop); with ``laps > 1`` frames from ``(n_frames - 1) / laps`` on
    revisit the start of the path. Returns ``[n_frames, 4, 4]`` float64.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    denom = max(n_frames - 1, 1) if endpoint else n_frames
    theta = 2 * np.pi * laps * np.arange(n_frames) / denom
    cx, cy, cz = center
    eye = np.stack(
        [cx + radii[0] * np.cos(theta), cy + radii[1] * np.sin(theta), cz + bob * np.sin(2 * theta)], axis=1
    )
    T = look_at(eye, eye + look_distance * heading_forward(theta + yaw_offset, pitch))
    if endpoint and abs(laps - round(laps)) < 1e-12 and n_frames > 1:
        T[-1] = T[0] if round(laps) >= 1 else T[-1]  # exact closure despite floating-point cos/sin
    return T


def wall_trajectory(
    n_frames: int,
    wall_x: float = 3.0,
    distance: float = 1.0,
    height: float = 1.5,
    slide: float = 0.5,
    bob: float = 0.05,
    roll: float = 0.1,
) -> np.ndarray:
    """Camera facing the wall ``x = wall_x`` (looking along +x) from ``distance`` metres and moving parallel
    to it: the degenerate case of point-to-plane ICP (the wall's two in-plane translations and the rotation
    about its normal are unobservable from depth alone).

    Over the ``n_frames`` the camera slides ``slide`` metres along the wall (-y) with a smooth start and stop
    (``slide·(1 - cos(π s))/2``, ``s`` from 0 to 1), bobs by ``bob`` metres vertically (``sin(2π s)``) and
    rolls about its optical axis (the wall normal) by up to ``roll`` radians: the velocity changes from frame
    to frame, so a constant-velocity motion model alone does not predict the poses. Returns
    ``[n_frames, 4, 4]`` float64.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    s = np.arange(n_frames) / max(n_frames - 1, 1)
    eye = np.stack(
        [
            np.full_like(s, wall_x - distance),
            -slide * (1 - np.cos(np.pi * s)) / 2,
            height + bob * np.sin(2 * np.pi * s),
        ],
        axis=1,
    )
    T = look_at(eye, eye + np.array([1.0, 0.0, 0.0]))
    a = roll * np.sin(2 * np.pi * s)
    c, sn = np.cos(a), np.sin(a)
    Rz = np.zeros((n_frames, 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -sn, sn, c, 1.0
    T[:, :3, :3] = T[:, :3, :3] @ Rz
    return T


def loop_lap_frames(n_frames: int, overlap: float = 0.1) -> int:
    """Frame index at which :func:`loop_trajectory` is back at its start (``round(n_frames·(1 - overlap))``);
    frames from there on revisit frames ``0 .. n_frames - 1 - loop_lap_frames(...)``."""
    if not 0.0 <= overlap < 0.5:
        raise ValueError(f"overlap must be in [0, 0.5), got {overlap}")
    lap = int(round(n_frames * (1.0 - overlap)))
    if lap < 4:
        raise ValueError(f"n_frames={n_frames} is too few for a loop (the lap needs >= 4 frames)")
    return lap


def _superellipse(phi: np.ndarray, half_extents: tuple[float, float], squareness: float) -> np.ndarray:
    """Points ``[N, 2]`` of ``|x/a|^p + |y/b|^p = 1`` at parameter angles ``phi`` (p = 2: ellipse)."""
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / squareness
    return np.stack(
        [half_extents[0] * np.sign(c) * np.abs(c) ** e, half_extents[1] * np.sign(s) * np.abs(s) ** e], axis=1
    )


def loop_trajectory(
    n_frames: int = 400,
    half_extents: tuple[float, float] = (0.45, 0.3),
    center: tuple[float, float, float] = (0.0, 0.0, 1.4),
    squareness: float = 4.0,
    overlap: float = 0.1,
    look: str = "out",
    yaw_offset: float = 0.3,
    pitch: float = -0.1,
    bob: float = 0.02,
    yaw_wobble: float = 0.035,
    wobble_cycles: float = 3.5,
    revisit_offset: float = 0.03,
    look_distance: float = 2.0,
) -> np.ndarray:
    """A handheld-like closed loop: the camera walks once around a rounded rectangle at constant speed,
    is back at its start at frame :func:`loop_lap_frames(n_frames, overlap) <loop_lap_frames>` and goes on
    for the last ``overlap`` fraction of the frames, re-seeing what the first frames saw (a loop closure).

    Path: the superellipse ``|x/a|^p + |y/b|^p = 1`` (``half_extents`` a, b around ``center``; ``squareness``
    p = 2 is an ellipse, 4 a rounded rectangle), parameterised by arc length. The defaults give a 2.8 m loop;
    with 400 frames the camera steps ~0.8 cm and ~1° per frame (a handheld camera at 30 Hz).
    Heading: ``look = "out"`` faces away from the centre (the walls and the objects around the path),
    ``"in"`` towards it (and the far side of the room), turned by ``yaw_offset`` rad towards the direction of
    travel and tilted by ``pitch``. Wobble: height ``± bob`` m and yaw ``± yaw_wobble`` rad, ``wobble_cycles``
    per lap (not an integer, so the second pass is not a replay of the first); the path also drifts outwards
    by ``revisit_offset`` m per lap. The revisit is thus a few cm and degrees off the first pass: close enough
    to see the same surfaces, never bit-identical. Returns ``[n_frames, 4, 4]`` float64 ``T_WC``.
    """
    if look not in ("out", "in"):
        raise ValueError(f"look must be 'out' or 'in', got {look!r}")
    if squareness < 2.0:
        raise ValueError(f"squareness must be >= 2 (2 = ellipse), got {squareness}")
    lap = loop_lap_frames(n_frames, overlap)
    u = np.arange(n_frames, dtype=np.float64) / lap  # laps travelled
    # constant speed: interpolate a dense polyline of the lap by arc length (sub-mm chords)
    dense = _superellipse(np.linspace(0.0, 2 * np.pi, 1 << 14), half_extents, squareness)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    s = (u - np.floor(u)) * arc[-1]
    xy = np.column_stack([np.interp(s, arc, dense[:, 0]), np.interp(s, arc, dense[:, 1])])
    radial = xy / np.linalg.norm(xy, axis=1, keepdims=True)
    xy = xy + revisit_offset * u[:, None] * radial
    wobble = 2 * np.pi * wobble_cycles * u
    eye = np.column_stack([center[0] + xy[:, 0], center[1] + xy[:, 1], center[2] + bob * np.sin(wobble)])
    heading = np.arctan2(radial[:, 1], radial[:, 0]) + yaw_offset + yaw_wobble * np.cos(wobble)
    if look == "in":
        heading = heading + np.pi
    return look_at(eye, eye + look_distance * heading_forward(heading, pitch))
