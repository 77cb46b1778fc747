"""Tracker frontend of the two-process pipeline (ROS-free): track, fuse locally, decide keyframes, odometry.

:class:`TrackerFrontend` is :class:`~online3r_ros.slam.system.SlamSystem` without the backend: the same
state machine (``INIT`` -> ``TRACKING`` <-> ``LOST``/``RELOC``), the same calls
(:meth:`PointmapSource.prepare`, :meth:`FrameTracker.track` against the newest keyframe from a motion-model
guess built on the frames' *current* poses, :meth:`KeyframeStore.update_pointmap` for local fusion,
relocalisation on the most recent keyframes), but instead of building edges and optimising it emits packets
for the mapper (:class:`~online3r_ros.slam.mapping.KeyframePacket`,
:class:`~online3r_ros.slam.mapping.ObservationPacket`) and accepts the mapper's optimised keyframe poses
(:meth:`TrackerFrontend.apply_keyframe_poses`).

Its keyframe store is a *local working copy*: the tracker fuses each observation into it with the same
function the mapper uses on the same packets, so both copies hold the same canonical pointmaps.

Odometry: :attr:`TrackerStep.T_odom` is a continuous pose (REP-105 ``odom``): it accumulates the rigid
motion between consecutive posed frames, both evaluated with the keyframe poses known *now*, so a correction
from the mapper never makes it jump; the correction shows up in ``map -> odom`` instead. Both are rigid
``[4, 4]`` float64 matrices of the camera (optical) frame in the SLAM world (the first camera frame).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.lie import sim3_compose, sim3_exp, sim3_identity, sim3_inverse, sim3_log, sim3_to_matrix
from ..sources.base import PointmapSource, SourceFrame
from .config import SlamConfig
from .frame_store import FrameStore
from .mapping import (
    KeyframePacket,
    ObservationPacket,
    make_frame_tracker,
    make_keyframe_store,
    resolve_pose_group,
)
from .neighbours import tracking_keyframe
from .system import SlamState, apply_determinism
from .tracking import TrackingKeyframe, TrackResult

Tensor = torch.Tensor

__all__ = ["TrackerFrontend", "TrackerStep", "rigid_matrix", "new_session_id", "extrapolate_pose"]


MAX_EXTRAPOLATION = 30.0  # frame intervals a motion guess may extrapolate the last velocity over


def extrapolate_pose(
    T_prev: Tensor,
    T_last: Tensor,
    t_prev: float,
    t_last: float,
    t: float,
    max_intervals: float = MAX_EXTRAPOLATION,
) -> Tensor:
    """Constant-velocity guess at time ``t`` from Sim(3) poses at ``t_prev < t_last``: ``T_last ·
    Exp(k · Log(T_prev⁻¹ T_last))`` with ``k = (t - t_last) / (t_last - t_prev)`` capped at ``max_intervals``
    (``T_last`` when the times are not increasing)."""
    dt = float(t_last) - float(t_prev)
    if not dt > 0:
        return T_last
    k = min((float(t) - float(t_last)) / dt, max_intervals)
    step = sim3_compose(sim3_inverse(T_prev), T_last)
    if abs(k - 1.0) < 1e-9:
        return sim3_compose(T_last, step)
    return sim3_compose(T_last, sim3_exp(sim3_log(step) * k))


def new_session_id() -> int:
    """A fresh session id (wall-clock nanoseconds; distinct across restarts and resets)."""
    return time.time_ns()


def rigid_matrix(T: Tensor) -> np.ndarray:
    """``[4, 4]`` float64 rigid matrix of a Sim(3) ``[8]`` pose (scale dropped, camera centre kept)."""
    T = T.detach().to("cpu", torch.float64).clone().reshape(8)
    T[7] = 1.0
    return sim3_to_matrix(T).numpy()


def _inv_rigid(M: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = M[:3, :3].T
    out[:3, 3] = -M[:3, :3].T @ M[:3, 3]
    return out


@dataclass
class TrackerStep:
    """Result of :meth:`TrackerFrontend.process` for one frame.

    ``state``: :class:`SlamState` after the frame; ``T_WC`` Sim(3) ``[8]`` float64 (``None`` when lost);
    ``keyframe_id``/``T_CkCf``: the anchor; ``T_odom [4, 4]``: continuous odometry pose of the camera
    (``None`` when lost); ``observation``/``keyframe``: packets for the mapper (``None``: nothing to send);
    ``timings_ms``: per-stage wall times; ``match``: tracking statistics; ``reason``: why lost / relocalised.
    """

    index: int
    timestamp: float
    state: SlamState
    T_WC: Tensor | None
    keyframe_id: int
    T_CkCf: Tensor | None
    T_odom: np.ndarray | None
    observation: ObservationPacket | None = None
    keyframe: KeyframePacket | None = None
    timings_ms: dict = field(default_factory=dict)
    match: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def has_pose(self) -> bool:
        return self.T_WC is not None


class TrackerFrontend:
    """Frame-to-keyframe tracking with a local keyframe working copy (see the module docstring).

    Args:
        config: validated SLAM configuration (the same file as the mapper's).
        source: the pointmap source on ``config.system.device``.
        session: session id of the packets (default: :func:`new_session_id`).
    """

    def __init__(self, config: SlamConfig, source: PointmapSource, session: int | None = None) -> None:
        self.config = config
        self.source = source
        apply_determinism(config.system.seed, config.system.deterministic, config.system.device)
        self.device = torch.device(config.system.device)
        self.pose_group = resolve_pose_group(config, source)
        self.reset(session)

    def reset(self, session: int | None = None) -> None:
        """Start over: empty map, new session id, odometry back at the identity."""
        self.session = new_session_id() if session is None else int(session)
        self.keyframes = make_keyframe_store(self.config, self.device)
        self.frames = FrameStore()
        self.kf_frames: list[SourceFrame] = []
        self.kf_obs: list[int] = []  # observations fused into each keyframe so far
        self._tracker = make_frame_tracker(self.config, self.source, self.pose_group)
        self.state = SlamState.INIT
        self._n = 0
        self._posed: list[int] = []
        self._last_timestamp = -math.inf
        self._lost_streak = 0
        self._T_odom: np.ndarray | None = None
        self._odom_ref: int | None = None  # frame index the odometry was last advanced to

    # ------------------------------------------------------------------------------------------- queries
    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    @property
    def last_timestamp(self) -> float:
        return self._last_timestamp

    @property
    def lost_streak(self) -> int:
        """Consecutive frames without a pose (0 while tracking)."""
        return self._lost_streak

    def keyframe_packet(self, kf_id: int, prev_observations: int = 0) -> KeyframePacket:
        """The current local copy of keyframe ``kf_id`` as a packet (re-sending keyframes to a restarted
        mapper: carries the fused pointmap and counters)."""
        kf = self.keyframes.get(kf_id, device="cpu", fields=("colors",))
        colors = kf.colors
        if colors is None:
            colors = (self.kf_frames[kf_id].image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()
        return KeyframePacket(
            session=self.session,
            kf_id=kf_id,
            frame_index=kf.frame_index,
            timestamp=kf.timestamp,
            T_WC=kf.T_WC.to(torch.float64),
            X=kf.X.float(),
            C=kf.C.float(),
            colors=colors,
            K=None if kf.K is None else kf.K.float(),
            N=int(kf.N),
            N_updates=int(kf.N_updates),
            prev_observations=prev_observations,
        )

    def frame_world_pose(self, index: int) -> Tensor:
        rec = self.frames.record(index)
        return sim3_compose(self._kf_pose(rec.keyframe_id), rec.T_CkCf)

    def trajectory(self) -> tuple[np.ndarray, Tensor]:
        """Every posed frame's current pose: ``(timestamps [M], T_WC [M, 8])``."""
        if len(self.keyframes) == 0:
            return np.zeros(0), sim3_identity(0, dtype=torch.float64)
        idx, poses = self.frames.world_poses(self.keyframes.get_poses().detach().cpu())
        return self.frames.timestamps[idx], poses

    def map_to_odom(self) -> np.ndarray:
        """``T_W_odom [4, 4]``: the SLAM-world pose of the odometry frame (identity before any correction)."""
        if self._T_odom is None or self._odom_ref is None:
            return np.eye(4)
        return rigid_matrix(self.frame_world_pose(self._odom_ref)) @ _inv_rigid(self._T_odom)

    # ------------------------------------------------------------------------------------- corrections
    def apply_keyframe_poses(self, T_WC: Tensor) -> int:
        """Adopt optimised poses ``T_WC [K, 8]`` (index = keyframe id) for keyframes ``0..K-1``; newer local
        keyframes (made after the mapper's snapshot) follow keyframe ``K-1``'s correction. Returns the number
        of keyframes updated."""
        T_WC = torch.as_tensor(T_WC, dtype=torch.float64).reshape(-1, 8)
        n_local = len(self.keyframes)
        K = min(int(T_WC.shape[0]), n_local)
        if K == 0:
            return 0
        old = self.keyframes.get_poses().detach().cpu().to(torch.float64)
        self.keyframes.set_poses(list(range(K)), T_WC[:K])
        if n_local > K:
            delta = sim3_compose(T_WC[K - 1], sim3_inverse(old[K - 1]))
            newer = sim3_compose(delta.expand(n_local - K, 8), old[K:])
            self.keyframes.set_poses(list(range(K, n_local)), newer)
        return n_local

    # ---------------------------------------------------------------------------------------------- process
    def process(self, rgb, depth=None, K=None, timestamp: float = 0.0) -> TrackerStep:
        """Track one image (``rgb [H, W, 3]`` uint8/float, optional ``depth [H, W]`` m, ``K [3, 3]``).

        Raises ``SourceError``/``ValueError`` only for malformed input (the state is unchanged then).
        """
        t0 = time.perf_counter()
        timestamp = float(timestamp)
        if not math.isfinite(timestamp) or timestamp <= self._last_timestamp:
            raise ValueError(
                f"timestamp {timestamp!r} is not after the previous frame's {self._last_timestamp!r}"
            )
        sf = self.source.prepare(rgb, index=self._n, timestamp=timestamp, depth=depth, K=K)
        timings = {"prepare": 1000 * (time.perf_counter() - t0)}
        index = self._n
        self._n += 1
        self._last_timestamp = timestamp
        with torch.no_grad():
            if self.state == SlamState.INIT:
                step = self._initialise(sf, index, timings)
            elif self.state in (SlamState.TRACKING, SlamState.RELOC):
                step = self._track(sf, index, timings)
            else:
                step = self._relocalise(sf, index, timings)
        self._advance_odometry(step)
        timings["total"] = 1000 * (time.perf_counter() - t0)
        return step

    def _advance_odometry(self, step: TrackerStep) -> None:
        if not step.has_pose:
            return
        now = rigid_matrix(self.frame_world_pose(step.index))
        if self._T_odom is None or self._odom_ref is None:
            self._T_odom = now
        else:  # increment between the two frames, both with today's keyframe poses: no jump on corrections
            prev = rigid_matrix(self.frame_world_pose(self._odom_ref))
            self._T_odom = self._T_odom @ (_inv_rigid(prev) @ now)
        self._odom_ref = step.index
        step.T_odom = self._T_odom.copy()

    def _kf_pose(self, kf_id: int) -> Tensor:
        return self.keyframes.get_poses([kf_id]).reshape(8).detach().to("cpu", torch.float64)

    def _motion_guess(self, timestamp: float, constant_position: bool = False) -> Tensor:
        """Pose guess of a frame at ``timestamp`` from the last two posed frames' *current* poses: their
        motion scaled by the elapsed time (the tracker drops frames, so gaps vary), or the last pose."""
        last = self.frame_world_pose(self._posed[-1])
        model = self.config.system.motion_model
        if constant_position or model == "constant_position" or len(self._posed) < 2:
            return last
        ts = self.frames.timestamps
        i_prev, i_last = self._posed
        return extrapolate_pose(self.frame_world_pose(i_prev), last, ts[i_prev], ts[i_last], timestamp)

    def _reloc_guesses(self, timestamp: float) -> list[Tensor]:
        """After a gap: the last velocity extrapolated over it, then the last posed frame's pose."""
        guesses = [self._motion_guess(timestamp, constant_position=True)]
        if len(self._posed) == 2 and self.config.system.motion_model == "constant_velocity":
            guesses.insert(0, self._motion_guess(timestamp))
        return guesses

    def _push_pose(self, index: int) -> None:
        self._posed = (self._posed + [index])[-2:]

    def _tracking_keyframe(self, kf_id: int) -> TrackingKeyframe:
        cfg = self.config if self._tracker.uses_icp_model else None
        return tracking_keyframe(self.keyframes, self.kf_frames, kf_id, cfg)

    def _track_against(self, sf: SourceFrame, kf_id: int, guess: Tensor) -> TrackResult:
        return self._tracker.track(sf, self._tracking_keyframe(kf_id), guess.to(torch.float32))

    @staticmethod
    def _stats(res: TrackResult) -> dict:
        return {
            "match_frac": res.match_frac,
            "n_matches": res.n_matches,
            "iterations": res.iterations,
            "cost": res.cost,
            "new_keyframe": res.new_keyframe,
        }

    def _new_keyframe(self, sf: SourceFrame, X: Tensor, C: Tensor, T_WC: Tensor) -> KeyframePacket:
        colors = (sf.image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        kf_id = self.keyframes.append(
            T_WC.to(torch.float64), X, C, frame_index=sf.index, timestamp=sf.timestamp, colors=colors, K=sf.K
        )
        self.kf_frames.append(sf)
        self.kf_obs.append(0)
        prev = self.kf_obs[kf_id - 1] if kf_id > 0 else 0
        return KeyframePacket(
            session=self.session,
            kf_id=kf_id,
            frame_index=sf.index,
            timestamp=sf.timestamp,
            T_WC=T_WC.detach().to("cpu", torch.float64).clone(),
            X=X.detach().float().cpu().clone(),
            C=C.detach().float().cpu().clone(),
            colors=colors.cpu(),
            K=None if sf.K is None else sf.K.detach().float().cpu(),
            prev_observations=prev,
        )

    def _initialise(self, sf: SourceFrame, index: int, timings: dict) -> TrackerStep:
        t0 = time.perf_counter()
        pm = self.source.predict_mono(sf)
        timings["predict"] = 1000 * (time.perf_counter() - t0)
        if not math.isfinite(float(pm.X.sum())) or float((pm.C > 0).float().mean()) == 0.0:
            self.frames.append(sf.timestamp, -1, None, reason="initialisation: no valid points")
            return TrackerStep(
                index, sf.timestamp, SlamState.INIT, None, -1, None, None, reason="no valid points"
            )
        T_WC = sim3_identity(dtype=torch.float64)
        pkt = self._new_keyframe(sf, pm.X, pm.C, T_WC)
        self._push_pose(self.frames.append(sf.timestamp, pkt.kf_id, T_WC.clone(), is_keyframe=True))
        self.state = SlamState.TRACKING
        return TrackerStep(
            index,
            sf.timestamp,
            SlamState.TRACKING,
            T_WC,
            pkt.kf_id,
            T_WC.clone(),
            None,
            keyframe=pkt,
            timings_ms=timings,
        )

    def _track(self, sf: SourceFrame, index: int, timings: dict) -> TrackerStep:
        t0 = time.perf_counter()
        kf_id = len(self.keyframes) - 1
        res = self._track_against(sf, kf_id, self._motion_guess(sf.timestamp))
        timings["track"] = 1000 * (time.perf_counter() - t0)
        if res.lost:
            self._lost_streak = 1
            self.state = SlamState.LOST
            reason = f"tracking lost: {res.reason}"
            self.frames.append(sf.timestamp, -1, None, reason=reason)
            return TrackerStep(
                index,
                sf.timestamp,
                SlamState.LOST,
                None,
                -1,
                None,
                None,
                timings_ms=timings,
                match=self._stats(res),
                reason=reason,
            )
        return self._accept(sf, index, timings, kf_id, res, SlamState.TRACKING, "")

    def _accept(
        self,
        sf: SourceFrame,
        index: int,
        timings: dict,
        kf_id: int,
        res: TrackResult,
        state: SlamState,
        reason: str,
    ) -> TrackerStep:
        t0 = time.perf_counter()
        T_CkCf = res.T_CkCf.detach().to("cpu", torch.float64)
        obs = None
        if res.X_kk is not None and res.C_kf is not None:
            self.keyframes.update_pointmap(kf_id, res.X_kk, res.C_kf)
            self.kf_obs[kf_id] += 1
            obs = ObservationPacket(
                session=self.session,
                kf_id=kf_id,
                seq=self.kf_obs[kf_id],
                frame_index=sf.index,
                timestamp=sf.timestamp,
                T_CkCf=T_CkCf.clone(),
                X_kk=res.X_kk.detach().float().cpu(),
                C_kf=res.C_kf.detach().float().cpu(),
            )
        timings["fuse"] = 1000 * (time.perf_counter() - t0)
        T_WC = sim3_compose(self._kf_pose(kf_id), T_CkCf)
        pkt = None
        if res.new_keyframe and res.prediction is not None:
            t1 = time.perf_counter()
            pm = res.prediction.frame
            pkt = self._new_keyframe(sf, pm.X, pm.C, T_WC)
            stored = self.frames.append(
                sf.timestamp, pkt.kf_id, sim3_identity(dtype=torch.float64), is_keyframe=True
            )
            anchor, rel = pkt.kf_id, sim3_identity(dtype=torch.float64)
            timings["keyframe"] = 1000 * (time.perf_counter() - t1)
        else:
            stored = self.frames.append(sf.timestamp, kf_id, T_CkCf)
            anchor, rel = kf_id, T_CkCf
        self._push_pose(stored)
        self.state = SlamState.TRACKING
        self._lost_streak = 0
        return TrackerStep(
            index,
            sf.timestamp,
            state,
            T_WC,
            anchor,
            rel,
            None,
            observation=obs,
            keyframe=pkt,
            timings_ms=timings,
            match=self._stats(res),
            reason=reason,
        )

    def _relocalise(self, sf: SourceFrame, index: int, timings: dict) -> TrackerStep:
        t0 = time.perf_counter()
        n_try = min(self.config.system.reloc_keyframes, len(self.keyframes))
        guesses = self._reloc_guesses(sf.timestamp)
        best = None
        for kf_id in range(len(self.keyframes) - 1, len(self.keyframes) - 1 - n_try, -1):
            for guess in guesses:
                res = self._track_against(sf, kf_id, guess)
                if not res.lost and res.match_frac >= self.config.reloc.min_match_frac:
                    timings["reloc"] = 1000 * (time.perf_counter() - t0)
                    self._tracker.reset()
                    return self._accept(
                        sf, index, timings, kf_id, res, SlamState.RELOC, f"relocalised on keyframe {kf_id}"
                    )
                best = res if best is None or res.match_frac > best.match_frac else best
        timings["reloc"] = 1000 * (time.perf_counter() - t0)
        self._lost_streak += 1
        reason = f"lost ({self._lost_streak} frames): relocalisation failed"
        self.frames.append(sf.timestamp, -1, None, reason=reason)
        stats = {} if best is None else self._stats(best)
        return TrackerStep(
            index,
            sf.timestamp,
            SlamState.LOST,
            None,
            -1,
            None,
            None,
            timings_ms=timings,
            match=stats,
            reason=reason,
        )
