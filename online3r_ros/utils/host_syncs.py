"""Count the host-device synchronisations of a piece of code, on any device (tests and benchmarks).

On CUDA a host sync is any call that needs a tensor's value (or a data-dependent shape) on the host: the
CPU waits until the GPU has caught up. :func:`count_host_syncs` counts, while it is active, the Python-level
calls that do this whatever the device, so that code can be checked on a CPU-only machine:

- reading values: ``Tensor.item``/``tolist``/``numpy``/``cpu``, ``bool()``/``int()``/``float()``/
  ``operator.index`` on a tensor (also implicit: ``if t:``, f-string formatting), ``torch.equal``;
- data-dependent shapes: ``nonzero``/``argwhere``/``unique``/``unique_consecutive``/``masked_select``,
  one-argument ``torch.where``, ``bincount``, ``repeat_interleave`` with tensor repeats and no
  ``output_size``, and indexing (reading or writing) with a boolean mask;
- linear algebra that checks its ``info`` on the host: ``torch.linalg.cholesky``/``inv``/``solve``/``eigh``/
  ``eigvalsh``/``lstsq`` (the ``*_ex`` variants do not sync);
- tensors made from Python or numpy data (``torch.tensor``, ``Tensor.new_tensor``, ``torch.as_tensor`` of
  non-tensors): on a CUDA device the copy from pageable host memory waits for the stream. Constants made
  once per device (:func:`on_device`) avoid it.

A call made inside another counted call is not counted again. With ``cuda=True`` on a CUDA machine it also
records the warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (the syncs CUDA itself reports) under the
key ``"cuda"``, which is excluded from :meth:`SyncCounter.total`.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

__all__ = ["SyncCounter", "count_host_syncs", "on_device"]

_TENSOR_METHODS = (
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "argwhere",
    "unique",
    "unique_consecutive",
    "masked_select",
)
_TORCH_FUNCTIONS = (
    "nonzero",
    "argwhere",
    "unique",
    "unique_consecutive",
    "masked_select",
    "equal",
    "bincount",
)
_LINALG_FUNCTIONS = ("cholesky", "inv", "solve", "eigh", "eigvalsh", "lstsq")


class SyncCounter(Counter):
    """Counts per operation name (``"Tensor.item"``, ``"torch.nonzero"``, ``"bool-mask index"``, ...)."""

    def total(self) -> int:  # type: ignore[override]
        """All counted host syncs (the ``"cuda"`` cross-check excluded)."""
        return sum(v for k, v in self.items() if k != "cuda")


def _has_bool_mask(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


@contextmanager
def count_host_syncs(cuda: bool = True) -> Iterator[SyncCounter]:
    """Context manager yielding a :class:`SyncCounter` filled while the block runs (single-threaded use:
    calls from other threads are counted too)."""
    counts = SyncCounter()
    depth = threading.local()
    patched: list[tuple[Any, str, Any, bool]] = []

    def wrap(name: str, fn: Callable, when: Callable[..., bool] | None = None) -> Callable:
        def wrapper(*args, **kwargs):
            level = getattr(depth, "n", 0)
            if level == 0 and (when is None or when(*args, **kwargs)):
                counts[name] += 1
            depth.n = level + 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth.n = level

        return wrapper

    def patch(owner: Any, attr: str, name: str, when: Callable[..., bool] | None = None) -> None:
        original = getattr(owner, attr)
        own = attr in vars(owner)
        patched.append((owner, attr, vars(owner).get(attr), own))
        setattr(owner, attr, wrap(name, original, when))

    for m in _TENSOR_METHODS:
        patch(torch.Tensor, m, f"Tensor.{m}")
    # indexing is watched by a torch-function mode, not patched: assigning Tensor.__getitem__ and deleting it
    # again leaves CPython's sequence slot set, after which torch.tensor([t0d, 1.0]) calls len() on a 0-d
    # tensor and fails (for the rest of the process)
    index_mode = _BoolMaskIndexMode(counts, depth)
    for f in _TORCH_FUNCTIONS:
        patch(torch, f, f"torch.{f}")
    patch(torch, "where", "torch.where(cond)", lambda *a, **k: len(a) + len(k) == 1)
    for owner, attr in ((torch, "tensor"), (torch, "as_tensor"), (torch.Tensor, "new_tensor")):
        first = 1 if owner is torch.Tensor else 0  # the data argument
        patch(
            owner,
            attr,
            "tensor from host data",
            lambda *a, _i=first, **k: not isinstance(a[_i] if len(a) > _i else k.get("data"), torch.Tensor),
        )
    patch(torch.Tensor, "bincount", "Tensor.bincount")
    for owner in (torch, torch.Tensor):
        patch(
            owner,
            "repeat_interleave",
            "repeat_interleave",
            lambda *a, **k: k.get("output_size") is None and any(isinstance(x, torch.Tensor) for x in a[1:2]),
        )
    for f in _LINALG_FUNCTIONS:
        patch(torch.linalg, f, f"torch.linalg.{f}")
    use_cuda = cuda and torch.cuda.is_available()
    caught: list[warnings.WarningMessage] = []
    with ExitStack() as stack:
        stack.callback(_restore, patched)
        stack.enter_context(index_mode)
        if use_cuda:
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            stack.callback(torch.cuda.set_sync_debug_mode, torch.cuda.get_sync_debug_mode())
            torch.cuda.set_sync_debug_mode("warn")
        yield counts
    for w in caught:
        if "synchronizing CUDA operation" in str(w.message):
            counts["cuda"] += 1
        else:  # not ours: pass it on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


_ON_DEVICE: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}


def on_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t.to(device, dtype)`` of a constant CPU tensor ``t`` (a module-level constant, alive as long as the
    process), copied once per device and dtype and then reused; the result must not be modified."""
    dtype = t.dtype if dtype is None else dtype
    key = (id(t), torch.device(device), dtype)
    hit = _ON_DEVICE.get(key)
    if hit is None:
        with torch.inference_mode(False):  # an ordinary tensor, usable with autograd later
            hit = _ON_DEVICE[key] = t.to(device, dtype)
    return hit


class _BoolMaskIndexMode(torch.overrides.TorchFunctionMode):
    """Counts ``Tensor.__getitem__``/``__setitem__`` with a boolean mask made outside other counted calls."""

    _INDEXING = (torch.Tensor.__getitem__, torch.Tensor.__setitem__)

    def __init__(self, counts: SyncCounter, depth: threading.local) -> None:
        super().__init__()
        self.counts, self.depth = counts, depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._INDEXING and getattr(self.depth, "n", 0) == 0 and _has_bool_mask(args[1]):
            self.counts["bool-mask index"] += 1
        return func(*args, **kwargs)


def _restore(patched: list[tuple[Any, str, Any, bool]]) -> None:
    for owner, attr, original, own in reversed(patched):
        if own:
            setattr(owner, attr, original)
        else:
            delattr(owner, attr)
