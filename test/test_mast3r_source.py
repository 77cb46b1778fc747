"""Tests for online3r_ros.sources.mast3r (MASt3R pointmap source) with a small random-weight network on CPU,
plus an end-to-end run of the SLAM pipeline on a short synthetic sequence (plumbing and shapes only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_mast3r import P1_KWARGS, damped_p1_model

from online3r_ros.model import build_mast3r
from online3r_ros.model.preprocess import compute_transform, scale_intrinsics
from online3r_ros.sources.base import AsymmetricPrediction, Pointmap, SourceError, SymmetricPrediction
from online3r_ros.sources.mast3r import MASt3RSource


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return damped_p1_model()


def _images(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(n)]


def _K(w: int = 64, h: int = 48) -> np.ndarray:
    return np.array([[0.9 * w, 0.0, (w - 1) / 2], [0.0, 0.9 * w, (h - 1) / 2], [0.0, 0.0, 1.0]])


def test_prepare_and_predictions_match_the_network(model) -> None:
    src = MASt3RSource(model, img_size=224)
    assert not src.metric and src.has_descriptors and not src.pose_dependent and not src.calibrated
    a, b = (src.prepare(im, index=i, timestamp=0.1 * i) for i, im in enumerate(_images(2)))
    assert a.image.shape == (224, 224, 3) and a.image.dtype == torch.float32
    assert float(a.image.min()) >= 0.0 and float(a.image.max()) <= 1.0
    assert a.depth is None and a.K is None and a.index == 0 and b.timestamp == pytest.approx(0.1)
    pred = src.predict_asymmetric(a, b)
    assert isinstance(pred, AsymmetricPrediction) and isinstance(pred.frame, Pointmap)
    for pm in (pred.frame, pred.keyframe):
        assert pm.X.shape == (224, 224, 3) and pm.D.shape == (224, 224, 24) and pm.Q.shape == (224, 224)
        assert float(pm.C.min()) >= 1.0 and float(pm.Q.min()) >= 0.0
    net_a, net_b = a.cache["mast3r_net"], b.cache["mast3r_net"]
    with torch.no_grad():
        res1, res2 = model({"img": net_a.img}, {"img": net_b.img})
    assert torch.allclose(pred.frame.X, res1["pts3d"][0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(pred.keyframe.X, res2["pts3d_in_other_view"][0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(pred.keyframe.Q, res2["desc_conf"][0], rtol=1e-5, atol=1e-5)
    # normal tensors: the pipeline may update them in place
    assert not pred.frame.X.is_inference()
    pred.frame.X.mul_(2.0)


def test_symmetric_and_feature_reuse(model) -> None:
    src = MASt3RSource(model, img_size=224, cache_size=1)
    f0, f1, f2 = (src.prepare(im, index=i) for i, im in enumerate(_images(3, seed=1)))
    src.engine.encode_many([f.cache["mast3r_net"] for f in (f0, f1, f2)])  # encoder only (cheap)
    stats = src.engine.stats
    assert stats.images_encoded == 3
    out = src.predict_symmetric([(f0, f1), (f1, f2)])
    # the LRU (size 1) had dropped f0 and f1, but the frames kept their features: nothing re-encoded
    assert stats.images_encoded == 3
    assert len(out) == 2 and all(isinstance(p, SymmetricPrediction) for p in out)
    assert out[1].ji.X.shape == (224, 224, 3) and out[1].ij.D.shape == (224, 224, 24)
    asym = src.predict_asymmetric(f1, f2)
    assert torch.allclose(out[1].ii.X, asym.frame.X, rtol=1e-5, atol=1e-5)
    assert torch.allclose(out[1].ji.C, asym.keyframe.C, rtol=1e-5, atol=1e-5)
    assert src.predict_symmetric([]) == []
    with pytest.raises(SourceError, match="pose guesses"):
        src.predict_symmetric([(f0, f1)], T_CiCj_guesses=[])


def test_calibrated_mode_maps_intrinsics(model) -> None:
    src = MASt3RSource(model, img_size=512, use_calib=True)
    assert src.calibrated
    img = _images(1, h=480, w=640)[0]
    K = _K(640, 480)
    fr = src.prepare(img, K=K)
    assert fr.image.shape == (384, 512, 3)
    expected = scale_intrinsics(K, compute_transform(640, 480), "pixel_center")
    assert fr.K is not None and fr.K.dtype == torch.float32
    assert np.allclose(fr.K.numpy(), expected, atol=1e-4)
    ref = MASt3RSource(model, use_calib=True, intrinsics_convention="reference").prepare(img, K=K)
    assert float(ref.K[0, 2]) == pytest.approx(K[0, 2] / 1.25, abs=1e-4)
    with pytest.raises(SourceError, match="K is required"):
        src.prepare(img)
    with pytest.raises(SourceError, match="positive focal"):
        src.prepare(img, K=np.eye(3) * -1)


def test_bad_inputs(model) -> None:
    src = MASt3RSource(model, img_size=224)
    with pytest.raises(SourceError, match="image"):
        src.prepare(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(SourceError, match="image"):
        src.prepare("not an image")
    with pytest.raises(SourceError, match="img_size"):
        MASt3RSource(model, img_size=384)
    with pytest.raises(SourceError, match="float16"):
        MASt3RSource(model, precision="float16")  # CPU
    from online3r_ros.sources.base import SourceFrame

    alien = SourceFrame(0, 0.0, torch.zeros(224, 224, 3))
    with pytest.raises(SourceError, match="not prepared by MASt3RSource"):
        src.predict_mono(alien)
    # torch float input in [0, 1] works like numpy
    t = torch.from_numpy(_images(1)[0]).float() / 255.0
    assert src.prepare(t).image.shape == (224, 224, 3)


def test_from_config_loads_checkpoint(tmp_path: Path, model) -> None:
    from online3r_ros.model.checkpoint import save_checkpoint
    from online3r_ros.slam.config import SlamConfig
    from online3r_ros.slam.runner import build_source

    path = tmp_path / "tiny.pth"
    save_checkpoint(path, model.state_dict(), P1_KWARGS, layout="pth")
    cfg = SlamConfig().replace(source={"kind": "mast3r", "checkpoint": str(path), "img_size": 224})
    src = build_source(cfg)
    assert isinstance(src, MASt3RSource) and src.img_size == 224
    sd = src.engine.model.state_dict()
    assert torch.equal(sd["enc_norm.weight"], model.state_dict()["enc_norm.weight"])


def _symmetric_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose view-2 decoder and head are view 1's: with random weights the two would
    disagree and nothing would match; this way a static camera's asymmetric prediction is symmetric."""
    twin = build_mast3r(**P1_KWARGS).eval()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        twin.dec_blocks2.load_state_dict(twin.dec_blocks.state_dict())
        twin.downstream_head2.load_state_dict(twin.downstream_head1.state_dict())
    return twin


