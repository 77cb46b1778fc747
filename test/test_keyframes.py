"""Tests for online3r_ros.slam.keyframes.KeyframeStore."""

import threading

import pytest
import torch

from online3r_ros.geometry.lie import sim3_identity
from online3r_ros.slam.keyframes import Keyframe, KeyframeError, KeyframeStore

H, W = 6, 8


def _kf_data(seed: int, with_optional: bool = True):
    g = torch.Generator().manual_seed(seed)
    T = sim3_identity()
    T[:3] = torch.randn(3, generator=g)
    X = torch.randn(H, W, 3, generator=g)
    C = torch.rand(H, W, generator=g) + 1
    opt = {}
    if with_optional:
        opt = {
            "colors": torch.randint(0, 256, (H, W, 3), generator=g, dtype=torch.uint8),
            "desc": torch.randn(H, W, 24, generator=g),
            "desc_conf": torch.rand(H, W, generator=g),
            "feat": torch.randn(4, 16, generator=g),
            "pos": torch.randint(0, 8, (4, 2), generator=g),
        }
    return T, X, C, opt


def _filled(n: int, **kw) -> KeyframeStore:
    store = KeyframeStore(**kw)
    for i in range(n):
        T, X, C, opt = _kf_data(i)
        store.append(T, X, C, frame_index=10 * i, timestamp=0.5 * i, **opt)
    return store


def test_grows_beyond_any_initial_capacity_and_keeps_data():
    store = KeyframeStore()
    for i in range(40):
        T, X, C, _ = _kf_data(i, with_optional=False)
        assert store.append(T, X, C, frame_index=i, timestamp=float(i)) == i
    assert len(store) == 40
    for i in (0, 17, 39):
        T, X, C, _ = _kf_data(i, with_optional=False)
        kf = store[i]
        torch.testing.assert_close(kf.X, X)
        torch.testing.assert_close(kf.T_WC, T)
        assert kf.frame_index == i and kf.timestamp == float(i) and kf.kf_id == i
    assert store.get_poses().shape == (40, 8)


def test_append_copies_input():
    T, X, C, _ = _kf_data(0)
    store = KeyframeStore()
    store.append(T, X, C)
    X.zero_()
    assert store[0].X.abs().sum() > 0


def test_set_poses_and_pop_last():
    store = _filled(5)
    new = store.get_poses([1, 3]).clone()
    new[:, 0] += 1.0
    store.set_poses([1, 3], new)
    torch.testing.assert_close(store.get_poses([1, 3]), new)
    kf = store.pop_last()
    assert len(store) == 4 and kf.kf_id == 4 and kf.frame_index == 40
    assert store.append(*_kf_data(9)[:3]) == 4


def test_update_pointmap_uses_weighted_fusion():
    store = _filled(2)
    X0, C0 = store[1].X, store[1].C
    X1 = X0 + 1.0
    C1 = torch.full_like(C0, 2.0)
    store.update_pointmap(1, X1, C1)
    kf = store[1]
    torch.testing.assert_close(kf.X, (C0[..., None] * X0 + C1[..., None] * X1) / (C0 + C1)[..., None])
    assert (kf.N, kf.N_updates) == (2, 2)
    torch.testing.assert_close(store.average_confidence(1), (C0 + C1) / 2)


def test_gather_points_returns_average_confidence():
    store = _filled(2)
    store.update_pointmap(0, store[0].X, store[0].C)  # N = 2, C doubled
    pix = torch.tensor([0, 5, W * H - 1])
    Xg, Cg = store.gather_points(0, pix)
    kf = store[0]
    torch.testing.assert_close(Xg, kf.X.reshape(-1, 3)[pix])
    torch.testing.assert_close(Cg, kf.C.reshape(-1)[pix] / 2)


def test_memory_report_by_field():
    store = _filled(3)
    m = store.memory_by_field(0)
    assert m["X"] == H * W * 3 * 4
    assert m["C"] == H * W * 4
    assert m["colors"] == H * W * 3
    assert m["desc"] == H * W * 24 * 4
    assert m["feat"] == 4 * 16 * 4
    rep = store.memory_report()
    assert rep["n_keyframes"] == 3 and len(rep["per_keyframe"]) == 3
    assert rep["per_field"]["X"] == 3 * H * W * 3 * 4
    assert rep["total_bytes"] == rep["device_bytes"] + rep["host_bytes"]


