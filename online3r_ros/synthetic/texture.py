"""Deterministic procedural solid texture (a function of the 3D world point, so it is view-independent).

colour = tint · shading · (value noise over 3 octaves + sum of sinusoids + 3D checker), with a second noise
field shifting the hue. Value noise uses a seeded periodic lattice (trilinear, smoothstep-weighted): rich,
non-repeating detail from 25 cm down to 2.5 cm, so image patches are distinctive for matching at 160x120 and
at 640x480. Everything is vectorised over points.
"""

from __future__ import annotations

import numpy as np

_LATTICE = 64


class SolidTexture:
    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng([int(seed), 7919])
        self.table = rng.random((_LATTICE,) * 3, dtype=np.float32)
        self.table2 = rng.random((_LATTICE,) * 3, dtype=np.float32)
        self.offsets = rng.uniform(0, _LATTICE, (4, 3)).astype(np.float32)
        dirs = rng.normal(size=(3, 3)).astype(np.float32)
        self.wave_dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        self.wave_freqs = np.array([2.3, 5.1, 9.7], dtype=np.float32)  # cycles per metre
        self.wave_phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
        self.light = np.array([0.3, -0.5, 0.8], dtype=np.float32)
        self.light /= np.linalg.norm(self.light)

    @staticmethod
    def _value_noise(table: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
        """Trilinear value noise in [0, 1] at lattice coordinates ``px, py, pz [N]`` (period 64)."""
        flat = table.reshape(-1)
        m = _LATTICE - 1
        fx, fy, fz = np.floor(px), np.floor(py), np.floor(pz)
        wx, wy, wz = px - fx, py - fy, pz - fz
        wx = wx * wx * (3 - 2 * wx)
        wy = wy * wy * (3 - 2 * wy)
        wz = wz * wz * (3 - 2 * wz)
        x0 = fx.astype(np.int32) & m
        y0 = fy.astype(np.int32) & m
        z0 = fz.astype(np.int32) & m
        x1, y1, z1 = (x0 + 1) & m, (y0 + 1) & m, (z0 + 1) & m
        X0, X1 = x0 * (_LATTICE * _LATTICE), x1 * (_LATTICE * _LATTICE)
        Y0, Y1 = y0 * _LATTICE, y1 * _LATTICE
        c00 = flat.take(X0 + Y0 + z0)
        c00 += (flat.take(X1 + Y0 + z0) - c00) * wx
        c10 = flat.take(X0 + Y1 + z0)
        c10 += (flat.take(X1 + Y1 + z0) - c10) * wx
        c01 = flat.take(X0 + Y0 + z1)
        c01 += (flat.take(X1 + Y0 + z1) - c01) * wx
        c11 = flat.take(X0 + Y1 + z1)
        c11 += (flat.take(X1 + Y1 + z1) - c11) * wx
        c00 += (c10 - c00) * wy
        c01 += (c11 - c01) * wy
        c00 += (c01 - c00) * wz
        return c00

    def _octave(self, table: np.ndarray, pt: np.ndarray, scale: float, k: int) -> np.ndarray:
        off = self.offsets[k]
        return self._value_noise(
            table, pt[0] * scale + off[0], pt[1] * scale + off[1], pt[2] * scale + off[2]
        )

    def shade(self, points: np.ndarray, normals: np.ndarray, tints: np.ndarray) -> np.ndarray:
        """RGB ``uint8 [N, 3]`` for world ``points [N, 3]`` with ``normals [N, 3]`` and per-point
        ``tints [N, 3]`` (component-major ``[3, N]`` inputs are accepted too: see :meth:`shade_cm`)."""
        pt = np.ascontiguousarray(np.asarray(points, dtype=np.float32).T)
        nt = np.ascontiguousarray(np.asarray(normals, dtype=np.float32).T)
        tt = np.ascontiguousarray(np.asarray(tints, dtype=np.float32).T)
        return np.ascontiguousarray(self.shade_cm(pt, nt, tt).T)

    def shade_cm(self, pt: np.ndarray, nt: np.ndarray, tt: np.ndarray) -> np.ndarray:
        """Component-major :meth:`shade`: ``[3, N]`` points, normals and tints -> ``uint8 [3, N]``."""
        f32 = np.float32
        lum = 0.5 * self._octave(self.table, pt, 4.0, 0)
        lum += 0.3 * self._octave(self.table, pt, 13.0, 1)
        lum += 0.2 * self._octave(self.table, pt, 40.0, 2)
        hue = self._octave(self.table2, pt, 7.0, 3) - f32(0.5)
        lum *= f32(0.75)
        lum += f32(0.15)
        for j in range(3):
            w = self.wave_dirs[j] * f32(2 * np.pi * self.wave_freqs[j])
            lum += f32(0.04) * np.sin(pt[0] * w[0] + pt[1] * w[1] + pt[2] * w[2] + self.wave_phase[j])
        checker = (np.floor(pt[0] * 2) + np.floor(pt[1] * 2) + np.floor(pt[2] * 2)).astype(np.int32) & 1
        lum += f32(0.1) * checker.astype(f32)
        lam = np.abs(nt[0] * self.light[0] + nt[1] * self.light[1] + nt[2] * self.light[2])
        lum *= (f32(0.75) + f32(0.25) * lam) * f32(255.0)
        hue_w = (0.5, -0.2, -0.4)
        out = np.empty(pt.shape, dtype=np.uint8)
        for c in range(3):
            v = (tt[c] + hue * f32(hue_w[c])) * lum + f32(0.5)
            out[c] = np.clip(v, 0, 255).astype(np.uint8)
        return out