@pytest.mark.slow
def test_pipeline_end_to_end_on_synthetic_sequence(model) -> None:
    """The SLAM pipeline with the MASt3R source (random weights) on a short synthetic sequence: plumbing and
    shapes, not accuracy.

    With random weights the two decoders/heads disagree and nothing would match, so view 2's decoder and head
    are made copies of view 1's: for a static camera the asymmetric prediction is then exactly symmetric,
    tracking matches every pixel and must return the identity pose (up to the Sim(3) scale). A forced
    keyframe per frame exercises the backend's batched symmetric inference.
    """
    from online3r_ros.slam.config import SlamConfig
    from online3r_ros.slam.system import SlamState, SlamSystem
    from online3r_ros.synthetic.sequence import make_synthetic_sequence
    from online3r_ros.synthetic.trajectory import orbit_trajectory

    src = MASt3RSource(_symmetric_twin(model), img_size=224)
    n_sym = []
    predict_symmetric = src.predict_symmetric

    def counting_symmetric(pairs, guesses=None):
        n_sym.append(len(pairs))
        return predict_symmetric(pairs, guesses)

    src.predict_symmetric = counting_symmetric
    # Q_conf 0: random desc_conf are small; match_frac_thresh 1: every tracked frame becomes a keyframe
    cfg = SlamConfig().replace(tracking={"Q_conf": 0.0, "match_frac_thresh": 1.0}, local_opt={"Q_conf": 0.0})
    system = SlamSystem(cfg, src)
    poses = np.repeat(orbit_trajectory(40)[:1], 3, axis=0)
    outputs = [system.process(f) for f in make_synthetic_sequence(width=64, height=48, seed=0, poses=poses)]

    assert [o.state for o in outputs] == [SlamState.TRACKING] * 3
    for o in outputs:
        assert o.has_pose and o.keyframe is not None
        M = o.T_WC_matrix()
        scale = np.cbrt(np.linalg.det(M[:3, :3]))
        assert abs(scale - 1.0) < 0.01  # Sim(3): scale free, but static camera -> ~identity
        assert np.allclose(M[:3, :3] / scale, np.eye(3), atol=1e-4) and np.abs(M[:3, 3]).max() < 1e-4
    assert outputs[1].match["match_frac"] > 0.9
    assert system.num_keyframes == 3 and sum(n_sym) >= 2  # backend edges through predict_symmetric
    assert len(system.trajectory()) == 3
    stats = src.engine.stats
    assert (
        stats.images_encoded == 3
    )  # every image encoded once, keyframes reused from their attached features
    assert stats.decoder_calls >= 1 + 2 + len(n_sym)


