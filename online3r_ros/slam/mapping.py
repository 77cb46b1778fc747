"""Mapper backend of the two-process (tracker / mapper) pipeline, and the builders shared with the frontend.

ROS-free. The ROS nodes (``online3r_ros.ros.nodes``) only move these objects between processes:

- :class:`KeyframePacket` (tracker -> mapper): a new keyframe (id, Sim(3) pose, canonical pointmap ``X`` in
  its own camera frame, accumulated confidence ``C`` and fusion counters, colours, intrinsics) and how many
  observations the tracker had fused into the previous keyframe when it made this one.
- :class:`ObservationPacket` (tracker -> mapper): one tracked frame's prediction of its keyframe moved into
  the keyframe frame (``X_kk = T_CkCf·X_kf``, ``C_kf``) plus the frame's relative pose ``T_CkCf``.
- :class:`MapUpdate` (mapper -> tracker): every keyframe's optimised Sim(3) pose after a new keyframe.

:class:`MapperBackend` does what :class:`~online3r_ros.slam.system.SlamSystem` does after tracking, with the
same functions: :meth:`KeyframeStore.update_pointmap` (local fusion,
:func:`~online3r_ros.slam.fusion.fuse_pointmap`),
:func:`~online3r_ros.slam.edges.build_edges` (previous keyframe + loop candidates) and
:meth:`GlobalOptimizer.optimize`. The setup helpers (:func:`resolve_pose_group`, :func:`uses_calibration`,
:func:`make_graph`, :func:`make_optimizer`, :func:`make_frame_tracker`) are the choices ``SlamSystem``
makes in its constructor, as functions, so the tracker's frontend and the mapper configure themselves
identically.

Ordering: observations and keyframes travel on different topics, so the backend buffers observations of
keyframes it does not have yet, and integrates keyframe ``j`` only once it has fused the
``prev_observations`` observations of keyframe ``j-1`` the tracker had fused (or after ``wait_s``): the
mapper's keyframes then hold exactly the tracker's fused pointmaps when the edges and the optimisation run.

Persistence: :meth:`MapperBackend.save` writes one file atomically (temp file in the same folder, fsync,
``os.replace``), so a crash never leaves a half-written map; :meth:`MapperBackend.load` restores it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geometry.lie import sim3_act, sim3_identity
from ..sources.base import PointmapSource, SourceFrame
from ..utils.atomic import save_atomic
from .config import SlamConfig, config_from_dict, config_to_dict
from .edges import build_edges
from .frame_store import FrameStore
from .global_opt import GlobalOptConfig, GlobalOptimizer, source_backend_overrides
from .graph import FactorGraph
from .keyframes import KeyframeStore
from .neighbours import proximity_candidates
from .tracking import FrameTracker, TrackerOptions

Tensor = torch.Tensor

__all__ = [
    "KeyframePacket",
    "ObservationPacket",
    "MapUpdate",
    "MapChunk",
    "MapperBackend",
    "resolve_pose_group",
    "uses_calibration",
    "make_graph",
    "edge_candidates",
    "proximity_candidates",
    "make_optimizer",
    "make_frame_tracker",
    "make_keyframe_store",
    "source_frame_from_keyframe",
    "keyframe_points",
    "save_atomic",
    "MAP_FORMAT",
]

MAP_FORMAT = "online3r_ros.mapper"
MAP_VERSION = 1


# ------------------------------------------------------------------------------------------------ builders
def resolve_pose_group(cfg: SlamConfig, source: PointmapSource) -> str:
    """``"se3"`` or ``"sim3"``: ``system.pose_group``, ``auto`` = SE(3) for metric sources (as SlamSystem)."""
    group = cfg.system.pose_group
    metric = bool(getattr(source, "metric", False))
    if group == "auto":
        return "se3" if metric else "sim3"
    if group == "se3" and not metric:
        raise ValueError(f"system.pose_group 'se3' needs a metric source; {source.name} is not metric")
    return group


def uses_calibration(cfg: SlamConfig, source: PointmapSource) -> bool:
    """Calibrated residuals: ``system.use_calib`` or the source's preference, and the source knows ``K``."""
    over = getattr(source, "tracking_overrides", None) or {}
    wanted = bool(cfg.system.use_calib or over.get("use_calib", False))
    return wanted and bool(getattr(source, "calibrated", False))


