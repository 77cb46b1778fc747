"""Microsoft 7-Scenes layout: ``frame-XXXXXX.color.{png,jpg}``, ``.depth.png``, ``.pose.txt``.

- depth: uint16 millimetres; 0 and 65535 mean "no data" (-> 0.0 m).
- pose: 4x4 camera-to-world; non-finite or non-rigid matrices (some 7-Scenes sequences contain ``-inf``
  poses) give ``pose_gt=None`` and a frame warning.
- K: ``camera-intrinsics.txt`` in the folder or its parent, else the standard 585/585/320/240 (logged).
- timestamps: frame number / ``fps`` (30 Hz), so gaps in the numbering keep their real spacing.
- colour registration (``register_colour``; default: when ``K`` is the standard 7-Scenes depth K at 640x480,
  i.e. the Kinect data): 7-Scenes colour and depth come from the Kinect's two cameras and are not
  registered; ``K`` is the depth camera's. The colour image is resampled into the
  depth camera (:func:`register_colour_to_depth`: the colour camera's nominal focal length 525 px against the
  depth camera's, and a shift of (+5, +5) px fitted with ground truth on 7 frame pairs of redkitchen), so a
  colour pixel's depth is at the same pixel. Without it a SIFT keypoint's depth lies 5-10 cm off away from
  the image centre: over 9 redkitchen frame pairs the ground-truth pose explained most feature matches in 2
  pairs, with it in 6 (``register_colour=False`` reads the images as stored).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..eval.poses import is_valid_pose
from .base import LOGGER, DatasetError, Frame, SkipFrame
from .intrinsics import SEVEN_SCENES_INTRINSICS, make_K, read_K_file
from .readers_common import RGBDReaderBase

#: Kinect v1 colour camera focal length (px, 640x480); colour -> depth pixel shift fitted on redkitchen
COLOUR_FOCAL = 525.0
COLOUR_SHIFT = (5.0, 5.0)


def register_colour_to_depth(
    rgb: np.ndarray, K_depth: np.ndarray, colour_focal: float = COLOUR_FOCAL, shift: tuple = COLOUR_SHIFT
) -> np.ndarray:
    """``rgb [H, W, 3]`` resampled so pixel ``(u, v)`` shows what the depth camera (``K_depth``) sees there:
    ``u_colour = (u - cx - shift_x) * colour_focal / fx + cx`` (same for v), bilinear, edges replicated."""
    import cv2

    k = colour_focal / float(K_depth[0, 0])
    cx, cy = float(K_depth[0, 2]), float(K_depth[1, 2])
    M = np.array([[k, 0.0, cx - k * (cx + shift[0])], [0.0, k, cy - k * (cy + shift[1])]])
    H, W = rgb.shape[:2]
    return cv2.warpAffine(
        rgb, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


_COLOR_RE = re.compile(r"^frame-(\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)


def find_seven_scenes_frames(folder: Path) -> list[tuple[int, Path]]:
    """``[(frame_number, colour_path)]`` sorted by number."""
    hits = []
    for p in folder.iterdir():
        m = _COLOR_RE.match(p.name)
        if m:
            hits.append((int(m.group(1)), p))
    hits.sort(key=lambda x: x[0])
    return hits


class SevenScenesReader(RGBDReaderBase):
    layout = "7scenes"
    depth_scale = 1000.0
    depth_invalid = (0, 65535)

    def __init__(
        self,
        path: str | Path,
        intrinsics=None,
        fps: float = 30.0,
        register_colour: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(path, **kwargs)
        self._init_frame_folder(fps)
        frames = find_seven_scenes_frames(self.path)
        if not frames:
            raise DatasetError(f"{self.path}: no frame-XXXXXX.color.(png|jpg) files")
        numbers = [n for n, _ in frames]
        dupes = sorted({n for n in numbers if numbers.count(n) > 1})
        if dupes:
            raise DatasetError(f"{self.path}: several colour images for frame numbers {dupes[:10]}")
        self._entries = [p for _, p in frames]
        self._numbers = numbers
        self._depth_paths = [self._sibling(p, "depth.png") for p in self._entries]
        self._pose_paths = [self._sibling(p, "pose.txt") for p in self._entries]
        self._has_depth = any(p.exists() for p in self._depth_paths)
        self._has_gt = any(p.exists() for p in self._pose_paths)
        K = None
        for cand in (self.path / "camera-intrinsics.txt", self.path.parent / "camera-intrinsics.txt"):
            if intrinsics is None and cand.exists():
                K = read_K_file(cand)
                break
        if K is None and intrinsics is None:
            LOGGER.warning(
                "%s: no camera-intrinsics.txt; using the standard 7-Scenes K %s",
                self.path,
                SEVEN_SCENES_INTRINSICS,
            )
            K = make_K(*SEVEN_SCENES_INTRINSICS)
        self._init_geometry(K, intrinsics, self._entries[0])
        if register_colour is None:  # the Kinect v1 recordings: depth K at 640x480
            kinect = make_K(*SEVEN_SCENES_INTRINSICS)
            register_colour = (
                self.K is not None
                and np.allclose(self.K, kinect)
                and tuple(self.image_wh or ()) == (640, 480)
            )
        self.register_colour = bool(register_colour)

    @staticmethod
    def _sibling(color_path: Path, suffix: str) -> Path:
        stem = color_path.name.split(".")[0]
        return color_path.with_name(f"{stem}.{suffix}")

    def timestamp_of(self, source_index: int) -> float:
        return self._numbers[source_index] / self.fps

    def _read_pose(self, source_index: int, warnings: list[str]) -> np.ndarray | None:
        path = self._pose_paths[source_index]
        if not path.exists():
            if self._has_gt:
                warnings.append(f"ground-truth pose file missing: {path.name}")
            return None
        try:
            T = np.loadtxt(path, dtype=np.float64)
        except (OSError, ValueError) as exc:
            warnings.append(f"ground-truth pose unreadable ({path.name}: {exc})")
            return None
        if T.shape == (3, 4):
            T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
        if T.shape != (4, 4) or not bool(is_valid_pose(T)[0]):
            warnings.append(f"ground-truth pose invalid (non-finite or not rigid) in {path.name}")
            return None
        return T

    def _load(self, source_index: int) -> Frame:
        rgb_path = self._entries[source_index]
        if not rgb_path.exists():
            raise SkipFrame("colour image is missing", rgb_path)
        depth_path = None
        if self._has_depth:
            depth_path = self._depth_paths[source_index]
            if not depth_path.exists():
                raise SkipFrame(f"depth image {depth_path.name} is missing", depth_path)
        warnings: list[str] = []
        pose = self._read_pose(source_index, warnings)
        frame = self._make_frame(
            source_index, self.timestamp_of(source_index), rgb_path, depth_path, pose, warnings
        )
        if self.register_colour and frame.depth is not None:
            frame = dataclasses.replace(frame, rgb=register_colour_to_depth(frame.rgb, frame.K))
        return frame

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self._has_gt:
            return None
        ts, Ts = [], []
        for i in range(len(self._entries)):
            T = self._read_pose(i, [])
            if T is not None:
                ts.append(self.timestamp_of(i))
                Ts.append(T)
        if not ts:
            return None
        return np.asarray(ts), np.stack(Ts)
