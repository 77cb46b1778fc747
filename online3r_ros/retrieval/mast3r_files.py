"""Readers of MASt3R's retrieval files, none of which executes pickled code.

* :func:`load_retrieval_checkpoint`: ``..._retrieval_trainingfree.pth`` (``{'model': head state_dict,
  'args': argparse.Namespace}``) -> :class:`~online3r_ros.retrieval.mast3r_head.RetrievalHead`, strictly.
* :func:`load_asmk_codebook`: the ASMK codebook pickle beside it -> centroids ``[K, D]`` float32.
* :func:`codebook_path_for`: MASt3R-SLAM's codebook file name for a checkpoint.
"""

from __future__ import annotations

import argparse
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from online3r_ros.model.checkpoint_errors import (
    CheckpointCorruptedError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    StateDictMismatchError,
)
from online3r_ros.model.checkpoint_files import _file_kind, _torch_load_restricted, _verify_zip
from online3r_ros.retrieval.mast3r_head import RetrievalHead

__all__ = [
    "NotRetrievalCheckpointError",
    "UnsafePickleError",
    "codebook_path_for",
    "load_asmk_codebook",
    "load_retrieval_checkpoint",
]

# args a retrieval checkpoint must carry (naver/mast3r Retriever reads them all)
_REQUIRED_ARGS = ("prewhiten", "hdims", "postwhiten", "featweights", "nfeat")


class NotRetrievalCheckpointError(CheckpointFormatError):
    """The file is a readable checkpoint, but not MASt3R's retrieval head (e.g. the MASt3R network itself)."""


class UnsafePickleError(CheckpointFormatError):
    """A pickle names a global outside the allow-list; nothing from it was imported or called."""


def codebook_path_for(checkpoint_path: str | Path) -> Path:
    """MASt3R-SLAM's codebook path: same folder, the ``.pth`` name with its last ``_``-token replaced by
    ``_codebook.pkl`` (``X_retrieval_trainingfree.pth`` -> ``X_retrieval_codebook.pkl``)."""
    p = Path(checkpoint_path)
    parts = p.name.split("_")
    if len(parts) < 2:
        raise ValueError(
            f"{p.name}: no '_' in the name to derive the codebook name from (MASt3R-SLAM's rule)"
        )
    return p.with_name("_".join(parts[:-1]) + "_codebook.pkl")


def _args_dict(args: Any, path: Path) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    raise NotRetrievalCheckpointError(
        f"{path}: 'args' is {type(args).__name__}, expected the training argparse.Namespace"
    )


def _infer_backbone_dim(sd: Mapping[str, torch.Tensor], path: Path) -> int:
    if "prewhiten.m" in sd and sd["prewhiten.m"].ndim == 2:
        return int(sd["prewhiten.m"].shape[1])
    if "projector.0.weight" in sd and sd["projector.0.weight"].ndim == 2:
        return int(sd["projector.0.weight"].shape[1])
    raise NotRetrievalCheckpointError(
        f"{path}: cannot tell the encoder width (no prewhiten.m nor projector.0.weight); pass backbone_dim"
    )


