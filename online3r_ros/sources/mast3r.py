"""MASt3R pointmap source: the network's pointmaps for the SLAM pipeline (MASt3R-SLAM's three calls).

- ``prepare``: the reference pre-processing (long side 512, crop to multiples of 16, or the 224 mode), the
  intrinsics mapped to the network image (calibrated mode), a cache key; the encoder runs lazily on first
  use and its features stay attached to the frame's ``NetImage`` in ``SourceFrame.cache`` (so keyframes
  are never re-encoded, whatever the engine's LRU holds).
- ``predict_mono``: view 1 of ``decoder(f, f)`` (INIT / RELOC).
- ``predict_asymmetric``: one decoder call on (frame, keyframe): ``X_ff, C_ff, D_ff, Q_ff`` and
  ``X_kf, C_kf, D_kf, Q_kf``, both in the frame's coordinates. The pose guess is ignored.
- ``predict_symmetric``: all keyframe pairs and both directions in one decoder call (pairs of equal size).

Pointmaps are in network units (``metric = False``: Sim(3) tracking, as MASt3R-SLAM), ``C >= 1``,
``Q >= 0``, ``D`` 24-d unit descriptors. Returned tensors are normal tensors (copied out of the engine's
inference mode), so the pipeline may modify them in place.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from online3r_ros.model.inference import MASt3REngine, NetImage, Prediction
from online3r_ros.model.preprocess import preprocess_image, scale_intrinsics
from online3r_ros.sources.base import (
    AsymmetricPrediction,
    Pointmap,
    PointmapSource,
    SourceError,
    SourceFrame,
    SymmetricPrediction,
    intrinsics_tensor,
)

Tensor = torch.Tensor

__all__ = ["MASt3RSource", "Mast3rSource"]

_NET = "mast3r_net"  # SourceFrame.cache keys
_TRANSFORM = "mast3r_transform"


def _default_precision(device: torch.device) -> str:
    # float16 and bfloat16 run the tracking step equally fast on an H200 (11.9 ms), and float16 stays 5x
    # closer to float32 (median point deviation 0.28% vs 1.45%, benchmarks/gpu_check.sh); the
    # point/confidence heads stay float32 either way.
    return "float16" if device.type == "cuda" else "float32"


def _to_numpy_image(image: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise SourceError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    return image


def _normal(t: Tensor) -> Tensor:
    """A normal (non-inference) tensor: inference tensors cannot be modified in place later."""
    return t.clone() if t.is_inference() else t


def _pointmap(p: Prediction) -> Pointmap:
    return Pointmap(_normal(p.X), _normal(p.C), _normal(p.D), _normal(p.Q))


class MASt3RSource(PointmapSource):
    """Pointmaps from a MASt3R network.

    Args:
        model: a MASt3R network (``build_mast3r`` / ``load_mast3r``) or a ready :class:`MASt3REngine`.
        device: torch device of the network and the pointmaps.
        img_size: 512 (reference default) or 224.
        square_ok: keep square 512 images square (reference: crop them to 4:3).
        precision: engine precision (default: float16 on CUDA, float32 on CPU).
        cache_size: engine LRU size (encoder features of frames not held by the pipeline).
        cuda_graphs: replay the tracking step as a CUDA graph on CUDA (see ``MASt3REngine``).
        use_calib: calibrated mode: ``prepare`` requires ``K`` and maps it to the network image.
        intrinsics_convention: ``'pixel_center'`` (exact) or ``'reference'`` (MASt3R-SLAM bit for bit); see
            :func:`online3r_ros.model.preprocess.scale_intrinsics`.
    """

    metric = False
    calibrated = False
    has_descriptors = True
    pose_dependent = False
    tunable = True

    def __init__(
        self,
        model: torch.nn.Module | MASt3REngine,
        device: str | torch.device = "cpu",
        *,
        img_size: int = 512,
        square_ok: bool = False,
        precision: str | None = None,
        cache_size: int = 64,
        cuda_graphs: bool = True,
        use_calib: bool = False,
        intrinsics_convention: Literal["pixel_center", "reference"] = "pixel_center",
    ) -> None:
        super().__init__(device)
        if img_size not in (224, 512):
            raise SourceError(f"img_size must be 224 or 512, got {img_size!r}")
        if intrinsics_convention not in ("pixel_center", "reference"):
            raise SourceError(
                f"intrinsics_convention must be 'pixel_center' or 'reference', got {intrinsics_convention!r}"
            )
        if isinstance(model, MASt3REngine):
            self.engine = model
            self.device = model.device
        else:
            try:
                self.engine = MASt3REngine(
                    model,
                    self.device,
                    precision or _default_precision(self.device),
                    cache_size=cache_size,
                    cuda_graphs=cuda_graphs,
                )
            except ValueError as exc:
                raise SourceError(f"MASt3R engine: {exc}") from exc
        self.img_size = int(img_size)
        self.square_ok = bool(square_ok)
        self.calibrated = bool(use_calib)
        self.intrinsics_convention = intrinsics_convention
        # cache keys unique beyond this source: frames of a loaded map keep the keys they were made with
        self._keys = zip(itertools.repeat(uuid.uuid4().hex), itertools.count())
        self._prompt_version = 0

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any
    ) -> MASt3RSource:
        """Load the network from a checkpoint (``.pth`` / Hugging Face folder, see ``load_mast3r``)."""
        from online3r_ros.model.checkpoint import load_mast3r

        return cls(load_mast3r(path, device=device), device, **kwargs)

    @classmethod
    def from_config(cls, cfg: Any, device: str | torch.device | None = None) -> MASt3RSource:
        """From a ``SlamConfig``: ``source.checkpoint``, ``img_size``, ``precision`` (``auto``: float16 on
        CUDA, float32 on CPU), ``cache_size``, ``cuda_graphs``; ``system.use_calib``; ``device`` (else
        ``system.device``)."""
        src = cfg.source
        dev = torch.device(device if device is not None else cfg.system.device)
        return cls.from_checkpoint(
            src.checkpoint,
            dev,
            img_size=src.img_size,
            precision=None if src.precision == "auto" else src.precision,
            cache_size=src.cache_size,
            cuda_graphs=src.cuda_graphs,
            use_calib=cfg.system.use_calib,
        )

    # ------------------------------------------------------------------------------------------------ prepare
    def prepare(
        self,
        image: np.ndarray | Tensor,
        *,
        index: int = 0,
        timestamp: float = 0.0,
        depth: np.ndarray | Tensor | None = None,
        K: np.ndarray | Tensor | None = None,
    ) -> SourceFrame:
        """Pre-process one image (``depth`` is not used by the network and is dropped)."""
        try:
            prep = preprocess_image(_to_numpy_image(image), size=self.img_size, square_ok=self.square_ok)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"image: {exc}") from None
        K_work = None
        if K is not None:
            Kt = intrinsics_tensor(K, "cpu", torch.float64)
            K_work = scale_intrinsics(Kt, prep.transform, self.intrinsics_convention).to(
                self.device, torch.float32
            )
        elif self.calibrated:
            raise SourceError("MASt3RSource.prepare: K is required in calibrated mode (use_calib=True)")
        net = NetImage(next(self._keys), prep.img.to(self.device), prep.true_shape.to(self.device))
        cache = {_NET: net, _TRANSFORM: prep.transform}
        return SourceFrame(int(index), float(timestamp), prep.uimg.to(self.device), None, K_work, cache)

    # ------------------------------------------------------------------------------------------------ predict
    def _nets(self, frames: Sequence[SourceFrame]) -> list[NetImage]:
        """Network inputs of ``frames`` (their encoder features stay attached to them, see ``NetImage``)."""
        nets = []
        for fr in frames:
            net = fr.cache.get(_NET)
            if not isinstance(net, NetImage):
                raise SourceError(f"frame {fr.index} was not prepared by MASt3RSource")
            nets.append(net)
        return nets

    def net_image(self, frame: SourceFrame) -> NetImage:
        """The network input of a frame this source prepared (its encoder features stay attached)."""
        return self._nets([frame])[0]

    # ------------------------------------------------------------------------------------------------ prompts
    @property
    def prompt_version(self) -> int:
        """Version of the prompts in use (0: none, the plain network)."""
        return self._prompt_version

    def set_prompts(self, prompts: Tensor | None, version: int) -> None:
        """Use ``prompts [enc_depth, T, Denc]`` (``None``: the plain network) as version ``version`` from
        the next prediction on; the same version again is a no-op. Cached encoder features of older prompts
        are re-encoded when next used (the engine's ``stale_features='reencode'``)."""
        if int(version) == self._prompt_version:
            return
        if prompts is not None:
            self.engine.model.check_prompts(prompts)
            prompts = prompts.detach().to(self.device, torch.float32)
        self.engine.set_prompts(prompts)
        self._prompt_version = int(version)

    def predict_mono(self, frame: SourceFrame) -> Pointmap:
        return _pointmap(self.engine.mono(self._nets([frame])[0]))

    def predict_asymmetric(
        self, frame: SourceFrame, keyframe: SourceFrame, T_CkCf_guess: Tensor | None = None
    ) -> AsymmetricPrediction:
        nets = self._nets([frame, keyframe])
        ff, kf = self.engine.asymmetric(nets[0], nets[1])
        return AsymmetricPrediction(_pointmap(ff), _pointmap(kf))

    def predict_symmetric(
        self,
        pairs: Sequence[tuple[SourceFrame, SourceFrame]],
        T_CiCj_guesses: Sequence[Tensor] | None = None,
    ) -> list[SymmetricPrediction]:
        if T_CiCj_guesses is not None and len(T_CiCj_guesses) != len(pairs):
            raise SourceError(f"{len(T_CiCj_guesses)} pose guesses for {len(pairs)} pairs")
        if not pairs:
            return []
        frames = [f for pair in pairs for f in pair]
        nets = self._nets(frames)
        preds = self.engine.symmetric_list([(nets[2 * p], nets[2 * p + 1]) for p in range(len(pairs))])
        return [
            SymmetricPrediction(
                _pointmap(p.ii[0]), _pointmap(p.ji[0]), _pointmap(p.jj[0]), _pointmap(p.ij[0])
            )
            for p in preds
        ]


Mast3rSource = MASt3RSource  # the name the pipeline's runner imports
