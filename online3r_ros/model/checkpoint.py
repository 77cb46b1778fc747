"""Load MASt3R checkpoints without executing pickled code.

Two layouts are supported (mast3r_architecture.md §1 "Checkpoint file format"):

* the official ``.pth`` (``torch.save`` zip): a dict with ``'model'`` (the state_dict) and ``'args'`` (an
  ``argparse.Namespace`` whose ``.model`` is the constructor string, e.g.
  ``"AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', ...,
  depth_mode=('exp', -inf, inf), ...)"``). It is read with ``torch.load(weights_only=True)``: only tensors,
  containers and primitive values are rebuilt, ``argparse.Namespace`` is allow-listed and any other global
  referenced by the pickle (e.g. a ``pathlib.PosixPath`` among the training arguments) is replaced by an
  inert placeholder object; no code from the file runs. The zip CRCs are verified first, so truncated or
  bit-flipped files are reported instead of silently loading wrong weights.
* the Hugging Face layout (``PyTorchModelHubMixin``): a directory with ``config.json`` (the constructor
  keyword arguments; tuples stored as lists, infinities as ``Infinity``) and ``model.safetensors`` (or
  ``pytorch_model.bin``), or a hub cache repo folder (``models--naver--.../snapshots/<rev>/``).

The constructor string is parsed with :mod:`ast` (literals, tuples, ``inf``); it is never evaluated. As the
reference ``load_model`` does, ``ManyAR_PatchEmbed`` becomes ``PatchEmbedDust3R`` and ``landscape_only`` is
forced to ``False``. ``two_confs`` is read from the weights (the local-feature MLP's output size) when the
string disagrees with them. Constructor-string parsing and architecture detection live in
:mod:`online3r_ros.model.constructor`, the error classes in :mod:`online3r_ros.model.checkpoint_errors` (both
re-exported here) and the low-level safe file readers in :mod:`online3r_ros.model.checkpoint_files`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint_errors import (
    ArchitectureMismatchError,
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    StateDictMismatchError,
)
from .checkpoint_files import _file_kind, _read_safetensors, _torch_load_restricted, _verify_zip
from .constructor import (
    MAST3R_CLASS,
    MAST3R_HEAD,
    ConstructorCall,
    Symbol,
    _infer_kwargs,
    _normalise_kwargs,
    _reconcile_two_confs,
    constructor_string,
    detect_architecture,
    kwargs_from_constructor,
    parse_constructor,
)

__all__ = [
    "MAST3R_CLASS",
    "MAST3R_HEAD",
    "ArchitectureMismatchError",
    "CheckpointCorruptedError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "ConstructorCall",
    "LoadedCheckpoint",
    "StateDictMismatchError",
    "Symbol",
    "constructor_string",
    "detect_architecture",
    "kwargs_from_constructor",
    "load_mast3r",
    "match_state_dict",
    "parse_constructor",
    "read_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

# Reference constructor arguments without effect at inference (dropped if build_mast3r lacks them).
_INERT_KWARGS = {"freeze", "mask_ratio", "img_size", "landscape_only"}
# Keyword arguments of the reference AsymmetricMASt3R constructor (incl. the CroCo/DUSt3R ones it forwards);
# other config.json keys (hub metadata) are ignored.
_REFERENCE_ARGS = {
    "output_mode", "head_type", "depth_mode", "conf_mode", "freeze", "landscape_only", "patch_embed_cls",
    "desc_mode", "two_confs", "desc_conf_mode", "img_size", "patch_size", "mask_ratio", "enc_embed_dim",
    "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads", "mlp_ratio", "norm_layer",
    "norm_im2_in_dec", "pos_embed",
}  # fmt: skip
# Reference state_dict keys that are unused at inference: tolerated if the rebuilt model does not have them.
_IGNORABLE_KEYS = {"mask_token"}
_ALIAS_LIST = re.compile(r"^(?P<pre>.*\.scratch\.)layer_rn\.(?P<i>[0-3])\.weight$")
_ALIAS_NAMED = re.compile(r"^(?P<pre>.*\.scratch\.)layer(?P<n>[1-4])_rn\.weight$")


# ----------------------------------------------------------------------------------------- file reading
@dataclass
class LoadedCheckpoint:
    """What :func:`read_checkpoint` found.

    Attributes:
        kwargs: ``build_mast3r`` keyword arguments (rewrites applied).
        state_dict: CPU tensors, reference key names.
        layout: ``'pth'`` or ``'hf'``.
        path: the weights file actually read.
        constructor: the original constructor string (``'pth'``) or ``None``.
        inferred: True when ``kwargs`` were inferred from shapes (no constructor metadata in the file).
    """

    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    layout: str
    path: Path
    constructor: str | None = None
    inferred: bool = False


def _resolve_hf_dir(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    snaps = path / "snapshots"
    if snaps.is_dir():
        ref = path / "refs" / "main"
        if ref.is_file() and (snaps / ref.read_text().strip() / "config.json").is_file():
            return snaps / ref.read_text().strip()
        cands = sorted(
            (d for d in snaps.iterdir() if (d / "config.json").is_file()), key=lambda d: d.stat().st_mtime
        )
        if cands:
            return cands[-1]
    raise CheckpointNotFoundError(f"{path}: directory has no config.json (nor snapshots/<rev>/config.json)")


def _read_hf(directory: Path) -> LoadedCheckpoint:
    cfg_path = directory / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptedError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointFormatError(f"{cfg_path}: expected a JSON object of constructor arguments")
    constructor = cfg.get("model") if isinstance(cfg.get("model"), str) else None
    kwargs_raw = {k: v for k, v in cfg.items() if k in _REFERENCE_ARGS}
    ignored = sorted(k for k in cfg if k not in _REFERENCE_ARGS and k != "model")
    if ignored:
        log.info("%s: ignoring non-constructor keys %s", cfg_path, ignored)
    weights = next(
        (directory / n for n in ("model.safetensors", "pytorch_model.bin") if (directory / n).is_file()), None
    )
    if weights is None:
        raise CheckpointNotFoundError(
            f"{directory}: no model.safetensors (or pytorch_model.bin) next to config.json"
        )
    if weights.suffix == ".safetensors":
        sd = _read_safetensors(weights)
    else:
        if _file_kind(weights) == "zip":
            _verify_zip(weights)
        sd = _torch_load_restricted(weights, mmap=False)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointFormatError(f"{weights}: expected a flat mapping of tensors")
    detect_architecture(sd)
    kwargs = kwargs_from_constructor(constructor) if constructor else _normalise_kwargs(kwargs_raw)
    return LoadedCheckpoint(_reconcile_two_confs(kwargs, sd), sd, "hf", weights, constructor)


def _read_pth(path: Path, mmap: bool) -> LoadedCheckpoint:
    kind = _file_kind(path)
    if kind == "safetensors":
        cfg = path.parent / "config.json"
        if cfg.is_file():
            return _read_hf(path.parent)
        sd = _read_safetensors(path)
        return LoadedCheckpoint(_infer_kwargs(sd), sd, "hf", path, None, inferred=True)
    if kind == "zip":
        _verify_zip(path)
    obj = _torch_load_restricted(path, mmap=mmap and kind == "zip")
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            f"{path}: expected a dict with 'model' and 'args', got {type(obj).__name__}"
        )
    if "model" in obj and isinstance(obj["model"], Mapping):
        sd = dict(obj["model"])
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = dict(obj)  # a bare state_dict
    else:
        raise CheckpointFormatError(
            f"{path}: no 'model' state_dict (top-level keys: {sorted(map(str, obj))[:10]}); "
            "is this a MASt3R network checkpoint (not e.g. a retrieval/codebook file)?"
        )
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointFormatError(f"{path}: 'model' holds non-tensor values")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    args = obj.get("args")
    constructor = args.get("model") if isinstance(args, dict) else getattr(args, "model", None)
    if isinstance(constructor, str):
        kwargs = kwargs_from_constructor(constructor)  # class/head errors first: they name the architecture
        detect_architecture(sd)
        return LoadedCheckpoint(_reconcile_two_confs(kwargs, sd), sd, "pth", path, constructor)
    return LoadedCheckpoint(_infer_kwargs(sd), sd, "pth", path, None, inferred=True)


def read_checkpoint(path: str | Path, *, mmap: bool = True) -> LoadedCheckpoint:
    """Read a MASt3R checkpoint (official ``.pth``, Hugging Face folder / snapshot, or ``.safetensors`` file).

    Args:
        path: file or directory.
        mmap: memory-map the ``.pth`` tensors (saves one copy of the 2.75 GB weights).

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, CheckpointCorruptedError, ArchitectureMismatchError.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        return _read_hf(_resolve_hf_dir(p))
    return _read_pth(p, mmap=mmap)


