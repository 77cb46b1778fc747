"""MASt3R retrieval head: P3 parity (../shared/parity/retrieval), safe readers, features of cached tokens."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_mast3r import damped_p1_model

from online3r_ros.model import build_mast3r
from online3r_ros.model.checkpoint_errors import CheckpointFormatError, StateDictMismatchError
from online3r_ros.retrieval.features import LocalFeatures
from online3r_ros.retrieval.mast3r_features import Mast3rRetrievalFeatures
from online3r_ros.retrieval.mast3r_files import (
    NotRetrievalCheckpointError,
    UnsafePickleError,
    codebook_path_for,
    load_asmk_codebook,
    load_retrieval_checkpoint,
)
from online3r_ros.retrieval.mast3r_head import RetrievalHead, select_topk
from online3r_ros.sources.mast3r import MASt3RSource

PARITY_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "parity"
P3_DIR = PARITY_DIR / "retrieval"
needs_p3 = pytest.mark.skipif(
    not (P3_DIR / "mast3r_retrieval_parity_P3.pt").is_file()
    or not (PARITY_DIR / "mast3r_parity.py").is_file(),
    reason=f"P3 retrieval parity fixture not found at {P3_DIR} (../shared/parity/retrieval)",
)


# ---------------------------------------------------------------------------------------------- P3 parity
@pytest.fixture(scope="module")
def p3():
    """(recipe module, fixture dict, backbone with the recipe weights, head, args)."""
    spec = importlib.util.spec_from_file_location("mast3r_parity", PARITY_DIR / "mast3r_parity.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    fx = torch.load(P3_DIR / "mast3r_retrieval_parity_P3.pt", map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = build_mast3r(**fx["backbone_constructor_kwargs"])
    model = model.to_empty(device="cpu")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(mp.recipe_state_dict(shapes, fx["backbone_recipe_seed"]), strict=True)
    head, args = load_retrieval_checkpoint(P3_DIR / fx["retrieval_checkpoint"])
    return mp, fx, model.eval(), head, args


@needs_p3
def test_p3_checkpoint_layout(p3) -> None:
    _, fx, _, head, args = p3
    assert args == fx["retrieval_args"]
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == fx["head_state_dict_shapes"]
    assert head.prewhiten.p.dtype == torch.float64 and head.nfeat == args["nfeat"] and not head.training


@needs_p3
def test_p3_encoder_head_and_topk_match_reference(p3) -> None:
    mp, fx, model, head, args = p3
    with torch.no_grad():
        enc, _ = model.encode(fx["img"], fx["true_shape"])
        feat, attention = head(enc)
        topk = select_topk(feat, attention, args["nfeat"])
        ref_feat, ref_attention = head(fx["enc"])  # the head alone, on the reference tokens
    ours = {"enc": enc, "feat_whitened": feat, "attention": attention}
    ours |= dict(zip(("topk_feat", "topk_attention", "topk_indices"), topk, strict=True))
    mism = mp.compare(ours, {k: fx[k] for k in ours})
    mism += mp.compare(
        {"feat_whitened": ref_feat, "attention": ref_attention},
        {k: fx[k] for k in ("feat_whitened", "attention")},
        path="on_ref_enc",
    )
    assert not mism, "\n".join(mism)
    assert torch.equal(topk[2], fx["topk_indices"])
    assert torch.equal(head.local_features(fx["enc"])[2], fx["topk_indices"])


@needs_p3
def test_p3_codebook_centroids_exact(p3) -> None:
    _, fx, _, head, _ = p3
    path = codebook_path_for(P3_DIR / fx["retrieval_checkpoint"])
    assert path.name == fx["codebook"]
    cent = load_asmk_codebook(path, dim=head.dim)
    assert cent.dtype == np.float32 and cent.shape == tuple(fx["codebook_centroids"].shape)
    assert torch.equal(torch.from_numpy(cent), fx["codebook_centroids"])
    assert fx["codebook_type"] == "Codebook" and cent.shape[0] == fx["codebook_params"]["size"]


# ------------------------------------------------------------------------------------------ file readers
def _args(**kw) -> argparse.Namespace:
    base = dict(
        pretrained="x", freeze_backbone=1, prewhiten=0, hdims="16", residual=False, postwhiten=0,
        featweights="l2norm", nfeat=5, imsize=512, nclusters=4,
    )  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def _save_ckpt(path: Path, head: RetrievalHead, args: argparse.Namespace, **edit) -> Path:
    sd = {k: v.clone() for k, v in head.state_dict().items()}
    sd["backbone.enc_blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)  # ignored, as MASt3R-SLAM does
    for k, v in edit.items():
        if v is None:
            sd.pop(k.replace("__", "."))
        else:
            sd[k.replace("__", ".")] = v
    torch.save({"model": sd, "args": args}, path)
    return path


def test_round_trip_multilayer_residual(tmp_path) -> None:
    torch.manual_seed(0)
    head = RetrievalHead(16, hdims="32_16", residual=True, nfeat=-0.5)
    with torch.no_grad():
        head.prewhiten.m.normal_()
        head.postwhiten.p.normal_()
    assert sorted(k for k in head.state_dict() if k.startswith("projector")) == [
        "projector.0.bias", "projector.0.weight", "projector.1.bias", "projector.1.weight",
        "projector.3.bias", "projector.3.weight",
    ]  # fmt: skip
    path = _save_ckpt(tmp_path / "a_retrieval_trainingfree.pth", head, _args(hdims="32_16", residual=True))
    loaded, args = load_retrieval_checkpoint(path)
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), head(x), rtol=0, atol=0)
    assert len(loaded.local_features(x)[0][0]) == 5  # nfeat -0.5: half the tokens
    assert args["hdims"] == "32_16"


def test_strict_checks_name_the_keys(tmp_path) -> None:
    head = RetrievalHead(16, hdims=[16])
    bad_shape = _save_ckpt(tmp_path / "s_x.pth", head, _args(), projector__0__weight=torch.zeros(16, 8))
    with pytest.raises(StateDictMismatchError, match=r"projector\.0\.weight: checkpoint \[16, 8\]") as e:
        load_retrieval_checkpoint(bad_shape, backbone_dim=16)
    assert e.value.mismatched == [("projector.0.weight", (16, 8), (16, 16))]
    missing = _save_ckpt(tmp_path / "m_x.pth", head, _args(), postwhiten__p=None)
    with pytest.raises(StateDictMismatchError, match="1 missing key") as e:
        load_retrieval_checkpoint(missing)
    assert e.value.missing == ["postwhiten.p"] and not e.value.unexpected
    extra = _save_ckpt(tmp_path / "u_x.pth", head, _args(), projector__1__weight=torch.ones(16))
    with pytest.raises(StateDictMismatchError, match="unexpected") as e:
        load_retrieval_checkpoint(extra)
    assert e.value.unexpected == ["projector.1.weight"]
    # args without a postwhitener: its weights become unexpected
    with pytest.raises(StateDictMismatchError) as e:
        load_retrieval_checkpoint(_save_ckpt(tmp_path / "n_x.pth", head, _args(postwhiten=None)))
    assert e.value.unexpected == ["postwhiten.m", "postwhiten.p"]


def test_not_a_retrieval_checkpoint(tmp_path) -> None:
    net = tmp_path / "net.pth"
    torch.save(
        {"model": {"enc_norm.weight": torch.ones(4)}, "args": argparse.Namespace(model="AsymmetricMASt3R()")},
        net,
    )
    with pytest.raises(NotRetrievalCheckpointError, match="MASt3R network checkpoint"):
        load_retrieval_checkpoint(net)
    bare = tmp_path / "bare.pth"
    torch.save({"prewhiten.m": torch.zeros(1, 4)}, bare)
    with pytest.raises(NotRetrievalCheckpointError, match="expected"):
        load_retrieval_checkpoint(bare)
    with pytest.raises(NotRetrievalCheckpointError, match="featweights"):
        load_retrieval_checkpoint(
            _save_ckpt(tmp_path / "f_x.pth", RetrievalHead(16, hdims=[16]), _args(featweights="x"))
        )


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_without_running(tmp_path) -> None:
    marker = tmp_path / "pwned"
    cb = tmp_path / "evil_codebook.pkl"
    cent = np.ones((3, 4), np.float32)
    with open(cb, "wb") as f:
        pickle.dump({"type": "Codebook", "params": {}, "state": {"centroids": cent, "x": _Evil(marker)}}, f)
    with pytest.raises(UnsafePickleError, match=r"refused global (os|posix|nt)\.system"):
        load_asmk_codebook(cb)
    with open(cb, "wb") as f:
        pickle.dump({"type": "Codebook", "params": {}, "state": {"centroids": np.load}}, f)
    with pytest.raises(UnsafePickleError, match=r"numpy\.load"):
        load_asmk_codebook(cb)
    pth = tmp_path / "evil_retrieval_trainingfree.pth"
    torch.save({"model": {}, "args": _Evil(marker)}, pth)
    with pytest.raises(CheckpointFormatError, match="refused"):
        load_retrieval_checkpoint(pth)
    assert not marker.exists()


def test_codebook_structure_and_name(tmp_path) -> None:
    assert codebook_path_for("/a/b/M_512_retrieval_trainingfree.pth") == Path(
        "/a/b/M_512_retrieval_codebook.pkl"
    )
    good = tmp_path / "cb.pkl"
    with open(good, "wb") as f:  # float64 centroids are accepted and returned as float32
        pickle.dump({"type": "Codebook", "params": {"size": 2}, "state": {"centroids": np.eye(2, 3)}}, f)
    cent = load_asmk_codebook(good)
    assert cent.dtype == np.float32 and cent.flags.c_contiguous and np.array_equal(cent, np.eye(2, 3))
    with pytest.raises(CheckpointFormatError, match="3-d"):
        load_asmk_codebook(good, dim=4)
    for obj in ({"type": "IVF", "state": {}}, {"type": "Codebook", "state": {"centroids": np.zeros(3)}}, [1]):
        with open(good, "wb") as f:
            pickle.dump(obj, f)
        with pytest.raises(CheckpointFormatError):
            load_asmk_codebook(good)


# ------------------------------------------------------------------------------ features of source frames
def test_features_from_cached_tokens_without_second_encode() -> None:
    model = damped_p1_model()
    src = MASt3RSource(model, img_size=224)
    rng = np.random.default_rng(0)
    frames = [src.prepare(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), index=i) for i in range(2)]
    torch.manual_seed(1)
    head = RetrievalHead(64, hdims=[32], nfeat=10)
    with torch.no_grad():
        head.prewhiten.m.normal_()
        head.postwhiten.p.copy_(torch.randn(32, 32, dtype=torch.float64))
    extractor = Mast3rRetrievalFeatures(head, src)
    stats = src.engine.stats
    lf = extractor(frames[0])  # forces the one encode through the engine
    assert stats.images_encoded == 1
    src.predict_mono(frames[0])  # the pipeline's own call reuses the attached tokens
    src.predict_asymmetric(frames[1], frames[0])  # encodes frame 1 only
    assert stats.images_encoded == 2
    lf1 = extractor(frames[1])
    assert extractor(frames[0]).desc.equal(lf.desc)
    assert stats.images_encoded == 2  # retrieval never re-encodes
    assert isinstance(lf, LocalFeatures) and lf.kind == "mast3r" and lf.points is None
    assert lf.desc.shape == (10, 32) and lf.desc.dtype == torch.float32 and not lf.desc.is_inference()
    assert lf.xy.shape == (10, 2) and lf.image_size == (224, 224) and len(lf1) == 10
    # equal to the head on a fresh encode; xy = centres of the selected 16x16 patches (14 x 14 grid)
    net = frames[0].cache["mast3r_net"]
    with torch.no_grad():
        feat, _ = model.encode(net.img, net.true_shape)
        ref, _, idx = head.local_features(feat)
    torch.testing.assert_close(lf.desc, ref[0], rtol=1e-5, atol=1e-5)
    xy = torch.stack([idx[0] % 14, idx[0] // 14], dim=1).float() * 16 + 7.5
    assert torch.equal(lf.xy, xy)
    with pytest.raises(ValueError, match="expects 32-d tokens"):
        Mast3rRetrievalFeatures(RetrievalHead(32, hdims=[8]), src)
