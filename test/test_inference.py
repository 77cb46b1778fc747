"""Tests for online3r_ros.model.inference (MASt3R engine) with a small random-weight network on CPU."""

from __future__ import annotations

import pytest
import torch
from helpers_mast3r import damped_p1_model

from online3r_ros.model.inference import MASt3REngine, NetImage, Prediction
from online3r_ros.model.preprocess import preprocess_image

H, W = 16, 32


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return damped_p1_model()


def _frames(n: int, h: int = H, w: int = W, seed: int = 0, key0: int = 0) -> list[NetImage]:
    g = torch.Generator().manual_seed(seed)
    return [
        NetImage(
            key0 + i, torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.tensor([[h, w]], dtype=torch.int32)
        )
        for i in range(n)
    ]


def _view(fr: NetImage) -> dict:
    return {"img": fr.img, "true_shape": fr.true_shape}


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * float(b.abs().max()) + 1e-6


def _pred_close(p: Prediction, res: dict, pts_key: str = "pts3d") -> None:
    assert _close(p.X, res[pts_key]) and _close(p.C, res["conf"])
    assert _close(p.D, res["desc"]) and _close(p.Q, res["desc_conf"])


def test_mono_equals_forward_view1(model) -> None:
    eng = MASt3REngine(model)
    (fr,) = _frames(1)
    pred = eng.mono(fr)
    assert pred.X.shape == (H, W, 3) and pred.C.shape == (H, W)
    assert pred.D.shape == (H, W, 24) and pred.Q.shape == (H, W)
    assert pred.X.dtype == torch.float32 and pred.X.is_inference()  # tracking path: inference mode
    with torch.no_grad():
        res1, _ = model(_view(fr), _view(fr))
    _pred_close(pred, {k: v[0] for k, v in res1.items()})
    assert float(pred.C.min()) >= 1.0 and float(pred.Q.min()) >= 0.0
    assert torch.allclose(pred.D.norm(dim=-1), torch.ones(H, W), atol=1e-5)
    assert eng.stats.encoder_calls == 1 and eng.stats.decoder_calls == 1


def test_asymmetric_equals_forward(model) -> None:
    eng = MASt3REngine(model)
    f, k = _frames(2, seed=1)
    ff, kf = eng.asymmetric(f, k)
    with torch.no_grad():
        res1, res2 = model(_view(f), _view(k))
    _pred_close(ff, {n: v[0] for n, v in res1.items()})
    _pred_close(kf, {n: v[0] for n, v in res2.items()}, pts_key="pts3d_in_other_view")
    assert eng.stats.encoder_calls == 1 and eng.stats.images_encoded == 2  # both misses in one encoder call


def test_cache_hits_do_not_recompute(model) -> None:
    eng = MASt3REngine(model, cache_size=3)
    f0, f1, f2, kf = _frames(4, seed=2)
    eng.asymmetric(f0, kf)
    eng.asymmetric(f1, kf)
    eng.asymmetric(f2, kf)
    assert eng.stats.images_encoded == 4  # the keyframe was encoded once
    assert eng.stats.cache_hits == 2 and eng.stats.cache_misses == 4
    a = eng.mono(f2)
    assert eng.stats.images_encoded == 4
    # LRU bound: 4 distinct keys through a cache of 3 -> the least recently used (f0) was dropped
    assert eng.cached_keys() == [f1.key, kf.key, f2.key]
    assert f0.key not in eng
    assert eng.evict(kf.key) and not eng.evict(kf.key)
    eng.asymmetric(f2, kf)
    assert eng.stats.images_encoded == 4  # evicted from the LRU, but still attached to the kept NetImage
    fresh_kf = NetImage(kf.key, kf.img, kf.true_shape)  # same key, nothing attached
    eng.evict(kf.key)
    eng.asymmetric(f2, fresh_kf)
    assert eng.stats.images_encoded == 5  # evicted -> re-encoded once
    b = eng.mono(f2)
    assert torch.equal(a.X, b.X)
    eng.clear_cache()
    assert eng.cached_keys() == []
    no_cache = MASt3REngine(model, cache_size=0)
    no_cache.mono(NetImage(f0.key, f0.img, f0.true_shape))
    no_cache.mono(NetImage(f0.key, f0.img, f0.true_shape))
    assert no_cache.stats.images_encoded == 2 and no_cache.cached_keys() == []


