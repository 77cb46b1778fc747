"""Synthetic scene generator: determinism, exact depth, poses, loops, noise model, texture content."""

from __future__ import annotations

import numpy as np
import pytest

from online3r_ros.datasets import Frame
from online3r_ros.eval.poses import is_valid_pose
from online3r_ros.synthetic import (
    Box,
    DepthNoise,
    Sphere,
    SyntheticScene,
    default_scene,
    look_at,
    make_synthetic_sequence,
    orbit_trajectory,
    pixel_rays,
    render,
)


def _backproject_world(frame: Frame) -> np.ndarray:
    h, w = frame.depth.shape
    rays = pixel_rays(frame.K, w, h).astype(np.float64)  # [3, H*W]
    pc = rays * frame.depth.reshape(-1).astype(np.float64)
    return (frame.pose_gt[:3, :3] @ pc).T + frame.pose_gt[:3, 3]


def test_same_seed_identical_frames_any_order():
    a = make_synthetic_sequence(n_frames=12, seed=4)
    b = make_synthetic_sequence(n_frames=12, seed=4)
    fb = b[7]
    fa = list(a)[7]
    np.testing.assert_array_equal(fa.rgb, fb.rgb)
    np.testing.assert_array_equal(fa.depth, fb.depth)
    np.testing.assert_array_equal(fa.pose_gt, fb.pose_gt)
    c = make_synthetic_sequence(n_frames=12, seed=5)
    assert not np.array_equal(c[7].rgb, fa.rgb)


def test_frame_contract():
    seq = make_synthetic_sequence(n_frames=10, width=160, height=120, stride=2, max_frames=3)
    frames = list(seq)
    assert [f.index for f in frames] == [0, 1, 2] and [f.source_index for f in frames] == [0, 2, 4]
    f = frames[1]
    assert isinstance(f, Frame)
    assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (120, 160) and f.depth.dtype == np.float32
    assert f.K.dtype == np.float64 and f.K[0, 2] == pytest.approx(79.5)
    assert bool(is_valid_pose(f.pose_gt)[0]) and f.timestamp == pytest.approx(2 / 30)
    assert np.all(f.depth > 0.3) and np.all(np.isfinite(f.depth))
    t, T = seq.gt_trajectory()
    assert T.shape == (10, 4, 4) and np.all(np.diff(t) > 0) and seq.skipped == []


@pytest.mark.parametrize("index", [0, 9, 23])
def test_depth_points_lie_on_analytic_surfaces(index):
    seq = make_synthetic_sequence(n_frames=40, width=160, height=120, seed=1)
    f = seq[index]
    P = _backproject_world(f)
    dist = seq.scene.distance(P)
    assert dist.max() < 2e-5 * float(f.depth.max()) + 1e-6
    # the hit really is the first surface: the segment camera -> point is free space
    centre = f.pose_gt[:3, 3]
    mid = centre + 0.5 * (P - centre)
    assert seq.scene.contains_free_point(mid).all()


def test_sphere_and_box_hits_are_exact():
    scene = SyntheticScene(
        boxes=[Box((1.0, -0.3, 0.0), (1.6, 0.3, 1.2))], spheres=[Sphere((1.2, 0.8, 1.4), 0.25)], seed=0
    )
    T = look_at(np.array([[-1.0, 0.2, 1.2]]), np.array([[1.2, 0.4, 1.2]]))[0]
    K = np.array([[80.0, 0, 39.5], [0, 80.0, 29.5], [0, 0, 1]])
    r = render(scene, K, T, 80, 60)
    ids = r.surface_id.reshape(-1)
    assert (ids == 6).sum() > 50 and (ids == 7).sum() > 20  # box and sphere visible
    rays = pixel_rays(K, 80, 60).astype(np.float64) * r.depth.reshape(-1)
    P = (T[:3, :3] @ rays).T + T[:3, 3]
    sph = ids == 7
    np.testing.assert_allclose(
        np.linalg.norm(P[sph] - [1.2, 0.8, 1.4], axis=1), 0.25, atol=1e-5
    )  # float32 ray casting
    box = ids == 6
    assert np.all(P[box] >= np.array([1.0, -0.3, 0.0]) - 1e-5) and np.all(P[box] <= [1.6, 0.3, 1.2 + 1e-5])
    # normals of sphere pixels point back towards the camera
    n = r.normal.reshape(-1, 3)[sph]
    assert np.all(np.einsum("ij,ij->i", n, T[:3, 3] - P[sph]) > 0)


