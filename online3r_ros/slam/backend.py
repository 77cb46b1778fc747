"""The mapping half of the pipeline (ROS-free): keyframes and observations in, optimised poses out.

:class:`MapperBackend` keeps the map: its keyframe store (local fusion of every observation with
:meth:`KeyframeStore.update_pointmap`, the same function as the frontend's working copy), the factor graph
(:func:`~online3r_ros.slam.edges.build_edges`: the previous keyframe, the proximity neighbours and the loop
candidates) and the global optimisation (:class:`~online3r_ros.slam.global_opt.GlobalOptimizer`), and every
frame it heard of (keyframes and observed frames, relative to their keyframes).

Ordering: observations and keyframes may arrive in any order (in the nodes they travel on different topics),
so the backend buffers observations of keyframes it does not have yet, and integrates keyframe ``j`` only
once it has fused the ``prev_observations`` observations of keyframe ``j-1`` the frontend had fused (or
after ``wait_s``): its keyframes then hold exactly the frontend's fused pointmaps when the edges and the
optimisation run. In process (:class:`~online3r_ros.slam.system.SlamSystem`) everything arrives in order.

Lost keyframes: in the nodes a keyframe message can be lost (published before the mapper's reader matched,
or overwritten in a full queue). The next one would then wait forever; :meth:`MapperBackend.request_missing`
notices packets of later keyframes waiting ``gap_s`` for it and counts a request into the state, which makes
the frontend send the keyframes from there again.

Sessions: the map belongs to one frontend session. Keyframe 0 of another session starts a new map; any other
packet of another session clears the map and bumps :attr:`MapperBackend.generation`, which tells the
frontend (through :meth:`MapperBackend.state`) to re-send its keyframes (:mod:`~online3r_ros.slam.session`).

Hooks for the next stages (:class:`BackendHooks`): loop candidates of a new keyframe (loop closure, e.g.
:class:`~online3r_ros.slam.loops.LoopCloser`) and work after each integrated keyframe (prompt tuning).
Loop candidates found later (the retrieval node answers after the keyframe was integrated) go to
:meth:`MapperBackend.close_loops`. A candidate is a keyframe id or a
:class:`~online3r_ros.retrieval.place.PlaceCandidate` whose prior-free pose guides the edge's matching.

Persistence: :meth:`MapperBackend.save` writes one file atomically (temp file, fsync, ``os.replace``);
:meth:`MapperBackend.load` restores it (a new generation).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..eval.timing import Stopwatch
from ..geometry.lie import sim3_compose, sim3_identity, sim3_inverse
from ..retrieval.features import LocalFeatures
from ..sources.base import PointmapSource, SourceFrame
from ..utils.atomic import save_atomic
from ..utils.heap import release_free_heap
from .components import make_graph, make_keyframe_store, make_optimizer, uses_calibration
from .config import SlamConfig, config_to_dict
from .edges import build_edges
from .frame_store import FrameStore, frames_from_map
from .global_opt import OptResult
from .map_export import MapPoints, keyframe_points
from .map_files import MAP_FORMAT, MAP_VERSION, check_map, keep_other_session, read_map
from .neighbours import proximity_candidates
from .packets import KeyframePacket, MapperState, MapUpdate, ObservationPacket, PromptUpdate
from .session import GapRequests, next_generation

if TYPE_CHECKING:
    from ..retrieval.place import PlaceCandidate

Tensor = torch.Tensor

__all__ = [
    "MapperBackend",
    "BackendHooks",
    "edge_candidates",
    "source_frame_from_keyframe",
    "MAP_FORMAT",
]

DEFERRED = "deferred"  # opt_info status of a keyframe whose optimisation a later keyframe's covers

LoopCandidateFn = Callable[["MapperBackend", int], Sequence["int | PlaceCandidate"]]
KeyframeHook = Callable[["MapperBackend", MapUpdate], None]


@dataclass(frozen=True)
class BackendHooks:
    """Where later stages plug into the backend: ``loop_candidates(backend, new_kf_id) -> [kf ids]`` adds
    edge candidates of a new keyframe (loop closure); ``on_keyframe(backend, update)`` runs after each
    integrated keyframe (prompt tuning)."""

    loop_candidates: LoopCandidateFn | None = None
    on_keyframe: KeyframeHook | None = None


def edge_candidates(
    cfg: SlamConfig,
    metric: bool,
    T_WC: Tensor,
    new_id: int,
    extra: Sequence[int] = (),
    anchor: int | None = None,
) -> list[int]:
    """Keyframes to try an edge with for keyframe ``new_id``: the one it was tracked from (``anchor``,
    default the previous one), the ``system.proximity_*`` neighbours (metric sources,
    :func:`proximity_candidates`) and ``extra`` (loop candidates), de-duplicated, newest first
    (``T_WC [K, 8]``: current keyframe poses)."""
    sc = cfg.system
    near = proximity_candidates(
        T_WC, new_id, sc.proximity_edges, sc.proximity_max_dist, sc.proximity_max_angle, metric
    )
    candidates = [new_id - 1 if anchor is None else anchor, *near, *(int(c) for c in extra)]
    return sorted({c for c in candidates if 0 <= c < new_id}, reverse=True)


def source_frame_from_keyframe(source: PointmapSource, pkt: KeyframePacket) -> SourceFrame:
    """The keyframe's prepared :class:`SourceFrame`: the packet's own in-process frame, else prepared again
    from what the packet carries. Depth sources (``metric`` and ``pose_dependent``, e.g. RGB-D) get the depth
    ``z`` of the pointmap and ``K`` at the packet's (working) resolution, prepared without resizing; other
    sources prepare the colours."""
    if pkt.frame is not None:
        return pkt.frame
    H, W = int(pkt.X.shape[0]), int(pkt.X.shape[1])
    K = None if pkt.K is None else pkt.K.detach().cpu().numpy().astype(np.float32)
    rgb = pkt.colors.detach().cpu().numpy()
    if source.metric and source.pose_dependent:
        twin = copy.copy(source)
        if hasattr(twin, "width") and hasattr(twin, "height"):
            twin.width, twin.height = W, H  # already at working resolution: no resize
        depth = pkt.X[..., 2].detach().cpu().numpy().astype(np.float32)
        return twin.prepare(rgb, index=pkt.frame_index, timestamp=pkt.timestamp, depth=depth, K=K)
    return source.prepare(rgb, index=pkt.frame_index, timestamp=pkt.timestamp, K=K)


def _split_candidates(candidates: Sequence[int | PlaceCandidate]) -> tuple[list[int], dict[int, Tensor]]:
    """Keyframe ids of loop candidates, and the relative poses ``T_CiCj`` of those that carry one."""
    ids, guesses = [], {}
    for c in candidates:
        kf = int(c) if isinstance(c, (int, np.integer)) else int(c.kf_id)
        ids.append(kf)
        T = None if isinstance(c, (int, np.integer)) else c.T_kf_query
        if T is not None:
            guesses[kf] = T.detach().to("cpu", torch.float64)
    return ids, guesses


def _optimised(info: dict) -> bool:
    """Whether an optimisation report (:func:`_opt_info`) moved the poses: not deferred, not empty."""
    return info.get("status", "nothing_to_optimize") not in ("nothing_to_optimize", DEFERRED)


def _opt_info(opt: OptResult) -> dict:
    return {
        "status": opt.status,
        "iterations": opt.iterations,
        "cost_initial": opt.cost_history[0] if opt.cost_history else math.nan,
        "cost_final": opt.cost_history[-1] if opt.cost_history else math.nan,
        "n_rejected_steps": opt.n_rejected_steps,
        "n_factorization_failures": opt.n_factorization_failures,
        "n_residual_points": opt.n_residual_points,
        "solver": opt.solver,
    }


class MapperBackend:
    """Keyframe store + local fusion + edges + global optimisation, fed by packets (see the module docstring).

    Args:
        config: the SLAM configuration (the same as the frontend's).
        source: pointmap source of the edge predictions (``predict_symmetric``).
        hooks: :class:`BackendHooks` (loop candidates, per-keyframe work).
        wait_s: how long a keyframe waits for the previous keyframe's observations before it is integrated.
        gap_s: how long packets of later keyframes wait for a missing one before :meth:`request_missing`
            asks for it (again, every ``gap_s``).
    """

    def __init__(
        self,
        config: SlamConfig,
        source: PointmapSource,
        hooks: BackendHooks | None = None,
        wait_s: float = 1.0,
        gap_s: float = 3.0,
    ) -> None:
        self.config, self.source = config, source
        self.hooks = hooks or BackendHooks()
        self.wait_s = float(wait_s)
        self.gaps = GapRequests(gap_s)  # requests for a missing keyframe (MapperState.request)
        self.device = torch.device(config.system.device)
        self.calibrated = uses_calibration(config, source)
        self._optimizer = make_optimizer(config, source)
        self.generation = 0
        self.last_backup: Path | None = None  # where the last save kept another session's map
        #: the tuned prompts that belong with this map (online prompt tuning; kept across resets: they are
        #: the scene's prior, not one session's), saved and loaded with it
        self.prompts: PromptUpdate | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the map (keyframes, graph, frames, buffers) and start a new generation; the next packet's
        session is adopted."""
        self.generation = next_generation(self.generation)
        self.session: int | None = None
        self.keyframes = make_keyframe_store(self.config, self.device)
        self.graph = make_graph(self.config)
        self.frames = FrameStore()
        self.kf_frames: list[SourceFrame] = []
        self.kf_features: list[LocalFeatures | None] = []  # place-recognition features (from the packets)
        self.kf_anchor: list[int] = []  # the keyframe each one was tracked from
        self.loop_edges: list[tuple[int, int]] = []
        self.obs_count: list[int] = []  # observations fused into each keyframe
        self._pending_kf: dict[int, tuple[KeyframePacket, float]] = {}
        self._pending_obs: dict[int, list[ObservationPacket]] = {}
        self._pending_features: dict[int, LocalFeatures] = {}
        self.gaps.update(False)  # nothing is missing from an empty map: the wait starts over
        self.n_fused = 0
        self.n_ignored = 0
        self.stamps_ns: dict[float, int] = {}  # exact input stamps by timestamp (filled by a ROS host)

    # -------------------------------------------------------------------------------------------- queries
    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    def state(self, reset: bool = False) -> MapperState:
        """What this backend holds (``reset``: announce that the map was cleared on purpose)."""
        return MapperState(self.generation, self.session, len(self.keyframes), reset, self.gaps.requests)

    def keyframe_poses(self) -> Tensor:
        """``[K, 8]`` float64 CPU Sim(3) poses, index = keyframe id."""
        return self.keyframes.get_poses().detach().cpu().to(torch.float64)

    def trajectory(self) -> tuple[np.ndarray, Tensor]:
        """All frames the backend knows (keyframes and observed frames), sorted by time, one pose per stamp
        (a frame that became a keyframe is reported as the keyframe): ``(timestamps [M], T_WC [M, 8])``."""
        if len(self.frames) == 0 or len(self.keyframes) == 0:
            return np.zeros(0), sim3_identity(0, dtype=torch.float64)
        idx, poses = self.frames.world_poses(self.keyframe_poses())
        ts = self.frames.timestamps[idx]
        is_kf = self.frames.is_keyframe[idx]
        order = np.lexsort((~is_kf, ts))  # by time, keyframe record first among equal stamps
        ts, poses = ts[order], poses[torch.from_numpy(order)]
        first = np.ones(len(ts), dtype=bool)
        first[1:] = ts[1:] != ts[:-1]
        return ts[first], poses[torch.from_numpy(first)]

    @property
    def kf_stamps(self) -> list[float]:
        """Timestamps (s) of the frames the keyframes were made from, index = keyframe id."""
        return [self.keyframes.timestamp(i) for i in range(len(self.keyframes))]

    def keyframe_trajectory(self) -> tuple[np.ndarray, Tensor]:
        """``(timestamps [K] s, T_WC [K, 8])`` of the keyframes."""
        return np.asarray(self.kf_stamps, dtype=np.float64), self.keyframe_poses()

    def map_points(self, ids: Sequence[int] | None = None, conf_threshold: float | None = None) -> MapPoints:
        """Points of keyframes ``ids`` (default: all) above ``conf_threshold`` (``map.conf_threshold``)."""
        thr = self.config.map.conf_threshold if conf_threshold is None else float(conf_threshold)
        return keyframe_points(self.keyframes, range(len(self.keyframes)) if ids is None else ids, thr)

    def edges(self) -> list[tuple[int, int]]:
        ii, jj = self.graph.edges
        return list(zip(ii.tolist(), jj.tolist(), strict=True))

    # -------------------------------------------------------------------------------------------- packets
    def _adopt_session(self, session: int, kf_id: int | None) -> None:
        """An empty map adopts ``session``; keyframe 0 of another session starts a new map; any other packet
        of another session clears the map (new generation: the frontend re-sends its keyframes)."""
        if self.session == session:
            return
        if not (self.session is None and len(self.keyframes) == 0) and kf_id != 0:
            self.reset()
        elif kf_id == 0 and self.session is not None:
            generation = self.generation
            self.reset()
            self.generation = generation
        self.session = int(session)

    def submit_keyframe(self, pkt: KeyframePacket, now: float | None = None) -> bool:
        """Queue a keyframe; False for a duplicate (already integrated or queued)."""
        self._adopt_session(pkt.session, pkt.kf_id)
        if pkt.kf_id < len(self.keyframes) or pkt.kf_id in self._pending_kf:
            self.n_ignored += 1
            return False
        self._pending_kf[pkt.kf_id] = (pkt, time.monotonic() if now is None else now)
        return True

    def submit_observation(self, pkt: ObservationPacket) -> bool:
        """Queue one observation (fused by the next :meth:`step` once its keyframe is in the map)."""
        self._adopt_session(pkt.session, None)
        self._pending_obs.setdefault(pkt.kf_id, []).append(pkt)
        return True

    def submit(self, observation: ObservationPacket | None, keyframe: KeyframePacket | None) -> None:
        """One frame's packets, either may be ``None`` (the observation first, as the frontend made them)."""
        if observation is not None:
            self.submit_observation(observation)
        if keyframe is not None:
            self.submit_keyframe(keyframe)

    def submit_features(self, session: int, kf_id: int, features: LocalFeatures) -> bool:
        """Features of keyframe ``kf_id`` that travelled apart from its packet (the nodes); kept with the map
        (so a tracker that adopts it can relocalise). False when they belong to another session."""
        if session != self.session and self.session is not None:
            return False
        if kf_id < len(self.kf_features):
            self.kf_features[kf_id] = features
        else:
            self._pending_features[kf_id] = features
            while len(self._pending_features) > 1000:  # bounded: features of keyframes that never come
                self._pending_features.pop(next(iter(self._pending_features)))
        return True

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
            # behind (the next keyframe is already here): integrate it too before optimising, once
            updates.append(self.integrate(pkt, optimise=(nxt + 1) not in self._pending_kf))
        if updates and updates[-1].opt_info.get("status") == DEFERRED:  # the next one was not ready after all
            updates[-1] = self._optimise(updates[-1])
        return updates

    def request_missing(self, now: float | None = None) -> int | None:
        """The id of the next keyframe when it has been missing for ``gap_s`` while packets of later
        keyframes wait (a request is then counted into :meth:`state`, again every ``gap_s``); or ``None``."""
        nxt = len(self.keyframes)
        later = any(k > nxt for k in self._pending_kf) or any(k >= nxt for k in self._pending_obs)
        return nxt if self.gaps.update(later and nxt not in self._pending_kf, now) else None

    # ---------------------------------------------------------------------------------------- integration
    def integrate(self, pkt: KeyframePacket, optimise: bool = True) -> MapUpdate:
        """Add keyframe ``pkt`` (must be the next id), build its edges and run the global optimisation
        (``optimise=False``: leave it to a later keyframe's; the update's ``opt_info`` says ``deferred``).

        :meth:`step` defers when the next keyframe is already waiting: a mapper that fell behind integrates
        the keyframes it holds and optimises once, so it catches up instead of falling further behind."""
        if pkt.kf_id != len(self.keyframes):
            raise ValueError(f"keyframe {pkt.kf_id} integrated out of order (map has {len(self.keyframes)})")
        watch = Stopwatch(cuda_sync=self.device.type == "cuda")
        kf_id = self._add_keyframe(pkt)
        watch.lap("keyframe")
        added: list[tuple[int, int]] = []
        loops: list[tuple[int, int]] = []
        info: dict = {}
        if kf_id > 0:
            added, loops = self._connect(kf_id)
            watch.lap("edges")
            if optimise:
                info = self._run_optimizer()
                watch.lap("optimise")
            else:
                info = {"status": DEFERRED}
        update = MapUpdate(
            kf_id=kf_id,
            edges=tuple(added),
            optimised=_optimised(info),
            T_WC=self.keyframe_poses(),
            opt_info=info,
            timings_ms=watch.ms,
            loops=tuple(loops),
        )
        if self.hooks.on_keyframe is not None:
            self.hooks.on_keyframe(self, update)
        return update

    def _optimise(self, update: MapUpdate) -> MapUpdate:
        """``update`` (a deferred integration) completed with the global optimisation it skipped."""
        watch = Stopwatch(cuda_sync=self.device.type == "cuda")
        info = self._run_optimizer()
        watch.lap("optimise")
        return dataclasses.replace(
            update,
            optimised=_optimised(info),
            T_WC=self.keyframe_poses(),
            opt_info=info,
            timings_ms={**update.timings_ms, **watch.ms},
        )

    def _run_optimizer(self, focus: tuple[int, ...] = ()) -> dict:
        """One global optimisation (``local_opt.window``: of the newest keyframes and those up to ``focus``);
        its ``opt_info``. The heap's freed temporaries go back to the OS (:func:`release_free_heap`)."""
        info = _opt_info(self._optimizer.optimize(self.keyframes, self.graph, focus=focus))
        release_free_heap()  # the optimisation's temporaries, else kept fragmented by the allocator
        return info

    def _placed_pose(self, pkt: KeyframePacket) -> Tensor:
        """Where keyframe ``pkt`` goes ``[8]`` float64: its pose relative to its anchor (as the frontend knew
        the anchor) composed with the anchor's pose here, which a correction the frontend had not yet heard
        of may have moved; ``pkt.T_WC`` itself when the anchor did not move (or there is none)."""
        T_WC = pkt.T_WC.to(torch.float64)
        anchor = int(pkt.anchor_id)
        if pkt.T_WA is None or not 0 <= anchor < len(self.keyframes):
            return T_WC
        here = self.keyframes.get_poses([anchor]).reshape(8).detach().to("cpu", torch.float64)
        there = pkt.T_WA.to(torch.float64)
        if torch.equal(here, there):
            return T_WC
        return sim3_compose(here, sim3_compose(sim3_inverse(there), T_WC))

    def _add_keyframe(self, pkt: KeyframePacket) -> int:
        sf = source_frame_from_keyframe(self.source, pkt)
        kf_id = self.keyframes.append(
            self._placed_pose(pkt),
            pkt.X.to(self.device),
            pkt.C.to(self.device),
            frame_index=pkt.frame_index,
            timestamp=pkt.timestamp,
            colors=pkt.colors if self.config.keyframes.store_images else None,
            K=pkt.K,
            N=pkt.N,
            N_updates=pkt.N_updates,
        )
        self.kf_frames.append(sf)
        self.kf_features.append(
            pkt.features if pkt.features is not None else self._pending_features.pop(kf_id, None)
        )
        self.kf_anchor.append(int(pkt.anchor_id))
        self.obs_count.append(max(int(pkt.N_updates) - 1, 0))  # a re-sent keyframe already holds these
        self.frames.append(pkt.timestamp, kf_id, sim3_identity(dtype=torch.float64), is_keyframe=True)
        if pkt.fused_frames is not None:  # a re-sent working copy: the frames its pointmap already holds
            for t, T_CkCf in zip(*pkt.fused_frames, strict=True):
                self.frames.append(float(t), kf_id, T_CkCf.to(torch.float64))
        return kf_id

    def _connect(self, kf_id: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Edges of the new keyframe: candidates (anchor, proximity, loop hook) that pass the match test;
        returns ``(edges added, those of them that close a loop)``."""
        loop_candidates = self.hooks.loop_candidates
        loop_ids, guesses = _split_candidates(
            loop_candidates(self, kf_id) if loop_candidates is not None else ()
        )
        poses = self.keyframes.get_poses()
        anchor = self.kf_anchor[kf_id]
        candidates = edge_candidates(self.config, self.source.metric, poses, kf_id, loop_ids, anchor)
        added = build_edges(
            self.source,
            self.graph,
            self.kf_frames,
            poses,
            candidates,
            kf_id,
            self.config,
            self.calibrated,
            guesses=guesses,
            consecutive_exemption=anchor == kf_id - 1,
        )
        loops = [e for e in added if e[0] in loop_ids and e[0] != anchor]
        self.loop_edges.extend(loops)
        return added, loops

    def close_loops(self, kf_id: int, candidates: Sequence[int | PlaceCandidate]) -> MapUpdate | None:
        """Loop edges of integrated keyframe ``kf_id`` found later (the retrieval node's answer): verified by
        the same edge test, then one global optimisation. ``None`` when the keyframe is not in the map or no
        edge was accepted."""
        if not 0 < kf_id < len(self.keyframes):
            return None
        ids, guesses = _split_candidates(candidates)
        watch = Stopwatch(cuda_sync=self.device.type == "cuda")
        poses = self.keyframes.get_poses()
        loops = build_edges(
            self.source,
            self.graph,
            self.kf_frames,
            poses,
            [i for i in ids if i < kf_id],
            kf_id,
            self.config,
            self.calibrated,
            guesses=guesses,
            consecutive_exemption=False,
        )
        watch.lap("edges")
        if not loops:
            return None
        self.loop_edges.extend(loops)
        info = self._run_optimizer(focus=(kf_id,))
        watch.lap("optimise")
        return MapUpdate(
            kf_id=kf_id,
            edges=tuple(loops),
            optimised=_optimised(info),
            T_WC=self.keyframe_poses(),
            opt_info=info,
            timings_ms=watch.ms,
            loops=tuple(loops),
        )

    # ---------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Everything of the map (plain data and CPU tensors), as :meth:`save` writes it."""
        frames = self.frames.state_dict()
        return {
            "format": MAP_FORMAT,
            "version": MAP_VERSION,
            "session": self.session,
            "config": config_to_dict(self.config),
            "keyframes": self.keyframes.state_dict(),
            "graph": {"kind": "state_dict", "data": self.graph.state_dict()},
            "frames": {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in frames.items()},
            "kf_frames": [f.state_dict() for f in self.kf_frames],
            "obs_count": list(self.obs_count),
            "kf_features": [None if f is None else f.state_dict() for f in self.kf_features],
            "kf_anchor": list(self.kf_anchor),
            "loop_edges": list(self.loop_edges),
            "kf_stamps": self.kf_stamps,  # derived from the keyframes; kept in the file for older readers
            "stamps_ns": dict(self.stamps_ns),
            "prompts": None
            if self.prompts is None
            else {"version": self.prompts.version, "tensor": self.prompts.prompts.clone()},
        }

    def load_state_dict(self, state: dict, origin: str = "map") -> None:
        """Replace the map with ``state`` (a new generation); ``ValueError`` naming ``origin`` if it is not a
        map of this version or was made with another source kind (:func:`check_map`)."""
        check_map(state, self.config, origin)
        self.reset()
        self.keyframes.extend_from_state(state["keyframes"])
        self.graph.load_state_dict(state["graph"]["data"])
        self.frames = frames_from_map(state["frames"])
        self.kf_frames = [SourceFrame.from_state_dict(f, self.device) for f in state["kf_frames"]]
        self.obs_count = [int(v) for v in state["obs_count"]]
        n = len(self.obs_count)
        self.kf_features = [
            None if f is None else LocalFeatures.from_state_dict(f)
            for f in state.get("kf_features", [None] * n)
        ]
        self.kf_anchor = [int(v) for v in state.get("kf_anchor", range(-1, n - 1))]
        self.loop_edges = [(int(i), int(j)) for i, j in state.get("loop_edges", [])]
        self.stamps_ns = {float(k): int(v) for k, v in state.get("stamps_ns", {}).items()}
        self.session = None if state["session"] is None else int(state["session"])
        saved = state.get("prompts")
        if saved is not None:  # a map without prompts keeps the current ones (e.g. an RGB-D map)
            self.prompts = PromptUpdate(int(saved["version"]), saved["tensor"].float())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map (keyframes, poses, graph, frames, session) atomically to the file ``path``. A map of
        another session already there is first renamed to ``<stem>.session-<id><suffix>``
        (:func:`~online3r_ros.slam.map_files.keep_other_session`): no session's map is silently replaced.
        The backup's path, if any, is kept in :attr:`last_backup`."""
        self.last_backup = keep_other_session(path, self.session)
        return save_atomic(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Replace the current map with the one saved at ``path`` (``FileNotFoundError``/``ValueError``)."""
        self.load_state_dict(read_map(path, self.config), origin=str(path))
