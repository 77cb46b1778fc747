"""Codebook, SIFT features and the ASMK image database on real 7-Scenes frames (fast, seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"7-Scenes test frames not found at {DATA}")

from online3r_ros.cli.main import main as cli_main  # noqa: E402
from online3r_ros.datasets.imageio import read_depth_png, read_rgb  # noqa: E402
from online3r_ros.retrieval.codebook import Codebook, load_default_codebook, train_codebook  # noqa: E402
from online3r_ros.retrieval.database import ImageDatabase  # noqa: E402
from online3r_ros.retrieval.features import LocalFeatures  # noqa: E402
from online3r_ros.retrieval.sift import SiftExtractor  # noqa: E402

KEYFRAMES = list(range(0, 500, 20))
QUERIES = [10, 130, 250, 370, 490]


def frame(i: int):
    rgb = read_rgb(DATA / f"frame-{i:06d}.color.jpg")
    depth, _ = read_depth_png(DATA / f"frame-{i:06d}.depth.png", 1000.0, (0, 65535))
    return rgb, depth


@pytest.fixture(scope="module")
def K():
    return np.loadtxt(DATA / "camera-intrinsics.txt")


@pytest.fixture(scope="module")
def feats(K):
    ex = SiftExtractor()
    return {i: ex.extract(*frame(i), K) for i in sorted(set(KEYFRAMES + QUERIES))}


@pytest.fixture(scope="module")
def codebook():
    return load_default_codebook()


def make_db(codebook, feats, ids=KEYFRAMES) -> ImageDatabase:
    db = ImageDatabase(codebook)
    for i in ids:
        db.add(i, feats[i])
    return db


# ------------------------------------------------------------------------------------------------ codebook
def test_codebook_train_deterministic_and_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    a, b = train_codebook(x, size=32, seed=3, kind="toy"), train_codebook(x, size=32, seed=3, kind="toy")
    assert a.centroids.shape == (32, 16) and a.centroids.dtype == np.float32
    np.testing.assert_array_equal(a.centroids, b.centroids)
    loaded = Codebook.load(a.save(tmp_path / "cb.npz"))
    assert loaded.kind == "toy"
    np.testing.assert_array_equal(loaded.centroids, a.centroids)
    half = Codebook.load(a.save(tmp_path / "half.npz", half=True))
    np.testing.assert_allclose(half.centroids, a.centroids, atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError, match="at least 32"):
        train_codebook(x[:10], size=32)


def test_codebook_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Codebook.load(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        Codebook.load(tmp_path / "garbage.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        Codebook.load(tmp_path / "other.npz")
    np.savez(tmp_path / "obj.npz", centroids=np.array([{"a": 1}], dtype=object), kind=np.array("sift"))
    with pytest.raises(ValueError, match="obj.npz"):  # object arrays need pickle: refused
        Codebook.load(tmp_path / "obj.npz")
    Codebook(np.ones((4, 8), np.float32), "sift").save(tmp_path / "s.npz")
    with pytest.raises(ValueError, match="'sift'"):
        Codebook.load(tmp_path / "s.npz", kind="mast3r")
    with pytest.raises(ValueError, match=r"\.npz"):
        Codebook(np.ones((4, 8), np.float32), "sift").save(tmp_path / "s.bin")
    (tmp_path / "cb.pkl").write_bytes(b"\x80\x04not really")
    with pytest.raises(Exception, match="cb.pkl|mast3r_files|pickle|codebook"):
        Codebook.load(tmp_path / "cb.pkl")


def test_codebook_loads_an_asmk_pickle(tmp_path):
    import pickle

    pytest.importorskip("online3r_ros.retrieval.mast3r_files", reason="MASt3R .pkl loading not merged yet")
    c = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    state = {"type": "Codebook", "params": {"size": 16}, "state": {"centroids": c}}
    (tmp_path / "x_codebook.pkl").write_bytes(pickle.dumps(state))
    cb = Codebook.load(tmp_path / "x_codebook.pkl")
    assert cb.kind == "mast3r"
    np.testing.assert_array_equal(cb.centroids, c)


def test_default_codebook(codebook):
    assert (codebook.size, codebook.dim, codebook.kind) == (1024, 128, "sift")


# ------------------------------------------------------------------------------------------------ SIFT
def test_sift_points_are_depth_backprojection(K, feats):
    f = feats[QUERIES[1]]
    _, depth = frame(QUERIES[1])
    assert f.kind == "sift" and f.dim == 128 and f.image_size == (480, 640) and 100 <= len(f) <= 500
    np.testing.assert_allclose(f.desc.norm(dim=1).numpy(), 1.0, atol=1e-5)
    xy, pts = f.xy.numpy().astype(np.float64), f.points.numpy().astype(np.float64)
    assert (xy >= -0.5).all() and (xy[:, 0] < 640).all() and (xy[:, 1] < 480).all()
    u, v = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    valid = depth[v, u] > 0
    assert valid.sum() > 0.5 * len(f)
    assert np.isnan(pts[~valid]).all() and np.isfinite(pts[valid]).all()
    np.testing.assert_allclose(pts[valid, 2], depth[v, u][valid], rtol=1e-6)
    proj = (K @ (pts[valid] / pts[valid, 2:]).T).T  # K [x/z, y/z, 1] = pixel
    np.testing.assert_allclose(proj[:, :2], xy[valid], atol=1e-3)


def test_sift_resize_maps_to_input_pixels_and_is_deterministic():
    import cv2

    rgb, _ = frame(QUERIES[2])
    a = SiftExtractor(max_side=320).extract(rgb)
    np.testing.assert_array_equal(a.desc.numpy(), SiftExtractor(max_side=320).extract(rgb).desc.numpy())
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    b = SiftExtractor(max_side=0).extract(cv2.resize(grey, (320, 240), interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(a.xy.numpy(), (b.xy.numpy() + 0.5) * 2 - 0.5, atol=1e-4)
    assert a.points is None and a.image_size == (480, 640)
    flat = SiftExtractor().extract(np.full((120, 160, 3), 0.5, np.float32))
    assert len(flat) == 0 and flat.dim == 128


# ------------------------------------------------------------------------------------------------ database
def test_query_ranks_a_nearby_keyframe_first(codebook, feats):
    db = make_db(codebook, feats)
    assert len(db) == len(KEYFRAMES) and db.ids == KEYFRAMES
    for q in QUERIES:
        res = db.query(feats[q], k=3)
        assert 1 <= len(res) <= 3
        scores = [s for _, s in res]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 5e-3
        assert abs(res[0][0] - q) <= 20, (q, res)


def test_aggregation_equals_asmk_kernel(codebook, feats):
    db = ImageDatabase(codebook)
    d = feats[QUERIES[0]].desc.numpy()
    words = db._quantize(d, 5)
    ades, unique = db._aggregate(d, words)
    ref_ades, ref_unique = db._kernel.aggregate_image(d, words)
    np.testing.assert_array_equal(unique, ref_unique)
    assert (ades != ref_ades).mean() < 1e-3  # residual sums in another order: a rare sign flip at ~0


def test_exclude_empty_and_duplicates(codebook, feats):
    db = ImageDatabase(codebook)
    assert db.query(feats[10]) == [] and db.query_and_add(10, feats[10]) == []
    db = make_db(codebook, feats)
    top = db.query(feats[250], k=3)
    excl = {i for i, _ in top}
    res = db.query(feats[250], k=3, exclude=excl | {9999})
    assert res and not excl & {i for i, _ in res}
    assert db.query(feats[250], k=len(KEYFRAMES), min_score=-1.0, exclude=KEYFRAMES) == []
    with pytest.raises(ValueError, match="already"):
        db.add(KEYFRAMES[0], feats[10])


def test_query_and_add_matches_query_then_add(codebook, feats):
    a, b = make_db(codebook, feats, KEYFRAMES[:10]), make_db(codebook, feats, KEYFRAMES[:10])
    assert a.query_and_add(250, feats[250]) == b.query(feats[250])
    b.add(250, feats[250])
    assert a.scores(feats[250]) == pytest.approx(b.scores(feats[250]))
    assert a.query(feats[250])[0][0] == 250


def test_remove_rebuild_and_reset(codebook, feats):
    db = make_db(codebook, feats)
    gone = [KEYFRAMES[12], KEYFRAMES[13], 12345]
    assert db.remove(gone) == 2 and len(db) == len(KEYFRAMES) - 2 and KEYFRAMES[12] not in db
    fresh = make_db(codebook, feats, [i for i in KEYFRAMES if i not in gone])
    assert db.scores(feats[250]) == pytest.approx(fresh.scores(feats[250]), abs=1e-12)
    assert all(i not in gone for i, _ in db.query(feats[250]))
    db.add(250, feats[250])  # the rebuilt IVF keeps growing
    assert db.query(feats[250])[0][0] == 250
    db.reset()
    assert len(db) == 0 and db.ids == [] and db.query(feats[250]) == []


def test_state_dict_round_trip(codebook, feats, tmp_path):
    db = make_db(codebook, feats)
    db.remove(KEYFRAMES[3])
    torch.save({"retrieval": db.state_dict()}, tmp_path / "map.pt")
    state = torch.load(tmp_path / "map.pt", weights_only=True)["retrieval"]
    restored = ImageDatabase(codebook)
    restored.load_state_dict(state)
    assert restored.ids == db.ids
    for q in QUERIES:
        assert restored.query(feats[q], k=5) == db.query(feats[q], k=5)
    other = ImageDatabase(Codebook(codebook.centroids[:512], "sift"))
    with pytest.raises(ValueError, match="another codebook"):
        other.load_state_dict(state)
    empty = ImageDatabase(codebook)
    empty.load_state_dict(ImageDatabase(codebook).state_dict())
    assert len(empty) == 0


def test_refuses_other_kinds_and_dims(codebook, feats):
    db = make_db(codebook, feats, KEYFRAMES[:3])
    f = feats[10]
    with pytest.raises(ValueError, match="'mast3r'"):
        db.add(999, LocalFeatures(kind="mast3r", desc=f.desc))
    with pytest.raises(ValueError, match="128-d"):
        db.query(LocalFeatures(kind="sift", desc=torch.nn.functional.normalize(torch.ones(5, 24), dim=1)))
    assert len(db) == 3


def test_synthetic_room_does_not_match_the_kitchen(codebook, feats):
    from online3r_ros.synthetic import make_synthetic_sequence

    db = make_db(codebook, feats)
    true_score = db.query(feats[250])[0][1]
    synth = make_synthetic_sequence(n_frames=8, width=640, height=480, seed=0)[3]
    f = SiftExtractor().extract(synth.rgb, synth.depth, synth.K)
    assert len(f) > 10
    best = max(db.scores(f).values())
    assert best < 5e-3 or best < 0.2 * true_score, (best, true_score)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_codebook_train(tmp_path, capsys):
    out = tmp_path / "cb.npz"
    argv = ["codebook", "train", str(DATA), "--out", str(out), "--size", "64", "--max-images", "4"]
    assert cli_main(argv) == 0
    cb = Codebook.load(out, kind="sift")
    assert cb.centroids.shape == (64, 128)
    db = ImageDatabase(cb)
    db.add(0, SiftExtractor().extract(frame(0)[0]))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    capsys.readouterr()
    assert cli_main(["codebook", "train", str(tmp_path / "empty"), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "no colour images" in err and str(tmp_path / "empty") in err
