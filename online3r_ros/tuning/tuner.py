"""The prompt tuner: Online3R's deep encoder prompts, learned by AdamW on the consistency losses.

One :meth:`PromptTuner.step` per new keyframe ``K_l`` (:class:`TuningJob`):

- local: the previous keyframe ``K_{l-1}`` (finished now) is predicted again in the pair
  ``(K_{l-1}, K_l)`` with the current prompts and compared with its fused canonical pointmap;
- global: ``K_l`` is predicted with two different random older keyframes as partners; the two predictions
  must agree (skipped while the map holds fewer than two older keyframes);
- ``loss = λ·local + (1 − λ)·global`` (λ = ``tuning.local_weight``), ``iters_per_keyframe`` AdamW steps.

The four images go through the encoder in one batch and the three pairs through the decoder in one batch
(view 1 = ``[K_{l-1}, K_l, K_l]``, view 2 = ``[K_l, K_h1, K_h2]``). Only the prompts get gradients: the
engine froze the network (``requires_grad=False``), and :func:`check_frozen` proves it after a step. On
CUDA the network's reduced precision (``source.precision``) carries the step, with a gradient scaler for
float16; a float32 network runs under bfloat16 autocast. ``tuning.grad_checkpointing`` recomputes block
activations in the backward pass instead of keeping them.

Every step yields a :class:`PromptUpdate`: a detached CPU copy of the prompts with a version, the losses
before (at the first iteration) and after (one more forward pass with the new prompts), the time and the
iterations. Consumers swap to it between frames; the tuner's own tensor never leaves it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from ..model.inference import MASt3REngine, NetImage
from ..slam.config import TuningConfig
from ..slam.packets import PromptUpdate
from .losses import global_consistency_loss, local_consistency_loss, valid_pixels

Tensor = torch.Tensor

__all__ = ["TuningJob", "PromptUpdate", "PromptTuner", "check_frozen"]


@dataclass(frozen=True)
class TuningJob:
    """What one step needs: keyframe ``kf_id`` (``new``), its predecessor ``prev`` with its fused canonical
    pointmap ``fused [H, W, 3]`` and confidence ``fused_conf [H, W]``, and two different older keyframes
    ``partners`` for the global loss (``None``: not enough keyframes yet)."""

    kf_id: int
    new: NetImage
    prev: NetImage
    fused: Tensor
    fused_conf: Tensor
    partners: tuple[NetImage, NetImage] | None = None


def check_frozen(model: torch.nn.Module, reference: dict[str, Tensor]) -> None:
    """Raise ``AssertionError`` unless every parameter of ``model`` equals ``reference`` (a state dict copy)
    bit for bit and none requires grad."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            raise AssertionError(f"network parameter {name} requires grad")
        if not torch.equal(p.detach().cpu(), reference[name].cpu()):
            raise AssertionError(f"network parameter {name} changed")


