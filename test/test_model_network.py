"""MASt3R network: constructor validation, input checks, RoPE, float32 heads under autocast."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_mast3r import random_views, small_mast3r_kwargs

from online3r_ros.model import MASt3R, build_mast3r, dpt, parse_mast3r_kwargs
from online3r_ros.model.blocks import linear
from online3r_ros.model.patch_embed import patch_positions
from online3r_ros.model.rope import apply_rope, rope2d_naive, rope_tables

INF = float("inf")
SMALL = small_mast3r_kwargs(32, 32, 2)


@pytest.fixture(scope="module")
def small_model() -> MASt3R:
    torch.manual_seed(0)
    return build_mast3r(**SMALL).eval()


@pytest.mark.parametrize(
    ("override", "exc", "fragment"),
    [
        ({"bogus_arg": 1}, TypeError, "bogus_arg"),
        ({"head_type": "linear"}, ValueError, "head_type"),
        ({"output_mode": "pts3d"}, ValueError, "output_mode"),
        ({"dec_depth": 8}, ValueError, "dec_depth"),
        ({"pos_embed": "cosine"}, ValueError, "pos_embed"),
        ({"patch_embed_cls": "ManyAR_PatchEmbed"}, ValueError, "load_model"),
        ({"landscape_only": True}, ValueError, "landscape_only"),
        ({"depth_mode": ("exp", 0, INF)}, ValueError, "depth_mode"),
        ({"conf_mode": ("relu", 1, INF)}, ValueError, "conf_mode"),
        ({"enc_num_heads": 3}, ValueError, "enc_num_heads"),
        ({"dec_embed_dim": 24, "dec_num_heads": 4}, ValueError, "divisible by 4"),
        ({"enc_depth": 0}, ValueError, "enc_depth"),
        ({"desc_mode": "raw"}, ValueError, "desc_mode"),
        ({"freeze": "everything"}, ValueError, "freeze"),
    ],
)
def test_unsupported_constructor_values_raise_clear_errors(override, exc, fragment):
    with pytest.raises(exc, match=fragment):
        parse_mast3r_kwargs(**{**SMALL, **override})


def test_config_parsing_of_reference_values():
    cfg = parse_mast3r_kwargs(**SMALL)
    assert cfg.rope_base == 100.0 and cfg.desc_dim == 24 and cfg.two_confs
    assert cfg.depth_mode == ("exp", -math.inf, math.inf)
    assert cfg.desc_conf_mode == ("exp", 0.0, math.inf)
    # desc_conf_mode=None falls back to conf_mode (reference behaviour)
    cfg = parse_mast3r_kwargs(**{**SMALL, "desc_conf_mode": None})
    assert cfg.desc_conf_mode == ("exp", 1.0, math.inf)


def test_single_conf_variant_copies_conf():
    torch.manual_seed(1)
    model = build_mast3r(**{**SMALL, "two_confs": False}).eval()
    assert model.downstream_head1.head_local_features.fc2.weight.shape[0] == 24 * 256
    v1, v2 = random_views(1, 32, 48, true_shape=True)
    with torch.no_grad():
        res1, res2 = model(v1, v2)
    assert torch.equal(res1["desc_conf"], res1["conf"]) and torch.equal(res2["desc_conf"], res2["conf"])


def test_output_shapes_and_value_ranges(small_model):
    v1, v2 = random_views(2, 48, 32, true_shape=True)  # portrait
    with torch.no_grad():
        res1, res2 = small_model(v1, v2)
    assert res1["pts3d"].shape == res2["pts3d_in_other_view"].shape == (2, 48, 32, 3)
    for res in (res1, res2):
        assert res["conf"].shape == res["desc_conf"].shape == (2, 48, 32)
        assert res["desc"].shape == (2, 48, 32, 24)
        assert bool((res["conf"] >= 1).all()) and bool((res["desc_conf"] >= 0).all())
        torch.testing.assert_close(res["desc"].norm(dim=-1), torch.ones(2, 48, 32))


def test_encode_shapes_and_positions(small_model):
    v1, _ = random_views(2, 32, 48, true_shape=True)
    with torch.no_grad():
        feat, pos = small_model.encode(v1["img"], v1["true_shape"])
    assert feat.shape == (2, 6, 32) and pos.shape == (2, 6, 2) and pos.dtype == torch.int64
    assert pos[0].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_input_validation(small_model):
    v1, v2 = random_views(1, 32, 48, true_shape=True)
    with pytest.raises(ValueError, match="multiples of 16"):
        small_model.encode(torch.zeros(1, 3, 30, 48))
    with pytest.raises(ValueError, match="true_shape"):
        small_model.encode(v1["img"], torch.tensor([[48, 32]]))
    with pytest.raises(ValueError, match="img"):
        small_model(v1, {"image": v2["img"]})
    f, p = small_model.encode(v1["img"])
    with pytest.raises(ValueError, match="feat1"):
        small_model.decode(f[..., :16], p, f, p)
    with pytest.raises(ValueError, match="dec1"):
        small_model.heads([f], [f], (32, 48), (32, 48))
    with pytest.raises(ValueError, match="impl"):
        small_model.set_impl("cuda")


def test_rope_tables_match_croco_formulation():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, 3, 7, 16, generator=g)  # [B, heads, N, d]
    pos = torch.randint(0, 40, (2, 7, 2), generator=g)
    cos, sin = rope_tables(pos, 16, 100.0)
    fast = apply_rope(tokens.transpose(1, 2), cos, sin).transpose(1, 2)
    torch.testing.assert_close(fast, rope2d_naive(tokens, pos, 100.0), rtol=1e-6, atol=1e-6)
    # a rotation: norms of each (j, j + d/4) pair are preserved
    pairs = lambda t: t.unflatten(-1, (2, 2, 4)).norm(dim=-2)  # noqa: E731
    torch.testing.assert_close(pairs(fast), pairs(tokens))
    # relative: a common shift of all positions leaves q.k unchanged
    cos2, sin2 = rope_tables(pos + 5, 16, 100.0)
    q = apply_rope(tokens.transpose(1, 2), cos, sin)
    q2 = apply_rope(tokens.transpose(1, 2), cos2, sin2)
    torch.testing.assert_close(q @ q.transpose(-1, -2), q2 @ q2.transpose(-1, -2), rtol=1e-4, atol=1e-4)


def test_patch_positions_row_major():
    pos = patch_positions(1, 2, 3)
    assert pos.shape == (1, 6, 2) and pos[0, 4].tolist() == [1, 1]


def test_heads_run_in_float32_under_autocast(small_model):
    v1, v2 = random_views(1, 32, 48, true_shape=True)
    with torch.no_grad():
        f1, p1 = small_model.encode(v1["img"])
        f2, p2 = small_model.encode(v2["img"])
        dec1, dec2 = small_model.decode(f1, p1, f2, p2)
        ref1, ref2 = small_model.heads(dec1, dec2, (32, 48), (32, 48))
        half = [t.to(torch.bfloat16) for t in dec1], [t.to(torch.bfloat16) for t in dec2]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # the encoder/decoder really run in bf16 under autocast ...
            q = small_model.enc_blocks[0].attn.qkv(f1)
            assert q.dtype == torch.bfloat16
            res1, res2 = small_model.heads(dec1, dec2, (32, 48), (32, 48))
            hres1, _ = small_model.heads(*half, (32, 48), (32, 48))
            full1, _ = small_model(v1, v2)
    # ... but the heads are float32 and bit-identical to the non-autocast run on the same tokens
    for a, b in ((res1, ref1), (res2, ref2)):
        for k in a:
            assert a[k].dtype == torch.float32
            assert torch.equal(a[k], b[k]), k
    assert all(t.dtype == torch.float32 for t in (*hres1.values(), *full1.values()))
    assert all(bool(torch.isfinite(t).all()) for t in full1.values())


def test_banded_winograd_conv_matches_direct_conv(monkeypatch):
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(2, 16, 37, 23)
    monkeypatch.setattr(dpt, "WINOGRAD_BAND_PIXELS", 23 * 5)  # 8 bands of 5 rows (last one 2 rows)
    with torch.no_grad():
        ref = conv(x)
        out = dpt.conv3x3(conv, x, winograd=True)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # with autograd required the plain conv is used (NNPACK has no backward here)
    xg = x.clone().requires_grad_(True)
    out = dpt.conv3x3(conv, xg, winograd=True)
    assert "Convolution" in type(out.grad_fn).__name__ or "Mkldnn" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    ("gelu", "with_residual"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_fast_linear_matches_plain_linear(gelu, with_residual):
    torch.manual_seed(6)
    lin = torch.nn.Linear(24, 40)
    x = torch.randn(2, 7, 24).transpose(0, 1)  # non-contiguous input
    res = torch.randn(7, 2, 40) if with_residual else None
    with torch.no_grad():
        ref = lin(x)
        ref = torch.nn.functional.gelu(ref) if gelu else ref
        ref = ref + res if with_residual else ref
        out = linear(lin, x, True, gelu=gelu, residual=res)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_pair_of_different_image_sizes(small_model):
    a, _ = random_views(1, 32, 48, seed=8, true_shape=True)
    b, _ = random_views(1, 48, 32, seed=9, true_shape=True)
    with torch.no_grad():
        res1, res2 = small_model(a, b)
        f1, p1 = small_model.encode(a["img"])
        f2, p2 = small_model.encode(b["img"])
        dec1, dec2 = small_model.decode(f1, p1, f2, p2)
        h1, h2 = small_model.heads(dec1, dec2, (32, 48), (48, 32))
    assert res1["pts3d"].shape == (1, 32, 48, 3) and res2["pts3d_in_other_view"].shape == (1, 48, 32, 3)
    torch.testing.assert_close(h1["pts3d"], res1["pts3d"])
    torch.testing.assert_close(h2["pts3d"], res2["pts3d_in_other_view"])
