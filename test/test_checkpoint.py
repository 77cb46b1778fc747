"""Tests for online3r_ros.model.checkpoint: safe loading of official .pth and Hugging Face checkpoints."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
from pathlib import Path

import pytest
import torch
from helpers_mast3r import P1_KWARGS

from online3r_ros.model import build_mast3r
from online3r_ros.model.checkpoint import (
    ArchitectureMismatchError,
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConstructorCall,
    StateDictMismatchError,
    constructor_string,
    detect_architecture,
    kwargs_from_constructor,
    load_mast3r,
    match_state_dict,
    parse_constructor,
    read_checkpoint,
    save_checkpoint,
)

INF = math.inf
# How the official checkpoint stores it (before load_model's rewrites).
P1_STRING = (
    "AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
    "head_type='catmlp+dpt', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), "
    "conf_mode=('exp', 1, inf), enc_embed_dim=64, enc_depth=2, enc_num_heads=4, dec_embed_dim=48, "
    "dec_depth=10, dec_num_heads=4, two_confs=True, desc_conf_mode=('exp', 0, inf))"
)


@pytest.fixture(scope="module")
def p1_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_mast3r(**P1_KWARGS).eval()
    with torch.no_grad():  # non-trivial values everywhere (heads' last conv etc.)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def p1_views() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    img1 = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1
    img2 = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1
    ts = torch.tensor([[32, 48]], dtype=torch.int32)
    return {"img": img1, "true_shape": ts}, {"img": img2, "true_shape": ts}


def _assert_same_model(a: torch.nn.Module, b: torch.nn.Module, views: tuple[dict, dict]) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        ra, rb = a(*views), b(*views)
    for x, y in zip(ra, rb, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def _save_pth(path: Path, sd: dict, constructor: str | None, **extra) -> Path:
    obj = {"model": sd, "epoch": 3, **extra}
    if constructor is not None:
        # training-style args: argparse Namespace with non-allow-listed objects inside (a Path)
        obj["args"] = argparse.Namespace(model=constructor, lr=1e-4, output_dir=pathlib.PosixPath("/x/y"))
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------- constructor parsing
def test_parse_official_string_with_rewrites() -> None:
    kw = kwargs_from_constructor(P1_STRING)
    assert kw["patch_embed_cls"] == "PatchEmbedDust3R"  # ManyAR_PatchEmbed rewritten as load_model does
    assert kw["landscape_only"] is False  # appended as load_model does
    assert kw["depth_mode"] == ("exp", -INF, INF)
    assert kw["conf_mode"] == ("exp", 1, INF) and kw["desc_conf_mode"] == ("exp", 0, INF)
    assert kw["img_size"] == (512, 512) and kw["enc_depth"] == 2 and kw["two_confs"] is True
    assert kw == P1_KWARGS
    forced = kwargs_from_constructor(P1_STRING[:-1] + ", landscape_only=True)")
    assert forced["landscape_only"] is False


def test_parse_nested_calls_and_round_trip() -> None:
    call = parse_constructor("Foo(a=partial(nn.LayerNorm, eps=1e-06), b=-2, c=[1, 2.5], d={'k': None})")
    assert isinstance(call, ConstructorCall) and call.name == "Foo"
    inner = call.kwargs["a"]
    assert isinstance(inner, ConstructorCall) and inner.name == "partial"
    assert inner.args[0].name == "nn.LayerNorm" and inner.kwargs == {"eps": 1e-06}
    assert call.kwargs["b"] == -2 and call.kwargs["c"] == [1, 2.5] and call.kwargs["d"] == {"k": None}
    assert kwargs_from_constructor(constructor_string(P1_KWARGS)) == P1_KWARGS


@pytest.mark.parametrize(
    ("text", "exc"),
    [
        ("__import__('os').system('touch /tmp/online3r_pwned')", CheckpointFormatError),
        ("AsymmetricMASt3R(enc_depth=1+1)", CheckpointFormatError),
        ("AsymmetricMASt3R(enc_depth=", CheckpointFormatError),
        ("enc_depth", CheckpointFormatError),
        ("AsymmetricMASt3R(24)", CheckpointFormatError),
        ("AsymmetricMASt3R(norm_layer=partial(nn.LayerNorm, eps=1e-6))", ArchitectureMismatchError),
        ("AsymmetricMASt3R(x=__import__('os'))", ArchitectureMismatchError),
        ("AsymmetricCroCo3DStereo(head_type='dpt', output_mode='pts3d')", ArchitectureMismatchError),
        ("AsymmetricMASt3R(head_type='dpt', output_mode='pts3d')", ArchitectureMismatchError),
    ],
)
def test_constructor_errors_never_evaluate(text: str, exc: type) -> None:
    with pytest.raises(exc):
        kwargs_from_constructor(text)
    assert not os.path.exists("/tmp/online3r_pwned")


def test_dust3r_error_names_it() -> None:
    with pytest.raises(ArchitectureMismatchError, match="DUSt3R"):
        kwargs_from_constructor("AsymmetricCroCo3DStereo(head_type='dpt', output_mode='pts3d')")
    with pytest.raises(ArchitectureMismatchError, match="DUSt3R with a DPT head"):
        detect_architecture({"enc_blocks.0.norm1.weight", "downstream_head1.dpt.head.0.weight"})
    with pytest.raises(ArchitectureMismatchError, match="linear head"):
        detect_architecture({"enc_blocks.0.norm1.weight", "downstream_head1.proj.weight"})
    with pytest.raises(ArchitectureMismatchError, match="CroCo pre-training"):
        detect_architecture({"enc_blocks.0.norm1.weight", "prediction_head.weight"})
    with pytest.raises(ArchitectureMismatchError, match="enc_blocks"):
        detect_architecture({"fc.weight"})


# ------------------------------------------------------------------------------------------- round trips
def test_pth_round_trip(tmp_path: Path, p1_model, p1_views) -> None:
    path = _save_pth(tmp_path / "m.pth", p1_model.state_dict(), P1_STRING)
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "pth" and ckpt.constructor == P1_STRING and not ckpt.inferred
    model = load_mast3r(path)
    assert not model.training
    _assert_same_model(p1_model, model, p1_views)


def test_hf_round_trip_and_snapshot_layout(tmp_path: Path, p1_model, p1_views) -> None:
    d = save_checkpoint(tmp_path / "hf", p1_model.state_dict(), P1_KWARGS, layout="hf")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["depth_mode"] == ["exp", -INF, INF]  # JSON lists with Infinity, as the hub mixin writes
    assert "Infinity" in (d / "config.json").read_text()
    from safetensors import safe_open

    with safe_open(str(d / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any(".layer_rn." in k for k in keys)  # the shared alias was dropped (safetensors can't share)
    model = load_mast3r(d)
    _assert_same_model(p1_model, model, p1_views)
    # Hugging Face cache repo folder: models--org--name/{refs/main, snapshots/<rev>/...}
    repo = tmp_path / "models--naver--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for name in ("config.json", "model.safetensors"):
        (snap / name).symlink_to(d / name)
    ckpt = read_checkpoint(repo)
    assert ckpt.layout == "hf" and ckpt.path == snap / "model.safetensors"
    assert ckpt.kwargs == P1_KWARGS
    # hub metadata in config.json is ignored
    cfg["_name_or_path"], cfg["transformers_version"], cfg["architectures"] = "x", "4.0", ["AsymmetricMASt3R"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert read_checkpoint(d).kwargs == P1_KWARGS
    # the .safetensors file itself (config.json next to it)
    assert read_checkpoint(d / "model.safetensors").kwargs == P1_KWARGS


def test_two_confs_taken_from_weights_and_missing_args(tmp_path: Path, p1_model) -> None:
    sd = p1_model.state_dict()
    no_two = P1_STRING.replace(", two_confs=True, desc_conf_mode=('exp', 0, inf)", "")
    ckpt = read_checkpoint(_save_pth(tmp_path / "a.pth", sd, no_two))
    assert ckpt.kwargs["two_confs"] is True and ckpt.kwargs["desc_conf_mode"] == ("exp", 0, INF)
    bare = read_checkpoint(_save_pth(tmp_path / "b.pth", sd, None))
    assert bare.inferred and bare.kwargs["enc_depth"] == 2 and bare.kwargs["dec_depth"] == 10
    assert bare.kwargs["enc_embed_dim"] == 64 and bare.kwargs["two_confs"] is True
    assert bare.kwargs["output_mode"] == "pts3d+desc24"


# ------------------------------------------------------------------------------------------------ errors
def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic callers
        load_mast3r(tmp_path / "nope.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        read_checkpoint(tmp_path / "empty_dir")
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.json").write_text(json.dumps({"head_type": "catmlp+dpt"}))
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        read_checkpoint(tmp_path / "cfg_only")


def test_wrong_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello, this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "a.txt")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointCorruptedError, match="empty"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointFormatError, match="expected a dict"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"codebook": torch.zeros(2), "meta": "retrieval"}, tmp_path / "retrieval.pth")
    with pytest.raises(CheckpointFormatError, match="no 'model' state_dict"):
        read_checkpoint(tmp_path / "retrieval.pth")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(CheckpointFormatError, match="not a torch.save file"):
        read_checkpoint(tmp_path / "other.zip")
    (tmp_path / "badcfg").mkdir()
    (tmp_path / "badcfg" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptedError, match="not valid JSON"):
        read_checkpoint(tmp_path / "badcfg")


def _small_mast3r_like_sd() -> dict[str, torch.Tensor]:
    return {
        "enc_blocks.0.norm1.weight": torch.ones(8),
        "downstream_head1.head_local_features.fc1.weight": torch.ones(4, 4),
        "downstream_head1.head_local_features.fc2.weight": torch.ones(25 * 256, 4),
        "patch_embed.proj.weight": torch.ones(8, 3, 16, 16),
        "blob": torch.arange(20000, dtype=torch.float32),
    }


def test_truncated_and_corrupted_pth(tmp_path: Path) -> None:
    path = _save_pth(tmp_path / "ok.pth", _small_mast3r_like_sd(), P1_STRING)
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptedError, match="truncated or corrupted"):
        read_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "trunc2.pth").write_bytes(data[:-30])
    with pytest.raises(CheckpointCorruptedError):
        read_checkpoint(tmp_path / "trunc2.pth")
    flipped = bytearray(data)
    blob_at = data.find(torch.arange(20000, dtype=torch.float32)[5000:5004].numpy().tobytes())
    assert blob_at > 0
    flipped[blob_at] ^= 0x40  # one bit in a weight: torch.load alone would not notice
    (tmp_path / "flip.pth").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointCorruptedError, match="CRC-32"):
        read_checkpoint(tmp_path / "flip.pth")
    assert read_checkpoint(path).state_dict["blob"].shape == (20000,)


def test_truncated_and_corrupted_safetensors(tmp_path: Path, p1_model) -> None:
    d = save_checkpoint(tmp_path / "hf", _small_mast3r_like_sd(), P1_KWARGS, layout="hf")
    st = d / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:-100])
    with pytest.raises(CheckpointCorruptedError, match="truncated"):
        read_checkpoint(d)
    bad = bytearray(data)
    bad[10:14] = b"\xff\xfe\x00\x01"  # inside the JSON header
    st.write_bytes(bytes(bad))
    with pytest.raises(CheckpointCorruptedError, match="header"):
        read_checkpoint(d)
    # NaN weights (safetensors carries no checksum): rejected by load_mast3r's finiteness check
    sd = {k: v.clone() for k, v in p1_model.state_dict().items()}
    sd["enc_blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    d2 = save_checkpoint(tmp_path / "hf_nan", sd, P1_KWARGS, layout="hf")
    with pytest.raises(CheckpointCorruptedError, match="non-finite"):
        load_mast3r(d2)


def test_dust3r_checkpoints_rejected(tmp_path: Path) -> None:
    sd = {"enc_blocks.0.norm1.weight": torch.ones(8), "downstream_head1.dpt.head.0.weight": torch.ones(2, 2)}
    dust3r = (
        "AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(512, 512), head_type='dpt', "
        "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=1024)"
    )
    with pytest.raises(ArchitectureMismatchError, match="DUSt3R"):
        read_checkpoint(_save_pth(tmp_path / "dust3r.pth", sd, dust3r))
    with pytest.raises(ArchitectureMismatchError, match="DUSt3R with a DPT head"):
        read_checkpoint(_save_pth(tmp_path / "dust3r_noargs.pth", sd, None))
    d = save_checkpoint(tmp_path / "dust3r_hf", sd, {"head_type": "dpt", "output_mode": "pts3d"}, layout="hf")
    with pytest.raises(ArchitectureMismatchError, match="DUSt3R"):
        read_checkpoint(d)


def test_strict_key_check_lists_everything(p1_model) -> None:
    expected = {k: tuple(v.shape) for k, v in p1_model.state_dict().items()}
    sd = dict(p1_model.state_dict())
    del sd["enc_norm.weight"]
    del sd["dec_blocks2.3.mlp.fc1.bias"]
    sd["extra.head.weight"] = torch.zeros(3)
    sd["decoder_embed.weight"] = torch.zeros(48, 65)
    with pytest.raises(StateDictMismatchError) as info:
        match_state_dict(expected, sd)
    err = info.value
    assert err.missing == ["dec_blocks2.3.mlp.fc1.bias", "enc_norm.weight"]
    assert err.unexpected == ["extra.head.weight"]
    assert err.mismatched == [("decoder_embed.weight", (48, 65), (48, 64))]
    msg = str(err)
    assert "enc_norm.weight" in msg and "extra.head.weight" in msg and "[48, 65]" in msg
    # tolerated: one name of each DPT alias pair, and mask_token absent from the model
    sd = {k: v for k, v in p1_model.state_dict().items() if ".layer_rn." not in k}
    assert match_state_dict(expected, sd).keys() == expected.keys()
    no_mask = {k: v for k, v in expected.items() if k != "mask_token"}
    assert "mask_token" not in match_state_dict(no_mask, p1_model.state_dict())


def test_load_mast3r_strict_error_from_file(tmp_path: Path, p1_model) -> None:
    sd = dict(p1_model.state_dict())
    del sd["dec_norm.bias"]
    with pytest.raises(StateDictMismatchError, match="dec_norm.bias"):
        load_mast3r(_save_pth(tmp_path / "m.pth", sd, P1_STRING))
    # architecture described by the string disagrees with the weights (wrong dims) -> shape errors
    wrong = P1_STRING.replace("enc_embed_dim=64", "enc_embed_dim=32")
    with pytest.raises(StateDictMismatchError, match="shape mismatch"):
        load_mast3r(_save_pth(tmp_path / "w.pth", p1_model.state_dict(), wrong))
    bad_heads = P1_STRING.replace("enc_num_heads=4", "enc_num_heads=5")  # 64 / 5 is not an integer head dim
    with pytest.raises(ArchitectureMismatchError, match="cannot build"):
        load_mast3r(_save_pth(tmp_path / "h.pth", p1_model.state_dict(), bad_heads))


def test_legacy_torch_format(tmp_path: Path) -> None:
    args = argparse.Namespace(model=P1_STRING, output_dir=pathlib.PosixPath("/x"))
    obj = {"model": _small_mast3r_like_sd(), "args": args}
    torch.save(obj, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(tmp_path / "legacy.pth")
    assert ckpt.kwargs == P1_KWARGS and ckpt.state_dict["blob"].shape == (20000,)


def test_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {"w": torch.zeros(1)}, "args": Evil()}, tmp_path / "evil.pth")
    torch.save(
        {"model": {"w": torch.zeros(1)}, "args": Evil()},
        tmp_path / "evil_legacy.pth",
        _use_new_zipfile_serialization=False,
    )
    for name in ("evil.pth", "evil_legacy.pth"):
        with pytest.raises(CheckpointError):
            load_mast3r(tmp_path / name)
    assert not marker.exists()


def test_official_full_size_string_builds_the_released_network() -> None:
    """The README training string of MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric, after the rewrites,
    builds the 688,638,856-parameter network (on the meta device: no memory)."""
    text = (
        "AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='catmlp+dpt', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), "
        "conf_mode=('exp', 1, inf), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, "
        "dec_depth=12, dec_num_heads=12, two_confs=True, desc_conf_mode=('exp', 0, inf))"
    )
    kw = kwargs_from_constructor(text)
    with torch.device("meta"):
        model = build_mast3r(**kw)
    assert sum(p.numel() for p in model.parameters()) == 688_638_856
    # a string without two_confs (as some copies of the checkpoint args have) is corrected from fc2's shape
    from online3r_ros.model.checkpoint import _reconcile_two_confs

    short = kwargs_from_constructor(text.replace(", two_confs=True, desc_conf_mode=('exp', 0, inf)", ""))
    sd = {k: v for k, v in model.state_dict().items() if "patch_embed" in k or "head_local_features" in k}
    fixed = _reconcile_two_confs(short, sd)
    assert fixed["two_confs"] is True and fixed["desc_conf_mode"] == ("exp", 0, INF)


PARITY_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "parity"


@pytest.mark.skipif(
    not (PARITY_DIR / "mast3r_parity_P1.pt").is_file(), reason=f"parity fixture P1 not found in {PARITY_DIR}"
)
@pytest.mark.parametrize("layout", ["pth", "hf"])
def test_checkpoint_of_parity_weights_reproduces_reference_outputs(tmp_path: Path, layout: str) -> None:
    """Reference weights (P1 recipe) written in the official layouts (the .pth with the ManyAR string) and
    loaded back reproduce the reference outputs of the fixture."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mast3r_parity", PARITY_DIR / "mast3r_parity.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    fx = torch.load(PARITY_DIR / "mast3r_parity_P1.pt", map_location="cpu", weights_only=True)
    shapes = {k: tuple(s) for k, s in fx["state_dict_shapes"]}
    weights = mp.recipe_state_dict(shapes, fx["recipe_seed"])
    if layout == "pth":
        path = _save_pth(tmp_path / "p1.pth", weights, P1_STRING)
    else:
        path = save_checkpoint(tmp_path / "p1_hf", weights, fx["constructor_kwargs"], layout="hf")
    model = load_mast3r(path)
    with torch.no_grad():
        res1, res2 = model(fx["view1"], fx["view2"])
    bad = mp.compare({"res1": res1, "res2": res2}, {"res1": fx["res1"], "res2": fx["res2"]})
    assert not bad, "\n".join(bad)
