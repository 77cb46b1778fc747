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
    heading = theta + yaw_offset
    fwd = np.stack(
        [
            np.cos(heading) * np.cos(pitch),
            np.sin(heading) * np.cos(pitch),
            np.full_like(theta, np.sin(pitch)),
        ],
        axis=1,
    )
    T = look_at(eye, eye + look_distance * fwd)
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
