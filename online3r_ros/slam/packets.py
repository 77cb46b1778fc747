"""The messages between the tracking frontend and the mapping backend, as plain Python data.

They are the whole interface of the two halves of the pipeline (:mod:`~online3r_ros.slam.frontend`,
:mod:`~online3r_ros.slam.backend`): :class:`~online3r_ros.slam.system.SlamSystem` hands them over in
process, the ROS nodes pack them into messages (:mod:`online3r_ros.ros.nodes.msgs`).

- :class:`KeyframePacket` (frontend -> backend): a new keyframe.
- :class:`ObservationPacket` (frontend -> backend): one tracked frame's fusion input for its keyframe.
- :class:`MapUpdate` (backend -> frontend): every keyframe's optimised pose after integrating a keyframe.
- :class:`MapperState` (backend -> frontend): what the backend holds, for the re-send protocol
  (:mod:`~online3r_ros.slam.session`).
- :class:`PromptUpdate` (backend -> frontend): a new version of the tuned prompts (online prompt tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..retrieval.features import LocalFeatures
from ..sources.base import SourceFrame

Tensor = torch.Tensor

__all__ = ["KeyframePacket", "ObservationPacket", "MapUpdate", "MapperState", "PromptUpdate"]


@dataclass
class KeyframePacket:
    """A keyframe sent from the frontend to the backend.

    Attributes:
        session: id of the frontend session (a new one after every reset).
        kf_id: keyframe id (0, 1, 2, ... within a session).
        frame_index: index of the frame it was made from (frontend's order of arrival).
        timestamp: seconds of that frame (the input image's stamp).
        T_WC: Sim(3) ``[8]`` float64 pose when sent.
        X: ``[H, W, 3]`` float32 canonical pointmap in the keyframe's camera frame (pointmap units).
        C: ``[H, W]`` float32 accumulated confidence; ``N``, ``N_updates``: fusion counters (1, 1 when new).
        colors: ``[H, W, 3]`` uint8 colours at working resolution.
        K: ``[3, 3]`` float32 intrinsics at working resolution, or ``None`` (uncalibrated source).
        prev_observations: observations the frontend had fused into keyframe ``kf_id - 1`` when it made this.
        features: its local features for place recognition (``None``: retrieval off).
        anchor_id: the keyframe it was tracked from (its always-kept edge; ``-1``: none, e.g. keyframe 0;
            after a relocalisation not ``kf_id - 1``).
        T_WA: Sim(3) ``[8]`` float64 pose of keyframe ``anchor_id`` as the frontend knew it when it sent this
            (``None``: no anchor). The backend places the keyframe relative to its own, possibly since
            corrected, anchor pose: ``T_WA_backend · T_WA⁻¹ · T_WC``, so a keyframe made before the frontend
            heard of a correction (a late loop closure) is not left where the uncorrected map had it.
        fused_frames: a re-sent working copy's frames whose observations ``X`` already holds:
            ``(timestamps [M] s, T_CkCf [M, 8] float64)``, so a backend that never saw those observations
            still knows their poses (``None``: a new keyframe, nothing fused yet).
        frame: the prepared source frame, only when the backend runs in the same process (never sent: a
            backend in another process prepares it again from the packet).
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
    frame: SourceFrame | None = field(default=None, compare=False, repr=False)
    features: LocalFeatures | None = field(default=None, compare=False, repr=False)
    anchor_id: int | None = None
    T_WA: Tensor | None = None
    fused_frames: tuple[np.ndarray, Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.anchor_id is None:
            self.anchor_id = self.kf_id - 1


@dataclass
class ObservationPacket:
    """One tracked frame for the backend: fusion input of keyframe ``kf_id`` and the frame's relative pose.

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
    """Result of integrating one keyframe (or closing loops of it): its id, graph edges added (``loops``:
    those of them that close a loop), optimiser report, and every keyframe's pose (``T_WC [K, 8]``
    float64 CPU, index = keyframe id); ``timings_ms`` per backend stage."""

    kf_id: int
    edges: tuple[tuple[int, int], ...]
    optimised: bool
    T_WC: Tensor
    opt_info: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    loops: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class MapperState:
    """What the backend holds: ``generation`` (changes at every reset/load of its map), the ``session`` its
    map belongs to (``None``: empty), ``num_keyframes``, ``reset`` (the map was cleared on purpose: the
    frontend must start a new session) and ``request`` (counts the backend's requests for a keyframe it
    lacks while it holds packets of later ones: a message lost in transport; each new value asks the
    frontend to send keyframes ``num_keyframes..`` again)."""

    generation: int
    session: int | None
    num_keyframes: int
    reset: bool = False
    request: int = 0


@dataclass(frozen=True)
class PromptUpdate:
    """One version of the prompts (``prompts [layers, tokens, dim]`` float32 CPU) and how it was made:
    the keyframe that triggered it, losses (``loss_*``: total, ``local_*``, ``global_*``; NaN when a term
    was not computed) before and after the step, ``iters`` optimiser steps and ``time_ms`` of the step
    (without the after-loss pass)."""

    version: int
    prompts: Tensor
    kf_id: int = -1
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    local_before: float = float("nan")
    local_after: float = float("nan")
    global_before: float = float("nan")
    global_after: float = float("nan")
    iters: int = 0
    time_ms: float = 0.0

    def summary(self) -> dict:
        """Plain numbers for status messages and reports (no tensor)."""
        out = {k: v for k, v in self.__dict__.items() if k != "prompts"}
        out["shape"] = list(self.prompts.shape)
        return out
