"""Prompt tuning inside the mapper: the backend hook that turns each integrated keyframe into a step.

:class:`OnlineTuning` is the backend's ``on_keyframe`` hook
(:class:`~online3r_ros.slam.backend.BackendHooks`): when keyframe ``l >= 1`` joins the map, keyframe
``l - 1`` is finished, and the hook takes a :class:`~online3r_ros.tuning.tuner.TuningJob` from the map
(copies: the map may change meanwhile). The step runs in the caller's thread (``background=False``: the
single-thread pipeline, deterministic) or in the hook's own thread (the mapper node, the mapper thread of
``online3r run``), so it never delays tracking nor the map's optimisation. A keyframe arriving while a step
runs waits; when more than ``tuning.max_backlog`` wait, the oldest are dropped (counted:
:attr:`TuningStats.dropped`).

Finished versions are collected by the host with :meth:`OnlineTuning.updates` (between frames / between
mapper steps) and handed to whoever uses the prompts: the backend (its map keeps them), the frontend
(:meth:`~online3r_ros.slam.frontend.TrackerFrontend.offer_prompts`) or a topic.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from .tuner import PromptTuner, PromptUpdate, TuningJob

__all__ = ["TuningStats", "OnlineTuning", "make_online_tuning", "tuning_job"]


def tuning_job(backend: Any, kf_id: int, tuner: PromptTuner) -> TuningJob:
    """The job of new keyframe ``kf_id`` (>= 1) of ``backend``'s map (a MASt3R map: its keyframe frames
    carry network images)."""
    net = backend.source.net_image
    prev = backend.keyframes.get(kf_id - 1, device="cpu")
    partners = tuner.choose_partners(kf_id)
    return TuningJob(
        kf_id=kf_id,
        new=net(backend.kf_frames[kf_id]),
        prev=net(backend.kf_frames[kf_id - 1]),
        fused=prev.X.detach().clone(),
        fused_conf=prev.C.detach().clone(),
        partners=None if partners is None else tuple(net(backend.kf_frames[i]) for i in partners),
    )


@dataclass
class TuningStats:
    """Counters and the last update's figures (for status messages, diagnostics and reports)."""

    steps: int = 0
    dropped: int = 0
    failed: int = 0
    version: int = 0
    last: dict = field(default_factory=dict)
    last_error: str = ""
    history: list[dict] = field(default_factory=list)  # every update's summary, in order

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "dropped": self.dropped,
            "failed": self.failed,
            "version": self.version,
            "last": dict(self.last),
            **({"last_error": self.last_error} if self.last_error else {}),
        }


class OnlineTuning:
    """The backend hook (see the module docstring): ``hook(backend, update)``."""

    def __init__(self, tuner: PromptTuner, background: bool = False, max_backlog: int = 1) -> None:
        self.tuner = tuner
        self.background = bool(background)
        self.max_backlog = int(max_backlog)
        self.stats = TuningStats(version=tuner.version)
        self._jobs: deque[TuningJob] = deque()
        self._done: list[PromptUpdate] = []
        self._wake = threading.Condition()
        self._busy = False
        self._running = True
        self._thread: threading.Thread | None = None
        if self.background:
            self._thread = threading.Thread(target=self._work, name="prompt-tuning", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------------------------------- the hook
    def __call__(self, backend: Any, update: Any) -> None:
        if update.kf_id < 1:
            return
        with torch.inference_mode(False), torch.enable_grad():  # the host may run under either
            job = tuning_job(backend, update.kf_id, self.tuner)
            if not self.background:
                self._run(job)
                return
        with self._wake:
            self._jobs.append(job)
            while len(self._jobs) > self.max_backlog:
                self._jobs.popleft()
                self.stats.dropped += 1
            self._wake.notify_all()

    def _run(self, job: TuningJob) -> None:
        try:
            upd = self.tuner.step(job)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: the pipeline goes on untuned
            with self._wake:
                self.stats.failed += 1
                self.stats.last_error = f"keyframe {job.kf_id}: {type(exc).__name__}: {exc}"
            return
        with self._wake:
            self._done.append(upd)
            self.stats.steps += 1
            self.stats.version = upd.version
            self.stats.last = upd.summary()
            self.stats.history.append(self.stats.last)

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._jobs:
                    self._wake.wait()
                if not self._running:
                    return
                job = self._jobs.popleft()
                self._busy = True
            self._run(job)
            with self._wake:
                self._busy = False
                self._wake.notify_all()

    # -------------------------------------------------------------------------------------------- results
    def updates(self) -> list[PromptUpdate]:
        """The versions finished since the last call (oldest first)."""
        with self._wake:
            done, self._done = self._done, []
        return done

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until no job is queued or running (background mode); False on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def close(self) -> None:
        """Stop the background thread after its current step (queued jobs are dropped); idempotent."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()


def make_online_tuning(config: Any, source: Any, background: bool) -> OnlineTuning | None:
    """The tuning hook for ``config`` (``None`` when ``tuning.enabled`` is off); ``ValueError`` when the
    source has nothing to tune."""
    if not config.tuning.enabled:
        return None
    if not getattr(source, "tunable", False):
        raise ValueError(
            f"tuning.enabled: the {type(source).__name__} has no prompts to tune (use the MASt3R source)"
        )
    tuner = PromptTuner(source.engine, config.tuning, seed=config.system.seed)
    return OnlineTuning(tuner, background=background, max_backlog=config.tuning.max_backlog)
