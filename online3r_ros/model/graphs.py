"""CUDA-graph replay of fixed-shape tensor functions (the per-frame network step without launch overhead).

A tracking step launches ~2,000 small kernels; at batch 1 the GPU idles between them while Python issues the
next one. :class:`GraphedFunction` records a function once per input signature (shapes, dtypes, devices) as a
``torch.cuda.CUDAGraph`` with static input buffers and replays it: one launch, no host work per kernel, no
host sync inside the step. The function must be free of host syncs and data-dependent shapes (the network
forward is).

On the CPU, or with ``enabled=False``, the function is called directly: same results, same API.

Example:
    >>> f = GraphedFunction(lambda x, y: (x * 2 + y,))
    >>> f(torch.ones(2), torch.ones(2))[0]
    tensor([3., 3.])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor
__all__ = ["GraphedFunction", "Signature"]

Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


def signature(tensors: Sequence[Tensor]) -> Signature:
    """Shapes, dtypes and devices of ``tensors``: one recorded graph per distinct signature."""
    return tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)


class _Recorded:
    """One captured graph with its static inputs and outputs."""

    def __init__(self, fn: Callable[..., Sequence[Tensor]], inputs: Sequence[Tensor], warmup: int) -> None:
        self.inputs = [t.detach().clone() for t in inputs]
        side = torch.cuda.Stream(device=self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: cuBLAS/cuDNN handles, autotuning
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a mapper thread may launch work on its own stream while this thread records
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = tuple(fn(*self.inputs))

    def replay(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        for static, t in zip(self.inputs, inputs, strict=True):
            static.copy_(t, non_blocking=True)
        self.graph.replay()
        return self.outputs


class GraphedFunction:
    """``fn(*tensors) -> tuple[Tensor, ...]`` replayed as a CUDA graph per input signature.

    Args:
        fn: a function of tensors only, returning a tuple of tensors; no host syncs, fixed shapes.
        enabled: record graphs for CUDA inputs (``False``: always call ``fn``).
        max_graphs: recorded signatures kept (LRU); each holds its own memory pool.
        warmup: eager runs on a side stream before recording a signature.

    Calls return **new** tensors (clones of the static outputs), so results stay valid across calls. Inputs
    may live anywhere ``copy_`` accepts; outputs are on the inputs' device.
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Tensor]],
        enabled: bool = True,
        max_graphs: int = 4,
        warmup: int = 2,
    ) -> None:
        if max_graphs < 1 or warmup < 1:
            raise ValueError(f"max_graphs and warmup must be >= 1, got {max_graphs}, {warmup}")
        self.fn = fn
        self.enabled = bool(enabled)
        self.max_graphs = int(max_graphs)
        self.warmup = int(warmup)
        self._graphs: OrderedDict[Signature, _Recorded] = OrderedDict()
        self.recorded = 0  # graphs recorded so far (a new signature records one)
        self.replays = 0

    def uses_graph(self, inputs: Sequence[Tensor]) -> bool:
        """Whether a call with these inputs replays a graph (CUDA inputs, enabled, no autograd)."""
        return (
            self.enabled
            and len(inputs) > 0
            and all(t.device.type == "cuda" for t in inputs)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs))
        )

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if not self.uses_graph(inputs):
            return tuple(self.fn(*inputs))
        key = signature(inputs)
        rec = self._graphs.get(key)
        if rec is None:
            rec = _Recorded(self.fn, inputs, self.warmup)
            self._graphs[key] = rec
            self.recorded += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        self.replays += 1
        return tuple(t.clone() for t in rec.replay(inputs))

    def reset(self) -> None:
        """Drop every recorded graph (e.g. after the function's weights changed dtype or device)."""
        self._graphs.clear()