def make_graph(cfg: SlamConfig) -> FactorGraph:
    lo = cfg.local_opt
    return FactorGraph(
        min_match_frac=lo.min_match_frac,
        Q_conf=lo.Q_conf,
        max_points_per_edge=int(getattr(lo, "max_points_per_edge", 0)),
        seed=cfg.system.seed,
    )


def edge_candidates(
    cfg: SlamConfig, source: PointmapSource, T_WC: Tensor, new_id: int, extra: Sequence[int] = ()
) -> list[int]:
    """Keyframes to try an edge with for keyframe ``new_id``: the previous one, the ``system.proximity_*``
    neighbours (:func:`proximity_candidates`) and ``extra`` (loop candidates), de-duplicated, newest first."""
    sc = cfg.system
    candidates = [new_id - 1] + proximity_candidates(
        T_WC,
        new_id,
        int(getattr(sc, "proximity_edges", 0)),
        float(getattr(sc, "proximity_max_dist", 1.0)),
        float(getattr(sc, "proximity_max_angle", 30.0)),
        bool(getattr(source, "metric", False)),
    )
    candidates += [int(c) for c in extra]
    return sorted({c for c in candidates if 0 <= c < new_id}, reverse=True)


def make_optimizer(cfg: SlamConfig, source: PointmapSource, pose_group: str) -> GlobalOptimizer:
    calibrated = uses_calibration(cfg, source)
    extra = source_backend_overrides(cfg, source, calibrated)
    return GlobalOptimizer(
        GlobalOptConfig.from_config(cfg, calibrated=calibrated, pose_model=pose_group, **extra)
    )


def make_frame_tracker(cfg: SlamConfig, source: PointmapSource, pose_group: str) -> FrameTracker:
    return FrameTracker(source, TrackerOptions.from_config(cfg, pose_group=pose_group))


def make_keyframe_store(cfg: SlamConfig, device: torch.device | str) -> KeyframeStore:
    """Keyframe store with the configured fusion rule (float64 poses), as SlamSystem builds it."""
    return KeyframeStore(
        device=device,
        keep_on_device=cfg.keyframes.offload_after,
        pose_dtype=torch.float64,
        fusion_mode=cfg.tracking.filtering_mode,
        score_kind=cfg.tracking.filtering_score,
    )


# ------------------------------------------------------------------------------------------------- packets
@dataclass
class KeyframePacket:
    """A keyframe sent from the tracker to the mapper.

    Attributes:
        session: id of the tracker session (a new one after every reset).
        kf_id: keyframe id (0, 1, 2, ... within a session).
        frame_index: index of the frame it was made from (tracker's order of arrival).
        timestamp: seconds of that frame (the input image's stamp).
        T_WC: Sim(3) ``[8]`` float64 pose when sent.
        X: ``[H, W, 3]`` float32 canonical pointmap in the keyframe's camera frame (pointmap units).
        C: ``[H, W]`` float32 accumulated confidence; ``N``, ``N_updates``: fusion counters (1, 1 when new).
        colors: ``[H, W, 3]`` uint8 colours at working resolution.
        K: ``[3, 3]`` float32 intrinsics at working resolution, or ``None`` (uncalibrated source).
        prev_observations: observations the tracker had fused into keyframe ``kf_id - 1`` when it made this.
    """

    session: int
    kf_id: int
    frame_index: int
    timestamp: float
    T_WC: Tensor
    X: Tensor
    C: Tensor
    colors: Tensor
    K: Tensor | None = None
    N: int = 1
    N_updates: int = 1
    prev_observations: int = 0