def _reference_symmetric(model, fi: NetImage, fj: NetImage) -> list[dict]:
    """MASt3R-SLAM's per-pair, per-direction decoding (two decoder calls per pair)."""
    with torch.no_grad():
        ei, pi = model.encode(fi.img, fi.true_shape)
        ej, pj = model.encode(fj.img, fj.true_shape)
        d1, d2 = model.decode(ei, pi, ej, pj)
        r_ii, r_ji = model.heads(d1, d2, fi.shape, fj.shape)
        d1, d2 = model.decode(ej, pj, ei, pi)
        r_jj, r_ij = model.heads(d1, d2, fj.shape, fi.shape)
    return [{k: v[0] for k, v in r.items()} for r in (r_ii, r_ji, r_jj, r_ij)]


def test_symmetric_batched_equals_unbatched(model) -> None:
    frames = _frames(4, seed=3)
    pairs = [(frames[0], frames[1]), (frames[1], frames[2]), (frames[3], frames[0])]
    eng = MASt3REngine(model)
    out = eng.symmetric(pairs)
    assert eng.stats.decoder_calls == 1  # all pairs, both directions, one decoder call
    assert eng.stats.encoder_calls == 1 and eng.stats.images_encoded == 4  # repeated frames encoded once
    assert out.ii.X.shape == (3, H, W, 3) and out.ij.Q.shape == (3, H, W)
    for p, (fi, fj) in enumerate(pairs):
        ref = _reference_symmetric(model, fi, fj)
        for pred, r in zip((out.ii, out.ji, out.jj, out.ij), ref, strict=True):
            _pred_close(pred[p], r)
    # chunked: one decoder call per pair, same numbers
    eng2 = MASt3REngine(model)
    out2 = eng2.symmetric(pairs, max_pairs_per_call=1)
    assert eng2.stats.decoder_calls == 3
    assert _close(out2.ji.X, out.ji.X) and _close(out2.ij.C, out.ij.C)


def test_symmetric_mixed_sizes(model) -> None:
    a, b = _frames(2, seed=4)
    (c,) = _frames(1, h=32, w=16, seed=5, key0=10)
    eng = MASt3REngine(model)
    with pytest.raises(ValueError, match="different image sizes"):
        eng.symmetric([(a, b), (a, c)])
    res = eng.symmetric_list([(a, b), (a, c)])
    assert res[1].ii.X.shape == (1, H, W, 3) and res[1].ji.X.shape == (1, 32, 16, 3)
    assert res[1].jj.X.shape == (1, 32, 16, 3) and res[1].ij.X.shape == (1, H, W, 3)
    ref = _reference_symmetric(model, a, c)
    _pred_close(res[1].ji[0], ref[1])
    _pred_close(res[1].ij[0], ref[3])
    with pytest.raises(ValueError, match="no pairs"):
        eng.symmetric([])