def test_loop_revisits_start():
    seq = make_synthetic_sequence(n_frames=25, seed=2, laps=1.0)
    np.testing.assert_array_equal(seq.poses[-1], seq.poses[0])
    np.testing.assert_array_equal(seq[24].rgb, seq[0].rgb)
    T2 = orbit_trajectory(41, laps=2.0)
    np.testing.assert_allclose(T2[20], T2[0], atol=1e-12)  # half-way through two laps = start
    np.testing.assert_allclose(T2[10], T2[30], atol=1e-12)
    # the path moves in between (it is a loop, not a still camera)
    assert np.linalg.norm(seq.poses[12, :3, 3] - seq.poses[0, :3, 3]) > 0.5
    steps = np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.25


def test_cameras_stay_in_free_space_and_see_objects():
    seq = make_synthetic_sequence(n_frames=30, seed=0)
    assert seq.scene.contains_free_point(seq.poses[:, :3, 3], margin=0.3).all()
    seen = set()
    for i in range(0, 30, 3):
        seen |= set(np.unique(seq.render(i).surface_id).tolist())
    assert len(seen & set(range(6, seq.scene.n_surfaces))) >= 3  # several objects give parallax


def test_look_at_axes():
    T = look_at(np.array([[0.0, 0, 1]]), np.array([[0.0, 2, 1]]))[0]
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)  # z forward
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)  # x right
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # y down
    with pytest.raises(ValueError):
        look_at(np.zeros((1, 3)), np.array([[0.0, 0, 1]]))


def test_depth_noise_model_is_seeded_and_calibrated():
    noise = DepthNoise(dropout=0.1)
    a = make_synthetic_sequence(n_frames=3, depth_noise=noise, noise_seed=7)
    b = make_synthetic_sequence(n_frames=3, depth_noise=noise, noise_seed=7)
    exact = make_synthetic_sequence(n_frames=3)[1].depth
    da, db = a[1].depth, b[1].depth
    np.testing.assert_array_equal(da, db)
    assert not np.array_equal(a[2].depth, db)
    invalid = da == 0
    assert 0.07 < invalid.mean() < 0.13
    z = exact[~invalid]
    err = (da[~invalid] - z) / (noise.sigma0 + noise.sigma2 * (z - noise.z0) ** 2)
    assert 0.9 < err.std() < 1.1 and abs(err.mean()) < 0.1


def test_texture_has_high_frequency_content():
    f = make_synthetic_sequence(n_frames=2, width=160, height=120, seed=0)[0]
    grey = f.rgb.astype(np.float64).mean(axis=2)
    assert grey.std() > 15
    assert np.abs(np.diff(grey, axis=1)).mean() > 3
    # distinct 8x8 patches are not alike (matching is unambiguous)
    patches = grey[:112, :160].reshape(14, 8, 20, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    patches = patches - patches.mean(1, keepdims=True)
    patches /= np.linalg.norm(patches, axis=1, keepdims=True) + 1e-9
    ncc = patches @ patches.T
    np.fill_diagonal(ncc, 0)
    assert np.mean(ncc.max(axis=1) > 0.97) < 0.05


def test_scene_validation():
    with pytest.raises(ValueError, match="room_hi"):
        SyntheticScene(room_lo=(0, 0, 0), room_hi=(1, 1, 0))
    with pytest.raises(ValueError, match="radii"):
        SyntheticScene(spheres=[Sphere((0, 0, 1), -1.0)])
    assert default_scene(3).n_surfaces == 6 + 3 + 2


def test_render_640x480_shapes():
    f = make_synthetic_sequence(n_frames=2, width=640, height=480)[1]
    assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    assert f.K[0, 0] == pytest.approx(576.0)