@dataclass
class ObservationPacket:
    """One tracked frame for the mapper: fusion input of keyframe ``kf_id`` and the frame's relative pose.

    ``X_kk [H, W, 3]`` (keyframe frame), ``C_kf [H, W]``; ``seq`` = 1-based count of observations of this
    keyframe; ``T_CkCf`` Sim(3) ``[8]`` float64 frame-to-keyframe pose.
    """

    session: int
    kf_id: int
    seq: int
    frame_index: int
    timestamp: float
    T_CkCf: Tensor
    X_kk: Tensor
    C_kf: Tensor


@dataclass(frozen=True)
class MapUpdate:
    """Result of integrating one keyframe: its id, graph edges added, optimiser report, and every keyframe's
    pose (``T_WC [K, 8]`` float64 CPU, index = keyframe id)."""

    kf_id: int
    edges: tuple[tuple[int, int], ...]
    optimised: bool
    T_WC: Tensor
    opt_info: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MapChunk:
    """Points of some keyframes in the SLAM world: ``points [P, 3]`` float32, ``colors [P, 3]`` uint8,
    ``confidence [P]`` float32 (average), ``keyframe_ids [P]`` int32."""

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    keyframe_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def keyframe_points(store: KeyframeStore, ids: Sequence[int], conf_threshold: float) -> MapChunk:
    """Canonical pointmaps of keyframes ``ids`` moved to the world (``T_WC·X``), keeping pixels whose average
    confidence exceeds ``conf_threshold`` and whose point is finite and non-zero (vectorised per keyframe)."""
    pts, cols, confs, kids = [], [], [], []
    for i in ids:
        kf = store.get(int(i), device="cpu", fields=("colors",))
        conf = kf.average_confidence().reshape(-1).float()
        X = kf.X.reshape(-1, 3).to(torch.float64)
        keep = (conf > conf_threshold) & torch.isfinite(X).all(-1) & (X.norm(dim=-1) > 0)
        n = int(keep.sum())
        if n == 0:
            continue
        pts.append(sim3_act(kf.T_WC.to(torch.float64), X[keep]).float())
        if kf.colors is not None:
            cols.append(kf.colors.reshape(-1, 3)[keep])
        else:
            cols.append(torch.full((n, 3), 255, dtype=torch.uint8))
        confs.append(conf[keep])
        kids.append(torch.full((n,), int(i), dtype=torch.int32))
    if not pts:
        return MapChunk(
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.uint8),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
        )
    return MapChunk(
        torch.cat(pts).numpy(), torch.cat(cols).numpy(), torch.cat(confs).numpy(), torch.cat(kids).numpy()
    )


def source_frame_from_keyframe(source: PointmapSource, pkt: KeyframePacket) -> SourceFrame:
    """Re-create a keyframe's prepared :class:`SourceFrame` on the mapper from what the packet carries.

    Depth sources (``metric`` and ``pose_dependent``, e.g. RGB-D) get the depth ``z`` of the pointmap and
    ``K`` at the packet's (working) resolution, prepared without resizing; other sources prepare the colours.
    """
    H, W = int(pkt.X.shape[0]), int(pkt.X.shape[1])
    K = None if pkt.K is None else pkt.K.detach().cpu().numpy().astype(np.float32)
    rgb = pkt.colors.detach().cpu().numpy()
    if getattr(source, "metric", False) and getattr(source, "pose_dependent", False):
        twin = copy.copy(source)
        if hasattr(twin, "width") and hasattr(twin, "height"):
            twin.width, twin.height = W, H  # already at working resolution: no resize
        depth = pkt.X[..., 2].detach().cpu().numpy().astype(np.float32)
        return twin.prepare(rgb, index=pkt.frame_index, timestamp=pkt.timestamp, depth=depth, K=K)
    return source.prepare(rgb, index=pkt.frame_index, timestamp=pkt.timestamp, K=K)


def _graph_state(graph: FactorGraph) -> dict:
    if hasattr(graph, "state_dict"):
        return {"kind": "state_dict", "data": graph.state_dict()}
    return {"kind": "attrs", "edges": list(graph._edges), "factors": list(graph._factors)}