def test_grad_path_reaches_prompts_only(model) -> None:
    eng = MASt3REngine(model)
    f, k = _frames(2, seed=6)
    prompts = model.new_prompts(4).requires_grad_(True)
    eng.set_prompts(prompts)
    feat, pos = eng.encode_grad(f.img, f.true_shape)
    assert feat.requires_grad and not feat.is_inference()
    kfeat, kpos = eng.features_for_grad(k)  # cached keyframe features as constant normal tensors
    assert not kfeat.is_inference() and not kfeat.requires_grad
    p1, p2 = eng.decode_grad(feat, pos, f.shape, kfeat, kpos, k.shape)
    loss = p1.X.abs().mean() + p2.C.mean() + p2.Q.mean()
    loss.backward()
    assert prompts.grad is not None and float(prompts.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # the network is frozen
    # pair_grad: both views encoded with the prompts (one encoder call) or view 2 frozen
    prompts.grad = None
    calls = eng.stats.encoder_calls
    a1, a2 = eng.pair_grad(f, k)
    assert eng.stats.encoder_calls == calls + 1 and a1.X.shape == (1, H, W, 3)
    (a1.C.mean() + a2.X.abs().mean()).backward()
    assert float(prompts.grad.abs().sum()) > 0
    b1, b2 = eng.pair_grad(f, k, frozen2=True)
    assert b2.X.requires_grad and torch.allclose(b1.X, p1.X, rtol=1e-5, atol=1e-6)
    # with prompts=None the grad path equals the inference path
    eng.set_prompts(None)
    feat0, pos0 = eng.encode_grad(f.img, f.true_shape)
    assert torch.allclose(feat0, eng.features(f).feat, rtol=1e-5, atol=1e-6)


def test_inference_tensors_do_not_leak_into_autograd(model) -> None:
    eng = MASt3REngine(model)
    (f,) = _frames(1, seed=7)
    cached = eng.features(f).feat
    assert cached.is_inference()
    w = torch.ones_like(cached, requires_grad=True)
    with pytest.raises(RuntimeError, match="[Ii]nference tensor"):
        (cached * w).sum().backward()  # PyTorch refuses to save an inference tensor for backward
    safe, _ = eng.features_for_grad(f)
    (safe * w).sum().backward()
    assert torch.equal(w.grad, safe)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        eng.encode_grad(f.img, f.true_shape)


def test_prompt_updates_invalidate_cache(model) -> None:
    f, k = _frames(2, seed=8)
    eng = MASt3REngine(model)
    base = eng.mono(f)
    prompts = model.new_prompts(2)
    with torch.no_grad():
        prompts.normal_(0, 1.0)
    eng.set_prompts(prompts)
    prompted = eng.mono(f)
    assert eng.stats.images_encoded == 2  # stale entry re-encoded with the prompts
    assert not torch.allclose(prompted.X, base.X)
    eng.mono(f)
    assert eng.stats.images_encoded == 2
    reuse = MASt3REngine(model, stale_features="reuse")
    reuse.mono(k)
    reuse.set_prompts(prompts)
    reuse.mono(k)
    assert reuse.stats.images_encoded == 1


def test_options_and_input_validation(model) -> None:
    with pytest.raises(ValueError, match="float16"):
        MASt3REngine(model, precision="float16")  # CPU
    with pytest.raises(ValueError, match="precision"):
        MASt3REngine(model, precision="float64")
    with pytest.raises(ValueError, match="cache_size"):
        MASt3REngine(model, cache_size=-1)
    with pytest.raises(ValueError, match="multiples of 16"):
        NetImage(0, torch.zeros(1, 3, 30, 48), torch.tensor([[30, 48]]))
    with pytest.raises(ValueError, match="true_shape"):
        NetImage(0, torch.zeros(1, 3, 32, 48), torch.tensor([[48, 32]]))
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        NetImage(0, torch.zeros(3, 32, 48), torch.tensor([[32, 48]]))


def test_bfloat16_cpu_weights_dpt_heads_float32(model) -> None:
    import copy

    (f,) = _frames(1, seed=9)
    ref = MASt3REngine(model).mono(f)
    eng = MASt3REngine(copy.deepcopy(model), precision="bfloat16")  # the engine casts its model in place
    pred = eng.mono(f)  # f's float32 features (attached by the first engine) are cast by the decoder
    net = eng.model
    assert net.enc_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert net.downstream_head1.head_local_features.fc1.weight.dtype == torch.bfloat16
    assert net.downstream_head1.dpt.head[0].weight.dtype == torch.float32
    assert model.enc_blocks[0].attn.qkv.weight.dtype == torch.float32
    assert pred.X.dtype == torch.float32 and pred.D.dtype == torch.float32  # outputs in float32
    assert torch.isfinite(pred.X).all()
    rel = float((pred.X - ref.X).abs().max() / ref.X.abs().max())
    assert rel < 0.2  # bfloat16 encoder/decoder: same output up to ~1e-2 relative


def test_from_prepared_image(model) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    prep = preprocess_image(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), size=224)
    fr = NetImage.from_prepared("a", prep)
    assert fr.shape == (224, 224)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_cuda_half_precision_encoder_decoder_float32_heads(model, precision: str) -> None:
    import copy

    (f,) = _frames(1, seed=10)
    ref = MASt3REngine(copy.deepcopy(model), device="cpu").mono(f)
    eng = MASt3REngine(copy.deepcopy(model), device="cuda", precision=precision)
    seen: dict[str, torch.dtype] = {}

    def record(name: str, pick):  # a forward hook that returns a value would replace the module's output
        def hook(module, inputs, output) -> None:
            seen.setdefault(name, pick(output))

        return hook

    hooks = [
        eng.model.enc_blocks[0].attn.qkv.register_forward_hook(record("enc", lambda o: o.dtype)),
        eng.model.dec_blocks[0].mlp.fc1.register_forward_hook(record("dec", lambda o: o.dtype)),
        eng.model.downstream_head1.register_forward_hook(record("head", lambda o: o["pts3d"].dtype)),
    ]
    pred = eng.mono(f)
    for h in hooks:
        h.remove()
    half = getattr(torch, precision)
    assert seen == {"enc": half, "dec": half, "head": torch.float32}
    assert pred.X.device.type == "cuda" and pred.X.dtype == torch.float32
    rel = float((pred.X.cpu() - ref.X).abs().max() / ref.X.abs().max())
    assert rel < (0.02 if precision == "float16" else 0.1)
