"""The synchronous, deterministic SLAM pipeline: frame in -> state, pose and keyframe events out.

:class:`SlamSystem` drives a :class:`~online3r_ros.sources.base.PointmapSource` through the MASt3R-SLAM steps
(reference notes §1.3-1.4), one call per input frame, with the backend run synchronously after each new
keyframe (the reference's ``single_thread`` evaluation mode):

1. ``source.prepare`` (working resolution; RGB-D back-projection / MASt3R encoder features);
2. ``INIT``: mono prediction -> keyframe 0 at the identity;
3. ``TRACKING``: frame-to-last-keyframe pose (``FrameTracker``) from a motion-model guess, fusion of the
   keyframe's canonical pointmap, keyframe decision;
4. on a new keyframe: add it to the store, build edges (previous keyframe, plus loop candidates from the
   optional ``loop_candidates`` hook), run the global optimisation and re-anchor;
5. tracking loss -> ``LOST`` (never an exception): the frame gets no pose, and the next frames try to
   relocalise against the most recent keyframes (motion-model guess from the last posed frame);

Every frame's pose is stored relative to its keyframe (``T_CkCf``, :mod:`.frame_store`) and composed with the
keyframes' current poses on demand, so :meth:`SlamSystem.trajectory` is always consistent with the
optimised keyframes. Frames without a pose are listed (:meth:`SlamSystem.unposed_frames`), never guessed.

Determinism: the constructor seeds torch/numpy and (``system.deterministic``) enables
``torch.use_deterministic_algorithms``; the pipeline has no randomness and no threads of its own, so two
runs on the same input produce bit-identical outputs on the same machine.
"""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geometry.lie import (
    sim3_act,
    sim3_compose,
    sim3_exp,
    sim3_identity,
    sim3_inverse,
    sim3_log,
    sim3_to_matrix,
)
from ..sources.base import PointmapSource, SourceError, SourceFrame
from .config import SlamConfig, config_from_dict, config_to_dict
from .edges import build_edges
from .frame_store import FrameStore
from .global_opt import GlobalOptConfig, GlobalOptimizer, source_backend_overrides
from .graph import FactorGraph
from .keyframes import KeyframeStore
from .mapping import edge_candidates
from .neighbours import tracking_keyframe
from .tracking import FrameTracker, TrackerOptions, TrackingKeyframe, TrackResult

Tensor = torch.Tensor

__all__ = [
    "SlamState",
    "KeyframeEvent",
    "FrameOutput",
    "Trajectory",
    "DenseMap",
    "SlamSystem",
    "apply_determinism",
]

STATE_FILE = "system.pt"
MAX_EXTRAPOLATION = 30.0  # frame intervals a relocalisation guess may extrapolate the last velocity over


class SlamState(enum.Enum):
    """Pipeline state after a frame: ``INIT`` (no map yet), ``TRACKING``, ``LOST`` (this frame has no pose),
    ``RELOC`` (this frame was relocalised against a recent keyframe; tracking resumes)."""

    INIT = "init"
    TRACKING = "tracking"
    LOST = "lost"
    RELOC = "reloc"


