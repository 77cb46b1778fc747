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

from ..geometry.lie import sim3_act, sim3_compose, sim3_identity, sim3_inverse, sim3_to_matrix
from ..sources.base import PointmapSource, SourceError, SourceFrame
from .config import SlamConfig, config_from_dict, config_to_dict
from .frame_store import FrameStore
from .keyframes import KeyframeStore

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


def apply_determinism(seed: int, deterministic: bool) -> None:
    """Seed torch; with ``deterministic`` also force deterministic torch kernels (process-global setting)."""
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
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
        apply_determinism(sc.seed, sc.deterministic)
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
        self._graph = self._make_graph()
        self._tracker = self._make_tracker()
        self.state = SlamState.INIT
        self._n_processed = 0
        self._last_T_WC: Tensor | None = None  # world pose of the last posed frame (float64 CPU)
        self._prev_T_WC: Tensor | None = None  # and of the posed frame before it (constant velocity)
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

    def _make_tracker(self):
        from .tracking import FrameTracker

        return FrameTracker(self.config, self.source, pose_group=self.pose_group)

    def _make_graph(self):
        from .global_opt import FactorGraph

        return FactorGraph(self.config, self.source, self.keyframes, pose_group=self.pose_group)

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
        kf_id = self._add_keyframe(sf, pm.X, pm.C, T_WC, pm.D, pm.Q)
        self.frames.append(sf.timestamp, kf_id, sim3_identity(dtype=torch.float64), is_keyframe=True)
        self._push_pose(T_WC)
        self.state = SlamState.TRACKING
        event = KeyframeEvent(
            new_keyframe_id=kf_id,
            keyframe_ids=(kf_id,),
            keyframe_T_WC=self.keyframes.get_poses().detach().cpu().to(torch.float64),
        )
        watch.lap("keyframe")
        return self._output(index, sf, SlamState.TRACKING, T_WC, kf_id, T_WC, {}, watch, "", event)

    # --- TRACKING
    def _motion_guess(self) -> Tensor:
        """World pose guess of the next frame (float64 CPU): constant velocity or constant position."""
        assert self._last_T_WC is not None
        if self.config.system.motion_model == "constant_velocity" and self._prev_T_WC is not None:
            delta = sim3_compose(sim3_inverse(self._prev_T_WC), self._last_T_WC)
            return sim3_compose(self._last_T_WC, delta)
        return self._last_T_WC.clone()

    def _push_pose(self, T_WC: Tensor) -> None:
        self._prev_T_WC = self._last_T_WC
        self._last_T_WC = T_WC.detach().to("cpu", torch.float64).clone()

    def _kf_pose(self, kf_id: int) -> Tensor:
        return self.keyframes.get_poses([kf_id]).reshape(8).detach().to("cpu", torch.float64)

    def _track(self, sf: SourceFrame, index: int, watch: _Stopwatch) -> FrameOutput:
        kf_id = len(self.keyframes) - 1
        T_WK = self._kf_pose(kf_id)
        T_guess = sim3_compose(sim3_inverse(T_WK), self._motion_guess())
        res = self._tracker.track(sf, self._kf_frames[kf_id], self.keyframes, kf_id, T_guess)
        watch.lap("track")
        if not res.ok:
            self._lost_streak = 1
            self.state = SlamState.LOST
            self.frames.append(sf.timestamp, -1, None, reason=f"tracking lost: {res.reason}")
            return self._output(index, sf, SlamState.LOST, None, -1, None, res.stats, watch, res.reason)
        return self._accept(sf, index, watch, kf_id, res, SlamState.TRACKING, "")

    def _accept(self, sf, index, watch, kf_id, res, state, reason) -> FrameOutput:
        """Fuse the tracked frame into its keyframe, store its pose, and make a keyframe if needed."""
        T_CkCf = res.T_CkCf.detach().to("cpu", torch.float64)
        if res.fusion is not None:
            X_k, C_k = res.fusion
            self.keyframes.update_pointmap(kf_id, X_k, C_k)
        watch.lap("fuse")
        T_WK = self._kf_pose(kf_id)
        T_WC = sim3_compose(T_WK, T_CkCf)
        event = None
        if res.new_keyframe:
            pm = res.frame_pointmap
            new_id = self._add_keyframe(sf, pm.X, pm.C, T_WC, pm.D, pm.Q)
            self.frames.append(sf.timestamp, new_id, sim3_identity(dtype=torch.float64), is_keyframe=True)
            watch.lap("keyframe")
            event = self._backend(new_id, watch)
            T_WC = self._kf_pose(new_id)
            anchor, rel = new_id, sim3_identity(dtype=torch.float64)
        else:
            self.frames.append(sf.timestamp, kf_id, T_CkCf)
            anchor, rel = kf_id, T_CkCf
        self._push_pose(T_WC)
        self.state = SlamState.TRACKING
        self._lost_streak = 0
        return self._output(index, sf, state, T_WC, anchor, rel, res.stats, watch, reason, event)

    # --- LOST / RELOC
    def _relocalise(self, sf: SourceFrame, index: int, watch: _Stopwatch) -> FrameOutput:
        """Try the most recent keyframes (newest first) with the last known pose as the guess."""
        n_try = min(self.config.system.reloc_keyframes, len(self.keyframes))
        guess_W = self._last_T_WC
        tried = []
        for kf_id in range(len(self.keyframes) - 1, len(self.keyframes) - 1 - n_try, -1):
            T_guess = sim3_compose(sim3_inverse(self._kf_pose(kf_id)), guess_W)
            res = self._tracker.track(
                sf, self._kf_frames[kf_id], self.keyframes, kf_id, T_guess, min_match_frac=self._reloc_frac()
            )
            tried.append(kf_id)
            if res.ok:
                watch.lap("reloc")
                self._prev_T_WC = None  # velocity is unknown after a gap
                return self._accept(sf, index, watch, kf_id, res, SlamState.RELOC, f"relocalised on {kf_id}")
        watch.lap("reloc")
        self._lost_streak += 1
        reason = f"lost ({self._lost_streak} frames); relocalisation failed against keyframes {tried}"
        self.frames.append(sf.timestamp, -1, None, reason=reason)
        return self._output(index, sf, SlamState.LOST, None, -1, None, {}, watch, reason)

    def _reloc_frac(self) -> float:
        return float(self.config.reloc.min_match_frac)

    # --- keyframes + backend
    def _add_keyframe(self, sf: SourceFrame, X, C, T_WC, D=None, Q=None) -> int:
        colors = (
            (sf.image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
            if self.config.keyframes.store_images
            else None
        )
        kf_id = self.keyframes.append(
            T_WC.to(torch.float64),
            X,
            C,
            frame_index=sf.index,
            timestamp=sf.timestamp,
            colors=colors,
            desc=D,
            desc_conf=Q,
            K=sf.K,
        )
        self._kf_frames.append(sf)
        return kf_id

    def _backend(self, new_id: int, watch: _Stopwatch) -> KeyframeEvent:
        """Edges for the new keyframe (previous keyframe + loop candidates) and a global optimisation."""
        candidates = [new_id - 1]
        if self.loop_candidates is not None:
            candidates += [int(c) for c in self.loop_candidates(self, new_id)]
        candidates = sorted({c for c in candidates if 0 <= c < new_id})
        edges = self._graph.add_edges(candidates, new_id, self._kf_frames)
        watch.lap("edges")
        info = self._graph.optimise()
        watch.lap("optimise")
        return KeyframeEvent(
            new_keyframe_id=new_id,
            edges=tuple(edges),
            optimised=True,
            keyframe_ids=tuple(range(len(self.keyframes))),
            keyframe_T_WC=self.keyframes.get_poses().detach().cpu().to(torch.float64),
            opt_info=dict(info or {}),
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
    def save(self, path: str | Path) -> Path:
        """Write the map into folder ``path``: ``keyframes.pt`` (keyframe store) and ``system.pt`` (frames,
        edges, config, state). Returns the folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.keyframes.save(path)
        state = {
            "format": "online3r_ros.system",
            "version": 1,
            "config": config_to_dict(self.config),
            "frames": self.frames.state_dict(),
            "graph": self._graph.state_dict() if hasattr(self._graph, "state_dict") else None,
            "state": self.state.value,
            "pose_group": self.pose_group,
            "last_T_WC": self._last_T_WC,
            "prev_T_WC": self._prev_T_WC,
            "last_timestamp": self._last_timestamp,
            "n_processed": self._n_processed,
        }
        torch.save(state, path / STATE_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, source: PointmapSource, config: SlamConfig | None = None) -> SlamSystem:
        """Rebuild a system saved by :meth:`save` around ``source`` (its config unless ``config`` is given).

        The keyframes' prepared frames are not saved; tracking resumes against keyframes restored from their
        stored colours and pointmaps via ``source.prepare`` when the source needs images.
        """
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
        system._graph = system._make_graph()
        if state.get("graph") is not None and hasattr(system._graph, "load_state_dict"):
            system._graph.load_state_dict(state["graph"])
        system._kf_frames = [system._restore_frame(i) for i in range(len(system.keyframes))]
        system.state = SlamState(state["state"])
        system._last_T_WC = state["last_T_WC"]
        system._prev_T_WC = state["prev_T_WC"]
        system._last_timestamp = float(state["last_timestamp"])
        system._n_processed = int(state["n_processed"])
        return system

    def _restore_frame(self, kf_id: int) -> SourceFrame:
        kf = self.keyframes.get(kf_id, device=self.device)
        image = kf.colors.float() / 255.0 if kf.colors is not None else torch.zeros_like(kf.X)
        depth = kf.X[..., 2].clone() if getattr(self.source, "metric", False) else None
        return SourceFrame(
            index=kf.frame_index, timestamp=kf.timestamp, image=image, depth=depth, K=kf.K, cache={"X": kf.X}
        )
