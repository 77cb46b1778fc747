"""The synchronous, deterministic SLAM pipeline in one process: frame in -> state, pose and map out.

:class:`SlamSystem` is a thin host of the pipeline's two halves, wired directly: the
:class:`~online3r_ros.slam.frontend.TrackerFrontend` processes each frame, its packets go straight to the
:class:`~online3r_ros.slam.backend.MapperBackend`, which integrates a new keyframe at once (edges and the
global optimisation: the reference's ``single_thread`` evaluation mode), and its optimised poses go straight
back to the frontend. The ROS nodes host the same two objects in two processes
(:mod:`online3r_ros.ros.nodes`); nothing here decides anything the nodes would decide differently.

Every frame's pose is stored relative to its keyframe, so :meth:`SlamSystem.trajectory` always follows the
optimised keyframes; frames without a pose are listed (:meth:`SlamSystem.unposed_frames`), never guessed.

Determinism: the pipeline has no randomness and no threads of its own (torch is seeded, and on CUDA
``system.deterministic`` forces deterministic kernels), so two runs on the same input produce bit-identical
outputs on the same machine.

With ``system.mapper_thread`` the backend runs in a :class:`~online3r_ros.slam.mapper_thread.MapperThread`
instead (the tracker never waits for the mapper, as with the two nodes): faster, and then the moment an
optimised pose reaches the tracker depends on timing. Results (trajectory, map, save) wait for the mapper
to finish the submitted work first; :meth:`SlamSystem.close` stops the thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.lie import sim3_to_matrix
from ..sources.base import PointmapSource
from ..tuning.online import make_online_tuning
from ..tuning.prompt_files import load_prompts, save_prompts
from ..utils.atomic import save_atomic
from .backend import BackendHooks, MapperBackend
from .config import SlamConfig, config_from_dict, config_to_dict
from .frontend import SlamState, TrackerFrontend, TrackerStep
from .loops import LoopCloser
from .map_export import MapPoints
from .mapper_thread import MapperThread
from .packets import MapUpdate, PromptUpdate
from .places import make_place_recognizer

Tensor = torch.Tensor

__all__ = ["SlamState", "FrameOutput", "Trajectory", "DenseMap", "SlamSystem"]

STATE_FILE = "system.pt"
STATE_FORMAT = "online3r_ros.system"
STATE_VERSION = 2

#: What :meth:`SlamSystem.process` returns: the frontend's step with the backend's ``map_update``.
FrameOutput = TrackerStep
#: The dense map of :meth:`SlamSystem.dense_map`.
DenseMap = MapPoints


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

    @classmethod
    def from_poses(cls, timestamps: np.ndarray, poses: Tensor, indices: np.ndarray) -> Trajectory:
        mats = sim3_to_matrix(poses).numpy() if len(poses) else np.zeros((0, 4, 4))
        return cls(timestamps=np.asarray(timestamps, np.float64), T_WC=mats, indices=indices, poses=poses)


class SlamSystem:
    """Frontend and backend in one process (see the module docstring): ``SlamSystem(config, source,
    hooks=None)`` with the backend's :class:`BackendHooks`; the map is :attr:`keyframes` (the backend's)."""

    def __init__(self, config: SlamConfig, source: PointmapSource, hooks: BackendHooks | None = None) -> None:
        self.frontend = TrackerFrontend(config, source)
        hooks = hooks or BackendHooks()
        loops = config.retrieval.loop_closure and hooks.loop_candidates is None
        if loops and (places := make_place_recognizer(config)) is not None:
            hooks = dataclasses.replace(hooks, loop_candidates=LoopCloser(config, places))
        # online prompt tuning: in the mapper's thread when it has one, else in line (deterministic)
        self.tuning = make_online_tuning(config, source, background=config.system.mapper_thread)
        if self.tuning is not None and hooks.on_keyframe is None:
            hooks = dataclasses.replace(hooks, on_keyframe=self.tuning)
        self.backend = MapperBackend(config, source, hooks, wait_s=0.0)  # in order: never waits
        self.config, self.source, self.device = config, source, self.frontend.device
        self.mapper_thread = MapperThread(self.backend) if config.system.mapper_thread else None

    pose_group = property(lambda self: self.frontend.pose_group, doc="``se3`` or ``sim3``")
    state = property(lambda self: self.frontend.state, doc="the frontend's :class:`SlamState`")
    keyframes = property(lambda self: self.backend.keyframes, doc="the map's keyframe store")
    num_keyframes = property(lambda self: self.backend.num_keyframes)
    num_frames = property(lambda self: len(self.frontend.frames), doc="frames processed (posed or not)")

    # ---------------------------------------------------------------------------------------------- process
    def process(self, frame) -> FrameOutput:
        """Process one input frame (``online3r_ros.datasets.base.Frame``-like: ``rgb``, ``depth``, ``K``,
        ``timestamp``). Never raises for tracking failures; raises ``SourceError``/``ValueError`` only for
        rejected input (malformed, out of order)."""
        step = self.frontend.process(
            frame.rgb, getattr(frame, "depth", None), getattr(frame, "K", None), frame.timestamp
        )
        if self.mapper_thread is not None:
            self.mapper_thread.submit(step.observation, step.keyframe)
            updates = self.mapper_thread.updates()  # finished ones only: the tracker never waits
        else:
            self.backend.submit(step.observation, step.keyframe)
            updates = self.backend.step()
        for update in updates:
            self.frontend.apply_keyframe_poses(update.T_WC)
            step.map_update = update
            step.timings_ms = {**step.timings_ms, **update.timings_ms}
            if self.mapper_thread is None:  # else the mapper's time was not spent in this call
                step.timings_ms["total"] += sum(update.timings_ms.values())
            if step.T_WC is not None:  # an update may arrive with a lost frame (mapper thread)
                step.T_WC = self.frontend.frame_world_pose(step.index)
        self._deliver_prompts()
        return step

    def _deliver_prompts(self) -> None:
        """Finished prompt versions go to the map (saved with it) and to the tracker (from its next frame)."""
        if self.tuning is None:
            return
        for update in self.tuning.updates():
            self.adopt_prompts(update)

    def adopt_prompts(self, update: PromptUpdate) -> None:
        """Use ``update``'s prompts from the next frame on, keep them with the map, and tune on from them."""
        self.backend.prompts = update
        self.frontend.offer_prompts(update)
        if self.tuning is not None and update.version != self.tuning.tuner.version:
            self.tuning.tuner.restart_from(update)

    def load_prompts(self, path: str | Path) -> PromptUpdate:
        """Warm-start from a prompt file (:func:`~online3r_ros.tuning.prompt_files.load_prompts`)."""
        if not self.source.tunable:
            raise ValueError(f"the {self.source.name} has no prompts: a prompt file needs the MASt3R source")
        c = self.source.engine.model.cfg
        update = load_prompts(path, (c.enc_depth, c.enc_embed_dim))
        self.flush()
        self.adopt_prompts(update)
        return update

    def save_prompts(self, path: str | Path) -> Path:
        """Write the map's current prompts to ``path`` (``ValueError`` when it has none)."""
        self.flush()
        if self.backend.prompts is None:
            raise ValueError("no tuned prompts to save (tuning off, or no keyframe tuned yet)")
        return save_prompts(path, self.backend.prompts)

    def flush(self) -> list[MapUpdate]:
        """With a mapper thread: wait for the submitted work and apply its remaining updates (returned).
        Without one there is nothing pending (returns ``[]``)."""
        if self.mapper_thread is None:
            return []
        updates = self.mapper_thread.flush()
        for update in updates:
            self.frontend.apply_keyframe_poses(update.T_WC)
        if self.tuning is not None:
            self.tuning.flush()
            self._deliver_prompts()
        return updates

    def close(self) -> None:
        """Apply the mapper's last updates and stop its thread and the tuner's (no-op without them);
        idempotent."""
        if self.mapper_thread is not None:
            self.flush()
            self.mapper_thread.close()
        if self.tuning is not None:
            self.tuning.close()

    # ---------------------------------------------------------------------------------------------- results
    def trajectory(self) -> Trajectory:
        """Every posed frame's current ``T_WC`` (the map's keyframe poses composed with ``T_CkCf``)."""
        self.flush()
        frames = self.frontend.frames
        idx, poses = frames.world_poses(self.backend.keyframe_poses())
        return Trajectory.from_poses(frames.timestamps[idx], poses, idx)

    def keyframe_trajectory(self) -> Trajectory:
        """Keyframes' current poses with the timestamps of the frames they were made from."""
        self.flush()
        ts, poses = self.backend.keyframe_trajectory()
        fi = np.array([self.keyframes.frame_index(i) for i in range(len(ts))], dtype=np.int64)
        return Trajectory.from_poses(ts, poses, fi)

    def unposed_frames(self) -> list[tuple[int, float, str]]:
        """``(index, timestamp, reason)`` of every frame that has no pose."""
        return self.frontend.frames.unposed()

    def dense_map(self, conf_threshold: float | None = None, max_points: int | None = None) -> DenseMap:
        """The keyframes' points in the world above ``conf_threshold`` (default ``map.conf_threshold``), at
        most ``max_points`` (default ``map.max_points``; 0 = all), subsampled with a fixed stride."""
        self.flush()
        cap = self.config.map.max_points if max_points is None else int(max_points)
        return self.backend.map_points(conf_threshold=conf_threshold).subsample(cap)

    # ------------------------------------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Write the session into folder ``path`` (``system.pt``, atomically); returns the folder."""
        self.flush()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": config_to_dict(self.config),
            "frontend": self.frontend.state_dict(),
            "backend": self.backend.state_dict(),
            "tuning": None if self.tuning is None else self.tuning.tuner.state_dict(),
        }
        save_atomic(state, path / STATE_FILE, sync_dir=True)
        return path

    def load_map(self, path: str | Path) -> None:
        """Continue in the mapper's map saved at ``path`` (:meth:`MapperBackend.save`, e.g. a node's
        ``map_path``): the backend loads it and the frontend adopts it (:meth:`TrackerFrontend.adopt_map`),
        so the next frames relocalise in it instead of starting a new map."""
        self.flush()
        self.backend.load(path)
        self.frontend.adopt_map(self.backend.state_dict())
        if self.backend.prompts is not None:
            self.adopt_prompts(self.backend.prompts)

    @classmethod
    def load(cls, path: str | Path, source: PointmapSource, config: SlamConfig | None = None) -> SlamSystem:
        """Rebuild a system saved by :meth:`save` around ``source`` (the saved config unless ``config`` is
        given); processing continues where it stopped."""
        file = Path(path) / STATE_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no saved system in {path} ({STATE_FILE} missing)")
        state = torch.load(file, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{file} is not an online3r_ros system state")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{file}: unsupported system state version {state.get('version')}")
        system = cls(config or config_from_dict(state["config"]), source)
        system.frontend.load_state_dict(state["frontend"])
        system.backend.load_state_dict(state["backend"], origin=str(file))
        if system.backend.prompts is not None:
            system.adopt_prompts(system.backend.prompts)
        if system.tuning is not None and state.get("tuning") is not None:
            system.tuning.tuner.load_state_dict(state["tuning"])  # continue the optimiser where it stopped
        return system
