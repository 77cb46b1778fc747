"""REP-105 poses of the robot from SLAM poses, static TF chains and pose histories (numpy only, no rclpy).

SLAM poses are camera-optical poses in the SLAM world (the first camera frame). With the static
``T_bc = base_frame -> camera_frame``, ``map`` is the base frame at the first image:
``T_map_cam = T_bc · T_WC`` and ``T_map_base = T_bc · T_WC · T_bc⁻¹``; ``odom`` starts equal to ``map`` and
follows the continuous odometry; ``map -> odom`` carries the map's corrections. With external odometry
(another node owns ``odom -> base``), ``map -> odom = T_map_base · T_odom_base⁻¹`` against that node's
transform at the image stamp.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from online3r_ros.ros.pose import invert, matrix_to_quat, pose_to_matrix, quat_to_matrix, transform_points
from online3r_ros.slam.motion import rigid_matrix

__all__ = ["RobotFrames", "StaticTfChain", "PoseHistory", "ExternalOdometry", "interpolate_rigid"]


class RobotFrames:
    """The frames of one robot, given ``T_bc [4, 4]`` (base -> camera optical frame, rigid)."""

    def __init__(self, T_bc: np.ndarray) -> None:
        self.T_bc = np.asarray(T_bc, dtype=np.float64)
        self.T_cb = invert(self.T_bc)

    def camera_in_map(self, T_WC: torch.Tensor) -> np.ndarray:
        """``T_map_cam [4, 4]`` of a Sim(3) camera pose ``[8]`` (scale dropped)."""
        return self.T_bc @ rigid_matrix(T_WC)

    def cameras_in_map(self, T_WC: torch.Tensor) -> np.ndarray:
        """``[K, 4, 4]`` for poses ``T_WC [K, 8]`` (scale dropped; batched: the mapper converts its whole
        all-frames path every second)."""
        return self.T_bc @ rigid_matrix(torch.as_tensor(T_WC).reshape(-1, 8))

    def base_in_odom(self, T_odom: np.ndarray) -> np.ndarray:
        """``T_odom_base`` of the continuous camera odometry ``T_odom [4, 4]`` (SLAM-world convention)."""
        return self.T_bc @ T_odom @ self.T_cb

    def odom_in_map(self, T_W_odom: np.ndarray) -> np.ndarray:
        """``T_map_odom`` of the SLAM-world odometry frame ``T_W_odom [4, 4]``."""
        return self.T_bc @ T_W_odom @ self.T_cb

    def odom_in_map_external(self, T_WC: torch.Tensor, T_odom_base: np.ndarray) -> np.ndarray:
        """``T_map_odom`` against another node's ``odom -> base`` at the same stamp: the chain
        ``map -> odom -> base`` then gives the SLAM pose of the base."""
        return self.T_bc @ rigid_matrix(T_WC) @ self.T_cb @ invert(T_odom_base)

    def points_in_map(self, points: np.ndarray) -> np.ndarray:
        """SLAM-world points ``[P, 3]`` in ``map`` (float32)."""
        return transform_points(self.T_bc, points).astype(np.float32)


class StaticTfChain:
    """Static transforms collected from ``/tf_static`` (child -> (parent, T_parent_child)); resolves
    ``T_base_camera`` along the parent chain of the camera frame."""

    def __init__(self) -> None:
        self._edges: dict[str, tuple[str, np.ndarray]] = {}

    def add(self, tf_msg: Any) -> None:
        for tr in tf_msg.transforms:
            try:
                self._edges[str(tr.child_frame_id)] = (str(tr.header.frame_id), pose_to_matrix(tr))
            except ValueError:
                continue

    def lookup(self, base: str, camera: str) -> np.ndarray | None:
        """``T_base_camera`` if ``base`` is an ancestor of ``camera`` in the static tree, else ``None``."""
        T = np.eye(4)
        frame = camera
        for _ in range(64):
            if frame == base:
                return T
            if frame not in self._edges:
                return None
            parent, T_pc = self._edges[frame]
            T = T_pc @ T
            frame = parent
        return None


def interpolate_rigid(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """Rigid pose between ``T0`` (``a = 0``) and ``T1`` (``a = 1``): linear translation, slerp rotation."""
    q0, q1 = matrix_to_quat(T0[:3, :3]), matrix_to_quat(T1[:3, :3])
    if float(q0 @ q1) < 0:
        q1 = -q1
    dot = min(float(q0 @ q1), 1.0)
    theta = np.arccos(dot)
    if theta < 1e-9:
        q = q0
    else:
        q = (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(q / np.linalg.norm(q))
    out[:3, 3] = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
    return out


class PoseHistory:
    """Time-stamped rigid poses (e.g. an external ``odom -> base`` from ``/tf``), looked up at a stamp.

    :meth:`lookup` interpolates between the samples around ``stamp_ns``; outside them it returns the nearest
    sample when it is within ``tolerance_ns``, else ``None`` (never extrapolates further).
    """

    def __init__(self, maxlen: int = 2000) -> None:
        self._ns: list[int] = []
        self._T: list[np.ndarray] = []
        self.maxlen = int(maxlen)

    def __len__(self) -> int:
        return len(self._ns)

    def add(self, stamp_ns: int, T: np.ndarray) -> None:
        i = bisect.bisect_left(self._ns, int(stamp_ns))
        if i < len(self._ns) and self._ns[i] == int(stamp_ns):
            self._T[i] = np.asarray(T, dtype=np.float64)
            return
        self._ns.insert(i, int(stamp_ns))
        self._T.insert(i, np.asarray(T, dtype=np.float64))
        if len(self._ns) > self.maxlen:
            del self._ns[0], self._T[0]

    def clear(self) -> None:
        self._ns.clear()
        self._T.clear()

    def covers(self, stamp_ns: int) -> bool:
        """True when a sample at or after ``stamp_ns`` exists (:meth:`lookup` interpolates, never holds)."""
        return bool(self._ns) and self._ns[-1] >= int(stamp_ns)

    def lookup(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        if not self._ns:
            return None
        t = int(stamp_ns)
        i = bisect.bisect_left(self._ns, t)
        if i < len(self._ns) and self._ns[i] == t:
            return self._T[i].copy()
        if 0 < i < len(self._ns):
            t0, t1 = self._ns[i - 1], self._ns[i]
            return interpolate_rigid(self._T[i - 1], self._T[i], (t - t0) / (t1 - t0))
        j = 0 if i == 0 else len(self._ns) - 1
        return self._T[j].copy() if abs(self._ns[j] - t) <= tolerance_ns else None


class ExternalOdometry:
    """Another node's ``odom -> base`` samples (thread-safe), looked up at an image stamp: waits at most
    ``wait_s`` for a sample at or after the stamp (odometry that arrives after the image is interpolated,
    not held), then interpolates, or takes the nearest sample within ``tolerance_s``."""

    def __init__(self, tolerance_s: float, wait_s: float) -> None:
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.wait_s = float(wait_s)
        self._history = PoseHistory()
        self._cond = threading.Condition()

    def add(self, stamp_ns: int, T: np.ndarray) -> None:
        with self._cond:
            self._history.add(stamp_ns, T)
            self._cond.notify_all()

    def at(self, stamp_ns: int, keep_waiting: Callable[[], bool] = lambda: True) -> np.ndarray | None:
        """``T_odom_base [4, 4]`` at ``stamp_ns``, or ``None`` when nothing is near enough; the wait also
        ends when ``keep_waiting()`` turns false."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while keep_waiting() and not self._history.covers(stamp_ns):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            return self._history.lookup(stamp_ns, self.tolerance_ns)