def load_retrieval_checkpoint(
    path: str | Path, backbone_dim: int | None = None
) -> tuple[RetrievalHead, dict[str, Any]]:
    """Load MASt3R's retrieval head from its official ``.pth`` (no pickled code runs).

    ``backbone.*`` keys are ignored (MASt3R-SLAM passes its loaded MASt3R as the backbone); every other
    key must match the head built from ``args`` exactly (names and shapes).

    Args:
        path: the ``..._retrieval_trainingfree.pth`` file.
        backbone_dim: encoder width to check against (default: read from the weights, 1024 for ViT-L).

    Returns:
        ``(head in eval mode on the CPU, args as a dict)``.

    Raises:
        CheckpointNotFoundError, CheckpointCorruptedError, CheckpointFormatError,
        NotRetrievalCheckpointError (not a retrieval head), StateDictMismatchError (keys or shapes differ).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointNotFoundError(f"retrieval checkpoint not found: {p}")
    kind = _file_kind(p)
    if kind == "safetensors":
        raise NotRetrievalCheckpointError(f"{p}: a safetensors file; the retrieval head ships as a .pth")
    if kind == "zip":
        _verify_zip(p)
    obj = _torch_load_restricted(p, mmap=False)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping) or "args" not in obj:
        keys = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise NotRetrievalCheckpointError(
            f"{p}: expected {{'model': state_dict, 'args': Namespace}}, got {keys}"
        )
    args = _args_dict(obj["args"], p)
    missing_args = [a for a in _REQUIRED_ARGS if a not in args]
    if missing_args:
        hint = " (this looks like the MASt3R network checkpoint)" if "model" in args else ""
        raise NotRetrievalCheckpointError(f"{p}: args lack {missing_args}: not a retrieval checkpoint{hint}")
    sd = {k: v for k, v in obj["model"].items() if not str(k).startswith("backbone.")}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(f"{p}: non-tensor values in 'model' for {bad[:5]}")
    dim = _infer_backbone_dim(sd, p) if backbone_dim is None else int(backbone_dim)
    try:
        head = RetrievalHead.from_args(args, dim)
    except ValueError as exc:
        raise NotRetrievalCheckpointError(f"{p}: unsupported retrieval args ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = [
        (k, tuple(sd[k].shape), expected[k])
        for k in sorted(set(sd) & set(expected))
        if tuple(sd[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched)
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointCorruptedError(f"{p}: non-finite weights in {nonfinite[:5]}")
    head.load_state_dict(sd, strict=True)
    return head.eval(), args


# ------------------------------------------------------------------------------------------- ASMK codebook
# What numpy needs to rebuild an ndarray (numpy 1.x and 2.x module names); nothing else is importable.
_CODEBOOK_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array-reconstruction globals and refuses every other one
    before importing it (so a ``__reduce__`` payload such as ``os.system`` never runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CODEBOOK_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refused global {module}.{name}: the codebook may hold only numpy arrays")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}")


def load_asmk_codebook(path: str | Path, dim: int | None = None) -> np.ndarray:
    """Centroids of an ASMK codebook pickle (``asmk``'s ``train_codebook(cache_path=...)`` file:
    ``{'type': 'Codebook', 'params': {...}, 'state': {'centroids': ndarray [K, D]}}``).

    Only numpy array reconstruction is allowed while unpickling; any other global raises
    :class:`UnsafePickleError` without being imported or called.

    Args:
        path: the ``..._retrieval_codebook.pkl`` file (see :func:`codebook_path_for`).
        dim: descriptor width to check ``D`` against (the head's ``dim``), or ``None``.

    Returns:
        ``[K, D]`` float32 C-contiguous centroids.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointNotFoundError(f"ASMK codebook not found: {p}")
    raw = p.read_bytes()
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{p}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointCorruptedError(f"{p}: truncated or corrupted codebook pickle ({exc})") from None
    if not isinstance(obj, dict) or obj.get("type") != "Codebook" or not isinstance(obj.get("state"), dict):
        what = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointFormatError(
            f"{p}: expected {{'type': 'Codebook', 'params': ..., 'state': {{'centroids': ...}}}}, got {what}"
        )
    cent = obj["state"].get("centroids")
    if not isinstance(cent, np.ndarray) or cent.ndim != 2 or cent.dtype.kind != "f" or cent.shape[0] < 1:
        desc = f"{cent.dtype} {cent.shape}" if isinstance(cent, np.ndarray) else type(cent).__name__
        raise CheckpointFormatError(f"{p}: state['centroids'] must be a float [K, D] array, got {desc}")
    if dim is not None and cent.shape[1] != int(dim):
        raise CheckpointFormatError(f"{p}: centroids are {cent.shape[1]}-d, the retrieval head gives {dim}-d")
    if not np.isfinite(cent).all():
        raise CheckpointCorruptedError(f"{p}: non-finite centroids")
    return np.ascontiguousarray(cent, dtype=np.float32)
