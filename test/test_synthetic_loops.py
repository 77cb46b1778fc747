"""Synthetic sequences for loop closure, false loops and occlusion; re-ordered (kidnapped) reader views."""

from __future__ import annotations

import numpy as np
import pytest

from online3r_ros.datasets import DatasetError, SevenScenesReader
from online3r_ros.datasets.views import ReorderedSequence, entry_pose
from online3r_ros.eval.poses import is_valid_pose
from online3r_ros.synthetic import (
    OccludedSequence,
    default_scene,
    loop_lap_frames,
    loop_trajectory,
    make_loop_sequence,
    make_synthetic_sequence,
    near_object_rgb,
    pixel_rays,
    render,
    room_scene,
    save_seven_scenes,
)

W, H = 64, 48


def _rot_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1.0, 1.0))))


def _covisible_fraction(seq, i: int, j: int, tol: float = 0.05) -> float:
    """Share of frame j's pixels whose 3D point frame i sees too (projects inside it, depth agrees)."""
    a, b = seq.render(i), seq.render(j)
    rays = pixel_rays(seq.K, seq.width, seq.height).astype(np.float64)
    Tj, Ti = seq.poses[j], seq.poses[i]
    P = (Tj[:3, :3] @ (rays * b.depth.reshape(-1))).T + Tj[:3, 3]
    Pc = (P - Ti[:3, 3]) @ Ti[:3, :3]  # into camera i
    z = Pc[:, 2]
    u = np.rint(seq.K[0, 0] * Pc[:, 0] / z + seq.K[0, 2]).astype(int)
    v = np.rint(seq.K[1, 1] * Pc[:, 1] / z + seq.K[1, 2]).astype(int)
    inside = (z > 0) & (u >= 0) & (u < seq.width) & (v >= 0) & (v < seq.height)
    ok = np.zeros_like(inside)
    ok[inside] = np.abs(a.depth[v[inside], u[inside]] - z[inside]) < tol
    return float(ok.mean())