def _restore_graph(graph: FactorGraph, state: dict | None) -> None:
    if not state:
        return
    if state["kind"] == "state_dict" and hasattr(graph, "load_state_dict"):
        graph.load_state_dict(state["data"])
        return
    graph._edges = [tuple(int(v) for v in e) for e in state["edges"]]
    graph._edge_set = {(min(e), max(e)) for e in graph._edges}
    graph._factors = [tuple(f) for f in state["factors"]]
    graph._cache = None


# ------------------------------------------------------------------------------------------------- backend
LoopCandidateFn = Callable[["MapperBackend", int], Sequence[int]]


class MapperBackend:
    """Keyframe store + local fusion + edges + global optimisation, fed by packets (see the module docstring).

    Args:
        config: the SLAM configuration (same file as the tracker's).
        source: pointmap source for the backend predictions (``predict_symmetric``).
        loop_candidates: optional ``f(backend, new_kf_id) -> [kf ids]`` (loop closure; a later issue).
        wait_s: how long a keyframe waits for the previous keyframe's observations before it is integrated.
    """

    def __init__(
        self,
        config: SlamConfig,
        source: PointmapSource,
        loop_candidates: LoopCandidateFn | None = None,
        wait_s: float = 1.0,
    ) -> None:
        self.config = config
        self.source = source
        self.loop_candidates = loop_candidates
        self.wait_s = float(wait_s)
        self.device = torch.device(config.system.device)
        self.pose_group = resolve_pose_group(config, source)
        self.calibrated = uses_calibration(config, source)
        self._optimizer = make_optimizer(config, source, self.pose_group)
        self.reset()

    def reset(self) -> None:
        """Forget the map (keyframes, graph, frames, buffers); the next packet's session is adopted."""
        self.session: int | None = None
        self.keyframes = make_keyframe_store(self.config, self.device)
        self.graph = make_graph(self.config)
        self.frames = FrameStore()
        self.kf_frames: list[SourceFrame] = []
        self.obs_count: list[int] = []
        self.kf_stamps: list[float] = []
        self._pending_kf: dict[int, tuple[KeyframePacket, float]] = {}
        self._pending_obs: dict[int, list[ObservationPacket]] = {}
        self.n_fused = 0
        self.n_ignored = 0
        self.stamps_ns: dict[float, int] = {}  # exact input stamps by timestamp (filled by the caller)
        self.last_update: MapUpdate | None = None

    # -------------------------------------------------------------------------------------------- queries
    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    def keyframe_poses(self) -> Tensor:
        """``[K, 8]`` float64 CPU Sim(3) poses, index = keyframe id."""
        return self.keyframes.get_poses().detach().cpu().to(torch.float64)

    def trajectory(self) -> tuple[np.ndarray, Tensor]:
        """All frames the mapper knows (keyframes and observed frames), sorted by time, one pose per stamp
        (a frame that became a keyframe is reported as the keyframe): ``(timestamps [M], T_WC [M, 8])``."""
        if len(self.frames) == 0 or len(self.keyframes) == 0:
            return np.zeros(0), sim3_identity(0, dtype=torch.float64)
        idx, poses = self.frames.world_poses(self.keyframe_poses())
        ts = self.frames.timestamps[idx]
        is_kf = self.frames.state_dict()["is_keyframe"][idx]
        order = np.lexsort((~is_kf, ts))  # by time, keyframe record first among equal stamps
        ts, poses = ts[order], poses[torch.from_numpy(order)]
        first = np.ones(len(ts), dtype=bool)
        first[1:] = ts[1:] != ts[:-1]
        return ts[first], poses[torch.from_numpy(first)]

    def keyframe_trajectory(self) -> tuple[np.ndarray, Tensor]:
        return np.asarray(self.kf_stamps, dtype=np.float64), self.keyframe_poses()

    def map_points(self, ids: Sequence[int] | None = None, conf_threshold: float | None = None) -> MapChunk:
        thr = self.config.map.conf_threshold if conf_threshold is None else float(conf_threshold)
        ids = range(len(self.keyframes)) if ids is None else ids
        return keyframe_points(self.keyframes, ids, thr)

    def edges(self) -> list[tuple[int, int]]:
        ii, jj = self.graph.edges
        return list(zip(ii.tolist(), jj.tolist(), strict=True))

    # -------------------------------------------------------------------------------------------- packets
    def _check_session(self, session: int, kf_id: int | None) -> bool:
        """Adopt the session of an empty map; a keyframe 0 of another session starts a new map."""
        if self.session == session:
            return True
        if self.session is None and len(self.keyframes) == 0:
            self.session = int(session)
            return True
        if kf_id == 0:
            self.reset()
            self.session = int(session)
            return True
        self.n_ignored += 1
        return False

    def submit_keyframe(self, pkt: KeyframePacket, now: float | None = None) -> bool:
        """Queue a keyframe; False when it belongs to another session (not keyframe 0) or is a duplicate."""
        if not self._check_session(pkt.session, pkt.kf_id):
            return False
        if pkt.kf_id < len(self.keyframes) or pkt.kf_id in self._pending_kf:
            self.n_ignored += 1
            return False
        self._pending_kf[pkt.kf_id] = (pkt, time.monotonic() if now is None else now)
        return True

    def submit_observation(self, pkt: ObservationPacket) -> bool:
        """Queue (or fuse right away) one observation; False for another session's."""
        if not self._check_session(pkt.session, None):
            return False
        self._pending_obs.setdefault(pkt.kf_id, []).append(pkt)
        return True

    def mismatched_session(self, session: int) -> bool:
        """True when packets of ``session`` would be ignored (the map belongs to another session)."""
        return self.session is not None and self.session != session and len(self.keyframes) > 0

    def _fuse_pending(self) -> None:
        for kf_id in [k for k in self._pending_obs if k < len(self.keyframes)]:
            for obs in sorted(self._pending_obs.pop(kf_id), key=lambda o: o.seq):
                if obs.seq <= self.obs_count[kf_id]:
                    self.n_ignored += 1  # already part of a re-sent keyframe's fused state
                    continue
                self.keyframes.update_pointmap(kf_id, obs.X_kk, obs.C_kf)
                self.obs_count[kf_id] = obs.seq
                self.frames.append(obs.timestamp, kf_id, obs.T_CkCf.to(torch.float64))
                self.n_fused += 1

    def step(self, now: float | None = None) -> list[MapUpdate]:
        """Fuse buffered observations and integrate every keyframe that is ready; returns the updates."""
        updates = []
        while True:
            self._fuse_pending()
            nxt = len(self.keyframes)
            if nxt not in self._pending_kf:
                break
            pkt, since = self._pending_kf[nxt]
            t = time.monotonic() if now is None else now
            if nxt > 0 and self.obs_count[nxt - 1] < pkt.prev_observations and t - since < self.wait_s:
                break
            del self._pending_kf[nxt]
            updates.append(self.integrate(pkt))
        return updates

    def integrate(self, pkt: KeyframePacket) -> MapUpdate:
        """Add keyframe ``pkt`` (must be the next id), build its edges and run the global optimisation."""
        if pkt.kf_id != len(self.keyframes):
            raise ValueError(f"keyframe {pkt.kf_id} integrated out of order (map has {len(self.keyframes)})")
        t0 = time.perf_counter()
        sf = source_frame_from_keyframe(self.source, pkt)
        kf_id = self.keyframes.append(
            pkt.T_WC.to(torch.float64),
            pkt.X.to(self.device),
            pkt.C.to(self.device),
            frame_index=pkt.frame_index,
            timestamp=pkt.timestamp,
            colors=pkt.colors,
            K=pkt.K,
            N=pkt.N,
            N_updates=pkt.N_updates,
        )
        self.kf_frames.append(sf)
        self.obs_count.append(max(int(pkt.N_updates) - 1, 0))  # a re-sent keyframe already holds these
        self.kf_stamps.append(float(pkt.timestamp))
        self.frames.append(pkt.timestamp, kf_id, sim3_identity(dtype=torch.float64), is_keyframe=True)
        t1 = time.perf_counter()
        added: list[tuple[int, int]] = []
        info: dict = {}
        optimised = False
        if kf_id > 0:
            loops = self.loop_candidates(self, kf_id) if self.loop_candidates is not None else ()
            candidates = edge_candidates(self.config, self.source, self.keyframes.get_poses(), kf_id, loops)
            added = build_edges(
                self.source,
                self.graph,
                self.kf_frames,
                self.keyframes.get_poses(),
                candidates,
                kf_id,
                self.config,
                calibrated=self.calibrated,
            )
        t2 = time.perf_counter()
        if kf_id > 0:
            opt = self._optimizer.optimize(self.keyframes, self.graph)
            optimised = opt.status != "nothing_to_optimize"
            info = {
                "status": opt.status,
                "iterations": opt.iterations,
                "cost_initial": opt.cost_history[0] if opt.cost_history else math.nan,
                "cost_final": opt.cost_history[-1] if opt.cost_history else math.nan,
                "n_residual_points": opt.n_residual_points,
            }
        t3 = time.perf_counter()
        update = MapUpdate(
            kf_id=kf_id,
            edges=tuple(added),
            optimised=optimised,
            T_WC=self.keyframe_poses(),
            opt_info=info,
            timings_ms={
                "keyframe": 1000 * (t1 - t0),
                "edges": 1000 * (t2 - t1),
                "optimise": 1000 * (t3 - t2),
            },
        )
        self.last_update = update
        return update

    # ---------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        frames = self.frames.state_dict()
        return {
            "format": MAP_FORMAT,
            "version": MAP_VERSION,
            "session": self.session,
            "config": config_to_dict(self.config),
            "keyframes": self.keyframes.state_dict(),
            "graph": _graph_state(self.graph),
            "frames": {
                "timestamps": torch.from_numpy(frames["timestamps"]),
                "anchors": torch.from_numpy(frames["anchors"]),
                "is_keyframe": torch.from_numpy(frames["is_keyframe"]),
                "relative_poses": frames["relative_poses"],
                "reasons": frames["reasons"],
            },
            "kf_frames": [f.state_dict() for f in self.kf_frames],
            "obs_count": list(self.obs_count),
            "kf_stamps": list(self.kf_stamps),
            "stamps_ns": dict(self.stamps_ns),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map (keyframes, poses, graph, frames, session) atomically to the file ``path``."""
        return save_atomic(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Replace the current map with the one saved at ``path`` (``FileNotFoundError``/``ValueError``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved map at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling/format problem, reported with the path
            raise ValueError(f"cannot read map {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != MAP_FORMAT:
            raise ValueError(f"{path} is not an online3r_ros mapper map")
        if state.get("version") != MAP_VERSION:
            raise ValueError(f"{path}: unsupported map version {state.get('version')}")
        saved_cfg = config_from_dict(state["config"])
        if saved_cfg.source.kind != self.config.source.kind:
            raise ValueError(
                f"{path}: map made with source {saved_cfg.source.kind!r}, this mapper uses "
                f"{self.config.source.kind!r}"
            )
        self.reset()
        ks = state["keyframes"]
        store = make_keyframe_store(self.config, self.device)
        store.extend_from_state(ks)
        self.keyframes = store
        _restore_graph(self.graph, state["graph"])
        fr = state["frames"]
        self.frames = FrameStore.from_state_dict(
            {
                "timestamps": fr["timestamps"].numpy(),
                "anchors": fr["anchors"].numpy(),
                "is_keyframe": fr["is_keyframe"].numpy(),
                "relative_poses": fr["relative_poses"],
                "reasons": fr["reasons"],
            }
        )
        self.kf_frames = [SourceFrame.from_state_dict(f, self.device) for f in state["kf_frames"]]
        self.obs_count = [int(v) for v in state["obs_count"]]
        self.kf_stamps = [float(v) for v in state["kf_stamps"]]
        self.stamps_ns = {float(k): int(v) for k, v in state.get("stamps_ns", {}).items()}
        self.session = None if state["session"] is None else int(state["session"])
