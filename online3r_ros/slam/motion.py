"""Motion model of the frontend: pose guesses from the last two posed frames, and the continuous odometry.

- :func:`extrapolate_step`: a body-frame step over ``dt`` carried over an elapsed time (frames may be dropped,
  so the gaps vary), capped at :data:`MAX_EXTRAPOLATION` intervals; :func:`extrapolate_pose` builds the step
  from two poses.
- :class:`MotionModel`: which frames were posed last; its guesses use their *current* world poses (given by
  the caller), so an optimisation between two frames never leaves the guess behind. A pose that jumped (a
  reused keyframe) keeps the velocity measured before it for the next guess.
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

__all__ = [
    "MAX_EXTRAPOLATION",
    "extrapolate_step",
    "extrapolate_pose",
    "MotionModel",
    "Odometry",
    "rigid_matrix",
    "invert_rigid",
]

MAX_EXTRAPOLATION = 30.0  # frame intervals a guess may extrapolate the last velocity over


def extrapolate_step(
    T_last: Tensor, step: Tensor, dt: float, elapsed: float, max_intervals: float = MAX_EXTRAPOLATION
) -> Tensor:
    """``T_last · Exp(k · Log(step))`` with ``k = elapsed / dt`` capped at ``max_intervals``: Sim(3) ``[8]``
    pose ``T_last`` moved on by the body-frame ``step [8]`` that took ``dt`` s, over ``elapsed`` s
    (``T_last`` when ``dt`` is not positive).

    >>> T1 = torch.tensor([0.1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> step = torch.tensor([0.1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> extrapolate_step(T1, step, 1.0, 2.0)[:3].tolist()
    [0.30000000000000004, 0.0, 0.0]
    """
    if not float(dt) > 0:
        return T_last
    k = min(float(elapsed) / float(dt), max_intervals)
    if abs(k - 1.0) < 1e-9:
        return sim3_compose(T_last, step)
    return sim3_compose(T_last, sim3_exp(sim3_log(step) * k))


def extrapolate_pose(
    T_prev: Tensor,
    T_last: Tensor,
    t_prev: float,
    t_last: float,
    t: float,
    max_intervals: float = MAX_EXTRAPOLATION,
) -> Tensor:
    """Constant-velocity guess at time ``t`` from Sim(3) poses ``[8]`` at ``t_prev < t_last`` (s):
    :func:`extrapolate_step` of ``T_last`` by ``T_prev⁻¹ T_last`` over ``t - t_last`` (``T_last`` when the
    times are not increasing).

    >>> T0 = torch.tensor([0.0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> T1 = torch.tensor([0.1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
    >>> extrapolate_pose(T0, T1, 0.0, 1.0, 3.0)[:3].tolist()
    [0.30000000000000004, 0.0, 0.0]
    """
    step = sim3_compose(sim3_inverse(T_prev), T_last)
    return extrapolate_step(
        T_last, step, float(t_last) - float(t_prev), float(t) - float(t_last), max_intervals
    )


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
        self.kept: tuple[Tensor, float] | None = None  # velocity kept across a jump: (step [8], its s)

    def reset(self) -> None:
        """Forget the posed frames (after a relocalisation: no velocity across the gap)."""
        self.posed = []
        self.kept = None

    def observe(
        self, index: int, timestamp: float, pose_of: PoseOf | None = None, keep_velocity: bool = False
    ) -> None:
        """Frame ``index`` (stamp ``timestamp`` s) got a pose. ``keep_velocity`` (with ``pose_of``): this pose
        jumped (a reused keyframe: not the camera's motion), so the next guess uses the velocity of the two
        frames posed before it, not the jump, until the next frame is posed."""
        kept = None
        if keep_velocity and pose_of is not None:
            kept = self.velocity(pose_of)
        self.kept = kept
        self.posed = (self.posed + [(int(index), float(timestamp))])[-2:]

    def velocity(self, pose_of: PoseOf) -> tuple[Tensor, float] | None:
        """``(step [8], dt s)``: the body-frame motion between the last two posed frames at their current
        poses (or the one kept across a jump); ``None`` before two frames are posed."""
        if self.kept is not None:
            return self.kept
        if len(self.posed) < 2:
            return None
        (i_prev, t_prev), (i_last, t_last) = self.posed
        return sim3_compose(sim3_inverse(pose_of(i_prev)), pose_of(i_last)), t_last - t_prev

    def guess(self, timestamp: float, pose_of: PoseOf, constant_position: bool = False) -> Tensor:
        """Pose guess of a frame at ``timestamp``: the last posed frame's current pose moved on by the
        velocity over the elapsed time (constant velocity), or that pose itself. Needs one posed frame."""
        i_last, t_last = self.posed[-1]
        last = pose_of(i_last)
        velocity = None if constant_position or self.model == "constant_position" else self.velocity(pose_of)
        if velocity is None:
            return last
        step, dt = velocity
        return extrapolate_step(last, step.to(last), dt, float(timestamp) - t_last)

    def reloc_guesses(self, timestamp: float, pose_of: PoseOf) -> list[Tensor]:
        """Guesses after a gap: the last velocity extrapolated over it (when known), then the last pose; none
        without a posed frame (after a relocalisation or in an adopted map)."""
        if not self.posed:
            return []
        guesses = [self.guess(timestamp, pose_of, constant_position=True)]
        if self.model == "constant_velocity" and self.velocity(pose_of) is not None:
            guesses.insert(0, self.guess(timestamp, pose_of))
        return guesses

    def state_dict(self) -> dict:
        kept = None if self.kept is None else (self.kept[0].clone(), self.kept[1])
        return {"model": self.model, "posed": list(self.posed), "kept": kept}

    def load_state_dict(self, state: dict) -> None:
        self.posed = [(int(i), float(t)) for i, t in state["posed"]]
        kept = state.get("kept")  # absent in maps saved before it existed
        self.kept = None if kept is None else (torch.as_tensor(kept[0], dtype=torch.float64), float(kept[1]))


def rigid_matrix(T: Tensor) -> np.ndarray:
    """``[..., 4, 4]`` float64 rigid matrices of Sim(3) poses ``[..., 8]`` (scale dropped, camera centre
    kept)."""
    T = torch.as_tensor(T).detach().to("cpu", torch.float64).clone()
    T[..., 7] = 1.0
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