PARITY_RETRIEVAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "parity" / "retrieval"


@pytest.mark.slow
@pytest.mark.skipif(not PARITY_RETRIEVAL.is_dir(), reason=f"{PARITY_RETRIEVAL} (retrieval fixture) is absent")
def test_mast3r_retrieval_features_relocalise_without_a_second_encoder_run(model) -> None:
    """With the MASt3R source and its retrieval head (the P3 fixture's, 64-d like this backbone),
    keyframes carry MASt3R retrieval features computed from the tokens the tracker encoded, and a lost
    frame is relocalised through the database (no depth: the candidate is tracked from its own pose)."""
    from online3r_ros.slam.config import SlamConfig
    from online3r_ros.slam.system import SlamState, SlamSystem
    from online3r_ros.synthetic.sequence import make_synthetic_sequence
    from online3r_ros.synthetic.trajectory import orbit_trajectory

    src = MASt3RSource(_symmetric_twin(model), img_size=224)
    cfg = SlamConfig().replace(
        tracking={"Q_conf": 0.0, "match_frac_thresh": 1.0},
        local_opt={"Q_conf": 0.0},
        system={"reloc_keyframes": 0},  # relocalise through the database only
        retrieval={
            "features": "mast3r",
            "checkpoint": str(PARITY_RETRIEVAL / "P3_retrieval_trainingfree.pth"),
            "min_score": 0.0,
        },
    )
    system = SlamSystem(cfg, src)
    poses = np.repeat(orbit_trajectory(40)[:1], 4, axis=0)
    frames = list(make_synthetic_sequence(width=64, height=48, seed=0, poses=poses))
    outputs = [system.process(f) for f in frames[:3]]
    assert all(o.keyframe is not None and o.keyframe.features.kind == "mast3r" for o in outputs)
    assert len(system.frontend.place.places) == 3
    system.frontend.state = SlamState.LOST  # as after a lost frame
    out = system.process(frames[3])
    assert out.state == SlamState.RELOC and "place recognition" in out.reason, out.reason
    assert src.engine.stats.images_encoded == 4  # retrieval reused the tracker's tokens