# ------------------------------------------------------------------------------------------ loop closure
def test_loop_trajectory_handheld_steps_and_closure():
    T = loop_trajectory(400)
    assert T.shape == (400, 4, 4) and bool(is_valid_pose(T).all())
    t = T[:, :3, 3]
    steps = np.linalg.norm(np.diff(t, axis=0), axis=1)
    rot = [_rot_deg(T[k, :3, :3], T[k + 1, :3, :3]) for k in range(399)]
    assert 0.005 < steps.min() and steps.max() < 0.02  # ~0.8 cm per frame, constant speed
    assert 0.3 < np.mean(rot) < 1.5 and max(rot) < 2.5  # ~1 deg per frame
    lap = loop_lap_frames(400, 0.1)
    assert lap == 360
    assert 2.5 < steps[:lap].sum() < 3.2  # one lap: ~2.8 m around
    # half-way round, the camera is far from the start and looks the other way
    assert np.linalg.norm(t[lap // 2] - t[0]) > 0.5 and _rot_deg(T[0, :3, :3], T[lap // 2, :3, :3]) > 150
    # each revisit frame is within a few cm / degrees of an early frame, but not a replay of it
    for j in range(lap, 400):
        d = np.linalg.norm(t[: 400 - lap + 5] - t[j], axis=1)
        i = int(d.argmin())
        assert i < 400 - lap + 5 and d[i] < 0.06 and _rot_deg(T[i, :3, :3], T[j, :3, :3]) < 5
        assert d[i] > 1e-3 or _rot_deg(T[i, :3, :3], T[j, :3, :3]) > 0.1
    with pytest.raises(ValueError, match="overlap"):
        loop_trajectory(100, overlap=0.6)
    with pytest.raises(ValueError, match="look"):
        loop_trajectory(100, look="up")


@pytest.mark.parametrize("look", ["out", "in"])
def test_loop_sequence_revisit_sees_the_first_frames_surfaces(look):
    seq = make_loop_sequence(200, W, H, seed=0, look=look)
    lap = loop_lap_frames(200, 0.1)
    assert len(seq) == 200 and seq.poses.shape == (200, 4, 4) and lap == 180
    assert seq.scene.contains_free_point(seq.poses[:, :3, 3], margin=0.3).all()
    f0, fr = seq[0], seq[lap + 5]
    assert f0.rgb.shape == (H, W, 3) and np.all(fr.depth > 0.3)
    np.testing.assert_array_equal(fr.pose_gt, seq.poses[lap + 5])
    assert not np.array_equal(f0.rgb, seq[lap].rgb)  # not a replay
    assert _covisible_fraction(seq, 5, lap + 5) > 0.7  # the revisit sees what frame 5 saw
    assert _covisible_fraction(seq, 0, lap // 2) < 0.05  # half-way round it does not


def test_loop_sequence_passes_keywords_and_checks_free_space():
    seq = make_loop_sequence(50, W, H, fps=15.0, half_extents=(0.3, 0.2), squareness=2.0, max_frames=3)
    assert [f.timestamp for f in seq] == pytest.approx([0, 1 / 15, 2 / 15])
    assert np.abs(seq.poses[:, 0, 3]).max() < 0.3 + 0.04
    with pytest.raises(ValueError, match="within 0.3 m"):
        make_loop_sequence(50, W, H, half_extents=(2.5, 0.3))


# --------------------------------------------------------------------------------- two look-alike rooms
def test_second_room_differs_in_geometry_not_in_texture():
    assert room_scene(0, 3).boxes == default_scene(3).boxes  # room 0 is the default scene
    a, b = room_scene(0, seed=0), room_scene(1, seed=0)
    assert a.room_hi != b.room_hi and len(a.boxes) != len(b.boxes)
    pose = make_loop_sequence(20, W, H, room=0).poses[0]
    np.testing.assert_allclose(make_loop_sequence(20, W, H, room=1).poses[0], pose)  # same path in both
    K = np.array([[0.9 * W, 0, (W - 1) / 2], [0, 0.9 * W, (H - 1) / 2], [0, 0, 1]])
    ra, rb = render(a, K, pose, W, H), render(b, K, pose, W, H)
    diff = np.abs(ra.depth - rb.depth)
    assert np.median(diff) > 0.2 and np.mean(diff > 0.05) > 0.6  # different geometry
    ga, gb = ra.rgb.astype(float).mean(axis=2), rb.rgb.astype(float).mean(axis=2)
    assert abs(ga.mean() - gb.mean()) < 20 and 0.6 < ga.std() / gb.std() < 1.6  # same texture statistics
    assert np.abs(np.diff(gb, axis=1)).mean() > 3  # the second room is as detailed
    seq = make_synthetic_sequence(n_frames=4, width=W, height=H, room=1)
    assert seq.scene.room_hi == b.room_hi and seq.scene.boxes == b.boxes
    with pytest.raises(ValueError, match="room"):
        room_scene(2)


# ------------------------------------------------------------------------------------------- occlusion
def test_occluded_blank_frames():
    seq = make_loop_sequence(12, W, H)
    occ = OccludedSequence(seq, range(4, 7), mode="blank")
    frames = list(occ)
    assert len(occ) == 12 and len(frames) == 12 and occ.skipped == []  # kept by default
    for f in frames:
        np.testing.assert_array_equal(f.pose_gt, seq.poses[f.source_index])  # GT for every frame
        assert f.timestamp == pytest.approx(seq.timestamps[f.source_index])
        if 4 <= f.source_index < 7:
            assert np.all(f.depth == 0) and np.all(f.rgb == 40)
        else:
            np.testing.assert_array_equal(f.rgb, seq[f.source_index].rgb)
            assert np.all(f.depth > 0)
    t, T = occ.gt_trajectory()
    assert T.shape == (12, 4, 4) and np.array_equal(T, seq.poses)
    assert occ.is_covered(5) and not occ.is_covered(7) and occ.K is seq.K
    strict = OccludedSequence(seq, [5], bad_depth="skip")  # a driver that drops frames without depth
    assert [f.source_index for f in strict] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert [s.source_index for s in strict.skipped] == [5] and "no valid pixel" in strict.skipped[0].reason


def test_occluded_near_object_frames_are_invalid_for_the_rgbd_source():
    pytest.importorskip("torch")
    from online3r_ros.sources.rgbd import RGBDSource

    seq = make_loop_sequence(6, W, H)
    near = OccludedSequence(seq, [2, 3], mode="near")
    f = near[2]
    assert np.all(f.depth == np.float32(0.08)) and np.array_equal(f.rgb, near_object_rgb(H, W))
    grey = f.rgb.astype(float).mean(axis=2)
    assert np.abs(np.diff(grey, axis=1)).max() < 3 and f.rgb.std() > 5  # flat, but not a constant
    src = RGBDSource()
    assert src.depth_min == pytest.approx(0.1)
    assert not src.prepare(f.rgb, depth=f.depth, K=f.K).cache["valid"].any()  # 8 cm < depth_min
    at_limit = OccludedSequence(seq, [2], mode="near", near_depth=0.1)[2]
    assert src.prepare(at_limit.rgb, depth=at_limit.depth, K=at_limit.K).cache["valid"].all()
    assert src.prepare(near[1].rgb, depth=near[1].depth, K=near[1].K).cache["valid"].float().mean() > 0.9
    with pytest.raises(ValueError, match="mode"):
        OccludedSequence(seq, [1], mode="fog")
    with pytest.raises(ValueError, match="outside"):
        OccludedSequence(seq, [6])


# --------------------------------------------------------------------------------- re-ordered / kidnapped
def test_reordered_synthetic_sequence():
    seq = make_loop_sequence(20, W, H, fps=30.0)
    order = [*range(0, 8), *range(2, 5), *range(8, 12)]
    view = ReorderedSequence(seq, order)
    frames = list(view)
    assert len(view) == len(frames) == 15 and view.skipped == []
    ts = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(ts) > 0) and np.allclose(np.diff(ts), 1 / 30)
    for k, f in enumerate(frames):
        assert f.index == f.source_index == k and view.original_index(k) == order[k]
        np.testing.assert_array_equal(f.pose_gt, seq.poses[order[k]])
        np.testing.assert_array_equal(f.K, seq.K)
    np.testing.assert_array_equal(frames[9].rgb, seq[3].rgb)  # the jump back: frame 3 again
    gt_t, gt_T = view.gt_trajectory()
    np.testing.assert_allclose(gt_t, ts)
    np.testing.assert_array_equal(gt_T, seq.poses[order])
    # stride/max_frames apply to the view; views nest (a kidnapped camera with a covered lens)
    assert [f.source_index for f in ReorderedSequence(seq, order, stride=4, max_frames=3)] == [0, 4, 8]
    occ = OccludedSequence(view, [9])
    assert np.all(occ[9].depth == 0) and np.array_equal(occ[9].pose_gt, seq.poses[3])
    np.testing.assert_array_equal(entry_pose(occ, 9), seq.poses[3])
    with pytest.raises(DatasetError, match="outside"):
        ReorderedSequence(seq, [0, 20])
    with pytest.raises(IndexError):
        view[15]


def test_reordered_seven_scenes_reader(tmp_path):
    folder = save_seven_scenes(make_loop_sequence(12, W, H), tmp_path / "seq-01")
    (folder / "frame-000004.pose.txt").write_text("inf inf inf inf\n" * 4)  # 7-Scenes has such poses
    reader = SevenScenesReader(folder, stride=3)  # the view ignores the reader's own stride
    order = [*range(0, 6), *range(2, 4), *range(6, 12)]
    view = ReorderedSequence(reader, order, t0=5.0)
    frames = list(view)
    assert len(frames) == 14 and view.layout == "7scenes" and view.has_depth and view.calibrated
    assert np.all(np.diff([f.timestamp for f in frames]) > 0) and frames[0].timestamp == 5.0
    assert frames[7].source.endswith("frame-000003.color.png") and view.original_index(7) == 3
    np.testing.assert_array_equal(frames[7].rgb, list(reader)[1].rgb)  # reader frame 3 = its 2nd strided
    original = {f.source_index: f for f in SevenScenesReader(folder)}
    for k, f in enumerate(frames):
        ref = original[order[k]]
        np.testing.assert_array_equal(f.depth, ref.depth)
        if order[k] == 4:
            assert f.pose_gt is None
        else:
            np.testing.assert_array_equal(f.pose_gt, ref.pose_gt)
    gt_t, gt_T = view.gt_trajectory()
    keep = [k for k in range(14) if order[k] != 4]
    np.testing.assert_allclose(gt_t, 5.0 + np.array(keep) / 30.0)
    np.testing.assert_array_equal(gt_T, np.stack([original[order[k]].pose_gt for k in keep]))
