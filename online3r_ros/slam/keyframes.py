"""Growable keyframe store: poses, fused canonical pointmaps, colours, descriptors and encoder features.

Unlike the reference ``SharedKeyframes`` (a fixed 512-slot pre-allocated buffer that crashes when full), this
store grows as needed: small per-keyframe metadata and the Sim(3) poses live in an amortised-doubling pose
buffer, the bulk tensors (pointmap, confidence, colours, descriptors, encoder tokens) in per-keyframe dicts.

Bulk data of old keyframes can be moved off the accelerator (:meth:`KeyframeStore.offload`: to the CPU,
pinned when the store's device is CUDA) while the most recent ``keep_on_device`` stay resident; reads return
tensors on the store's device either way (:meth:`get`, :meth:`gather_points`), moving only what is asked.

Fields per keyframe (shapes):

- ``T_WC [8]`` Sim(3) camera-to-world (``[t, q_xyzw, s]``), ``frame_index`` (int), ``timestamp`` (float s)
- ``X [H, W, 3]`` canonical (fused) pointmap in the keyframe's camera frame, ``C [H, W]`` accumulated
  confidence, ``N`` / ``N_updates`` fusion counters (average confidence = ``C / N``), ``score`` (best_score)
- optional ``colors [H, W, 3] uint8``, ``desc [H, W, d]``, ``desc_conf [H, W]``, ``feat [T, D]`` and
  ``pos [T, 2]`` (encoder tokens for the MASt3R source), ``K [3, 3]`` (calibrated intrinsics)

All public methods take one re-entrant lock, so a node's tracking and backend threads can share a store.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from online3r_ros.slam.fusion import FusionState, average_confidence, fuse_pointmap
from online3r_ros.utils.atomic import save_atomic

BULK_FIELDS = ("X", "C", "colors", "desc", "desc_conf", "feat", "pos")
OPTIONAL_FIELDS = ("colors", "desc", "desc_conf", "feat", "pos")
FORMAT_VERSION = 1
DEFAULT_FILE_NAME = "keyframes.pt"


class KeyframeError(ValueError):
    """Bad keyframe input or index (the message names the field/value)."""


@dataclass
class Keyframe:
    """A snapshot of one keyframe; tensors are on the device that was asked for."""

    kf_id: int
    frame_index: int
    timestamp: float
    T_WC: Tensor
    X: Tensor
    C: Tensor
    N: int = 1
    N_updates: int = 1
    score: float = math.nan
    colors: Tensor | None = None
    desc: Tensor | None = None
    desc_conf: Tensor | None = None
    feat: Tensor | None = None
    pos: Tensor | None = None
    K: Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the pointmap."""
        return int(self.X.shape[0]), int(self.X.shape[1])

    def average_confidence(self) -> Tensor:
        """``C / N`` ``[H, W]``."""
        return average_confidence(self.C, self.N)