class PromptTuner:
    """Owns the learnable prompts of one MASt3R engine and their optimiser (see the module docstring).

    Args:
        engine: the network (frozen by the engine).
        config: the ``tuning`` section.
        seed: seeds the choice of global-loss partners.
        prompts: initial prompts ``[enc_depth, T, Denc]`` (e.g. loaded with a map), default zeros.
        version: the version of ``prompts`` (the next update is ``version + 1``).
    """

    def __init__(
        self,
        engine: MASt3REngine,
        config: TuningConfig,
        seed: int = 0,
        prompts: Tensor | None = None,
        version: int = 0,
    ) -> None:
        self.engine, self.config = engine, config
        model = engine.model
        init = model.new_prompts(config.num_tokens) if prompts is None else prompts
        model.check_prompts(init)
        self.prompts = torch.nn.Parameter(init.detach().to(engine.device, torch.float32).clone())
        self.optimizer = torch.optim.AdamW([self.prompts], lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.version = int(version)
        cuda = engine.device.type == "cuda"
        body = model.body_dtype
        self._scaler = torch.amp.GradScaler("cuda", enabled=cuda and body == torch.float16)
        self._autocast = cuda and body == torch.float32
        model.grad_checkpointing = bool(config.grad_checkpointing)

    # ------------------------------------------------------------------------------------------- partners
    def choose_partners(self, num_older: int) -> tuple[int, int] | None:
        """Two different keyframe ids in ``[0, num_older)`` drawn with the tuner's generator, or ``None``
        when fewer than two exist."""
        if num_older < 2:
            return None
        a, b = torch.randperm(num_older, generator=self.generator)[:2].tolist()
        return int(a), int(b)

    # --------------------------------------------------------------------------------------------- losses
    def losses(self, job: TuningJob) -> dict[str, Tensor]:
        """``{"loss", "local", "global"}`` scalars for ``job`` with the current prompts (differentiable
        w.r.t. them when autograd is on; ``global`` is NaN without partners)."""
        nets = [job.prev, job.new, *(job.partners or ())]
        if len({n.shape for n in nets}) != 1:
            sizes = [n.shape for n in nets]
            raise ValueError(f"keyframe {job.kf_id}: tuning images of different sizes {sizes}")
        imgs = torch.cat([n.img.to(self.engine.device) for n in nets])
        shapes = torch.cat([torch.as_tensor(n.true_shape) for n in nets])
        ctx = torch.autocast("cuda", torch.bfloat16) if self._autocast else contextlib.nullcontext()
        with ctx:
            feat, pos = self.engine.encode_grad(imgs, shapes, self.prompts)
            first = [0, 1, 1][: len(nets) - 1]  # view 1: prev, new, new
            second = [1, 2, 3][: len(nets) - 1]  # view 2: new, h1, h2
            pred, _ = self.engine.decode_grad(
                feat[first], pos[first], job.new.shape, feat[second], pos[second], job.new.shape
            )
        X = pred.X.float()
        fused = job.fused.to(X.device, torch.float32)[None]
        conf = job.fused_conf.to(X.device, torch.float32)[None]
        valid = valid_pixels(fused, conf)
        local = local_consistency_loss(X[:1], fused, valid, conf if self.config.conf_weighted else None)
        if job.partners is None:
            return {"loss": local, "local": local, "global": torch.full_like(local, float("nan"))}
        glob = global_consistency_loss(X[1:2], X[2:3])
        lam = self.config.local_weight
        return {"loss": lam * local + (1.0 - lam) * glob, "local": local, "global": glob}

    # ----------------------------------------------------------------------------------------------- step
    def step(self, job: TuningJob) -> PromptUpdate:
        """``iters_per_keyframe`` optimiser steps on ``job``; returns the new version of the prompts."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError("PromptTuner.step() called inside torch.inference_mode")
        start = time.perf_counter()
        before: dict[str, float] = {}
        iters = self.config.iters_per_keyframe
        for _ in range(iters):
            self.optimizer.zero_grad(set_to_none=True)
            terms = self.losses(job)
            if not before:
                before = {k: float(v.detach()) for k, v in terms.items()}
            self._scaler.scale(terms["loss"]).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        if self.engine.device.type == "cuda":
            torch.cuda.synchronize(self.engine.device)
        elapsed = (time.perf_counter() - start) * 1e3
        with torch.no_grad():
            after = {k: float(v) for k, v in self.losses(job).items()}
        self.version += 1
        return PromptUpdate(
            version=self.version,
            prompts=self.prompts.detach().to("cpu", torch.float32).clone(),
            kf_id=job.kf_id,
            loss_before=before["loss"],
            loss_after=after["loss"],
            local_before=before["local"],
            local_after=after["local"],
            global_before=before["global"],
            global_after=after["global"],
            iters=iters,
            time_ms=elapsed,
        )

    def restart_from(self, update: PromptUpdate) -> None:
        """Continue from ``update``'s prompts and version (a loaded map or prompt file) with a fresh
        optimiser."""
        self.engine.model.check_prompts(update.prompts)
        with torch.no_grad():
            self.prompts.copy_(update.prompts.to(self.prompts.device, torch.float32))
        self.optimizer = torch.optim.AdamW(
            [self.prompts], lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.version = int(update.version)

    def state_dict(self) -> dict:
        """Everything to continue tuning bit-identically: prompts, version, optimiser and generator state."""
        return {
            "prompts": self.prompts.detach().cpu().clone(),
            "version": self.version,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.restart_from(PromptUpdate(int(state["version"]), state["prompts"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def current(self) -> PromptUpdate:
        """The current prompts as an update (no step: e.g. to announce loaded prompts)."""
        return PromptUpdate(self.version, self.prompts.detach().to("cpu", torch.float32).clone())
