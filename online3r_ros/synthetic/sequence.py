"""Rendering and a dataset-like synthetic RGB-D sequence (same :class:`~online3r_ros.datasets.base.Frame`
records as the real readers, so the pipeline consumes it unchanged)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..datasets.base import Frame, FrameReader
from .scene import SyntheticScene, room_scene
from .texture import SolidTexture
from .trajectory import loop_trajectory, orbit_trajectory, wall_trajectory

CHUNK = 16384


def default_K(width: int, height: int, focal_ratio: float = 0.9) -> np.ndarray:
    """Pinhole K with ``fx = fy = focal_ratio · width`` (~58° horizontal FOV for 0.9, like a Kinect) and the
    principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``."""
    f = focal_ratio * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


@dataclass
class RenderResult:
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], z-depth in metres (exact)
    surface_id: np.ndarray  # int32 [H, W]
    normal: np.ndarray  # float32 [H, W, 3], world frame


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Camera-frame rays ``K^-1 [u, v, 1]`` for every pixel centre, component-major ``float32 [3, H*W]``
    (row-major pixel order, z = 1)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.stack([x.ravel(), y.ravel(), np.ones(width * height)], axis=0).astype(np.float32)


def render(
    scene: SyntheticScene,
    K: np.ndarray,
    T_WC: np.ndarray,
    width: int,
    height: int,
    texture: SolidTexture | None = None,
    rays: np.ndarray | None = None,
) -> RenderResult:
    """Ray-cast one view. Depth is the exact z-depth of the first surface along each pixel-centre ray.

    Pixels are processed in chunks of ``CHUNK`` so temporaries stay cache-sized (much faster than whole-image
    temporaries, which page-fault on every frame).
    """
    T_WC = np.asarray(T_WC, dtype=np.float64)
    rays = pixel_rays(K, width, height) if rays is None else rays
    R = T_WC[:3, :3].astype(np.float32)
    origin = T_WC[:3, 3].astype(np.float32)
    texture = texture or SolidTexture(scene.seed)
    n = width * height
    rgb = np.empty((n, 3), dtype=np.uint8)
    depth = np.empty(n, dtype=np.float32)
    ids = np.empty(n, dtype=np.int32)
    normal = np.empty((n, 3), dtype=np.float32)
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        r = rays[:, s:e]
        dirs = np.empty_like(r)
        for i in range(3):  # dirs = R @ rays written out (matmul with a 3-wide inner dimension is slow)
            dirs[i] = R[i, 0] * r[0] + R[i, 1] * r[1] + R[i, 2] * r[2]
        t, idc, nrm = scene.raycast_cm(origin, dirs)
        points = dirs * t
        points += origin[:, None]
        tints = np.stack([scene.tints[:, c].take(idc) for c in range(3)])
        rgb[s:e] = texture.shade_cm(points, nrm, tints).T
        depth[s:e], ids[s:e], normal[s:e] = t, idc, nrm.T
    return RenderResult(
        rgb=rgb.reshape(height, width, 3),
        depth=depth.reshape(height, width),
        surface_id=ids.reshape(height, width),
        normal=normal.reshape(height, width, 3),
    )


@dataclass(frozen=True)
class DepthNoise:
    """Kinect-like axial noise ``σ(z) = sigma0 + sigma2 · (z - z0)²`` (Nguyen et al. 2012 defaults), random
    dropout (pixels set to 0 = invalid) and optional quantisation step (m). Seeded per frame."""

    sigma0: float = 0.0012
    sigma2: float = 0.0019
    z0: float = 0.4
    dropout: float = 0.0
    quantization: float = 0.0

    def apply(self, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = self.sigma0 + self.sigma2 * (depth - self.z0) ** 2
        noisy = depth + rng.standard_normal(depth.shape).astype(np.float32) * sigma.astype(np.float32)
        if self.quantization > 0:
            noisy = np.round(noisy / self.quantization) * self.quantization
        if self.dropout > 0:
            noisy = np.where(rng.random(depth.shape) < self.dropout, 0.0, noisy)
        return np.maximum(noisy, 0.0).astype(np.float32)


class SyntheticSequence(FrameReader):
    """Lazily rendered RGB-D sequence with exact poses; iterates :class:`Frame` like the dataset readers.

    ``frame.depth`` is exact (or noisy with ``depth_noise``), ``frame.pose_gt`` exact ``T_WC``; timestamps are
    ``i / fps``. ``stride``/``max_frames``/``bad_depth`` behave as for the readers. Deterministic: the same
    arguments give bit-identical frames in any access order.
    """

    layout = "synthetic"

    def __init__(
        self,
        scene: SyntheticScene,
        poses: np.ndarray,
        width: int = 160,
        height: int = 120,
        K: np.ndarray | None = None,
        fps: float = 30.0,
        depth_noise: DepthNoise | None = None,
        noise_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(Path(f"synthetic_seed{scene.seed}_{width}x{height}"), **kwargs)
        self.scene = scene
        self.poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        self.width, self.height = int(width), int(height)
        self.K = default_K(self.width, self.height) if K is None else np.asarray(K, dtype=np.float64)
        self.fps = float(fps)
        self.depth_noise = depth_noise
        self.noise_seed = int(noise_seed)
        self.texture = SolidTexture(scene.seed)
        self._rays = pixel_rays(self.K, self.width, self.height)
        self._entries = list(range(self.poses.shape[0]))
        self.timestamps = np.arange(self.poses.shape[0], dtype=np.float64) / self.fps

    @property
    def has_depth(self) -> bool:
        return True

    @property
    def has_gt(self) -> bool:
        return True

    @property
    def calibrated(self) -> bool:
        return True

    def _entry_path(self, source_index: int) -> str:
        return f"{self.path}/frame-{source_index:06d}"

    def render(self, source_index: int) -> RenderResult:
        return render(
            self.scene, self.K, self.poses[source_index], self.width, self.height, self.texture, self._rays
        )

    def _load(self, source_index: int) -> Frame:
        res = self.render(source_index)
        depth = res.depth
        if self.depth_noise is not None:
            rng = np.random.default_rng([self.noise_seed, source_index])
            depth = self.depth_noise.apply(depth, rng)
        return Frame(
            index=source_index,
            timestamp=float(self.timestamps[source_index]),
            rgb=res.rgb,
            depth=depth,
            K=self.K.copy(),
            pose_gt=self.poses[source_index].copy(),
            source=self._entry_path(source_index),
            source_index=source_index,
        )

    def __getitem__(self, source_index: int) -> Frame:
        """Frame ``source_index`` of the full sequence (no stride), with ``index == source_index``."""
        return self._load(int(source_index))

    def gt_pose(self, source_index: int) -> np.ndarray:
        """Ground-truth ``T_WC`` of frame ``source_index`` without rendering it."""
        return self.poses[int(source_index)].copy()

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        return self.timestamps.copy(), self.poses.copy()


def _pop_kwargs(kwargs: dict, fn) -> dict:
    """Remove and return the entries of ``kwargs`` that are parameters of ``fn``."""
    names = set(inspect.signature(fn).parameters)
    return {k: kwargs.pop(k) for k in list(kwargs) if k in names}


def make_synthetic_sequence(
    n_frames: int = 240,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    laps: float = 1.0,
    depth_noise: DepthNoise | None = None,
    scene: SyntheticScene | None = None,
    poses: np.ndarray | None = None,
    room: int = 0,
    **kwargs,
) -> SyntheticSequence:
    """Default test sequence: :func:`default_scene(seed)` (or room ``room`` of
    :func:`~online3r_ros.synthetic.scene.room_scene`) and an :func:`orbit_trajectory` closed loop.

    One lap of the default orbit is ~4.4 m and 360°: with the default 240 frames the camera steps ~1.8 cm and
    1.5° per frame (7-Scenes redkitchen: 0.7 cm and 1.5°); the step scales with ``laps / n_frames``.
    Extra keyword arguments go to :class:`SyntheticSequence` (``K``, ``fps``, ``stride``, ``max_frames``,
    ``noise_seed``, ...).
    """
    scene = room_scene(room, seed) if scene is None else scene
    poses = orbit_trajectory(n_frames, laps=laps) if poses is None else poses
    return SyntheticSequence(scene, poses, width, height, depth_noise=depth_noise, **kwargs)


def make_loop_sequence(
    n_frames: int = 400,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    depth_noise: DepthNoise | None = None,
    overlap: float = 0.1,
    room: int = 0,
    scene: SyntheticScene | None = None,
    **kwargs,
) -> SyntheticSequence:
    """Loop-closure test sequence: room ``room`` of :func:`~online3r_ros.synthetic.scene.room_scene` (or
    ``scene``) seen along a :func:`loop_trajectory` centred on the room (1.4 m high): one lap of ~2.8 m at
    ~0.8 cm and ~1° per frame (400 frames), back at the start at frame
    :func:`~online3r_ros.synthetic.trajectory.loop_lap_frames(n_frames, overlap) <loop_lap_frames>`, then
    the first ``overlap`` fraction of the lap again, a few cm and degrees off the first pass.
    Extra keyword arguments go to :func:`loop_trajectory` (``half_extents``, ``look``, ``bob``, ...) or to
    :class:`SyntheticSequence` (``K``, ``fps``, ``stride``, ``max_frames``, ``noise_seed``, ...). Raises
    ``ValueError`` when the path comes within 0.3 m of a surface.
    """
    traj_kw = _pop_kwargs(kwargs, loop_trajectory)
    scene = room_scene(room, seed) if scene is None else scene
    lo, hi = np.asarray(scene.room_lo), np.asarray(scene.room_hi)
    traj_kw.setdefault("center", ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 1.4))
    poses = loop_trajectory(n_frames, overlap=overlap, **traj_kw)
    if not scene.contains_free_point(poses[:, :3, 3], margin=0.3).all():
        raise ValueError("the loop passes within 0.3 m of a surface of the scene; shrink half_extents")
    return SyntheticSequence(scene, poses, width, height, depth_noise=depth_noise, **kwargs)


def make_wall_sequence(
    n_frames: int = 30,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    distance: float = 1.0,
    depth_noise: DepthNoise | None = None,
    **kwargs,
) -> SyntheticSequence:
    """A single flat textured wall, the degenerate case of point-to-plane ICP: an empty room (no boxes or
    spheres) whose +x face the camera sees from ``distance`` m along a :func:`wall_trajectory` (sliding
    parallel to it). With the default room and ``distance <= 2.5`` every pixel sees that one wall (surface id
    1). Extra keyword arguments go to :func:`wall_trajectory` (``slide``, ``bob``, ``roll``) or to
    :class:`SyntheticSequence` (``K``, ``fps``, ``noise_seed``, ...).
    """
    traj_kw = _pop_kwargs(kwargs, wall_trajectory)
    scene = SyntheticScene(seed=seed)
    poses = wall_trajectory(n_frames, wall_x=scene.room_hi[0], distance=distance, **traj_kw)
    return SyntheticSequence(scene, poses, width, height, depth_noise=depth_noise, **kwargs)


def save_seven_scenes(seq: SyntheticSequence, folder: str | Path, color_ext: str = "png") -> Path:
    """Write a sequence in the 7-Scenes layout (depth uint16 mm, 0 invalid; 4x4 pose files; K file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "camera-intrinsics.txt", seq.K)
    for f in seq:
        stem = folder / f"frame-{f.source_index:06d}"
        cv2.imwrite(f"{stem}.color.{color_ext}", cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        mm = np.clip(np.rint(f.depth * 1000.0), 0, 65534).astype(np.uint16)
        cv2.imwrite(f"{stem}.depth.png", mm)
        np.savetxt(f"{stem}.pose.txt", f.pose_gt)
    return folder


def save_tum(seq: SyntheticSequence, folder: str | Path, fx_fy_cx_cy_file: bool = True) -> Path:
    """Write a sequence in the TUM RGB-D layout (depth 5000 = 1 m, groundtruth.txt, calibration.txt)."""
    from ..eval.trajectory_io import write_tum

    folder = Path(folder)
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(parents=True, exist_ok=True)
    rgb_lines, depth_lines, ts, poses = [], [], [], []
    for f in seq:
        t = 1000.0 + f.timestamp
        cv2.imwrite(str(folder / "rgb" / f"{t:.6f}.png"), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        raw = np.clip(np.rint(f.depth * 5000.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(folder / "depth" / f"{t:.6f}.png"), raw)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t:.6f} depth/{t:.6f}.png")
        ts.append(t)
        poses.append(f.pose_gt)
    (folder / "rgb.txt").write_text("# timestamp filename\n" + "\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("# timestamp filename\n" + "\n".join(depth_lines) + "\n")
    write_tum(folder / "groundtruth.txt", np.asarray(ts), np.stack(poses))
    if fx_fy_cx_cy_file:
        K = seq.K
        (folder / "calibration.txt").write_text(f"{K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    return folder