@dataclass(frozen=True)
class KeyframeEvent:
    """Keyframe-level changes caused by one frame.

    ``new_keyframe_id``: id of the keyframe created from this frame (or ``None``); ``edges``: graph edges
    ``(i, j)`` added; ``optimised``: a global optimisation ran; ``keyframe_ids``/``keyframe_T_WC`` (``[K]``,
    ``[K, 8]`` Sim(3) float64 CPU): every keyframe's pose after it; ``opt_info``: solver report.
    """

    new_keyframe_id: int | None
    edges: tuple[tuple[int, int], ...] = ()
    optimised: bool = False
    keyframe_ids: tuple[int, ...] = ()
    keyframe_T_WC: Tensor | None = None
    opt_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FrameOutput:
    """Result of :meth:`SlamSystem.process` for one frame.

    Attributes:
        index: order of arrival (0-based) in this system.
        timestamp: seconds (from the input frame).
        state: :class:`SlamState` after this frame.
        T_WC: Sim(3) ``[8]`` float64 CPU camera-to-world pose of this frame (optical frame) at the time of
            processing, or ``None`` when the frame could not be posed (``state`` LOST). Later optimisations
            move it; :meth:`SlamSystem.trajectory` has the current value.
        keyframe_id: keyframe the pose is anchored to (-1 without pose).
        T_CkCf: Sim(3) ``[8]`` float64 pose relative to that keyframe, or ``None``.
        keyframe: :class:`KeyframeEvent` when a keyframe was created / the map was optimised, else ``None``.
        match: tracking statistics (fractions of valid matches, number of points, iterations, cost, ...).
        timings_ms: wall time per stage (``prepare``, ``track``, ``fuse``, ``keyframe``, ``optimise``,
            ``total``), milliseconds.
        reason: why the frame has no pose / why it was relocalised (empty otherwise).
    """

    index: int
    timestamp: float
    state: SlamState
    T_WC: Tensor | None
    keyframe_id: int
    T_CkCf: Tensor | None
    keyframe: KeyframeEvent | None
    match: dict
    timings_ms: dict
    reason: str = ""

    @property
    def has_pose(self) -> bool:
        return self.T_WC is not None

    def T_WC_matrix(self) -> np.ndarray | None:
        """``[4, 4]`` float64 matrix of :attr:`T_WC` (top-left block ``s·R``) or ``None``."""
        return None if self.T_WC is None else sim3_to_matrix(self.T_WC).numpy()


