"""CUDA-graph replay (online3r_ros.model.graphs) and the engine's graphed tracking step.

On CPU the graph wrapper calls its function directly and the engine's tracking-step function is checked
against the eager path; the replay itself is checked on CUDA (skipped without a GPU).
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers_mast3r import damped_p1_model

from online3r_ros.model.graphs import GraphedFunction, signature
from online3r_ros.model.inference import MASt3REngine, NetImage

H, W = 16, 32
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return damped_p1_model()


def _frames(n: int, seed: int = 0, device: str = "cpu") -> list[NetImage]:
    g = torch.Generator().manual_seed(seed)
    return [
        NetImage(
            i, (torch.rand(1, 3, H, W, generator=g) * 2 - 1).to(device), torch.tensor([[H, W]], device=device)
        )
        for i in range(n)
    ]


def test_cpu_calls_the_function_directly() -> None:
    calls = []

    def fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor]:
        calls.append(1)
        return (x * 2 + y,)

    f = GraphedFunction(fn)
    out = f(torch.ones(3), torch.arange(3.0))
    assert torch.equal(out[0], torch.tensor([2.0, 3.0, 4.0]))
    assert len(calls) == 1 and f.recorded == 0 and f.replays == 0
    assert not f.uses_graph((torch.ones(1),))
    assert signature((torch.ones(2, dtype=torch.float64),)) == (((2,), torch.float64, torch.device("cpu")),)
    with pytest.raises(ValueError, match="max_graphs"):
        GraphedFunction(fn, max_graphs=0)


def test_tracking_function_equals_eager_asymmetric(model) -> None:
    eng = MASt3REngine(model)
    f, k = _frames(2, seed=3)
    ek = eng.features(k)
    with torch.inference_mode():
        feat, pos, *out = eng._tracking_fn(f.img, ek.feat, ek.pos)
    pf, pk = MASt3REngine(model).asymmetric(f, k)
    for got, want in zip(out, (pf.X, pf.C, pf.D, pf.Q, pk.X, pk.C, pk.D, pk.Q), strict=True):
        assert torch.equal(got[0], want)
    assert torch.equal(feat, MASt3REngine(model).features(f).feat)
    prompts = model.new_prompts(2).normal_(0, 1.0)
    eng.set_prompts(prompts)
    with torch.inference_mode():
        _, _, X_prompted, *_ = eng._tracking_fn(f.img, ek.feat, ek.pos, prompts)
    assert not torch.allclose(X_prompted[0], pf.X)


def test_engine_on_cpu_takes_the_eager_path(model) -> None:
    eng = MASt3REngine(model)
    f, k = _frames(2, seed=4)
    eng.asymmetric(f, k)
    assert eng.stats.graph_replays == 0 and eng.cuda_graphs
    assert not MASt3REngine(model, cuda_graphs=False).cuda_graphs


@cuda
def test_graph_replays_new_inputs_and_keeps_results() -> None:
    f = GraphedFunction(lambda x, y: (x @ y, x.sum(0)))
    gen = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(64, 64, device="cuda", generator=gen) for _ in range(3)]
    outs = [f(x, xs[0]) for x in xs]
    assert f.recorded == 1 and f.replays == 3
    for x, (prod, s) in zip(xs, outs, strict=True):  # earlier results are not overwritten by later replays
        torch.testing.assert_close(prod, x @ xs[0])
        torch.testing.assert_close(s, x.sum(0))
    f(torch.randn(32, 64, device="cuda"), xs[0])
    assert f.recorded == 2


@cuda
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_engine_graph_step_equals_eager_on_cuda(model, precision: str) -> None:
    graphed = MASt3REngine(copy.deepcopy(model), device="cuda", precision=precision)
    eager = MASt3REngine(copy.deepcopy(model), device="cuda", precision=precision, cuda_graphs=False)
    kf, *frames = _frames(4, seed=5, device="cuda")
    for eng in (graphed, eager):
        eng.features(kf)
    for fr in frames:
        twin = NetImage(fr.key, fr.img, fr.true_shape)  # own attached features
        g, e = graphed.asymmetric(fr, kf), eager.asymmetric(twin, kf)
        for a, b in zip(g, e, strict=True):
            for name in "XCDQ":
                torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-5)
    assert graphed.stats.graph_replays == 3 and graphed._tracking_step.recorded == 1
    assert eager.stats.graph_replays == 0
    assert len(graphed.cached_keys()) == 4  # the frames' features are cached as on the eager path