# ------------------------------------------------------------------------------------- strict matching
def _alias_partner(key: str) -> str | None:
    m = _ALIAS_LIST.match(key)
    if m:
        return f"{m['pre']}layer{int(m['i']) + 1}_rn.weight"
    m = _ALIAS_NAMED.match(key)
    if m:
        return f"{m['pre']}layer_rn.{int(m['n']) - 1}.weight"
    return None


def match_state_dict(
    expected: Mapping[str, torch.Size | tuple[int, ...]], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Strict key/shape check of ``state_dict`` against the model's ``{key: shape}``.

    Tolerated differences (reference quirks): the DPT alias pairs ``scratch.layer_rn.{i}`` /
    ``scratch.layer{i+1}_rn`` may appear under either or both names (safetensors files drop one of two shared
    tensors), and ``mask_token`` (unused at inference) may be absent from the model.

    Returns:
        a state_dict with exactly the expected keys.
    Raises:
        StateDictMismatchError: listing every missing, unexpected and shape-mismatched key.
    """
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key, shape in expected.items():
        t = state_dict.get(key)
        if t is None:
            partner = _alias_partner(key)
            t = state_dict.get(partner) if partner else None
        if t is None:
            missing.append(key)
        elif tuple(t.shape) != tuple(shape):
            mismatched.append((key, tuple(t.shape), tuple(shape)))
        else:
            out[key] = t
    unexpected = []
    for key in state_dict:
        if key in expected or key in _IGNORABLE_KEYS:
            continue
        partner = _alias_partner(key)
        if partner is not None and partner in expected:
            continue
        unexpected.append(key)
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(sorted(missing), sorted(unexpected), sorted(mismatched))
    return out


# ------------------------------------------------------------------------------------------ build + load
def _build_kwargs(build: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    import inspect

    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    out, unsupported = {}, []
    for k, v in kwargs.items():
        if k in params:
            out[k] = v
        elif k not in _INERT_KWARGS:
            unsupported.append(f"{k}={v!r}")
    if unsupported:
        raise ArchitectureMismatchError(
            f"constructor arguments not supported by build_mast3r: {', '.join(unsupported)}"
        )
    return out


def load_mast3r(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    check_finite: bool = True,
    mmap: bool = False,
    build: Any = None,
) -> torch.nn.Module:
    """Build the network described by a checkpoint and load its weights (strict), in eval mode on ``device``.

    Args:
        path: official ``.pth``, Hugging Face folder/snapshot, or ``.safetensors`` file.
        device: target device.
        check_finite: reject weights containing NaN/Inf (a cheap corruption check for safetensors files,
            which carry no checksum).
        mmap: see :func:`read_checkpoint` (off by default: the loaded tensors become the parameters, so a
            memory-mapped file would stay in use by the model).
        build: network factory taking the constructor kwargs (default ``online3r_ros.model.build_mast3r``).

    Raises:
        every :class:`CheckpointError` subclass (see :func:`read_checkpoint`, :func:`match_state_dict`).
    """
    if build is None:
        from online3r_ros.model import build_mast3r as build

    ckpt = read_checkpoint(path, mmap=mmap)
    kwargs = _build_kwargs(build, ckpt.kwargs)
    try:
        with torch.device("meta"):  # no random init of ~700M parameters; real tensors are assigned below
            model = build(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ArchitectureMismatchError(
            f"cannot build the network of {ckpt.path} with {kwargs}: {exc}"
        ) from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = match_state_dict(expected, ckpt.state_dict)
    if check_finite:
        # a float32 sum is NaN/Inf iff an element is (weights are far from overflow); cheaper than isfinite
        bad = [k for k, v in sd.items() if v.is_floating_point() and not math.isfinite(float(v.sum()))]
        if bad:
            raise CheckpointCorruptedError(
                f"{ckpt.path}: non-finite weights in {len(bad)} tensor(s): {bad[:8]}"
            )
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = build(**kwargs)  # the network has state outside its state_dict: build it for real
        model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------------ saving
def _dedup_shared(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``layer_rn.{i}`` alias of a tensor also stored as ``layer{i+1}_rn`` (safetensors refuses
    shared storage); any other shared storage is cloned."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for k in sorted(sd, key=lambda k: (_ALIAS_LIST.match(k) is not None, k)):
        t = sd[k].detach().cpu().contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        if ident is not None and ident in seen:
            if _alias_partner(k) == seen[ident]:
                continue
            t = t.clone()
        elif ident is not None:
            seen[ident] = k
        out[k] = t
    return out


def save_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    kwargs: Mapping[str, Any],
    layout: str = "pth",
) -> Path:
    """Write a checkpoint in the official ``.pth`` layout or the Hugging Face folder layout.

    ``pth``: ``{'model': state_dict, 'args': Namespace(model=<constructor string>), 'epoch': 0}``.
    ``hf``: ``path/config.json`` (kwargs; tuples as lists, infinities as ``Infinity``) and
    ``path/model.safetensors``.
    Returns the written file (``pth``) or directory (``hf``).
    """
    p = Path(path)
    if layout == "pth":
        sd = {k: v.detach().cpu() for k, v in state_dict.items()}
        torch.save({"model": sd, "args": argparse.Namespace(model=constructor_string(kwargs)), "epoch": 0}, p)
        return p
    if layout == "hf":
        from safetensors.torch import save_file

        p.mkdir(parents=True, exist_ok=True)
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        (p / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
        save_file(_dedup_shared(state_dict), str(p / "model.safetensors"), metadata={"format": "pt"})
        return p
    raise ValueError(f"layout must be 'pth' or 'hf', got {layout!r}")
