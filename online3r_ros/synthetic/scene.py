"""Analytic test scene: a room (inside of an axis-aligned box) with axis-aligned boxes and spheres inside.

World frame: metres, z up, floor at ``z = room_lo[2]``. Ray casting is vectorised over rays and primitives
(NumPy, no per-pixel loops): ``raycast(origin, dirs)`` returns the nearest positive hit distance along each
(unnormalised) direction, the surface id and the outward normal (facing the camera side). ``distance(points)``
is the exact unsigned distance to the nearest surface, an independent check of the ray caster.

Surface ids: 0..5 room faces (-x, +x, -y, +y, floor, ceiling), 6.. boxes, then spheres; -1 = miss (cannot
happen for rays starting inside the room).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_BIG = np.float32(1e30)


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[lo, hi]`` (metres) with an RGB tint in [0, 1]."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    tint: tuple[float, float, float] = (0.8, 0.6, 0.4)


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    tint: tuple[float, float, float] = (0.5, 0.7, 0.9)


@dataclass
class SyntheticScene:
    """Room ``[room_lo, room_hi]`` seen from inside, plus boxes and spheres; ``seed`` drives the texture."""

    room_lo: tuple[float, float, float] = (-3.0, -2.5, 0.0)
    room_hi: tuple[float, float, float] = (3.0, 2.5, 3.0)
    boxes: list[Box] = field(default_factory=list)
    spheres: list[Sphere] = field(default_factory=list)
    seed: int = 0
    room_tints: tuple = (
        (0.85, 0.80, 0.70),
        (0.70, 0.80, 0.85),
        (0.80, 0.85, 0.70),
        (0.85, 0.72, 0.80),
        (0.60, 0.55, 0.50),
        (0.92, 0.92, 0.92),
    )

    def __post_init__(self) -> None:
        self._room_lo = np.asarray(self.room_lo, dtype=np.float32)
        self._room_hi = np.asarray(self.room_hi, dtype=np.float32)
        if np.any(self._room_hi <= self._room_lo):
            raise ValueError(f"room_hi {self.room_hi} must exceed room_lo {self.room_lo} on every axis")
        self._box_lo = np.asarray([b.lo for b in self.boxes], dtype=np.float32).reshape(-1, 3)
        self._box_hi = np.asarray([b.hi for b in self.boxes], dtype=np.float32).reshape(-1, 3)
        if np.any(self._box_hi <= self._box_lo):
            raise ValueError("every box needs hi > lo on every axis")
        self._sph_c = np.asarray([s.center for s in self.spheres], dtype=np.float32).reshape(-1, 3)
        self._sph_r = np.asarray([s.radius for s in self.spheres], dtype=np.float32).reshape(-1)
        if np.any(self._sph_r <= 0):
            raise ValueError("sphere radii must be positive")
        tints = list(self.room_tints) + [b.tint for b in self.boxes] + [s.tint for s in self.spheres]
        self.tints = np.asarray(tints, dtype=np.float32).reshape(-1, 3)

    @property
    def n_surfaces(self) -> int:
        return 6 + len(self.boxes) + len(self.spheres)

    def contains_free_point(self, p: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """``[N]`` bool: inside the room and outside every object by at least ``margin`` metres."""
        p = np.asarray(p, dtype=np.float32).reshape(-1, 3)
        inside = np.all((p > self._room_lo + margin) & (p < self._room_hi - margin), axis=1)
        return inside & (self._object_distance(p) > margin)

    # ------------------------------------------------------------------------------------------------
    def raycast(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest hit along rays ``origin [3] + t · dirs [N, 3]`` (directions need not be unit).

        Returns ``(t [N] float32, surface_id [N] int32, normal [N, 3] float32)``; ``t`` is in units of the
        direction vectors (so with camera rays ``K^-1 [u, v, 1]`` rotated to world, ``t`` is the z-depth).
        """
        d = np.ascontiguousarray(np.asarray(dirs, dtype=np.float32).reshape(-1, 3).T)
        t, ids, normal = self.raycast_cm(origin, d)
        return t, ids, np.ascontiguousarray(normal.T)

    def raycast_cm(self, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Component-major :meth:`raycast`: ``d [3, N]`` -> ``(t [N], ids [N], normal [3, N])``.

        The only Python loops run over the 3 axes and the (few) primitives.
        """
        o = np.asarray(origin, dtype=np.float32).reshape(3)
        n = d.shape[1]
        tiny = np.float32(1e-12)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = np.float32(1.0) / np.where(np.abs(d) < tiny, tiny, d)
        # room (seen from inside): exit through the nearest far slab plane
        t_best = np.full(n, _BIG, dtype=np.float32)
        ids = np.zeros(n, dtype=np.int32)
        for ax in range(3):
            pos = d[ax] > 0
            t_ax = np.where(pos, (self._room_hi[ax] - o[ax]) * inv[ax], (self._room_lo[ax] - o[ax]) * inv[ax])
            better = t_ax < t_best
            t_best = np.where(better, t_ax, t_best)
            ids = np.where(better, 2 * ax + pos, ids)
        # boxes (from outside): slab entry distance, entry axis gives the normal
        box_axis = np.full(n, -1, dtype=np.int8)
        for k in range(len(self.boxes)):
            t_in = np.full(n, -_BIG, dtype=np.float32)
            t_out = np.full(n, _BIG, dtype=np.float32)
            ax_in = np.zeros(n, dtype=np.int8)
            for ax in range(3):
                a = (self._box_lo[k, ax] - o[ax]) * inv[ax]
                b = (self._box_hi[k, ax] - o[ax]) * inv[ax]
                near, far = np.minimum(a, b), np.maximum(a, b)
                upd = near > t_in
                t_in = np.where(upd, near, t_in)
                ax_in = np.where(upd, np.int8(ax), ax_in)
                t_out = np.minimum(t_out, far)
            better = (t_out >= t_in) & (t_in > 1e-6) & (t_in < t_best)
            t_best = np.where(better, t_in, t_best)
            ids = np.where(better, 6 + k, ids)
            box_axis = np.where(better, ax_in, box_axis)
        # spheres (from outside)
        sph_hit = np.zeros(n, dtype=bool)
        if len(self.spheres):
            aa = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            for k in range(len(self.spheres)):
                oc = o - self._sph_c[k]
                b = d[0] * oc[0] + d[1] * oc[1] + d[2] * oc[2]
                c = float(oc @ oc - self._sph_r[k] ** 2)
                disc = b * b - aa * c
                t_s = (-b - np.sqrt(np.maximum(disc, 0))) / aa
                better = (disc >= 0) & (t_s > 1e-6) & (t_s < t_best)
                t_best = np.where(better, t_s, t_best)
                ids = np.where(better, 6 + len(self.boxes) + k, ids)
                sph_hit |= better
        # normals
        normal = np.zeros((3, n), dtype=np.float32)
        room = ids < 6
        for ax in range(3):
            on_room = room & (ids // 2 == ax)
            normal[ax] = np.where(on_room, np.where(ids % 2 == 1, -1.0, 1.0), 0.0)
            on_box = box_axis == ax
            normal[ax] = np.where(on_box, np.where(d[ax] > 0, -1.0, 1.0), normal[ax])
        if sph_hit.any():
            idx = np.flatnonzero(sph_hit)
            k = ids[idx] - 6 - len(self.boxes)
            p = o[:, None] + t_best[idx] * d[:, idx]
            normal[:, idx] = (p - self._sph_c[k].T) / self._sph_r[k]
        return t_best, ids.astype(np.int32), normal

    def _object_distance(self, p: np.ndarray) -> np.ndarray:
        dist = np.full(p.shape[0], np.inf, dtype=np.float64)
        p64 = p.astype(np.float64)
        if len(self.boxes):
            c = (self._box_lo + self._box_hi).astype(np.float64) / 2
            h = (self._box_hi - self._box_lo).astype(np.float64) / 2
            q = np.abs(p64[:, None, :] - c[None]) - h[None]  # [N, B, 3]
            outside = np.linalg.norm(np.maximum(q, 0), axis=2)
            inside = np.minimum(q.max(axis=2), 0)
            dist = np.minimum(dist, np.abs(outside + inside).min(axis=1))
        if len(self.spheres):
            ds = np.linalg.norm(p64[:, None, :] - self._sph_c[None].astype(np.float64), axis=2) - self._sph_r
            dist = np.minimum(dist, np.abs(ds).min(axis=1))
        return dist

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Exact unsigned distance ``[N]`` (float64, metres) from ``points [N, 3]`` to the nearest surface."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        room = np.minimum(np.abs(p - self._room_lo), np.abs(self._room_hi - p)).min(axis=1)
        return np.minimum(room, self._object_distance(p))


def default_scene(
    seed: int = 0,
    n_boxes: int = 3,
    n_spheres: int = 2,
    room_size: tuple[float, float, float] = (6.0, 5.0, 3.0),
    layout_seed=None,
) -> SyntheticScene:
    """Room ``room_size`` (x, y, z metres; centred on the origin, floor at z = 0; default 6 x 5 x 3 m) with
    ``n_boxes`` floor-standing boxes and ``n_spheres`` floating spheres placed (seeded by ``layout_seed``,
    default ``seed``) on a ring of radius 1.5-2.0 m around the room centre (less in rooms narrower than
    4.8 m, so objects keep 0.1 m from the walls), leaving the central 1.1 m free for cameras. ``seed`` also
    seeds the texture (:class:`~online3r_ros.synthetic.texture.SolidTexture`)."""
    sx, sy, sz = (float(v) for v in room_size)
    ring_max = min(2.0, min(sx, sy) / 2 - 0.4)
    if ring_max < 1.5 or sz < 2.2:
        raise ValueError(f"room_size {room_size} is too small (needs >= 3.8 x 3.8 x 2.2 m)")
    rng = np.random.default_rng(seed if layout_seed is None else layout_seed)
    n = n_boxes + n_spheres
    angles = 2 * np.pi * (np.arange(n) + rng.uniform(-0.2, 0.2, n)) / max(n, 1) + rng.uniform(0, 2 * np.pi)
    order = rng.permutation(n)
    boxes, spheres = [], []
    for k, idx in enumerate(order):
        r = rng.uniform(1.5, ring_max)
        cx, cy = r * np.cos(angles[idx]), r * np.sin(angles[idx])
        tint = tuple(float(v) for v in rng.uniform(0.3, 0.95, 3))
        if k < n_boxes:
            hx, hy = rng.uniform(0.15, 0.3, 2)
            top = rng.uniform(0.7, 1.5)
            boxes.append(Box((cx - hx, cy - hy, 0.0), (cx + hx, cy + hy, top), tint))
        else:
            spheres.append(Sphere((cx, cy, rng.uniform(1.0, 1.7)), float(rng.uniform(0.18, 0.3)), tint))
    return SyntheticScene(
        room_lo=(-sx / 2, -sy / 2, 0.0), room_hi=(sx / 2, sy / 2, sz), boxes=boxes, spheres=spheres, seed=seed
    )


#: Rooms of :func:`room_scene`: keyword arguments of :func:`default_scene` (room 0 is the default scene).
ROOMS: tuple[dict, ...] = (
    {},
    {"room_size": (5.0, 4.2, 2.6), "n_boxes": 4, "n_spheres": 1},
)


def room_scene(room: int = 0, seed: int = 0) -> SyntheticScene:
    """Scene of room ``room`` (an index into :data:`ROOMS`): room 0 is :func:`default_scene(seed)
    <default_scene>`; room 1 is smaller (5 x 4.2 x 2.6 m) with four boxes and one sphere laid out from
    another random stream. The texture depends on ``seed`` alone, so rooms with the same ``seed`` are covered
    by the same solid texture (same statistics, same colours) but differ in geometry: the false-loop case of
    two look-alike places."""
    if not 0 <= room < len(ROOMS):
        raise ValueError(f"room must be in 0..{len(ROOMS) - 1}, got {room}")
    layout_seed = None if room == 0 else [int(seed), int(room)]
    return default_scene(seed, **ROOMS[room], layout_seed=layout_seed)
