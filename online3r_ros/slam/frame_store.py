"""Per-frame pose bookkeeping: every frame's pose is stored RELATIVE to its anchor keyframe.

A frame ``f`` tracked against keyframe ``k`` is stored as ``(k, T_CkCf)`` (Sim(3), float64, CPU). Its world
pose is never stored; it is composed on demand from the keyframes' *current* world poses:
``T_WCf = T_WCk · T_CkCf``. After a global optimisation moves the keyframes, every frame follows its keyframe
automatically, so the all-frames trajectory is always consistent with the optimised keyframes.

Frames without a pose (tracking lost, relocalisation failed, source error) are kept with anchor ``-1`` and a
reason, so the outputs can list them instead of inventing a pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.lie import sim3_compose, sim3_identity

Tensor = torch.Tensor

__all__ = ["FrameRecord", "FrameStore", "frames_from_map"]

NO_KEYFRAME = -1


@dataclass(frozen=True)
class FrameRecord:
    """One processed frame.

    ``index`` (order of arrival), ``timestamp`` (s), anchor ``keyframe_id`` (-1 when the frame has no pose),
    ``T_CkCf`` (Sim(3) ``[8]`` float64, NaN without pose), ``is_keyframe`` and ``reason`` (why the frame has
    no pose; empty otherwise).
    """

    index: int
    timestamp: float
    keyframe_id: int
    T_CkCf: Tensor
    is_keyframe: bool
    reason: str

    @property
    def has_pose(self) -> bool:
        return self.keyframe_id >= 0


class FrameStore:
    """Growing arrays of frame anchors and relative poses (amortised O(1) append, vectorised queries)."""

    def __init__(self, capacity: int = 256) -> None:
        self._n = 0
        self._timestamps = np.zeros(capacity, dtype=np.float64)
        self._anchor = np.full(capacity, NO_KEYFRAME, dtype=np.int64)
        self._is_kf = np.zeros(capacity, dtype=bool)
        self._rel = torch.full((capacity, 8), float("nan"), dtype=torch.float64)
        self._reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return self._n

    def _grow(self) -> None:
        cap = max(2 * len(self._timestamps), 16)
        n = self._n
        ts = np.zeros(cap, dtype=np.float64)
        ts[:n] = self._timestamps[:n]
        anchor = np.full(cap, NO_KEYFRAME, dtype=np.int64)
        anchor[:n] = self._anchor[:n]
        is_kf = np.zeros(cap, dtype=bool)
        is_kf[:n] = self._is_kf[:n]
        rel = torch.full((cap, 8), float("nan"), dtype=torch.float64)
        rel[:n] = self._rel[:n]
        self._timestamps, self._anchor, self._is_kf, self._rel = ts, anchor, is_kf, rel

    def append(
        self,
        timestamp: float,
        keyframe_id: int,
        T_CkCf: Tensor | None,
        *,
        is_keyframe: bool = False,
        reason: str = "",
    ) -> int:
        """Add a frame (``keyframe_id = -1``, ``T_CkCf = None``: no pose); returns its index."""
        if self._n == len(self._timestamps):
            self._grow()
        i = self._n
        self._timestamps[i] = float(timestamp)
        if keyframe_id >= 0:
            if T_CkCf is None or T_CkCf.shape != (8,):
                raise ValueError(f"frame {i}: a posed frame needs T_CkCf of shape [8], got {T_CkCf!r}")
            if not bool(torch.isfinite(T_CkCf).all()):
                raise ValueError(f"frame {i}: non-finite relative pose {T_CkCf.tolist()}")
            self._anchor[i] = int(keyframe_id)
            self._rel[i] = T_CkCf.detach().to("cpu", torch.float64)
            self._is_kf[i] = bool(is_keyframe)
        else:
            self._reasons[i] = reason or "no pose"
        self._n += 1
        return i

    def set_pose(self, index: int, keyframe_id: int, T_CkCf: Tensor, *, is_keyframe: bool = False) -> None:
        """Re-anchor one frame (e.g. a frame promoted to keyframe becomes identity w.r.t. itself)."""
        if not 0 <= index < self._n:
            raise IndexError(f"frame index {index} out of range [0, {self._n})")
        self._anchor[index] = int(keyframe_id)
        self._rel[index] = T_CkCf.detach().to("cpu", torch.float64)
        self._is_kf[index] = bool(is_keyframe)
        self._reasons.pop(index, None)

    def record(self, index: int) -> FrameRecord:
        if not 0 <= index < self._n:
            raise IndexError(f"frame index {index} out of range [0, {self._n})")
        return FrameRecord(
            index=index,
            timestamp=float(self._timestamps[index]),
            keyframe_id=int(self._anchor[index]),
            T_CkCf=self._rel[index].clone(),
            is_keyframe=bool(self._is_kf[index]),
            reason=self._reasons.get(index, ""),
        )

    @property
    def timestamps(self) -> np.ndarray:
        """``[N]`` float64 seconds of every frame (posed or not)."""
        return self._timestamps[: self._n].copy()

    @property
    def anchors(self) -> np.ndarray:
        """``[N]`` int64 anchor keyframe id per frame (-1 without pose)."""
        return self._anchor[: self._n].copy()

    @property
    def is_keyframe(self) -> np.ndarray:
        """``[N]`` bool: the frame became a keyframe."""
        return self._is_kf[: self._n].copy()

    @property
    def relative_poses(self) -> Tensor:
        """``[N, 8]`` float64 ``T_CkCf`` (NaN rows for frames without pose)."""
        return self._rel[: self._n].clone()

    def unposed(self) -> list[tuple[int, float, str]]:
        """``(index, timestamp, reason)`` of every frame without a pose."""
        return [(i, float(self._timestamps[i]), r) for i, r in sorted(self._reasons.items())]

    def anchored_to(self, keyframe_id: int) -> tuple[np.ndarray, Tensor]:
        """``(timestamps [M] s, T_CkCf [M, 8] float64)`` of the frames tracked relative to keyframe
        ``keyframe_id`` (not the keyframe's own record), in order."""
        n = self._n
        sel = np.nonzero((self._anchor[:n] == int(keyframe_id)) & ~self._is_kf[:n])[0]
        return self._timestamps[sel].copy(), self._rel[torch.from_numpy(sel)].clone()

    def world_poses(self, keyframe_T_WC: Tensor) -> tuple[np.ndarray, Tensor]:
        """Compose every posed frame with its keyframe's current pose.

        Args:
            keyframe_T_WC: ``[K, 8]`` Sim(3) world poses of keyframes ``0..K-1``.
        Returns:
            ``(indices [M] int64, T_WC [M, 8] float64)`` for the ``M`` frames that have a pose, in order.
        """
        n = self._n
        anchor = self._anchor[:n]
        posed = np.nonzero(anchor >= 0)[0]
        if len(posed) == 0:
            return posed, sim3_identity(0, dtype=torch.float64)
        K = keyframe_T_WC.shape[0]
        if int(anchor[posed].max()) >= K:
            raise ValueError(
                f"frame anchored to keyframe {int(anchor[posed].max())} but only {K} keyframes given"
            )
        T_WK = keyframe_T_WC.detach().to("cpu", torch.float64)[torch.from_numpy(anchor[posed])]
        return posed, sim3_compose(T_WK, self._rel[torch.from_numpy(posed)])

    def state_dict(self) -> dict:
        n = self._n
        return {
            "timestamps": self._timestamps[:n].copy(),
            "anchors": self._anchor[:n].copy(),
            "is_keyframe": self._is_kf[:n].copy(),
            "relative_poses": self._rel[:n].clone(),
            "reasons": dict(self._reasons),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> FrameStore:
        n = len(state["timestamps"])
        store = cls(capacity=max(n, 16))
        store._n = n
        store._timestamps[:n] = state["timestamps"]
        store._anchor[:n] = state["anchors"]
        store._is_kf[:n] = state["is_keyframe"]
        store._rel[:n] = state["relative_poses"]
        store._reasons = {int(k): str(v) for k, v in state["reasons"].items()}
        return store


def frames_from_map(frames: dict) -> FrameStore:
    """The :class:`FrameStore` of a saved map's ``frames`` entry (the backend's ``state_dict`` keeps its
    arrays as tensors, so that ``torch.load(weights_only=True)`` reads them)."""
    return FrameStore.from_state_dict(
        {k: v.numpy() if torch.is_tensor(v) and k != "relative_poses" else v for k, v in frames.items()}
    )