@dataclass(frozen=True)
class Trajectory:
    """Poses of frames: ``timestamps [M]`` s, ``T_WC [M, 4, 4]`` float64 (Sim(3) matrices: top-left ``s·R``;
    the scale is 1 for SE(3) runs), ``indices [M]`` frame indices, ``poses [M, 8]`` Sim(3) vectors."""

    timestamps: np.ndarray
    T_WC: np.ndarray
    indices: np.ndarray
    poses: Tensor

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True)
class DenseMap:
    """Coloured point cloud in the world frame: ``points [P, 3]`` float32, ``colors [P, 3]`` uint8,
    ``confidence [P]`` float32 (average confidence), ``keyframe_ids [P]`` int32 (origin of each point)."""

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    keyframe_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def apply_determinism(seed: int, deterministic: bool, device: torch.device | str = "cpu") -> None:
    """Seed torch; with ``deterministic`` on CUDA also force deterministic kernels (a process-global setting).

    The pipeline's CPU kernels are deterministic already (no atomics), so on CPU nothing else is needed
    (and the costly import behind ``torch.use_deterministic_algorithms`` is avoided).
    """
    torch.manual_seed(seed)
    if deterministic and torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class _Stopwatch:
    """Accumulates per-stage wall times (ms); synchronises CUDA so GPU work is charged to its stage."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.ms: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._last = self._t0

    def lap(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1000.0 * (now - self._last)
        self._last = now

    def total(self) -> dict[str, float]:
        self.lap("_rest")
        self.ms.pop("_rest", None)
        self.ms["total"] = 1000.0 * (self._last - self._t0)
        return self.ms


LoopCandidateFn = Callable[["SlamSystem", int], Sequence[int]]


class SlamSystem:
    """Deterministic synchronous SLAM pipeline over a pointmap source (see the module docstring).

    Args:
        config: validated :class:`~online3r_ros.slam.config.SlamConfig`.
        source: the pointmap source (RGB-D or MASt3R), already on ``config.system.device``.
        loop_candidates: optional hook ``f(system, new_kf_id) -> [kf ids]`` giving extra edge candidates for a
            new keyframe (loop closure, a later issue). Non-consecutive edges must pass
            ``local_opt.min_match_frac``.
    """

    def __init__(
        self,
        config: SlamConfig,
        source: PointmapSource,
        loop_candidates: LoopCandidateFn | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.loop_candidates = loop_candidates
        sc = config.system
        apply_determinism(sc.seed, sc.deterministic, sc.device)
        self.device = torch.device(sc.device)
        self.dtype = torch.float64 if sc.dtype == "float64" else torch.float32
        self.pose_group = self._resolve_pose_group()
        self.keyframes = KeyframeStore(
            device=self.device,
            keep_on_device=config.keyframes.offload_after,
            pose_dtype=torch.float64,
            fusion_mode=config.tracking.filtering_mode,
            score_kind=config.tracking.filtering_score,
        )
        self.frames = FrameStore()
        self._kf_frames: list[SourceFrame] = []  # prepared frames of the keyframes (tracking targets)
        self.graph = self._make_graph()
        self._optimizer = self._make_optimizer()
        self._tracker = self._make_tracker()
        self.state = SlamState.INIT
        self._n_processed = 0
        self._posed_history: list[int] = []  # frame indices of the last two posed frames (motion model)
        self._last_timestamp = -math.inf
        self._lost_streak = 0

    # ------------------------------------------------------------------------------------------------ setup
    def _resolve_pose_group(self) -> str:
        group = self.config.system.pose_group
        if group == "auto":
            return "se3" if getattr(self.source, "metric", False) else "sim3"
        if group == "se3" and not getattr(self.source, "metric", False):
            raise SourceError(
                f"system.pose_group 'se3' needs a metric source; {self.source.name} is not metric"
            )
        return group

    def _calibrated(self) -> bool:
        """Calibrated residuals: ``system.use_calib`` or the source's own preference (RGB-D)."""
        over = getattr(self.source, "tracking_overrides", None) or {}
        return bool(self.config.system.use_calib or over.get("use_calib", False)) and bool(
            getattr(self.source, "calibrated", False)
        )

    def _make_tracker(self) -> FrameTracker:
        opts = TrackerOptions.from_config(self.config, pose_group=self.pose_group)
        return FrameTracker(self.source, opts)

    def _make_graph(self) -> FactorGraph:
        lo = self.config.local_opt
        return FactorGraph(
            min_match_frac=lo.min_match_frac,
            Q_conf=lo.Q_conf,
            max_points_per_edge=lo.max_points_per_edge,
            seed=self.config.system.seed,
        )

    def _make_optimizer(self) -> GlobalOptimizer:
        extra = source_backend_overrides(self.config, self.source, self._calibrated())
        return GlobalOptimizer(
            GlobalOptConfig.from_config(
                self.config, calibrated=self._calibrated(), pose_model=self.pose_group, **extra
            )
        )

    # ------------------------------------------------------------------------------------------- properties
    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    # ---------------------------------------------------------------------------------------------- process
    def process(self, frame) -> FrameOutput:
        """Process one input frame (``online3r_ros.datasets.base.Frame``-like: ``rgb``, ``depth``, ``K``,
        ``timestamp``) and return its :class:`FrameOutput`. Never raises for tracking failures; raises
        :class:`SourceError`/``ValueError`` only for malformed input (wrong shapes, non-increasing time)."""
        watch = _Stopwatch(self.device)
        index = self._n_processed
        timestamp = float(frame.timestamp)
        if not math.isfinite(timestamp) or timestamp <= self._last_timestamp:
            raise ValueError(
                f"frame {index}: timestamp {timestamp!r} is not finite or not after the previous "
                f"frame's {self._last_timestamp!r}"
            )
        sf = self.source.prepare(
            frame.rgb,
            index=index,
            timestamp=timestamp,
            depth=getattr(frame, "depth", None),
            K=getattr(frame, "K", None),
        )
        watch.lap("prepare")
        self._n_processed += 1
        self._last_timestamp = timestamp
        with torch.no_grad():
            if self.state == SlamState.INIT:
                out = self._initialise(sf, index, watch)
            elif self.state in (SlamState.TRACKING, SlamState.RELOC):
                out = self._track(sf, index, watch)
            else:
                out = self._relocalise(sf, index, watch)
        return out

    # --- INIT
    def _initialise(self, sf: SourceFrame, index: int, watch: _Stopwatch) -> FrameOutput:
        pm = self.source.predict_mono(sf)
        watch.lap("predict")
        valid = float((pm.C > 0).float().mean())
        if not math.isfinite(float(pm.X.sum())) or valid == 0.0:
            self.frames.append(sf.timestamp, -1, None, reason="initialisation: no valid points")
            return self._output(index, sf, SlamState.INIT, None, -1, None, {}, watch, "no valid points")
        T_WC = sim3_identity(dtype=torch.float64)
        kf_id = self._add_keyframe(sf, pm.X, pm.C, T_WC)
        self._push_pose(self.frames.append(sf.timestamp, kf_id, T_WC.clone(), is_keyframe=True))
        self.state = SlamState.TRACKING
        event = KeyframeEvent(
            new_keyframe_id=kf_id,
            keyframe_ids=(kf_id,),
            keyframe_T_WC=self.keyframes.get_poses().detach().cpu().to(torch.float64),
        )
        watch.lap("keyframe")
        return self._output(index, sf, SlamState.TRACKING, T_WC, kf_id, T_WC, {}, watch, "", event)

    # --- TRACKING
    def _frame_world_pose(self, index: int) -> Tensor:
        """Current world pose of a posed frame (its keyframe's current pose times its ``T_CkCf``)."""
        rec = self.frames.record(index)
        return sim3_compose(self._kf_pose(rec.keyframe_id), rec.T_CkCf)

    def _motion_guess(self, timestamp: float, constant_position: bool = False) -> Tensor:
        """World pose guess (float64 CPU) of a frame at ``timestamp`` from the last two posed frames'
        *current* poses (re-anchored, so an optimisation between frames does not leave the guess behind):
        their relative motion scaled by the elapsed time (constant velocity, at most ``MAX_EXTRAPOLATION``
        intervals), or the last pose (constant position / no history)."""
        last = self._frame_world_pose(self._posed_history[-1])
        if (
            constant_position
            or self.config.system.motion_model == "constant_position"
            or len(self._posed_history) < 2
        ):
            return last
        ts = self.frames.timestamps
        i_prev, i_last = self._posed_history
        dt = ts[i_last] - ts[i_prev]
        if not dt > 0:
            return last
        k = min((timestamp - ts[i_last]) / dt, MAX_EXTRAPOLATION)
        step = sim3_compose(sim3_inverse(self._frame_world_pose(i_prev)), last)
        if abs(k - 1.0) < 1e-9:
            return sim3_compose(last, step)
        return sim3_compose(last, sim3_exp(sim3_log(step) * k))

    def _push_pose(self, index: int) -> None:
        self._posed_history = (self._posed_history + [index])[-2:]

    def _kf_pose(self, kf_id: int) -> Tensor:
        return self.keyframes.get_poses([kf_id]).reshape(8).detach().to("cpu", torch.float64)

    def _tracking_keyframe(self, kf_id: int) -> TrackingKeyframe:
        cfg = self.config if self._tracker.uses_icp_model else None
        return tracking_keyframe(self.keyframes, self._kf_frames, kf_id, cfg)

    def _track_against(self, sf: SourceFrame, kf_id: int, T_WC_guess: Tensor) -> TrackResult:
        return self._tracker.track(sf, self._tracking_keyframe(kf_id), T_WC_guess.to(torch.float32))

    @staticmethod
    def _stats(res: TrackResult) -> dict:
        return {
            "match_frac": res.match_frac,
            "match_frac_k": res.match_frac_k,
            "unique_frac_f": res.unique_frac_f,
            "n_matches": res.n_matches,
            "iterations": res.iterations,
            "cost": res.cost,
            "solver_failures": res.solver_failures,
            "new_keyframe": res.new_keyframe,
            **{k: v for k, v in res.stats.items() if isinstance(v, (bool, int, float, str))},
        }

    def _track(self, sf: SourceFrame, index: int, watch: _Stopwatch) -> FrameOutput:
        kf_id = len(self.keyframes) - 1
        res = self._track_against(sf, kf_id, self._motion_guess(sf.timestamp))
        watch.lap("track")
        if res.lost:
            self._lost_streak = 1
            self.state = SlamState.LOST
            reason = f"tracking lost: {res.reason}"
            self.frames.append(sf.timestamp, -1, None, reason=reason)
            return self._output(index, sf, SlamState.LOST, None, -1, None, self._stats(res), watch, reason)
        return self._accept(sf, index, watch, kf_id, res, SlamState.TRACKING, "")

    def _accept(
        self,
        sf: SourceFrame,
        index: int,
        watch: _Stopwatch,
        kf_id: int,
        res: TrackResult,
        state: SlamState,
        reason: str,
    ) -> FrameOutput:
        """Fuse the tracked frame into its keyframe, store its pose, and make a keyframe if needed."""
        T_CkCf = res.T_CkCf.detach().to("cpu", torch.float64)
        if res.X_kk is not None and res.C_kf is not None:
            self.keyframes.update_pointmap(kf_id, res.X_kk, res.C_kf)
        watch.lap("fuse")
        T_WC = sim3_compose(self._kf_pose(kf_id), T_CkCf)
        event = None
        if res.new_keyframe and res.prediction is not None:
            pm = res.prediction.frame
            new_id = self._add_keyframe(sf, pm.X, pm.C, T_WC)
            stored = self.frames.append(
                sf.timestamp, new_id, sim3_identity(dtype=torch.float64), is_keyframe=True
            )
            watch.lap("keyframe")
            event = self._backend(new_id, watch)
            T_WC = self._kf_pose(new_id)
            anchor, rel = new_id, sim3_identity(dtype=torch.float64)
        else:
            stored = self.frames.append(sf.timestamp, kf_id, T_CkCf)
            anchor, rel = kf_id, T_CkCf
        self._push_pose(stored)
        self.state = SlamState.TRACKING
        self._lost_streak = 0
        return self._output(index, sf, state, T_WC, anchor, rel, self._stats(res), watch, reason, event)

    # --- LOST / RELOC
    def _reloc_guesses(self, timestamp: float) -> list[Tensor]:
        """Pose guesses for a frame after a gap: the last velocity extrapolated over the gap, then the last
        posed frame's pose (constant position)."""
        guesses = [self._motion_guess(timestamp, constant_position=True)]
        if len(self._posed_history) == 2 and self.config.system.motion_model == "constant_velocity":
            guesses.insert(0, self._motion_guess(timestamp))
        return guesses

    def _relocalise(self, sf: SourceFrame, index: int, watch: _Stopwatch) -> FrameOutput:
        """Try the most recent keyframes (newest first), each from the motion guesses of
        :meth:`_reloc_guesses`; accept the first tracking result with a match fraction of at least
        ``reloc.min_match_frac``. Otherwise the frame stays without a pose (LOST)."""
        n_try = min(self.config.system.reloc_keyframes, len(self.keyframes))
        guesses = self._reloc_guesses(sf.timestamp)
        tried = []
        best = None
        for kf_id in range(len(self.keyframes) - 1, len(self.keyframes) - 1 - n_try, -1):
            tried.append(kf_id)
            for guess in guesses:
                res = self._track_against(sf, kf_id, guess)
                if not res.lost and res.match_frac >= self.config.reloc.min_match_frac:
                    watch.lap("reloc")
                    self._tracker.reset()
                    return self._accept(
                        sf, index, watch, kf_id, res, SlamState.RELOC, f"relocalised on keyframe {kf_id}"
                    )
                best = res if best is None or res.match_frac > best.match_frac else best
        watch.lap("reloc")
        self._lost_streak += 1
        reason = f"lost ({self._lost_streak} frames): relocalisation failed against keyframes {tried}"
        if best is not None:
            reason += f" (best match fraction {best.match_frac:.3f} < {self.config.reloc.min_match_frac})"
        self.frames.append(sf.timestamp, -1, None, reason=reason)
        stats = {} if best is None else self._stats(best)
        return self._output(index, sf, SlamState.LOST, None, -1, None, stats, watch, reason)

    # --- keyframes + backend
    def _add_keyframe(self, sf: SourceFrame, X: Tensor, C: Tensor, T_WC: Tensor) -> int:
        store_img = self.config.keyframes.store_images
        colors = (sf.image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8) if store_img else None
        kf_id = self.keyframes.append(
            T_WC.to(torch.float64),
            X,
            C,
            frame_index=sf.index,
            timestamp=sf.timestamp,
            colors=colors,
            K=sf.K,
        )
        self._kf_frames.append(sf)
        return kf_id

    def _backend(self, new_id: int, watch: _Stopwatch) -> KeyframeEvent:
        """Edges for the new keyframe (previous keyframe + loop candidates) and a global optimisation."""
        loops = self.loop_candidates(self, new_id) if self.loop_candidates is not None else ()
        candidates = edge_candidates(self.config, self.source, self.keyframes.get_poses(), new_id, loops)
        added = build_edges(
            self.source,
            self.graph,
            self._kf_frames,
            self.keyframes.get_poses(),
            candidates,
            new_id,
            self.config,
            calibrated=self._calibrated(),
        )
        watch.lap("edges")
        opt = self._optimizer.optimize(self.keyframes, self.graph)
        watch.lap("optimise")
        info = {
            "status": opt.status,
            "iterations": opt.iterations,
            "cost_initial": opt.cost_history[0] if opt.cost_history else math.nan,
            "cost_final": opt.cost_history[-1] if opt.cost_history else math.nan,
            "n_rejected_steps": opt.n_rejected_steps,
            "n_factorization_failures": opt.n_factorization_failures,
            "n_residual_points": opt.n_residual_points,
        }
        return KeyframeEvent(
            new_keyframe_id=new_id,
            edges=tuple(added),
            optimised=opt.status != "nothing_to_optimize",
            keyframe_ids=tuple(range(len(self.keyframes))),
            keyframe_T_WC=self.keyframes.get_poses().detach().cpu().to(torch.float64),
            opt_info=info,
        )

    def _output(self, index, sf, state, T_WC, kf_id, T_CkCf, stats, watch, reason, event=None) -> FrameOutput:
        return FrameOutput(
            index=index,
            timestamp=sf.timestamp,
            state=state,
            T_WC=None if T_WC is None else T_WC.detach().to("cpu", torch.float64).clone(),
            keyframe_id=kf_id,
            T_CkCf=None if T_CkCf is None else T_CkCf.detach().to("cpu", torch.float64).clone(),
            keyframe=event,
            match=dict(stats or {}),
            timings_ms=watch.total(),
            reason=reason,
        )

    # ---------------------------------------------------------------------------------------------- results
    def trajectory(self) -> Trajectory:
        """Every posed frame's current ``T_WC`` (keyframe pose composed with the stored ``T_CkCf``)."""
        idx, poses = self.frames.world_poses(self.keyframes.get_poses().detach().cpu())
        ts = self.frames.timestamps[idx] if len(idx) else np.zeros(0)
        mats = sim3_to_matrix(poses).numpy() if len(idx) else np.zeros((0, 4, 4))
        return Trajectory(timestamps=ts, T_WC=mats, indices=idx, poses=poses)

    def keyframe_trajectory(self) -> Trajectory:
        """Keyframes' current poses with the timestamps of the frames they were made from."""
        poses = self.keyframes.get_poses().detach().cpu().to(torch.float64)
        n = len(self.keyframes)
        ts = np.array([self.keyframes.timestamp(i) for i in range(n)], dtype=np.float64)
        fi = np.array([self.keyframes.frame_index(i) for i in range(n)], dtype=np.int64)
        mats = sim3_to_matrix(poses).numpy() if n else np.zeros((0, 4, 4))
        return Trajectory(timestamps=ts, T_WC=mats, indices=fi, poses=poses)

    def unposed_frames(self) -> list[tuple[int, float, str]]:
        """``(index, timestamp, reason)`` of every frame that has no pose."""
        return self.frames.unposed()

    def dense_map(self, conf_threshold: float | None = None, max_points: int | None = None) -> DenseMap:
        """Keyframes' canonical pointmaps moved to the world (``T_WC · X``), keeping pixels whose average
        confidence exceeds ``conf_threshold`` (default ``map.conf_threshold``); at most ``max_points``
        (default ``map.max_points``; 0 = all), subsampled with a fixed stride (deterministic)."""
        thr = self.config.map.conf_threshold if conf_threshold is None else float(conf_threshold)
        cap = self.config.map.max_points if max_points is None else int(max_points)
        pts, cols, confs, ids = [], [], [], []
        for i in range(len(self.keyframes)):
            kf = self.keyframes.get(i, device="cpu", fields=("colors",))
            conf = kf.average_confidence().reshape(-1).float()
            X = kf.X.reshape(-1, 3).to(torch.float64)
            keep = (conf > thr) & torch.isfinite(X).all(-1) & (X.norm(dim=-1) > 0)
            if not bool(keep.any()):
                continue
            P = sim3_act(kf.T_WC.to(torch.float64), X[keep])
            pts.append(P.float())
            if kf.colors is not None:
                cols.append(kf.colors.reshape(-1, 3)[keep])
            else:
                cols.append(torch.full((int(keep.sum()), 3), 255, dtype=torch.uint8))
            confs.append(conf[keep])
            ids.append(torch.full((int(keep.sum()),), i, dtype=torch.int32))
        if not pts:
            return DenseMap(
                np.zeros((0, 3), np.float32),
                np.zeros((0, 3), np.uint8),
                np.zeros(0, np.float32),
                np.zeros(0, np.int32),
            )
        P, Cl, Cf, I = torch.cat(pts), torch.cat(cols), torch.cat(confs), torch.cat(ids)
        if cap > 0 and len(P) > cap:
            step = math.ceil(len(P) / cap)
            sel = torch.arange(0, len(P), step)
            P, Cl, Cf, I = P[sel], Cl[sel], Cf[sel], I[sel]
        return DenseMap(P.numpy(), Cl.numpy(), Cf.numpy(), I.numpy())

    # ------------------------------------------------------------------------------------------- save/load
    def _graph_state(self) -> dict:
        if hasattr(self.graph, "state_dict"):
            return {"kind": "state_dict", "data": self.graph.state_dict()}
        # FactorGraph has no state_dict yet: its edge list and compact matches are plain tensors/tuples
        return {"kind": "attrs", "edges": list(self.graph._edges), "factors": list(self.graph._factors)}

    def _restore_graph(self, state: dict | None) -> None:
        if not state:
            return
        if state["kind"] == "state_dict" and hasattr(self.graph, "load_state_dict"):
            self.graph.load_state_dict(state["data"])
            return
        self.graph._edges = [tuple(e) for e in state["edges"]]
        self.graph._edge_set = {(min(e), max(e)) for e in self.graph._edges}
        self.graph._factors = list(state["factors"])
        self.graph._cache = None

    def save(self, path: str | Path) -> Path:
        """Write the session into folder ``path``: ``keyframes.pt`` (keyframe store) and ``system.pt``
        (frame poses, graph edges, the keyframes' prepared source frames, config, state). Returns the folder.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.keyframes.save(path)
        frames = [f.state_dict() for f in self._kf_frames]
        state = {
            "format": "online3r_ros.system",
            "version": 1,
            "config": config_to_dict(self.config),
            "frames": self.frames.state_dict(),
            "graph": self._graph_state(),
            "keyframe_frames": frames,
            "state": self.state.value,
            "pose_group": self.pose_group,
            "posed_history": list(self._posed_history),
            "last_timestamp": self._last_timestamp,
            "n_processed": self._n_processed,
            "lost_streak": self._lost_streak,
        }
        tmp = path / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path / STATE_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, source: PointmapSource, config: SlamConfig | None = None) -> SlamSystem:
        """Rebuild a system saved by :meth:`save` around ``source`` (the saved config unless ``config`` is
        given); processing can continue where it stopped."""
        path = Path(path)
        file = path / STATE_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no saved system in {path} ({STATE_FILE} missing)")
        state = torch.load(file, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != "online3r_ros.system":
            raise ValueError(f"{file} is not an online3r_ros system state")
        cfg = config or config_from_dict(state["config"])
        system = cls(cfg, source)
        system.keyframes = KeyframeStore.load(
            path,
            device=system.device,
            keep_on_device=cfg.keyframes.offload_after,
        )
        system.frames = FrameStore.from_state_dict(state["frames"])
        system._restore_graph(state.get("graph"))
        system._kf_frames = [SourceFrame.from_state_dict(f, system.device) for f in state["keyframe_frames"]]
        system.state = SlamState(state["state"])
        system._posed_history = list(state["posed_history"])
        system._last_timestamp = float(state["last_timestamp"])
        system._n_processed = int(state["n_processed"])
        system._lost_streak = int(state["lost_streak"])
        return system
