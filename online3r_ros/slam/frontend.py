"""The tracking half of the pipeline (ROS-free): track, fuse locally, decide keyframes, relocalise, odometry.

:class:`TrackerFrontend` turns input images into poses and into packets for the backend
(:mod:`~online3r_ros.slam.packets`): per frame :meth:`PointmapSource.prepare`, then the state machine
``INIT`` -> ``TRACKING`` <-> ``LOST``/``RELOC`` (MASt3R-SLAM §4):

- ``INIT``: the first frame with valid points becomes keyframe 0 at the identity;
- ``TRACKING``: :meth:`FrameTracker.track` against the newest keyframe (and, RGB-D, its model neighbours)
  from the motion-model guess; the frame's prediction is fused into that keyframe
  (:meth:`KeyframeStore.update_pointmap`, sent as an :class:`ObservationPacket`); a new keyframe is made
  when the overlap drops (sent as a :class:`KeyframePacket`);
- ``LOST``: the frame has no pose (never a guess); the next frames try the most recent keyframes from the
  motion guesses, then the whole map by place recognition (``RELOC`` on success).

With ``retrieval.enabled`` (:mod:`.place_tracking`): every keyframe's local features are indexed and sent
with its packet, a tracked frame with a low match fraction is checked against a prior-free pose (the guard:
a wrong ICP minimum becomes a recovery or LOST, never "tracking"), and relocalisation queries the whole map.

Its keyframe store is a *working copy*: the backend fuses the same observations into its own copy with the
same function, and the frontend adopts the backend's optimised poses (:meth:`apply_keyframe_poses`). Every
frame's pose is stored relative to its keyframe (:mod:`.frame_store`), so :meth:`trajectory` always follows
the optimised keyframes; :attr:`TrackerStep.T_odom` is the continuous odometry (:class:`.motion.Odometry`).

Session policy (decided here for every host): a new session (empty map, new id; the backend follows when it
sees the new session's keyframe 0) starts after ``system.max_lost_frames`` consecutive lost frames, and,
when ``time_jump_reset`` is set, on an input stamp more than that many seconds older than the previous one
(a looping bag). Other input out of order, or an image size change within a session, is rejected with
``ValueError`` and changes nothing.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..eval.timing import Stopwatch
from ..geometry.lie import sim3_compose, sim3_identity, sim3_inverse, sim3_to_matrix
from ..retrieval.features import LocalFeatures
from ..sources.base import PointmapSource, SourceFrame
from .components import apply_determinism, make_frame_tracker, make_keyframe_store, resolve_pose_group
from .config import SlamConfig
from .flow_prior import FlowImage, FlowPrior
from .frame_store import FrameStore, frames_from_map
from .motion import MotionModel, Odometry
from .neighbours import nearby_keyframes, tracking_keyframe
from .packets import KeyframePacket, ObservationPacket, PromptUpdate
from .place_tracking import FrameInput, PlaceTracking
from .places import make_describer, make_place_recognizer
from .tracking import TrackResult

Tensor = torch.Tensor

__all__ = ["SlamState", "TrackerStep", "TrackerFrontend", "new_session_id"]


class SlamState(enum.Enum):
    """Pipeline state after a frame: ``INIT`` (no map yet), ``TRACKING``, ``LOST`` (this frame has no pose),
    ``RELOC`` (this frame was relocalised against a recent keyframe; tracking resumes)."""

    INIT = "init"
    TRACKING = "tracking"
    LOST = "lost"
    RELOC = "reloc"


def new_session_id() -> int:
    """A fresh session id (wall-clock nanoseconds; distinct across restarts and resets)."""
    return time.time_ns()


def _pose_distance(T_a: Tensor, T_b: Tensor) -> float:
    """The larger of the camera distance (world units) and the rotation angle (rad) between Sim(3) poses
    ``[8]``."""
    D = sim3_compose(sim3_inverse(T_a.to(torch.float64)), T_b.to(torch.float64))
    return max(float(D[:3].norm()), 2.0 * math.acos(min(1.0, abs(float(D[6])))))


def _uint8(image: Tensor) -> Tensor:
    """``[H, W, 3]`` float colours in ``[0, 1]`` -> uint8 on the CPU."""
    return (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()


@dataclass
class TrackerStep:
    """What one frame produced.

    ``index``: order of arrival in the session; ``timestamp`` s; ``session``: the session the frame belongs
    to; ``state``: :class:`SlamState` after it; ``T_WC``: Sim(3) ``[8]`` float64 pose when processed (``None``
    without pose; :meth:`TrackerFrontend.trajectory` has the current one); ``keyframe_id``/``T_CkCf``: its
    anchor (-1 / ``None`` without pose); ``T_odom [4, 4]``: continuous odometry pose (``None`` without
    pose); ``observation``/``keyframe``: packets for the backend; ``match``: tracking statistics;
    ``timings_ms``: per-stage wall times; ``reason``: why lost / relocalised; ``reset_reason``: why a new
    session started after this frame (empty: none); ``map_update``: the backend's result for this frame's
    keyframe, filled by a host that runs the backend in step (:class:`~online3r_ros.slam.system.SlamSystem`).
    """

    index: int
    timestamp: float
    session: int
    state: SlamState
    T_WC: Tensor | None = None
    keyframe_id: int = -1
    T_CkCf: Tensor | None = None
    T_odom: np.ndarray | None = None
    observation: ObservationPacket | None = None
    keyframe: KeyframePacket | None = None
    match: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    reason: str = ""
    reset_reason: str = ""
    map_update: object | None = None

    @property
    def has_pose(self) -> bool:
        return self.T_WC is not None

    def T_WC_matrix(self) -> np.ndarray | None:
        """``[4, 4]`` float64 matrix of :attr:`T_WC` (top-left block ``s·R``) or ``None``."""
        return None if self.T_WC is None else sim3_to_matrix(self.T_WC).numpy()


class TrackerFrontend:
    """Frame-to-keyframe tracking with a working copy of the keyframes (see the module docstring).

    Args:
        config: validated SLAM configuration (the same as the backend's).
        source: the pointmap source on ``config.system.device``.
        session: session id of the packets (default: :func:`new_session_id`).
        time_jump_reset: start a new session when a stamp is more than this many seconds older than the
            previous one (``None``: never; such a frame is rejected like any out-of-order input).
    """

    def __init__(
        self,
        config: SlamConfig,
        source: PointmapSource,
        session: int | None = None,
        time_jump_reset: float | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.time_jump_reset = time_jump_reset
        apply_determinism(config.system.seed, config.system.deterministic, config.system.device)
        self.device = torch.device(config.system.device)
        self.pose_group = resolve_pose_group(config, source)
        describe, places = make_describer(config, source), make_place_recognizer(config)
        self.place = None if describe is None or places is None else PlaceTracking(config, describe, places)
        tc = config.tracking
        flow = tc.flow_prior and source.metric
        self.flow = (
            FlowPrior(
                tc.flow_max_side,
                tc.flow_points,
                source.metres,
                agree_px=tc.flow_agree_px,
                max_correction=tc.flow_max_correction,
            )
            if flow
            else None
        )
        self._offered_prompts: PromptUpdate | None = None
        self.reset(session)

    def reset(self, session: int | None = None) -> None:
        """Start over: empty map, new session id, odometry back at the identity."""
        self.session = new_session_id() if session is None else int(session)
        self.keyframes = make_keyframe_store(self.config, self.device)
        self.frames = FrameStore()
        self.kf_frames: list[SourceFrame] = []  # the keyframes' prepared frames (tracking targets)
        self.kf_obs: list[int] = []  # observations fused into each keyframe so far
        self.kf_anchor: list[int] = []  # the keyframe each keyframe was tracked from (-1: none)
        self.tracker = make_frame_tracker(self.config, self.source)
        self.motion = MotionModel(self.config.system.motion_model)
        self.odometry = Odometry()
        self.state = SlamState.INIT
        self.image_size: tuple[int, int] | None = None  # (H, W) of this session's input images
        self.n_frames = 0
        self.last_timestamp = -math.inf
        self.lost_streak = 0  # consecutive frames without a pose
        self.active_kf = -1  # the keyframe the last posed frame was tracked against (or became)
        self.n_reused = 0  # frames that reused a nearby keyframe where a new one was due
        if self.place is not None:
            self.place.reset()
        if self.flow is not None:
            self.flow.reset()

    # ------------------------------------------------------------------------------------------- queries
    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    def keyframe_pose(self, kf_id: int) -> Tensor:
        """Current Sim(3) ``[8]`` float64 CPU pose of keyframe ``kf_id``."""
        return self.keyframes.get_poses([kf_id]).reshape(8).detach().to("cpu", torch.float64)

    def frame_world_pose(self, index: int) -> Tensor:
        """Current world pose of posed frame ``index`` (its keyframe's pose times its ``T_CkCf``)."""
        rec = self.frames.record(index)
        return sim3_compose(self.keyframe_pose(rec.keyframe_id), rec.T_CkCf)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray, Tensor]:
        """Every posed frame's current pose: ``(indices [M], timestamps [M] s, T_WC [M, 8] float64)``."""
        if len(self.keyframes) == 0:
            return np.zeros(0, np.int64), np.zeros(0), sim3_identity(0, dtype=torch.float64)
        idx, poses = self.frames.world_poses(self.keyframes.get_poses().detach().cpu())
        return idx, self.frames.timestamps[idx], poses

    def map_to_odom(self) -> np.ndarray:
        """``T_W_odom [4, 4]``: the SLAM-world pose of the odometry frame (identity before any correction)."""
        return self.odometry.map_to_odom(self.frame_world_pose)

    def keyframe_features(self, kf_id: int) -> LocalFeatures | None:
        """The place-recognition features of keyframe ``kf_id`` (``None``: retrieval off, or none)."""
        return None if self.place is None else self.place.places.features.get(kf_id)

    def keyframe_packet(self, kf_id: int, prev_observations: int = 0) -> KeyframePacket:
        """The working copy of keyframe ``kf_id`` as a packet (to re-send it to a restarted backend: with
        its fused pointmap and counters, and the poses of the frames fused into it)."""
        kf = self.keyframes.get(kf_id, device="cpu")
        return KeyframePacket(
            session=self.session,
            kf_id=kf_id,
            frame_index=kf.frame_index,
            timestamp=kf.timestamp,
            T_WC=kf.T_WC.to(torch.float64),
            X=kf.X.float(),
            C=kf.C.float(),
            colors=_uint8(self.kf_frames[kf_id].image),
            K=None if kf.K is None else kf.K.float(),
            N=int(kf.N),
            N_updates=int(kf.N_updates),
            prev_observations=prev_observations,
            features=self.keyframe_features(kf_id),
            anchor_id=self.kf_anchor[kf_id],
            T_WA=self._anchor_pose(self.kf_anchor[kf_id]),
            fused_frames=self.frames.anchored_to(kf_id),
        )

    # ---------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Everything needed to continue this session elsewhere (plain data and CPU tensors)."""
        return {
            "session": self.session,
            "keyframes": self.keyframes.state_dict(),
            "frames": self.frames.state_dict(),
            "kf_frames": [f.state_dict() for f in self.kf_frames],
            "kf_obs": list(self.kf_obs),
            "kf_anchor": list(self.kf_anchor),
            "places": None if self.place is None else self.place.places.state_dict(),
            "state": self.state.value,
            "image_size": self.image_size,
            "n_frames": self.n_frames,
            "last_timestamp": self.last_timestamp,
            "lost_streak": self.lost_streak,
            "active_kf": self.active_kf,
            "motion": self.motion.state_dict(),
            "odometry": self.odometry.state_dict(),
            "flow": None if self.flow is None else self.flow.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the session saved by :meth:`state_dict` (tracker caches start empty)."""
        self.reset(state["session"])
        self.keyframes.extend_from_state(state["keyframes"])
        self.frames = FrameStore.from_state_dict(state["frames"])
        self.kf_frames = [SourceFrame.from_state_dict(f, self.device) for f in state["kf_frames"]]
        self.kf_obs = [int(v) for v in state["kf_obs"]]
        self.kf_anchor = [int(v) for v in state.get("kf_anchor", range(-1, len(self.kf_obs) - 1))]
        if self.place is not None and state.get("places") is not None:
            self.place.places.load_state_dict(state["places"])
        self.state = SlamState(state["state"])
        self.image_size = None if state["image_size"] is None else tuple(state["image_size"])
        self.n_frames = int(state["n_frames"])
        self.last_timestamp = float(state["last_timestamp"])
        self.lost_streak = int(state["lost_streak"])
        self.active_kf = int(state.get("active_kf", len(self.kf_obs) - 1))
        self.motion.load_state_dict(state["motion"])
        self.odometry.load_state_dict(state["odometry"])
        if self.flow is not None:
            self.flow.load_state_dict(state.get("flow"))

    # ------------------------------------------------------------------------------------------ prompts
    @property
    def prompt_version(self) -> int:
        """Version of the tuned prompts the source uses (0: none / not a tunable source)."""
        return int(self.source.prompt_version) if self.source.tunable else 0

    def offer_prompts(self, update: PromptUpdate) -> None:
        """Use ``update``'s prompts from the next frame on (never mid-frame); callable from any thread. Of
        several offers before the next frame the newest version wins; without a tunable source this does
        nothing."""
        current = self._offered_prompts
        if current is None or update.version >= current.version:
            self._offered_prompts = update

    def _swap_prompts(self) -> None:
        update, self._offered_prompts = self._offered_prompts, None
        if update is not None and self.source.tunable and update.version != self.prompt_version:
            self.source.set_prompts(update.prompts, update.version)

    def adopt_map(self, state: dict) -> None:
        """Continue in a map saved by the backend (:meth:`MapperBackend.state_dict`, e.g. its ``map_path``
        file): its keyframes, their features, its frames and its session become this frontend's, and the
        next frame relocalises in the whole map (state LOST: the camera may be anywhere in it, the kidnapped
        robot). A backend holding the same map accepts this frontend's packets; one holding another gets
        the map's keyframes re-sent (:mod:`~online3r_ros.slam.session`)."""
        self.reset(state["session"] if state.get("session") is not None else None)
        self.keyframes.extend_from_state(state["keyframes"])
        self.frames = frames_from_map(state["frames"])
        self.kf_frames = [SourceFrame.from_state_dict(f, self.device) for f in state["kf_frames"]]
        n = len(self.kf_frames)
        self.kf_obs = [int(v) for v in state["obs_count"]]
        self.kf_anchor = [int(v) for v in state.get("kf_anchor", range(-1, n - 1))]
        if self.place is not None:
            for kf_id, f in enumerate(state.get("kf_features", [])):
                if f is not None:
                    self.place.places.add(kf_id, LocalFeatures.from_state_dict(f))
        self.n_frames = len(self.frames)  # frame indices continue after the map's
        if (saved := state.get("prompts")) is not None:  # the map's tuned prompts
            self.offer_prompts(PromptUpdate(int(saved["version"]), saved["tensor"].float()))
        self.active_kf = n - 1
        self.state = SlamState.LOST if n else SlamState.INIT
        self.lost_streak = 1 if n else 0

    # ------------------------------------------------------------------------------------- corrections
    def apply_keyframe_poses(self, T_WC: Tensor) -> int:
        """Adopt optimised poses ``T_WC [K, 8]`` (index = keyframe id) for keyframes ``0..K-1``; newer local
        keyframes (made after the backend's snapshot) follow their anchor's correction, as the backend will
        place them (:class:`~online3r_ros.slam.packets.KeyframePacket` ``T_WA``). Returns the number of
        keyframes updated."""
        T_WC = torch.as_tensor(T_WC, dtype=torch.float64).reshape(-1, 8)
        n_local = len(self.keyframes)
        K = min(int(T_WC.shape[0]), n_local)
        if K == 0:
            return 0
        old = self.keyframes.get_poses().detach().cpu().to(torch.float64)
        new = torch.cat([T_WC[:K], old[K:]])
        for k in range(K, n_local):  # the few keyframes the backend has not integrated yet, in order
            anchor = self.kf_anchor[k] if self.kf_anchor[k] >= 0 else K - 1
            new[k] = sim3_compose(new[anchor], sim3_compose(sim3_inverse(old[anchor]), old[k]))
        self.keyframes.set_poses(list(range(n_local)), new)
        return n_local

    def apply_map_update(self, T_WC: Tensor, session: int | None) -> bool:
        """Adopt the backend's optimised poses when they belong to this session (poses of another session,
        e.g. sent before a reset, are ignored); True when adopted."""
        if session != self.session:
            return False
        self.apply_keyframe_poses(T_WC)
        return True

    # ---------------------------------------------------------------------------------------------- process
    def process(self, rgb, depth=None, K=None, timestamp: float = 0.0) -> TrackerStep:
        """Track one image: ``rgb [H, W, 3]`` uint8/float, optional ``depth [H, W]`` m and ``K [3, 3]``.

        Raises ``SourceError``/``ValueError`` only for rejected input (malformed, out of order, another image
        size within the session); the state is unchanged then.
        """
        watch = Stopwatch(cuda_sync=self.device.type == "cuda")
        size = tuple(np.shape(rgb)[:2])
        reset_reason = self._admit(float(timestamp), size)
        self._swap_prompts()
        sf = self.source.prepare(rgb, index=self.n_frames, timestamp=float(timestamp), depth=depth, K=K)
        inp = FrameInput(sf, rgb, depth, K)
        watch.lap("prepare")
        self.image_size = size
        self.n_frames += 1
        self.last_timestamp = sf.timestamp
        with torch.no_grad():
            if self.state == SlamState.INIT:
                step = self._initialise(inp, watch)
            elif self.state in (SlamState.TRACKING, SlamState.RELOC):
                step = self._track(inp, watch)
            else:
                step = self._relocalise(inp, watch)
        if step.has_pose:
            step.T_odom = self.odometry.advance(step.index, self.frame_world_pose)
        step.reset_reason = reset_reason
        max_lost = self.config.system.max_lost_frames
        if not step.has_pose and 0 < max_lost <= self.lost_streak:
            step.reset_reason = f"lost for {self.lost_streak} frames (system.max_lost_frames)"
            self.reset()
        step.timings_ms = watch.total()
        return step

    def _admit(self, timestamp: float, size: tuple[int, ...]) -> str:
        """Check one input before it changes anything; a time jump starts a new session first (returns why;
        empty: none). Raises ``ValueError`` for input out of order or of another size."""
        last = self.last_timestamp
        if (
            self.time_jump_reset is not None
            and math.isfinite(timestamp)
            and timestamp < last - self.time_jump_reset
        ):
            self.reset()
            return f"time went backwards: {timestamp:.6f} < {last:.6f}"
        if not math.isfinite(timestamp) or timestamp <= last:
            raise ValueError(
                f"frame {self.n_frames}: timestamp {timestamp!r} is not finite or not after the previous "
                f"frame's {last!r}"
            )
        if self.image_size is not None and size != self.image_size:
            raise ValueError(
                f"image size changed from {self.image_size[1]}x{self.image_size[0]} to {size[1]}x{size[0]} "
                "within a session (reset to change cameras)"
            )
        return ""

    # ----------------------------------------------------------------------------------------- the states
    def _no_pose(self, sf: SourceFrame, state: SlamState, reason: str, match: dict) -> TrackerStep:
        self.frames.append(sf.timestamp, -1, None, reason=reason)
        return TrackerStep(
            index=sf.index,
            timestamp=sf.timestamp,
            session=self.session,
            state=state,
            match=match,
            reason=reason,
        )

    def _initialise(self, inp: FrameInput, watch: Stopwatch) -> TrackerStep:
        sf = inp.sf
        pm = self.source.predict_mono(sf)
        watch.lap("predict")
        if not math.isfinite(float(pm.X.sum())) or float((pm.C > 0).float().mean()) == 0.0:
            return self._no_pose(sf, SlamState.INIT, "initialisation: no valid points", {})
        T_WC = sim3_identity(dtype=torch.float64)
        pkt = self._new_keyframe(inp, pm.X, pm.C, T_WC, anchor=-1)
        self.frames.append(sf.timestamp, pkt.kf_id, T_WC.clone(), is_keyframe=True)
        self.motion.observe(sf.index, sf.timestamp, self.frame_world_pose)
        self._remember(inp)
        self.state = SlamState.TRACKING
        self.active_kf = pkt.kf_id
        watch.lap("keyframe")
        return TrackerStep(
            index=sf.index,
            timestamp=sf.timestamp,
            session=self.session,
            state=SlamState.TRACKING,
            T_WC=T_WC,
            keyframe_id=pkt.kf_id,
            T_CkCf=T_WC.clone(),
            keyframe=pkt,
        )

    def _track_against(self, sf: SourceFrame, kf_id: int, guess: Tensor) -> TrackResult:
        cfg = self.config if self.tracker.uses_icp_model else None
        target = tracking_keyframe(self.keyframes, self.kf_frames, kf_id, cfg)
        return self.tracker.track(sf, target, guess.to(torch.float32))

    def _guarded(self, inp: FrameInput, kf_id: int, guess: Tensor, always: bool = False) -> TrackResult:
        """Track against ``kf_id`` from ``guess``, checked by the place-recognition guard (if any; ``always``:
        whatever the match fraction)."""
        res = self._track_against(inp.sf, kf_id, guess)
        if self.place is None:
            return res
        return self.place.guard(inp, kf_id, res, self._track_against, self.keyframe_pose, always)

    def _track(self, inp: FrameInput, watch: Stopwatch) -> TrackerStep:
        """Track against the active keyframe (the newest, or the one relocalisation found)."""
        sf = inp.sf
        kf_id = self.active_kf
        guess = self.motion.guess(sf.timestamp, self.frame_world_pose)
        if self.flow is not None:
            guess = self._flow_guess(inp, guess)
            watch.lap("flow")
        res = self._guarded(inp, kf_id, guess)
        watch.lap("track")
        if res.lost:
            self.lost_streak = 1
            self.state = SlamState.LOST
            return self._no_pose(sf, SlamState.LOST, f"tracking lost: {res.reason}", res.summary())
        reused = self._reused(inp, kf_id, res) if res.new_keyframe else None
        if reused is None:
            return self._accept(inp, watch, kf_id, res, SlamState.TRACKING, "")
        self.n_reused += 1
        watch.lap("reuse")
        return self._accept(inp, watch, *reused, SlamState.TRACKING, "", keep_velocity=True)

    def _flow_guess(self, inp: FrameInput, motion_guess: Tensor) -> Tensor:
        """The world pose to track ``inp`` from: the motion model's ``motion_guess`` where the flow to the
        last posed frame agrees with it or there is no prior, else the flow's verified pose."""
        last = self.flow.last_index
        if last is None:
            return motion_guess
        T_last = self.frame_world_pose(last)
        found = self.flow.guess(self._flow_image(inp), sim3_compose(sim3_inverse(T_last), motion_guess))
        return motion_guess if found is None else sim3_compose(T_last, found.T_last_frame)

    def _remember(self, inp: FrameInput) -> None:
        """``inp`` got a pose: the flow prior poses the next frame relative to it."""
        if self.flow is not None:
            self.flow.remember(inp.sf.index, self._flow_image(inp))

    def _flow_image(self, inp: FrameInput) -> FlowImage | None:
        """``inp``'s flow image, computed once."""
        if inp.flow is None:
            inp.flow = self.flow.image(inp.rgb, inp.depth, inp.K)
        return inp.flow

    def _reused(self, inp: FrameInput, kf_id: int, res: TrackResult) -> tuple[int, TrackResult] | None:
        """Where ``res`` (tracked against ``kf_id``) asks for a new keyframe: the first of the
        ``tracking.reuse_keyframes`` keyframes nearest the frame's pose (:func:`.neighbours.nearby_keyframes`
        within ``model_max_dist`` / ``model_max_angle``; metric sources) that, tracking the frame against it
        alone from that pose, covers the frame and places it within ``tracking.reuse_tolerance`` of that pose
        (the map is consistent there), with that result; ``None``: a new keyframe is due."""
        tc = self.config.tracking
        if tc.reuse_keyframes <= 0 or not self.source.metric or len(self.keyframes) < 2:
            return None
        T_WC = sim3_compose(self.keyframe_pose(kf_id), res.T_CkCf.detach().to("cpu", torch.float64))
        poses = self.keyframes.get_poses()
        near = nearby_keyframes(
            poses, T_WC.to(poses), tc.reuse_keyframes, tc.model_max_dist, tc.model_max_angle, [kf_id]
        )
        for other in near:
            alone = tracking_keyframe(self.keyframes, self.kf_frames, other)
            again = self.tracker.track(inp.sf, alone, T_WC.to(torch.float32))
            if again.lost or again.new_keyframe or again.prediction is None:
                continue
            there = sim3_compose(self.keyframe_pose(other), again.T_CkCf.detach().to("cpu", torch.float64))
            if _pose_distance(T_WC, there) <= tc.reuse_tolerance:
                return other, again
        return None

    def _relocalise(self, inp: FrameInput, watch: Stopwatch) -> TrackerStep:
        """Try the most recent keyframes (newest first), each from the motion guesses, then the whole map by
        place recognition; accept the first result with a match fraction of at least
        ``reloc.min_match_frac`` (and that passes the guard), else the frame stays LOST."""
        sf = inp.sf
        newest_first = range(len(self.keyframes) - 1, -1, -1)
        tried = list(dict.fromkeys([self.active_kf, *newest_first]))[: self.config.system.reloc_keyframes]
        guesses = self.motion.reloc_guesses(sf.timestamp, self.frame_world_pose)
        best = None
        for kf_id in tried:
            for guess in guesses:
                res = self._guarded(inp, kf_id, guess, always=True)
                if not res.lost and res.match_frac >= self.config.reloc.min_match_frac:
                    return self._relocalised(inp, watch, kf_id, res, "recent keyframe")
                best = res if best is None or res.match_frac > best.match_frac else best
        if self.place is not None:
            found = self.place.relocalise(inp, self._track_against, self.keyframe_pose)
            if found is not None:
                return self._relocalised(inp, watch, found[0], found[1], "place recognition")
        watch.lap("reloc")
        self.lost_streak += 1
        reason = f"lost ({self.lost_streak} frames): relocalisation failed against keyframes {tried}"
        if self.place is not None:
            reason += " and the map's place-recognition candidates"
        if best is not None:
            reason += (
                f" (best match fraction {best.match_frac:.3f}; a relocalisation needs "
                f"{self.config.reloc.min_match_frac} and, between textured images, the features' support)"
            )
        return self._no_pose(sf, SlamState.LOST, reason, {} if best is None else best.summary())

    def _relocalised(
        self, inp: FrameInput, watch: Stopwatch, kf_id: int, res: TrackResult, how: str
    ) -> TrackerStep:
        watch.lap("reloc")
        self.tracker.reset()
        self.motion.reset()  # no velocity across the gap
        return self._accept(
            inp, watch, kf_id, res, SlamState.RELOC, f"relocalised on keyframe {kf_id} ({how})"
        )

    def _accept(
        self,
        inp: FrameInput,
        watch: Stopwatch,
        kf_id: int,
        res: TrackResult,
        state: SlamState,
        reason: str,
        keep_velocity: bool = False,
    ) -> TrackerStep:
        """Fuse the tracked frame into its keyframe, store its pose, and make a keyframe if needed
        (``keep_velocity``: the pose jumped, a reused keyframe: the motion model keeps the velocity measured
        before)."""
        sf = inp.sf
        T_CkCf = res.T_CkCf.detach().to("cpu", torch.float64)
        obs = self._fuse(sf, kf_id, res, T_CkCf)
        watch.lap("fuse")
        T_WC = sim3_compose(self.keyframe_pose(kf_id), T_CkCf)
        pkt = None
        anchor, rel = kf_id, T_CkCf
        if res.new_keyframe and res.prediction is not None:
            pkt = self._new_keyframe(inp, res.prediction.frame.X, res.prediction.frame.C, T_WC, anchor=kf_id)
            anchor, rel = pkt.kf_id, sim3_identity(dtype=torch.float64)
            watch.lap("keyframe")
        self.frames.append(sf.timestamp, anchor, rel, is_keyframe=pkt is not None)
        self.motion.observe(sf.index, sf.timestamp, self.frame_world_pose, keep_velocity)
        self._remember(inp)
        self.state = SlamState.TRACKING
        self.lost_streak = 0
        self.active_kf = anchor
        return TrackerStep(
            index=sf.index,
            timestamp=sf.timestamp,
            session=self.session,
            state=state,
            T_WC=T_WC,
            keyframe_id=anchor,
            T_CkCf=rel,
            observation=obs,
            keyframe=pkt,
            match=res.summary(),
            reason=reason,
        )

    def _fuse(
        self, sf: SourceFrame, kf_id: int, res: TrackResult, T_CkCf: Tensor
    ) -> ObservationPacket | None:
        """Fuse the frame's prediction into keyframe ``kf_id``'s working copy; the packet for the backend."""
        if res.X_kk is None or res.C_kf is None:
            return None
        self.keyframes.update_pointmap(kf_id, res.X_kk, res.C_kf)
        self.kf_obs[kf_id] += 1
        return ObservationPacket(
            session=self.session,
            kf_id=kf_id,
            seq=self.kf_obs[kf_id],
            frame_index=sf.index,
            timestamp=sf.timestamp,
            T_CkCf=T_CkCf.clone(),
            X_kk=res.X_kk.detach().float().cpu(),
            C_kf=res.C_kf.detach().float().cpu(),
        )

    def _new_keyframe(
        self, inp: FrameInput, X: Tensor, C: Tensor, T_WC: Tensor, anchor: int
    ) -> KeyframePacket:
        """Keyframe from ``inp`` (tracked from keyframe ``anchor``; -1: none), indexed for retrieval."""
        sf = inp.sf
        kf_id = self.keyframes.append(
            T_WC.to(torch.float64), X, C, frame_index=sf.index, timestamp=sf.timestamp, K=sf.K
        )
        self.kf_frames.append(sf)
        self.kf_obs.append(0)
        self.kf_anchor.append(int(anchor))
        features = None if self.place is None else self.place.add_keyframe(kf_id, inp)
        return KeyframePacket(
            session=self.session,
            kf_id=kf_id,
            frame_index=sf.index,
            timestamp=sf.timestamp,
            T_WC=T_WC.detach().to("cpu", torch.float64).clone(),
            X=X.detach().float().cpu().clone(),
            C=C.detach().float().cpu().clone(),
            colors=_uint8(sf.image),
            K=None if sf.K is None else sf.K.detach().float().cpu(),
            prev_observations=self.kf_obs[kf_id - 1] if kf_id > 0 else 0,
            frame=sf,
            features=features,
            anchor_id=int(anchor),
            T_WA=self._anchor_pose(anchor),
        )

    def _anchor_pose(self, anchor: int) -> Tensor | None:
        """Keyframe ``anchor``'s current pose ``[8]`` float64 CPU (``None`` for no anchor, -1)."""
        return None if anchor < 0 else self.keyframe_pose(anchor).clone()
