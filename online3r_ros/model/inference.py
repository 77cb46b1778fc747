"""MASt3R inference engine: encoder-feature cache, mono / asymmetric / symmetric inference, grad path.

The three calls MASt3R-SLAM makes (mast3r_slam_notes.md §2.2, §2.4), on top of the low-level network API
(``model.encode / decode / heads``):

* :meth:`MASt3REngine.mono` — the decoder with the same features for both views; returns view 1
  (initialisation, relocalisation).
* :meth:`MASt3REngine.asymmetric` — one decoder call on (frame, keyframe): the frame's own pointmap and the
  keyframe's pointmap, both in the frame's coordinates (tracking).
* :meth:`MASt3REngine.symmetric` — both directions of keyframe pairs (backend edges). Unlike the reference,
  which loops over pairs and directions, all pairs of the same image size and both directions go through
  ONE decoder call (batch 2P) and one call per head.

Encoder features are cached per frame key (LRU-bounded, explicit :meth:`~MASt3REngine.evict`) and attached
to the :class:`NetImage` itself (so frames the caller keeps, e.g. keyframes, are never re-encoded); cache
misses of one call are encoded together. The tracking path runs under :func:`torch.inference_mode`.

Precision: ``float32`` anywhere; ``float16`` (CUDA) / ``bfloat16`` store the encoder, decoder and
descriptor-MLP weights in that dtype (:meth:`MASt3R.set_precision`, no per-call autocast casts); the DPT
heads (points, confidences) always run in float32 on upcast tokens, as the reference.

CUDA graphs: on CUDA the tracking step (:meth:`MASt3REngine.asymmetric` on a frame not yet encoded: encoder,
decoder against the keyframe's cached features, both heads) is recorded once per image size as a CUDA graph
and replayed (:class:`~online3r_ros.model.graphs.GraphedFunction`); the frame's features are cached as
usual. Same function, one launch per frame instead of ~2,000.

Gradient path (prompt tuning): :meth:`~MASt3REngine.encode_grad`, :meth:`~MASt3REngine.decode_grad` and
:meth:`~MASt3REngine.pair_grad` run without inference mode, so gradients reach the prompts (and only them:
the engine freezes the network). **Cache entries are inference tensors** (created under ``inference_mode``):
outside inference mode they cannot be modified in place, and PyTorch refuses to save them for backward in an
op whose other operand requires grad ("Inference tensors cannot be saved for backward"). Use
:meth:`~MASt3REngine.features_for_grad`, which returns normal-tensor copies, to feed cached (frozen)
features into the grad path; never feed raw cache entries to code that differentiates through them.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from online3r_ros.model.graphs import GraphedFunction
from online3r_ros.model.preprocess import PreparedImage

__all__ = ["EncodedImage", "MASt3REngine", "NetImage", "Prediction", "PairPrediction", "EngineStats"]

Precision = Literal["float32", "float16", "bfloat16"]
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class NetImage:
    """One network input: a cache ``key`` (unique per image, e.g. a frame counter), ``img [1,3,H,W]`` in
    [-1, 1] and ``true_shape [1,2]`` (H, W) int.

    The engine also attaches the encoder output to the object itself (``attached``): features live as long
    as the caller keeps the ``NetImage`` (e.g. a keyframe), whatever the engine's bounded LRU evicts.
    """

    key: Hashable
    img: torch.Tensor
    true_shape: torch.Tensor
    attached: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.img, torch.Tensor)
            or self.img.dim() != 4
            or tuple(self.img.shape[:2]) != (1, 3)
        ):
            got = tuple(self.img.shape) if isinstance(self.img, torch.Tensor) else type(self.img).__name__
            raise ValueError(f"NetImage.img must be a [1, 3, H, W] tensor, got {got}")
        h, w = self.img.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"NetImage.img height/width must be multiples of 16, got {h}x{w}")
        ts = torch.as_tensor(self.true_shape)
        if ts.shape != (1, 2) or ts.tolist() != [[h, w]]:
            raise ValueError(f"NetImage.true_shape must be [[{h}, {w}]], got {ts.tolist()}")

    @classmethod
    def from_prepared(cls, key: Hashable, prepared: PreparedImage) -> NetImage:
        return cls(key=key, img=prepared.img, true_shape=prepared.true_shape)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.img.shape[-2]), int(self.img.shape[-1])


@dataclass
class EncodedImage:
    """Cached encoder output of one image: ``feat [1,N,Denc]``, ``pos [1,N,2]``, ``shape (H, W)`` and
    ``version`` = ``(engine id, prompt version)`` it was computed with (features attached to an image by
    another engine, e.g. before a map was saved and loaded, are never mistaken for this engine's)."""

    feat: torch.Tensor
    pos: torch.Tensor
    shape: tuple[int, int]
    version: tuple[str, int]


@dataclass
class Prediction:
    """Head outputs of B images: ``X [B,H,W,3]`` points, ``C [B,H,W]`` confidence (>= 1),
    ``D [B,H,W,d]`` unit descriptors, ``Q [B,H,W]`` descriptor confidence (>= 0). float32."""

    X: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    Q: torch.Tensor

    def __getitem__(self, idx: int | slice) -> Prediction:
        return Prediction(self.X[idx], self.C[idx], self.D[idx], self.Q[idx])

    RESULT_KEYS = ("pts3d", "conf", "desc", "desc_conf")  # the head's result keys of X, C, D, Q

    @classmethod
    def from_result(cls, res: dict[str, torch.Tensor]) -> Prediction:
        return cls(*(res[k] for k in cls.RESULT_KEYS))

    @classmethod
    def cat(cls, preds: Sequence[Prediction]) -> Prediction:
        return cls(*(torch.cat([getattr(p, k) for p in preds]) for k in "XCDQ"))


@dataclass
class PairPrediction:
    """Symmetric prediction of P keyframe pairs ``(i, j)``, each field batched over the pairs ``[P,...]``:
    ``ii`` (i in i), ``ji`` (j's pixels in i's coordinates), ``jj`` (j in j), ``ij`` (i's pixels in j's)."""

    ii: Prediction
    ji: Prediction
    jj: Prediction
    ij: Prediction


@dataclass
class EngineStats:
    """Counters: encoder/decoder/head calls (one call may hold a batch), images encoded, cache hits/misses."""

    encoder_calls: int = 0
    images_encoded: int = 0
    decoder_calls: int = 0
    graph_replays: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    evictions: int = 0


class MASt3REngine:
    """Runs a MASt3R network (``online3r_ros.model.build_mast3r`` / ``load_mast3r``) for SLAM.

    Args:
        model: the network. The engine owns it: moved to ``device``, cast to ``precision``, put in eval
            mode and frozen (``requires_grad=False``), all in place.
        device: defaults to the model's device.
        precision: ``'float32'`` (default), ``'float16'`` (CUDA only) or ``'bfloat16'``: dtype of the encoder,
            decoder and descriptor-MLP weights; the DPT heads (points, confidences) always float32.
        cache_size: max cached encoder outputs (LRU). 0 disables caching.
        stale_features: what to do with a cached entry computed with older prompts: ``'reencode'`` (default)
            or ``'reuse'`` (keep stale features, as MASt3R-SLAM keeps keyframe features).
        cuda_graphs: on CUDA, replay the tracking step as a CUDA graph (see the module docstring).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device | None = None,
        precision: Precision = "float32",
        cache_size: int = 64,
        stale_features: Literal["reencode", "reuse"] = "reencode",
        cuda_graphs: bool = True,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {tuple(_DTYPES)}, got {precision!r}")
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        if precision == "float16" and self.device.type != "cuda":
            raise ValueError("precision='float16' needs a CUDA device (use 'float32' or 'bfloat16' on CPU)")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
        if stale_features not in ("reencode", "reuse"):
            raise ValueError(f"stale_features must be 'reencode' or 'reuse', got {stale_features!r}")
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.model.set_precision(_DTYPES[precision])
        self.precision: Precision = precision
        self._tracking_step = GraphedFunction(self._tracking_fn, enabled=cuda_graphs)
        self.cache_size = cache_size
        self.stale_features = stale_features
        self.stats = EngineStats()
        self._cache: OrderedDict[Hashable, EncodedImage] = OrderedDict()
        self._lock = threading.RLock()
        self._prompts: torch.Tensor | None = None
        self._prompt_version = 0
        self._id = uuid.uuid4().hex  # tells this engine's cached features from any other's

    # ------------------------------------------------------------------------------------------ prompts
    @property
    def prompts(self) -> torch.Tensor | None:
        """Deep prompts ``[enc_depth, T, Denc]`` used by every encoder call, or ``None``."""
        return self._prompts

    @property
    def cuda_graphs(self) -> bool:
        """Whether the tracking step is replayed as a CUDA graph on CUDA."""
        return self._tracking_step.enabled

    @property
    def prompt_version(self) -> int:
        return self._prompt_version

    def set_prompts(self, prompts: torch.Tensor | None) -> None:
        """Use ``prompts`` from now on (the tensor is kept by reference: in-place updates by an optimiser are
        seen, then call :meth:`prompts_updated`). Cached features become stale."""
        self._prompts = prompts
        self.prompts_updated()

    def prompts_updated(self) -> None:
        """Mark cached features as computed with old prompts (after an in-place prompt update)."""
        with self._lock:
            self._prompt_version += 1

    # --------------------------------------------------------------------------------------------- cache
    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._cache

    def cached_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._cache)

    def put(self, key: Hashable, enc: EncodedImage) -> None:
        """Insert an entry (e.g. features a caller kept for a frame after the LRU dropped them)."""
        if not isinstance(enc, EncodedImage):
            raise TypeError(f"put() needs an EncodedImage, got {type(enc).__name__}")
        self._store(key, enc)

    def evict(self, key: Hashable) -> bool:
        """Drop one cache entry; returns whether it existed."""
        with self._lock:
            found = self._cache.pop(key, None) is not None
            self.stats.evictions += int(found)
            return found

    def clear_cache(self) -> None:
        with self._lock:
            self.stats.evictions += len(self._cache)
            self._cache.clear()

    def _usable(self, enc: EncodedImage | None, frame: NetImage) -> bool:
        return (
            enc is not None
            and enc.shape == frame.shape
            and enc.feat.device == self.device  # features another engine attached on another device
            and enc.version[0] == self._id
            and (self.stale_features == "reuse" or enc.version[1] == self._prompt_version)
        )

    def _lookup(self, frame: NetImage) -> EncodedImage | None:
        with self._lock:
            enc = self._cache.get(frame.key)
            if enc is not None and not self._usable(enc, frame):
                del self._cache[frame.key]
                enc = None
            if enc is not None:
                self._cache.move_to_end(frame.key)
                return enc
            enc = frame.attached.get("enc")
            if self._usable(enc, frame):
                self._store(frame.key, enc)
                return enc
            return None

    def _store(self, key: Hashable, enc: EncodedImage) -> None:
        if self.cache_size == 0:
            return
        with self._lock:
            self._cache[key] = enc
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
                self.stats.evictions += 1

    def _encode_batch(self, imgs: torch.Tensor, true_shape: torch.Tensor, prompts: torch.Tensor | None):
        self.stats.encoder_calls += 1
        self.stats.images_encoded += int(imgs.shape[0])
        return self.model.encode(imgs, true_shape, prompts=prompts)

    @torch.inference_mode()
    def encode_many(self, frames: Sequence[NetImage]) -> list[EncodedImage]:
        """Encoder features of ``frames`` (cached ones reused; misses of equal size encoded in one call)."""
        out: list[EncodedImage | None] = []
        misses: dict[tuple[int, int], list[int]] = {}
        first_of_key: dict[Hashable, int] = {}
        for i, fr in enumerate(frames):
            enc = self._lookup(fr)
            if enc is None and fr.key in first_of_key:
                out.append(None)  # same frame twice in one call: encode once
                continue
            out.append(enc)
            if enc is None:
                self.stats.cache_misses += 1
                first_of_key[fr.key] = i
                misses.setdefault(fr.shape, []).append(i)
            else:
                self.stats.cache_hits += 1
        version = (self._id, self._prompt_version)
        for shape, idx in misses.items():
            imgs = torch.cat([frames[i].img for i in idx]).to(self.device, non_blocking=True)
            ts = torch.cat([torch.as_tensor(frames[i].true_shape) for i in idx]).to(self.device)
            feat, pos = self._encode_batch(imgs, ts, self._prompts)
            for b, i in enumerate(idx):
                enc = EncodedImage(feat[b : b + 1], pos[b : b + 1], shape, version)
                out[i] = enc
                self._store(frames[i].key, enc)
        for i, fr in enumerate(frames):
            if out[i] is None:
                out[i] = out[first_of_key[fr.key]]
            fr.attached["enc"] = out[i]
        return out  # type: ignore[return-value]

    def features(self, frame: NetImage) -> EncodedImage:
        """Encoder features of one frame (from the cache when possible). Inference tensors."""
        return self.encode_many([frame])[0]

    # --------------------------------------------------------------------------------------- decode+heads
    def _decode_heads(
        self,
        feat1: torch.Tensor,
        pos1: torch.Tensor,
        shape1: tuple[int, int],
        feat2: torch.Tensor,
        pos2: torch.Tensor,
        shape2: tuple[int, int],
    ) -> tuple[Prediction, Prediction]:
        self.stats.decoder_calls += 1
        dec1, dec2 = self.model.decode(feat1, pos1, feat2, pos2)
        res1, res2 = self.model.heads(dec1, dec2, shape1, shape2)
        return Prediction.from_result(res1), Prediction.from_result(res2)

    def _tracking_fn(
        self, img: torch.Tensor, kf_feat: torch.Tensor, kf_pos: torch.Tensor, *prompts: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The tracking step as a pure tensor function (graph-recordable): frame ``img [1,3,H,W]`` against the
        keyframe's features (same size) -> ``(feat, pos, X_ff, C_ff, D_ff, Q_ff, X_kf, C_kf, D_kf, Q_kf)``."""
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        feat, pos = self.model.encode(img, None, prompts=prompts[0] if prompts else None)
        dec1, dec2 = self.model.decode(feat, pos, kf_feat, kf_pos)
        res1, res2 = self.model.heads(dec1, dec2, shape, shape)
        keys = Prediction.RESULT_KEYS
        return (feat, pos, *(res1[k] for k in keys), *(res2[k] for k in keys))

    def _graphed_asymmetric(
        self, frame: NetImage, keyframe: NetImage
    ) -> tuple[Prediction, Prediction] | None:
        """The tracking step through :attr:`_tracking_step` when it applies (CUDA, frame not encoded yet,
        frame and keyframe of one size), else ``None``. Caches the frame's features as :meth:`encode_many`
        does."""
        if self.device.type != "cuda" or frame.shape != keyframe.shape or self._lookup(frame) is not None:
            return None
        ek = self.features(keyframe)
        prompts = () if self._prompts is None else (self._prompts.detach(),)
        inputs = (frame.img.to(self.device, non_blocking=True), ek.feat, ek.pos, *prompts)
        if not self._tracking_step.uses_graph(inputs):
            return None
        version = (self._id, self._prompt_version)
        feat, pos, *out = self._tracking_step(*inputs)
        self.stats.cache_misses += 1
        self.stats.encoder_calls += 1
        self.stats.images_encoded += 1
        self.stats.decoder_calls += 1
        self.stats.graph_replays += 1
        enc = EncodedImage(feat, pos, frame.shape, version)
        self._store(frame.key, enc)
        frame.attached["enc"] = enc
        return Prediction(*out[:4]), Prediction(*out[4:])

    @torch.inference_mode()
    def mono(self, frame: NetImage) -> Prediction:
        """View-1 prediction of ``decoder(f, f)`` (INIT/RELOC): fields ``[H, W, ...]`` (no batch dim)."""
        enc = self.features(frame)
        p1, _ = self._decode_heads(enc.feat, enc.pos, enc.shape, enc.feat, enc.pos, enc.shape)
        return p1[0]

    @torch.inference_mode()
    def asymmetric(self, frame: NetImage, keyframe: NetImage) -> tuple[Prediction, Prediction]:
        """Tracking: one decoder call on (frame, keyframe) -> ``(ff, kf)``, fields ``[H, W, ...]``.

        ``ff`` is the frame's pointmap in its own coordinates (``X_ff, C_ff, D_ff, Q_ff``); ``kf`` the
        keyframe's pixels expressed in the frame's coordinates (``X_kf, C_kf, D_kf, Q_kf``).
        """
        graphed = self._graphed_asymmetric(frame, keyframe)
        if graphed is not None:
            pf, pk = graphed
        else:
            ef, ek = self.encode_many([frame, keyframe])
            pf, pk = self._decode_heads(ef.feat, ef.pos, ef.shape, ek.feat, ek.pos, ek.shape)
        return pf[0], pk[0]

    @torch.inference_mode()
    def symmetric(
        self, pairs: Sequence[tuple[NetImage, NetImage]], max_pairs_per_call: int | None = None
    ) -> PairPrediction:
        """Backend edges: both directions of every pair ``(i, j)``, batched.

        Pairs whose two images share one size (the normal case) go, both directions at once, through ONE
        decoder call of batch ``2P`` (``[f_i..., f_j...]`` against ``[f_j..., f_i...]``);
        ``max_pairs_per_call`` caps P to bound memory. Returns a :class:`PairPrediction` with fields
        ``[P, H, W, ...]`` in the order of ``pairs`` (``ii``, ``ji`` in i's coordinates; ``jj``, ``ij`` in
        j's). All images must share one size (``ValueError`` otherwise; :meth:`symmetric_list` takes any).
        """
        if not pairs:
            raise ValueError("symmetric(): no pairs given")
        shapes = sorted({f.shape for pair in pairs for f in pair})
        if len(shapes) > 1:
            raise ValueError(f"symmetric(): pairs have different image sizes {shapes}; use symmetric_list()")
        preds = self.symmetric_list(pairs, max_pairs_per_call)
        return PairPrediction(
            *(Prediction.cat([getattr(p, k) for p in preds]) for k in ("ii", "ji", "jj", "ij"))
        )

    @torch.inference_mode()
    def symmetric_list(
        self, pairs: Sequence[tuple[NetImage, NetImage]], max_pairs_per_call: int | None = None
    ) -> list[PairPrediction]:
        """As :meth:`symmetric`, one :class:`PairPrediction` (fields ``[1, H, W, ...]``) per pair; pairs of
        any sizes (grouped by size, one decoder call per group and chunk)."""
        if max_pairs_per_call is not None and max_pairs_per_call < 1:
            raise ValueError(f"max_pairs_per_call must be >= 1, got {max_pairs_per_call}")
        frames = [f for pair in pairs for f in pair]
        encs = self.encode_many(frames)
        groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
        for p, (fi, fj) in enumerate(pairs):
            groups.setdefault((fi.shape, fj.shape), []).append(p)
        out: list[PairPrediction | None] = [None] * len(pairs)
        for (si, sj), idx in groups.items():
            step = max_pairs_per_call or len(idx)
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                for p, pred in zip(chunk, self._symmetric_chunk(encs, chunk, si, sj), strict=True):
                    out[p] = pred
        return out  # type: ignore[return-value]

    def _symmetric_chunk(self, encs, chunk, si, sj) -> Iterator[PairPrediction]:
        fi = torch.cat([encs[2 * p].feat for p in chunk])
        fj = torch.cat([encs[2 * p + 1].feat for p in chunk])
        qi = torch.cat([encs[2 * p].pos for p in chunk])
        qj = torch.cat([encs[2 * p + 1].pos for p in chunk])
        n = len(chunk)
        if si == sj:  # both directions in one decoder call: [i; j] against [j; i]
            f1, q1, f2, q2 = (
                torch.cat([fi, fj]),
                torch.cat([qi, qj]),
                torch.cat([fj, fi]),
                torch.cat([qj, qi]),
            )
            a, b = self._decode_heads(f1, q1, si, f2, q2, sj)
            ii, jj, ji, ij = a[:n], a[n:], b[:n], b[n:]
        else:
            ii, ji = self._decode_heads(fi, qi, si, fj, qj, sj)
            jj, ij = self._decode_heads(fj, qj, sj, fi, qi, si)
        for k in range(n):
            yield PairPrediction(ii[k : k + 1], ji[k : k + 1], jj[k : k + 1], ij[k : k + 1])

    # ------------------------------------------------------------------------------------------ grad path
    def encode_grad(
        self, img: torch.Tensor, true_shape: torch.Tensor, prompts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder with autograd enabled (no cache): ``img [B,3,H,W]`` -> ``(feat [B,N,Denc], pos [B,N,2])``.

        ``prompts`` defaults to :attr:`prompts`. Must not be called inside ``torch.inference_mode``.
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError("encode_grad() called inside torch.inference_mode: no gradients could flow")
        prompts = self._prompts if prompts is None else prompts
        with torch.enable_grad():
            return self._encode_batch(
                img.to(self.device), torch.as_tensor(true_shape).to(self.device), prompts
            )

    def decode_grad(
        self,
        feat1: torch.Tensor,
        pos1: torch.Tensor,
        shape1: tuple[int, int],
        feat2: torch.Tensor,
        pos2: torch.Tensor,
        shape2: tuple[int, int],
    ) -> tuple[Prediction, Prediction]:
        """Decoder + heads with autograd enabled: ``(view 1 in 1, view 2 in 1)`` predictions, batched.

        Inputs must be normal tensors (from :meth:`encode_grad` or :meth:`features_for_grad`); passing cache
        entries (inference tensors) raises PyTorch's "Inference tensors cannot be saved for backward".
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError("decode_grad() called inside torch.inference_mode: no gradients could flow")
        with torch.enable_grad():
            return self._decode_heads(feat1, pos1, tuple(shape1), feat2, pos2, tuple(shape2))

    def pair_grad(
        self,
        frame1: NetImage,
        frame2: NetImage,
        prompts: torch.Tensor | None = None,
        frozen2: bool = False,
    ) -> tuple[Prediction, Prediction]:
        """Differentiable prediction of one pair: ``(view 1 in 1, view 2 in 1)``, fields ``[1, H, W, ...]``.

        Both images are encoded with ``prompts`` (default :attr:`prompts`) in one encoder call when they share
        a size; with ``frozen2`` view 2 uses its cached features as constants instead (one encoder pass less).
        """
        if frozen2:
            f1, p1 = self.encode_grad(frame1.img, frame1.true_shape, prompts)
            f2, p2 = self.features_for_grad(frame2)
        elif frame1.shape == frame2.shape:
            imgs = torch.cat([frame1.img.to(self.device), frame2.img.to(self.device)])
            ts = torch.cat([torch.as_tensor(frame1.true_shape), torch.as_tensor(frame2.true_shape)])
            feat, pos = self.encode_grad(imgs, ts, prompts)
            f1, f2, p1, p2 = feat[:1], feat[1:], pos[:1], pos[1:]
        else:
            f1, p1 = self.encode_grad(frame1.img, frame1.true_shape, prompts)
            f2, p2 = self.encode_grad(frame2.img, frame2.true_shape, prompts)
        return self.decode_grad(f1, p1, frame1.shape, f2, p2, frame2.shape)

    def features_for_grad(self, frame: NetImage) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached features of ``frame`` as normal (non-inference) tensors without grad, usable as constant
        inputs of :meth:`decode_grad` (e.g. a keyframe's frozen features)."""
        enc = self.features(frame)
        return enc.feat.clone(), enc.pos.clone()  # clone outside inference_mode -> a normal tensor