def _nbytes(t: Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


class KeyframeStore:
    """Thread-safe, growable keyframe store (see the module docstring).

    Args:
        device: device of the "resident" copies (the compute device); default CPU.
        keep_on_device: when > 0 and ``auto_offload``, keep only the most recent ``keep_on_device`` keyframes'
            bulk data on ``device`` after each append (0: keep all).
        pose_dtype: dtype of the stored poses (float32 or float64).
        fusion_mode, score_kind: local fusion rule used by :meth:`update_pointmap`.
    """

    def __init__(
        self,
        device: torch.device | str | None = None,
        keep_on_device: int = 0,
        pose_dtype: torch.dtype = torch.float32,
        fusion_mode: str = "weighted_pointmap",
        score_kind: str = "median",
        auto_offload: bool = True,
    ) -> None:
        if keep_on_device < 0:
            raise KeyframeError(f"keep_on_device must be >= 0, got {keep_on_device}")
        if pose_dtype not in (torch.float32, torch.float64):
            raise KeyframeError(f"pose_dtype must be float32 or float64, got {pose_dtype}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.keep_on_device = int(keep_on_device)
        self.auto_offload = bool(auto_offload)
        self.pose_dtype = pose_dtype
        self.fusion_mode = fusion_mode
        self.score_kind = score_kind
        self.K: Tensor | None = None  # shared intrinsics (calibrated mode), used when a keyframe has none
        self._lock = threading.RLock()
        self._poses = torch.zeros(0, 8, dtype=pose_dtype, device=self.device)
        self._n = 0
        self._meta: list[dict] = []  # frame_index, timestamp, N, N_updates, score, K, extra
        self._bulk: list[dict[str, Tensor]] = []
        self._resident: list[bool] = []

    # ------------------------------------------------------------------------------------------- structure
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def __len__(self) -> int:
        return self._n

    def _check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise KeyframeError(f"keyframe index {i} out of range [0, {self._n})")
        return i

    def _grow_poses(self, n: int) -> None:
        cap = self._poses.shape[0]
        if n <= cap:
            return
        new = torch.zeros(max(n, 2 * cap, 16), 8, dtype=self.pose_dtype, device=self.device)
        new[: self._n] = self._poses[: self._n]
        self._poses = new

    def append(
        self,
        T_WC: Tensor,
        X: Tensor,
        C: Tensor,
        *,
        frame_index: int = -1,
        timestamp: float = math.nan,
        colors: Tensor | None = None,
        desc: Tensor | None = None,
        desc_conf: Tensor | None = None,
        feat: Tensor | None = None,
        pos: Tensor | None = None,
        K: Tensor | None = None,
        N: int = 1,
        N_updates: int = 1,
        score: float = math.nan,
        extra: dict | None = None,
    ) -> int:
        """Add a keyframe (copies the tensors to the store's device); returns its id (= index).

        ``extra`` holds small plain values (numbers, strings, lists) saved with the keyframe.
        """
        T_WC = torch.as_tensor(T_WC)
        if T_WC.shape[-1:] != (8,) or T_WC.numel() != 8:
            raise KeyframeError(f"T_WC must be a Sim(3) [8] tensor, got shape {tuple(T_WC.shape)}")
        if X.ndim != 3 or X.shape[-1] != 3:
            raise KeyframeError(f"X must have shape [H, W, 3], got {tuple(X.shape)}")
        hw = tuple(X.shape[:2])
        if tuple(C.shape) != hw:
            raise KeyframeError(f"C must have shape {hw}, got {tuple(C.shape)}")
        if not bool(torch.isfinite(T_WC).all()) or float(T_WC.reshape(8)[7]) <= 0:
            raise KeyframeError(f"T_WC must be finite with scale > 0, got {T_WC.reshape(8).tolist()}")
        opt = {"colors": colors, "desc": desc, "desc_conf": desc_conf, "feat": feat, "pos": pos}
        for name in ("colors", "desc", "desc_conf"):
            t = opt[name]
            if t is not None and tuple(t.shape[:2]) != hw:
                raise KeyframeError(f"{name} must start with the pointmap size {hw}, got {tuple(t.shape)}")
        if colors is not None and colors.dtype != torch.uint8:
            raise KeyframeError(f"colors must be uint8, got {colors.dtype}")
        if K is not None and tuple(K.shape) != (3, 3):
            raise KeyframeError(f"K must be [3, 3], got {tuple(K.shape)}")
        bulk = {"X": X.detach().to(self.device).clone(), "C": C.detach().to(self.device).clone()}
        for name, t in opt.items():
            if t is not None:
                bulk[name] = t.detach().to(self.device).clone()
        meta = {
            "frame_index": int(frame_index),
            "timestamp": float(timestamp),
            "N": int(N),
            "N_updates": int(N_updates),
            "score": float(score),
            "K": None if K is None else K.detach().to("cpu", torch.float64).clone(),
            "extra": dict(extra or {}),
        }
        with self._lock:
            self._grow_poses(self._n + 1)
            self._poses[self._n] = T_WC.reshape(8).to(self.device, self.pose_dtype)
            self._meta.append(meta)
            self._bulk.append(bulk)
            self._resident.append(True)
            self._n += 1
            idx = self._n - 1
            if self.auto_offload and self.keep_on_device > 0:
                self.offload(self.keep_on_device)
        return idx

    def append_keyframe(self, kf: Keyframe) -> int:
        """Append a :class:`Keyframe` snapshot (its ``kf_id`` is ignored)."""
        return self.append(
            kf.T_WC,
            kf.X,
            kf.C,
            frame_index=kf.frame_index,
            timestamp=kf.timestamp,
            colors=kf.colors,
            desc=kf.desc,
            desc_conf=kf.desc_conf,
            feat=kf.feat,
            pos=kf.pos,
            K=kf.K,
            N=kf.N,
            N_updates=kf.N_updates,
            score=kf.score,
            extra=kf.extra,
        )

    def pop_last(self) -> Keyframe:
        """Remove and return the newest keyframe (e.g. a failed relocalisation candidate)."""
        with self._lock:
            if self._n == 0:
                raise KeyframeError("pop_last on an empty keyframe store")
            kf = self.get(self._n - 1)
            self._n -= 1
            self._meta.pop()
            self._bulk.pop()
            self._resident.pop()
            return kf

    # ------------------------------------------------------------------------------------------------ reads
    def get(
        self, i: int, device: torch.device | str | None = None, fields: tuple[str, ...] | None = None
    ) -> Keyframe:
        """Snapshot of keyframe ``i`` with tensors on ``device`` (default: the store's device).

        Offloaded data is copied to ``device`` without changing its residency. ``fields`` limits which bulk
        fields are copied (others are ``None``; ``X``/``C`` are always included). Tensors already on
        ``device`` are the store's own (no copy): treat them as read-only. Fusion replaces them instead of
        writing in place, so a snapshot keeps the values it was taken with.
        """
        dev = self.device if device is None else torch.device(device)
        with self._lock:
            i = self._check_index(i)
            bulk = self._bulk[i]
            wanted = BULK_FIELDS if fields is None else tuple(set(fields) | {"X", "C"})
            data = {k: (v.to(dev, non_blocking=True) if k in wanted else None) for k, v in bulk.items()}
            m = self._meta[i]
            return Keyframe(
                kf_id=i,
                frame_index=m["frame_index"],
                timestamp=m["timestamp"],
                T_WC=self._poses[i].to(dev).clone(),
                N=m["N"],
                N_updates=m["N_updates"],
                score=m["score"],
                K=self.intrinsics(i, dev),
                extra=dict(m["extra"]),
                **{k: data.get(k) for k in BULK_FIELDS},
            )

    def __getitem__(self, i: int) -> Keyframe:
        return self.get(i)

    def last(self) -> Keyframe:
        return self.get(-1)

    def intrinsics(self, i: int, device: torch.device | str | None = None) -> Tensor | None:
        """Keyframe ``i``'s ``K [3, 3]`` (its own, else the store's shared ``K``), or None."""
        with self._lock:
            K = self._meta[self._check_index(i)]["K"]
            K = self.K if K is None else K
            return None if K is None else K.to(self.device if device is None else device).clone()

    def image_size(self, i: int) -> tuple[int, int]:
        with self._lock:
            X = self._bulk[self._check_index(i)]["X"]
            return int(X.shape[0]), int(X.shape[1])

    def frame_index(self, i: int) -> int:
        with self._lock:
            return self._meta[self._check_index(i)]["frame_index"]

    def timestamp(self, i: int) -> float:
        with self._lock:
            return self._meta[self._check_index(i)]["timestamp"]

    def counts(self, i: int) -> tuple[int, int]:
        """``(N, N_updates)`` of keyframe ``i``."""
        with self._lock:
            m = self._meta[self._check_index(i)]
            return m["N"], m["N_updates"]

    def is_resident(self, i: int) -> bool:
        with self._lock:
            return self._resident[self._check_index(i)]

    # ------------------------------------------------------------------------------------------------ poses
    def get_poses(self, ids: Tensor | list[int] | None = None) -> Tensor:
        """Poses ``[n, 8]`` (copy) of keyframes ``ids`` (default all), on the store's device."""
        with self._lock:
            if ids is None:
                return self._poses[: self._n].clone()
            idx = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._n):
                raise KeyframeError(f"keyframe ids out of range [0, {self._n}): {idx.tolist()}")
            return self._poses[idx.to(self.device)].clone()

    def set_poses(self, ids: Tensor | list[int], T_WC: Tensor) -> None:
        """Overwrite the poses of keyframes ``ids`` with ``T_WC [n, 8]``."""
        with self._lock:
            idx = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            T_WC = torch.as_tensor(T_WC).reshape(-1, 8)
            if T_WC.shape[0] != idx.numel():
                raise KeyframeError(f"set_poses: {idx.numel()} ids but {T_WC.shape[0]} poses")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._n):
                raise KeyframeError(f"keyframe ids out of range [0, {self._n}): {idx.tolist()}")
            if not bool(torch.isfinite(T_WC).all()) or bool((T_WC[:, 7] <= 0).any()):
                raise KeyframeError("set_poses: poses must be finite with scale > 0")
            self._poses[idx.to(self.device)] = T_WC.to(self.device, self.pose_dtype)

    def set_pose(self, i: int, T_WC: Tensor) -> None:
        self.set_poses([self._check_index(i)], torch.as_tensor(T_WC).reshape(1, 8))

    # ----------------------------------------------------------------------------------------------- fusion
    def update_pointmap(self, i: int, X: Tensor, C: Tensor) -> None:
        """Fuse a new prediction ``X [H, W, 3]`` (keyframe frame), ``C [H, W]`` into keyframe ``i``.

        The keyframe's bulk data is made resident on the store's device first (it is being worked on).
        """
        with self._lock:
            i = self._check_index(i)
            self.make_resident(i)
            bulk, m = self._bulk[i], self._meta[i]
            state = FusionState(
                X=bulk["X"],
                C=bulk["C"],
                N=torch.tensor(m["N"], device=self.device),
                N_updates=torch.tensor(m["N_updates"], device=self.device),
                score=torch.tensor(m["score"], dtype=bulk["C"].dtype, device=self.device),
            )
            new = fuse_pointmap(
                state, X.to(self.device), C.to(self.device), self.fusion_mode, self.score_kind
            )
            bulk["X"], bulk["C"] = new.X, new.C
            m["N"], m["N_updates"], m["score"] = int(new.N), int(new.N_updates), float(new.score)

    def average_confidence(self, i: int, device: torch.device | str | None = None) -> Tensor:
        """``C / N`` ``[H, W]`` of keyframe ``i``."""
        with self._lock:
            i = self._check_index(i)
            C = self._bulk[i]["C"]
            out = average_confidence(C, self._meta[i]["N"])
            return out.to(self.device if device is None else device)

    def gather_points(
        self, i: int, pix: Tensor, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """``X`` ``[n, 3]`` and average confidence ``[n]`` at flat pixel indices ``pix [n]`` (``u + W·v``).

        Indexing happens where the data lives, so only the gathered points move (to ``device``).
        """
        dev = self.device if device is None else torch.device(device)
        with self._lock:
            i = self._check_index(i)
            bulk = self._bulk[i]
            X, C = bulk["X"], bulk["C"]
            p = pix.to(X.device, torch.long)
            Xg = X.reshape(-1, 3)[p]
            Cg = C.reshape(-1)[p] / max(self._meta[i]["N"], 1)
            return Xg.to(dev, non_blocking=True), Cg.to(dev, non_blocking=True)

    # ---------------------------------------------------------------------------------------------- memory
    def offload(self, keep_recent: int | None = None) -> int:
        """Move bulk data of all but the ``keep_recent`` newest keyframes to the CPU (pinned on CUDA).

        Returns the number of keyframes moved. A no-op move on a CPU store (only the residency flags change).
        """
        k = self.keep_on_device if keep_recent is None else int(keep_recent)
        moved = 0
        with self._lock:
            for i in range(max(self._n - k, 0)):
                if self._resident[i]:
                    self._bulk[i] = {name: self._to_host(t) for name, t in self._bulk[i].items()}
                    self._resident[i] = False
                    moved += 1
        return moved

    def _to_host(self, t: Tensor) -> Tensor:
        if t.device.type == "cpu":
            return t
        host = t.to("cpu")
        if self.device.type == "cuda":
            try:
                host = host.pin_memory()
            except RuntimeError:  # pinned memory exhausted: plain pageable memory still works
                pass
        return host

    def make_resident(self, i: int) -> None:
        """Bring keyframe ``i``'s bulk data back onto the store's device."""
        with self._lock:
            i = self._check_index(i)
            if not self._resident[i]:
                self._bulk[i] = {k: v.to(self.device) for k, v in self._bulk[i].items()}
                self._resident[i] = True

    def memory_by_field(self, i: int) -> dict[str, int]:
        """Bytes per field of keyframe ``i`` (bulk fields, ``T_WC`` and ``K``)."""
        with self._lock:
            i = self._check_index(i)
            out = {name: _nbytes(self._bulk[i].get(name)) for name in BULK_FIELDS}
            out["T_WC"] = 8 * self._poses.element_size()
            out["K"] = _nbytes(self._meta[i]["K"])
            return out

    def memory_report(self) -> dict:
        """Totals: ``n_keyframes, device, device_bytes, host_bytes, total_bytes, per_field, per_keyframe``.

        ``per_keyframe`` is the list of ``memory_by_field`` dicts; ``device_bytes`` counts data on the store's
        device (including the pose buffer), ``host_bytes`` offloaded data.
        """
        with self._lock:
            per_kf = [self.memory_by_field(i) for i in range(self._n)]
            per_field: dict[str, int] = {}
            dev_b = _nbytes(self._poses)
            host_b = 0
            for i, d in enumerate(per_kf):
                for k, v in d.items():
                    per_field[k] = per_field.get(k, 0) + v
                b = sum(v for k, v in d.items() if k not in ("T_WC", "K"))
                if self._resident[i]:
                    dev_b += b
                else:
                    host_b += b
            return {
                "n_keyframes": self._n,
                "device": str(self.device),
                "device_bytes": dev_b,
                "host_bytes": host_b,
                "total_bytes": dev_b + host_b,
                "per_field": per_field,
                "per_keyframe": per_kf,
            }

    # ------------------------------------------------------------------------------------------- save/load
    def state_dict(self) -> dict:
        """Plain dict of CPU tensors and primitives (what :meth:`save` writes)."""
        with self._lock:
            return {
                "format": "online3r_ros.keyframes",
                "version": FORMAT_VERSION,
                "pose_dtype": str(self.pose_dtype).replace("torch.", ""),
                "fusion_mode": self.fusion_mode,
                "score_kind": self.score_kind,
                "K": None if self.K is None else self.K.detach().cpu().clone(),
                "poses": self._poses[: self._n].detach().cpu().clone(),
                "meta": [dict(m) for m in self._meta],
                "bulk": [{k: v.detach().cpu().clone() for k, v in b.items()} for b in self._bulk],
            }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the store atomically (temp file in the same directory, fsync, ``os.replace``).

        ``path`` may be a file or an existing directory (then ``keyframes.pt`` inside it). Returns the file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / DEFAULT_FILE_NAME
        return save_atomic(self.state_dict(), path, sync_dir=True)

    def extend_from_state(self, state: dict) -> None:
        """Set ``K`` and append every keyframe of a :meth:`state_dict` (``poses``, ``meta``, ``bulk``) to
        this store; the format/version header is not checked here (see :meth:`load`)."""
        self.K = state["K"]
        for T, m, b in zip(state["poses"], state["meta"], state["bulk"], strict=True):
            self.append(
                T,
                b["X"],
                b["C"],
                frame_index=m["frame_index"],
                timestamp=m["timestamp"],
                K=m["K"],
                N=m["N"],
                N_updates=m["N_updates"],
                score=m["score"],
                extra=m["extra"],
                **{k: b.get(k) for k in OPTIONAL_FIELDS},
            )

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: torch.device | str | None = None, **kwargs
    ) -> KeyframeStore:
        """Read a store written by :meth:`save` (file or directory); tensors go to ``device``."""
        path = Path(path)
        if path.is_dir():
            path = path / DEFAULT_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"keyframe store file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unpickling/format error with the path
            raise KeyframeError(f"cannot read keyframe store {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != "online3r_ros.keyframes":
            raise KeyframeError(f"{path} is not an online3r_ros keyframe store")
        if state.get("version") != FORMAT_VERSION:
            raise KeyframeError(f"{path}: unsupported keyframe store version {state.get('version')}")
        store = cls(
            device=device,
            pose_dtype=getattr(torch, state["pose_dtype"]),
            fusion_mode=state["fusion_mode"],
            score_kind=state["score_kind"],
            **kwargs,
        )
        store.extend_from_state(state)
        return store
