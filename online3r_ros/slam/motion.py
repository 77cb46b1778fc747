"""Motion model of the frontend: pose guesses from the last two posed frames, and the continuous odometry.

- :func:`extrapolate_pose`: constant velocity in the body frame, scaled by the elapsed time (frames may be
  dropped, so the gaps vary), capped at :data:`MAX_EXTRAPOLATION` frame intervals.
- :class:`MotionModel`: which frames were posed last; its guesses use their *current* world poses (given by
  the caller), so an optimisation between two frames never leaves the guess behind.
- :class:`Odometry`: the REP-105 ``odom`` pose of the camera, continuous by construction: it accumulates
  the rigid motion between consecutive posed frames, both evaluated with the keyframe poses known now, so a
  correction of the map never makes it jump; the correction is ``map -> odom`` (:meth:`Odometry.map_to_odom`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..geometry.lie import sim3_compose, sim3_exp, sim3_inverse, sim3_log, sim3_to_matrix

Tensor = torch.Tensor

__all__ = ["MAX_EXTRAPOLATION", "extrapolate_pose", "MotionModel", "Odometry", "rigid_matrix", "invert_rigid"]

MAX_EXTRAPOLATION = 30.0  # frame intervals a guess may extrapolate the last velocity over


def extrapolate_pose(
    T_prev: Tensor,
    T_last: Tensor,
    t_prev: float,
    t_last: float,
    t: float,
    max_intervals: float = MAX_EXTRAPOLATION,
) -> Tensor:
    """Constant-velocity guess at time ``t`` from Sim(3) poses ``[8]`` at ``t_prev < t_last`` (s):
    ``T_last · Exp(k · Log(T_prev⁻¹ T_last))`` with ``k = (t - t_last) / (t_last - t_prev)`` capped at
    ``max_intervals`` (``T_last`` when the times are not increasing).

    >>> T0 = torch.tensor([0.0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> T1 = torch.tensor([0.1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> extrapolate_pose(T0, T1, 0.0, 1.0, 3.0)[:3].tolist()
    [0.30000000000000004, 0.0, 0.0]
    """
    dt = float(t_last) - float(t_prev)
    if not dt > 0:
        return T_last
    k = min((float(t) - float(t_last)) / dt, max_intervals)
    step = sim3_compose(sim3_inverse(T_prev), T_last)
    if abs(k - 1.0) < 1e-9:
        return sim3_compose(T_last, step)
    return sim3_compose(T_last, sim3_exp(sim3_log(step) * k))


PoseOf = Callable[[int], Tensor]  # frame index -> its current world pose (Sim(3) [8] float64)


class MotionModel:
    """The last two posed frames (indices and stamps) and the pose guesses built from them.

    Args:
        model: ``constant_velocity`` or ``constant_position`` (``system.motion_model``).
    """

    def __init__(self, model: str) -> None:
        if model not in ("constant_velocity", "constant_position"):
            raise ValueError(f"motion model must be constant_velocity or constant_position, got {model!r}")
        self.model = model
        self.posed: list[tuple[int, float]] = []  # (frame index, timestamp) of the last two posed frames

    def reset(self) -> None:
        """Forget the posed frames (after a relocalisation: no velocity across the gap)."""
        self.posed = []

    def observe(self, index: int, timestamp: float) -> None:
        """Frame ``index`` (stamp ``timestamp`` s) got a pose."""
        self.posed = (self.posed + [(int(index), float(timestamp))])[-2:]

    def guess(self, timestamp: float, pose_of: PoseOf, constant_position: bool = False) -> Tensor:
        """Pose guess of a frame at ``timestamp``: the last posed frame's pose moved by the last velocity
        over the elapsed time (constant velocity), or that pose itself. Needs one posed frame."""
        i_last, t_last = self.posed[-1]
        last = pose_of(i_last)
        if constant_position or self.model == "constant_position" or len(self.posed) < 2:
            return last
        i_prev, t_prev = self.posed[0]
        return extrapolate_pose(pose_of(i_prev), last, t_prev, t_last, timestamp)

    def reloc_guesses(self, timestamp: float, pose_of: PoseOf) -> list[Tensor]:
        """Guesses after a gap: the last velocity extrapolated over it (when known), then the last pose; none
        without a posed frame (after a relocalisation or in an adopted map)."""
        if not self.posed:
            return []
        guesses = [self.guess(timestamp, pose_of, constant_position=True)]
        if len(self.posed) == 2 and self.model == "constant_velocity":
            guesses.insert(0, self.guess(timestamp, pose_of))
        return guesses

    def state_dict(self) -> dict:
        return {"model": self.model, "posed": list(self.posed)}

    def load_state_dict(self, state: dict) -> None:
        self.posed = [(int(i), float(t)) for i, t in state["posed"]]


def rigid_matrix(T: Tensor) -> np.ndarray:
    """``[4, 4]`` float64 rigid matrix of a Sim(3) ``[8]`` pose (scale dropped, camera centre kept)."""
    T = T.detach().to("cpu", torch.float64).clone().reshape(8)
    T[7] = 1.0
    return sim3_to_matrix(T).numpy()


def invert_rigid(M: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``[4, 4]`` matrix."""
    out = np.eye(4)
    out[:3, :3] = M[:3, :3].T
    out[:3, 3] = -M[:3, :3].T @ M[:3, 3]
    return out


class Odometry:
    """Continuous camera odometry ``T_odom [4, 4]`` (see the module docstring)."""

    def __init__(self) -> None:
        self.T_odom: np.ndarray | None = None
        self.ref: int | None = None  # frame index the odometry was last advanced to

    def advance(self, index: int, pose_of: PoseOf) -> np.ndarray:
        """Move the odometry to posed frame ``index``: by the rigid motion from the previous reference frame,
        both with today's keyframe poses. Returns a copy of ``T_odom``."""
        now = rigid_matrix(pose_of(index))
        if self.T_odom is None or self.ref is None:
            self.T_odom = now
        else:
            self.T_odom = self.T_odom @ (invert_rigid(rigid_matrix(pose_of(self.ref))) @ now)
        self.ref = int(index)
        return self.T_odom.copy()

    def map_to_odom(self, pose_of: PoseOf) -> np.ndarray:
        """``T_W_odom [4, 4]``: the SLAM-world pose of the odometry frame (identity before any correction)."""
        if self.T_odom is None or self.ref is None:
            return np.eye(4)
        return rigid_matrix(pose_of(self.ref)) @ invert_rigid(self.T_odom)

    def state_dict(self) -> dict:
        return {"T_odom": None if self.T_odom is None else self.T_odom.copy(), "ref": self.ref}

    def load_state_dict(self, state: dict) -> None:
        self.T_odom = None if state["T_odom"] is None else np.asarray(state["T_odom"], dtype=np.float64)
        self.ref = None if state["ref"] is None else int(state["ref"])