def test_offload_keeps_recent_and_reads_transparently():
    store = _filled(6)
    expect = [store[i].X.clone() for i in range(6)]
    assert store.offload(keep_recent=2) == 4
    assert [store.is_resident(i) for i in range(6)] == [False] * 4 + [True] * 2
    rep = store.memory_report()
    assert rep["host_bytes"] > 0
    for i in range(6):
        torch.testing.assert_close(store[i].X, expect[i])
        assert not store.is_resident(i) or i >= 4  # reads do not change residency
    store.update_pointmap(0, expect[0], store[0].C)  # work on an old keyframe brings it back
    assert store.is_resident(0)


def test_auto_offload_on_append():
    store = _filled(5, keep_on_device=2)
    assert [store.is_resident(i) for i in range(5)] == [False, False, False, True, True]


def test_save_load_roundtrip_file_and_directory(tmp_path):
    store = _filled(3)
    store.K = torch.tensor([[100.0, 0, 4], [0, 100.0, 3], [0, 0, 1]])
    store.update_pointmap(2, store[2].X * 1.1, store[2].C)
    f = store.save(tmp_path / "map.pt")
    d = store.save(tmp_path)
    assert f.name == "map.pt" and d.name == "keyframes.pt"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    for path in (f, tmp_path):
        loaded = KeyframeStore.load(path)
        assert len(loaded) == 3
        for i in range(3):
            a, b = store[i], loaded[i]
            for name in ("X", "C", "colors", "desc", "desc_conf", "feat", "pos", "T_WC", "K"):
                torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)
            assert (a.N, a.N_updates, a.frame_index, a.timestamp) == (
                b.N,
                b.N_updates,
                b.frame_index,
                b.timestamp,
            )


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        KeyframeStore.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(KeyframeError, match="cannot read"):
        KeyframeStore.load(bad)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(KeyframeError, match="not an online3r_ros"):
        KeyframeStore.load(tmp_path / "other.pt")


def test_bad_inputs_raise():
    store = KeyframeStore()
    T, X, C, _ = _kf_data(0)
    with pytest.raises(KeyframeError, match="T_WC"):
        store.append(T[:7], X, C)
    with pytest.raises(KeyframeError, match="X must"):
        store.append(T, X.reshape(-1, 3), C)
    with pytest.raises(KeyframeError, match="C must"):
        store.append(T, X, C[:2])
    with pytest.raises(KeyframeError, match="colors must be uint8"):
        store.append(T, X, C, colors=torch.zeros(H, W, 3))
    bad_scale = T.clone()
    bad_scale[7] = 0
    with pytest.raises(KeyframeError, match="scale"):
        store.append(bad_scale, X, C)
    with pytest.raises(KeyframeError, match="out of range"):
        store.get(0)
    with pytest.raises(KeyframeError, match="empty"):
        store.pop_last()


def test_concurrent_appends_are_safe():
    store = KeyframeStore()
    T, X, C, _ = _kf_data(0, with_optional=False)

    def worker():
        for _ in range(25):
            store.append(T, X, C)
            store.get_poses()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 100
    assert store.get_poses().shape == (100, 8)
    assert torch.isfinite(store.get_poses()).all()


def test_append_keyframe_snapshot():
    store = _filled(1)
    kf: Keyframe = store[0]
    other = KeyframeStore()
    other.append_keyframe(kf)
    torch.testing.assert_close(other[0].desc, kf.desc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to test device<->pinned host moves")
def test_offload_cuda_pinned():
    store = _filled(4, device="cuda", keep_on_device=1)
    assert not store.is_resident(0)
    kf = store[0]
    assert kf.X.device.type == "cuda"
    assert store._bulk[0]["X"].is_pinned()
    Xg, _ = store.gather_points(0, torch.arange(5))
    assert Xg.device.type == "cuda"
