"""The mapper in a thread beside the tracker: the tracker never waits for edges, optimisation or tuning.

:class:`MapperThread` runs a :class:`~online3r_ros.slam.backend.MapperBackend` in one worker thread, the
in-process counterpart of the mapper node (MASt3R-SLAM's multi-process mode): the host submits the
frontend's packets and collects the :class:`~online3r_ros.slam.packets.MapUpdate` s that are ready, never
blocking on the backend. On CUDA the worker issues its kernels on a stream of its own, so the GPU overlaps
the mapper's work with the tracker's; each packet's producer work is awaited through a CUDA event, and each
batch of updates is complete on the device before the host sees it.

Ownership: once submitted, packets belong to the worker (their keyframe pointmaps are copied at submission,
so later in-place fusion on the tracker side cannot race with the mapper). Every other access to the
backend (results, save) must come after :meth:`MapperThread.flush`. An exception in the worker is re-raised
in the host by the next call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque

import torch

from .backend import MapperBackend
from .packets import KeyframePacket, MapUpdate, ObservationPacket

__all__ = ["MapperThread"]


class MapperThread:
    """``MapperThread(backend)``: :meth:`submit` packets, :meth:`updates` collects, :meth:`flush` waits."""

    def __init__(self, backend: MapperBackend) -> None:
        self.backend = backend
        cuda = backend.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=backend.device) if cuda else None
        self._inbox: deque = deque()
        self._outbox: list[MapUpdate] = []
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="online3r-mapper", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------------------- host side
    def submit(self, observation: ObservationPacket | None, keyframe: KeyframePacket | None) -> None:
        """Hand one frame's packets to the mapper (either may be ``None``); never blocks on the backend."""
        if observation is None and keyframe is None:
            return
        if keyframe is not None:
            keyframe = dataclasses.replace(keyframe, X=keyframe.X.clone(), C=keyframe.C.clone())
        event = None
        if self._stream is not None:
            event = torch.cuda.Event()
            event.record()  # the packets' producer kernels on the host's current stream
        with self._cond:
            self._raise_error()
            self._inbox.append((observation, keyframe, event))
            self._cond.notify_all()

    def updates(self) -> list[MapUpdate]:
        """The map updates finished since the last call (oldest first); never blocks on the backend."""
        with self._cond:
            self._raise_error()
            out, self._outbox = self._outbox, []
        return out

    def flush(self) -> list[MapUpdate]:
        """Wait until every submitted packet is processed; returns the updates not collected yet."""
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or (not self._inbox and not self._busy))
        return self.updates()

    def close(self) -> None:
        """Finish the submitted work and stop the worker (idempotent)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._raise_error()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"mapper thread failed: {error}") from error

    # ------------------------------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._inbox or self._stop)
                if not self._inbox:
                    return
                batch = list(self._inbox)
                self._inbox.clear()
                self._busy = True
            try:
                updates = self._process(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the host thread
                with self._cond:
                    self._error, self._busy = exc, False
                    self._cond.notify_all()
                return
            with self._cond:
                self._outbox.extend(updates)
                self._busy = False
                self._cond.notify_all()

    def _process(self, batch: list) -> list[MapUpdate]:
        if self._stream is None:
            return self._feed(batch)
        with torch.cuda.stream(self._stream):
            for _, _, event in batch:
                self._stream.wait_event(event)
            updates = self._feed(batch)
        self._stream.synchronize()  # complete on the device before the host reads poses
        return updates

    def _feed(self, batch: list) -> list[MapUpdate]:
        for observation, keyframe, _ in batch:
            self.backend.submit(observation, keyframe)
        return self.backend.step()
