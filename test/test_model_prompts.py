"""Deep (VPT-style) encoder prompts: exactness without prompts, effect, gradients, batching (small config)."""

from __future__ import annotations

import pytest
import torch
from helpers_mast3r import random_views, small_mast3r_kwargs

from online3r_ros.model import MASt3R, build_mast3r

SMALL = small_mast3r_kwargs(32, 32, 2)


@pytest.fixture(scope="module")
def model() -> MASt3R:
    torch.manual_seed(0)
    m = build_mast3r(**SMALL).eval()
    m.requires_grad_(False)  # frozen backbone, as in Online3R
    return m


def _random_prompts(model: MASt3R, tokens: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.new_prompts(tokens).shape, generator=g)


def test_new_prompts_are_zero_with_the_encoder_layout(model):
    p = model.new_prompts(num_tokens=5)
    assert p.shape == (SMALL["enc_depth"], 5, SMALL["enc_embed_dim"])
    assert p.dtype == torch.float32 and not bool(p.any())
    assert model.new_prompts(3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="num_tokens"):
        model.new_prompts(0)


def test_no_prompts_is_the_plain_encoder_and_prompts_change_it(model):
    v1, _ = random_views(1, 32, 48)
    with torch.no_grad():
        plain, pos = model.encode(v1["img"])
        again, _ = model.encode(v1["img"], prompts=None)
        zero, pos_z = model.encode(v1["img"], prompts=model.new_prompts(4))
        rand, _ = model.encode(v1["img"], prompts=_random_prompts(model, 4, 1))
    assert torch.equal(plain, again)
    # prompt outputs are dropped: same token count and patch positions
    assert zero.shape == plain.shape and torch.equal(pos_z, pos)
    # even zero prompts take part in attention (their keys/values are not zero), so outputs change
    assert (zero - plain).abs().max() > 1e-4
    assert (rand - zero).abs().max() > 1e-3


def test_each_layer_uses_its_own_prompts(model):
    v1, _ = random_views(1, 32, 48, seed=4)
    base = _random_prompts(model, 3, 2)
    outs = []
    with torch.no_grad():
        ref, _ = model.encode(v1["img"], prompts=base)
        for layer in range(SMALL["enc_depth"]):
            p = base.clone()
            p[layer] += _random_prompts(model, 3, 10 + layer)[
                layer
            ]  # (a constant shift would be LayerNorm-ed away)
            outs.append(model.encode(v1["img"], prompts=p)[0])
    for out in outs:
        assert (out - ref).abs().max() > 1e-4


def test_fast_and_naive_paths_agree_with_prompts(model):
    v1, _ = random_views(1, 32, 48, seed=5)
    prompts = _random_prompts(model, 4, 3)
    with torch.no_grad():
        fast, _ = model.encode(v1["img"], prompts=prompts)
        model.set_impl("naive")
        try:
            naive, _ = model.encode(v1["img"], prompts=prompts)
        finally:
            model.set_impl("fast")
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_the_prompts(model):
    v1, v2 = random_views(1, 32, 48, seed=6)
    prompts = model.new_prompts(4).requires_grad_(True)
    res1, res2 = model(v1, v2, prompts=prompts)
    loss = res1["pts3d"].abs().mean() + res2["pts3d_in_other_view"].abs().mean() + res1["desc"].sum()
    loss.backward()
    assert prompts.grad is not None and bool(torch.isfinite(prompts.grad).all())
    per_layer = prompts.grad.abs().sum(dim=(1, 2))
    assert bool((per_layer > 0).all()), per_layer
    assert all(p.grad is None for p in model.parameters())


def test_batched_with_prompts_equals_one_at_a_time(model):
    v1, _ = random_views(2, 48, 32, seed=7)
    prompts = _random_prompts(model, 2, 4)
    with torch.no_grad():
        batched, _ = model.encode(v1["img"], prompts=prompts)
        for i in range(2):
            single, _ = model.encode(v1["img"][i : i + 1], prompts=prompts)
            torch.testing.assert_close(single, batched[i : i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(SMALL["enc_depth"] + 1, 4, SMALL["enc_embed_dim"]),
        torch.zeros(SMALL["enc_depth"], 4, 8),
        torch.zeros(4, SMALL["enc_embed_dim"]),
    ],
)
def test_bad_prompt_shapes_raise(model, bad):
    v1, _ = random_views(1, 32, 48)
    with pytest.raises(ValueError, match="prompts"):
        model.encode(v1["img"], prompts=bad)
