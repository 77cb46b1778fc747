"""The RGB-D tracker's dense optical-flow prior (:mod:`online3r_ros.slam.flow_prior`) and the keyframe
distance limit: exact on synthetic renders, silent on images without usable flow, and on the public TUM fr3
cabinet keyframes (7-22 cm between frames) the difference between wrong ICP minima and a tracked circle.
Real-data tests skip when ``../shared/data`` is absent."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from online3r_ros.datasets import open_dataset
from online3r_ros.geometry.lie import sim3_from_matrix, sim3_identity, sim3_to_matrix
from online3r_ros.slam.config import load_config
from online3r_ros.slam.flow_prior import (
    FlowImage,
    FlowPrior,
    flow_correspondences,
    flow_disagreement,
    flow_relative_pose,
    forward_flow,
    initial_flow,
    pose_samples,
    sample_grid,
)
from online3r_ros.slam.runner import metrics_report, run_dataset
from online3r_ros.slam.tracking import FrameTracker, TrackingKeyframe
from online3r_ros.sources.rgbd import RGBDSource
from online3r_ros.synthetic.scene import room_scene
from online3r_ros.synthetic.sequence import render

CABINET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tum_fr3_cabinet_keyframes"
needs_cabinet = pytest.mark.skipif(not CABINET.is_dir(), reason=f"real data folder {CABINET} not present")
K = np.array([[260.0, 0.0, 159.5], [0.0, 260.0, 119.5], [0.0, 0.0, 1.0]])


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _pose(x: float, yaw_deg: float) -> np.ndarray:
    """Camera-to-world pose in the synthetic room: 1.4 m high, looking along +x turned by ``yaw_deg``."""
    a = np.radians(yaw_deg)
    z_c = np.array([np.cos(a), np.sin(a), 0.0])
    y_c = np.array([0.0, 0.0, -1.0])
    T = np.eye(4)
    T[:3, :3] = np.stack([np.cross(y_c, z_c), y_c, z_c], axis=1)
    T[:3, 3] = [x, 0.3 * x, 1.4]
    return T


@cache
def _view(x: float, yaw_deg: float) -> tuple[FlowImage, np.ndarray]:
    r = render(room_scene(0, seed=3), K, _pose(x, yaw_deg), 320, 240)
    grey = cv2.cvtColor(r.rgb, cv2.COLOR_RGB2GRAY)
    return FlowImage(grey, r.depth, K, 1.0), _pose(x, yaw_deg)


def test_flow_correspondences_follow_a_known_shift() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (240, 320)).astype(np.float32), (0, 0), 2.0)
    ref = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    query = np.roll(ref, (5, -9), axis=(0, 1))  # query pixel (x, y) shows ref pixel (x + 9, y - 5)
    xy_q, xy_r = flow_correspondences(query, ref, _dis())
    assert len(xy_q) > 3000
    d = np.median(xy_r - xy_q, axis=0)
    assert np.allclose(d, [9.0, -5.0], atol=0.1), d
    inside = (xy_q[:, 0] < 300) & (xy_q[:, 1] > 10)  # away from the wrapped borders
    assert np.mean(np.abs(xy_r[inside] - xy_q[inside] - [9.0, -5.0]).max(axis=1) < 0.5) > 0.95


def test_relative_pose_of_two_synthetic_views_15_cm_and_8_deg_apart() -> None:
    (query, T_wq), (ref, T_wr) = _view(0.15, 8.0), _view(0.0, 0.0)
    rp = flow_relative_pose(query, ref, _dis(), max_points=2000)
    assert rp.ok, rp.reason
    err = np.linalg.inv(np.linalg.inv(T_wr) @ T_wq) @ sim3_to_matrix(rp.T_ref_query).numpy()
    assert np.linalg.norm(err[:3, 3]) < 0.01 and np.degrees(np.arccos((np.trace(err[:3, :3]) - 1) / 2)) < 0.5
    assert rp.n_inliers >= 1000


def test_no_prior_from_blank_images_other_sizes_or_missing_depth() -> None:
    ref, _ = _view(0.0, 0.0)
    moved, _ = _view(0.15, 8.0)
    prior = FlowPrior(320, 2000, torch.as_tensor)
    prior.remember(0, ref)
    # a covered lens: a flat image (zero flow everywhere) whose depth is not the previous frame's
    for blank_depth in (moved.depth, np.zeros_like(ref.depth), np.full_like(ref.depth, 0.1)):
        assert prior.guess(FlowImage(np.full_like(ref.grey, 128), blank_depth, K, 1.0)) is None
    assert prior.stats()["rejected"] == 3 and prior.stats()["used"] == 0
    assert prior.image(ref.grey, None, K) is None and prior.image(ref.grey, ref.depth, None) is None
    small = FlowImage(ref.grey[::2, ::2].copy(), ref.depth[::2, ::2].copy(), K, 1.0)
    assert prior.guess(small) is None  # another image size: nothing to compare
    found = prior.guess(_view(0.15, 8.0)[0])
    assert found is not None and found.index == 0 and found.source == "flow"
    prior.reset()
    assert prior.guess(_view(0.15, 8.0)[0]) is None


def _relative(T_wq: np.ndarray, T_wr: np.ndarray) -> torch.Tensor:
    return sim3_from_matrix(torch.from_numpy(np.linalg.inv(T_wr) @ T_wq))


def test_a_motion_guess_the_flow_confirms_is_kept_a_wrong_one_replaced() -> None:
    """The true relative pose lands the flow samples within a pixel of the flow, a guess 10 cm off does not.
    The prior keeps a right guess after one fast flow (a 3 cm step) and replaces a wrong one by the flow's
    own pose (two careful flows, RANSAC; a 15 cm step)."""
    (query, T_wq), (ref, T_wr) = _view(0.15, 8.0), _view(0.0, 0.0)
    true = _relative(T_wq, T_wr)
    wrong = true.clone()
    wrong[0] += 0.1
    samples = forward_flow(query.grey, ref.grey, _dis())
    assert flow_disagreement(samples, pose_samples(query, ref, true)) < 1.0  # measured 0.66 px
    assert flow_disagreement(samples, pose_samples(query, ref, wrong)) > 15.0
    prior = FlowPrior(320, 2000, torch.as_tensor, agree_px=3.0)
    prior.remember(7, ref)
    near, T_wn = _view(0.03, 1.0)
    right = _relative(T_wn, T_wr)
    kept = prior.guess(near, right)
    assert kept.source == "motion" and kept.index == 7 and torch.equal(kept.T_last_frame, right)
    replaced = prior.guess(query, wrong)
    assert replaced.source == "flow" and float((replaced.T_last_frame[:3] - true[:3]).norm()) < 0.01
    assert prior.stats()["motion_confirmed"] == 1 and prior.stats()["used"] == 1


def test_a_right_motion_guess_is_confirmed_where_the_texture_repeats() -> None:
    """The synthetic orbit's frames 32 and 36 (6 deg and 8 cm apart, 160x120) see a wall of repeating
    diagonal texture: DIS started from zero flow locks onto the wrong period everywhere (median 19 px off;
    RANSAC verified that flow's pose 0.22 m off, and ICP followed it). Started from the motion guess's flow,
    it finds the true flow, so a right guess is confirmed and one 10 cm off is not."""
    from online3r_ros.synthetic import make_synthetic_sequence

    frames = make_synthetic_sequence(n_frames=241, width=160, height=120)
    prior = FlowPrior(320, 2000, torch.as_tensor, agree_px=3.0)
    (query, T_wq), (ref, T_wr) = (
        (prior.image(f.rgb, f.depth, f.K), f.pose_gt) for f in (frames[36], frames[32])
    )
    true = _relative(T_wq, T_wr)
    wrong = true.clone()
    wrong[0] += 0.1
    predicted = pose_samples(query, ref, true)
    from_zero = forward_flow(query.grey, ref.grey, _dis())
    assert flow_disagreement(from_zero, predicted) > 10.0
    from_guess = forward_flow(query.grey, ref.grey, _dis(), init=initial_flow(predicted, query.grey.shape))
    assert flow_disagreement(from_guess, predicted) < 1.0
    prior.remember(0, ref)
    assert prior.guess(query, true).source == "motion"
    refused = prior.guess(query, wrong)
    assert refused is None or refused.source == "flow"
    assert prior.stats()["motion_confirmed"] == 1


def test_initial_flow_interpolates_the_samples_and_needs_enough_of_them() -> None:
    shift = np.array([3.0, -2.0], np.float32)
    for shape in ((240, 320), (181, 320)):  # 640x480 and 848x480 at 320 px
        grid = sample_grid(shape)
        predicted = grid + shift
        predicted[:10] = np.nan  # no depth there: the median flow
        init = initial_flow(predicted, shape)
        assert init.shape == (*shape, 2) and init.dtype == np.float32 and np.allclose(init, shift)
        assert initial_flow(np.full_like(grid, np.nan), shape) is None


def test_a_flow_pose_far_from_the_motion_guess_is_refused() -> None:
    """``max_correction``: the flow's verified pose (15 cm from the reference) replaces a guess 10 cm off it
    with a 0.25 m limit, not with a 0.05 m one (the guess stands; counted as implausible)."""
    (query, T_wq), (ref, T_wr) = _view(0.15, 8.0), _view(0.0, 0.0)
    wrong = _relative(T_wq, T_wr)
    wrong[0] += 0.1
    for limit, used in ((0.25, True), (0.05, False)):
        prior = FlowPrior(320, 2000, torch.as_tensor, agree_px=3.0, max_correction=limit)
        prior.remember(0, ref)
        found = prior.guess(query, wrong)
        assert (found is not None and found.source == "flow") == used, limit
        assert prior.stats()["rejected_implausible"] == (0 if used else 1)


def test_flow_image_shrinks_to_max_side_and_keeps_input_depth() -> None:
    prior = FlowPrior(160, 2000, lambda d: torch.as_tensor(d) * 2.0)  # a source with depth_scale 2
    ref, _ = _view(0.0, 0.0)
    rgb = np.repeat(ref.grey[..., None], 3, axis=2)
    img = prior.image(rgb, ref.depth, K)
    assert img.grey.shape == (120, 160) and img.scale == 2.0 and img.depth.shape == (240, 320)
    assert np.allclose(img.depth, 2.0 * ref.depth)


@cache
def _cabinet() -> tuple[list, list]:
    frames = list(open_dataset(CABINET))
    src = RGBDSource.from_config(load_config())
    return frames, [
        src.prepare(f.rgb, index=i, timestamp=f.timestamp, depth=f.depth, K=f.K) for i, f in enumerate(frames)
    ]


@needs_cabinet
@pytest.mark.realdata
def test_cabinet_pairs_converge_from_the_prior_not_from_the_previous_pose() -> None:
    """Each cabinet frame tracked against the one before it (as a keyframe): from the previous frame's pose
    ICP ends > 10 cm off in many pairs (measured 19 of 57); from the flow prior in none (max 9.3 cm since the
    flow images are blurred, ``BLUR_SIGMA``: 3.9 cm before, but blocky images defeated the flow)."""
    frames, sf = _cabinet()
    cfg = load_config()
    tracker = FrameTracker(RGBDSource.from_config(cfg), cfg, "se3")
    prior = FlowPrior(cfg.tracking.flow_max_side, cfg.tracking.flow_points, torch.as_tensor)
    from_previous, from_prior = [], []
    for i in range(len(frames) - 1):
        kf = TrackingKeyframe(sf[i], sim3_identity(), sf[i].cache["X"], sf[i].cache["C"], kf_id=i)
        gt = np.linalg.inv(frames[i].pose_gt) @ frames[i + 1].pose_gt
        prior.remember(i, prior.image(frames[i].rgb, frames[i].depth, frames[i].K))
        found = prior.guess(prior.image(frames[i + 1].rgb, frames[i + 1].depth, frames[i + 1].K))
        assert found is not None and found.index == i and found.source == "flow", i
        for guess, errors in ((None, from_previous), (found.T_last_frame, from_prior)):
            res = tracker.track(sf[i + 1], kf, guess)
            assert not res.lost
            T = sim3_to_matrix(res.T_CkCf).numpy()
            errors.append(np.linalg.norm((np.linalg.inv(gt) @ T)[:3, 3]))
    assert sum(e > 0.10 for e in from_previous) >= 10, from_previous
    assert max(from_prior) < 0.10 and np.median(from_prior) < 0.015, from_prior


@needs_cabinet
@pytest.mark.realdata
def test_cabinet_circle_is_tracked_within_5_cm() -> None:
    """The issue's fast-motion target on the cabinet keyframes: >= 90% posed, ATE <= 5 cm SE(3), no pose
    labelled tracking more than 10 cm off when published (measured: 58/58, 2.4 cm, max 4.3 cm; without the
    flow prior and the keyframe distance 49/58 and 47 cm)."""
    m = metrics_report(run_dataset(CABINET, load_config()))
    assert m["frames_with_pose"] >= 0.9 * m["frames_input"]
    assert m["ate"]["frames"]["se3"]["rmse"] <= 0.05, m["ate"]["frames"]["se3"]
    online = m["online_poses"]
    assert online["n_over"].get("tracking", 0) == 0 and online["max_error"]["tracking"] <= 0.10, online
    assert m["flow_prior"]["used"] >= 50, m["flow_prior"]


def test_keyframe_max_dist_makes_a_far_frame_a_keyframe() -> None:
    """Two synthetic views 0.6 m apart that still overlap: with the default 0.5 m limit the second one is a
    new keyframe, with ``keyframe_max_dist: 0`` overlap alone decides (and keeps the first)."""
    (_, T_wq), (_, T_wr) = _view(0.6, 0.0), _view(0.0, 0.0)
    out = {}
    for limit in (0.5, 0.0):
        cfg = load_config(overrides={"tracking": {"keyframe_max_dist": limit}})
        src = RGBDSource.from_config(cfg)
        frames = [
            src.prepare(
                render(room_scene(0, seed=3), K, T, 320, 240).rgb,
                index=i,
                depth=render(room_scene(0, seed=3), K, T, 320, 240).depth,
                K=K,
            )
            for i, T in enumerate((T_wr, T_wq))
        ]
        kf = TrackingKeyframe(frames[0], sim3_identity(), frames[0].cache["X"], frames[0].cache["C"], kf_id=0)
        guess = sim3_from_matrix(torch.from_numpy(np.linalg.inv(T_wr) @ T_wq))
        res = FrameTracker(src, cfg, "se3").track(frames[1], kf, guess)
        assert not res.lost and res.match_frac > 0.5
        out[limit] = res.new_keyframe
    assert out == {0.5: True, 0.0: False}


@pytest.mark.parametrize("stride, upsample", [(8, 1), (4, 1), (4, 2)])
def test_a_fast_orbit_stays_on_track(stride: int, upsample: int) -> None:
    """The synthetic orbit at 160x120, two laps: every pose within 2 cm and the second lap reuses the first
    lap's keyframes. Every 8th frame (12 deg and 14 cm per frame): the flows once verified poses 0.45-0.78
    m from a right motion guess, which ICP followed (1.35 m off without ``flow_max_correction``). Every 4th
    frame: DIS from zero flow locks onto the wrong period of a striped wall (0.21 m off for two frames
    before the check's flow started from the guess). Every 4th frame upsampled 2x nearest-neighbour
    (blocky, as the camera-stream benchmark's renders): several metres off without ``BLUR_SIGMA``."""
    from online3r_ros.slam.frontend import TrackerFrontend
    from online3r_ros.slam.runner import build_source
    from online3r_ros.synthetic import make_synthetic_sequence

    cfg = load_config()
    frames = list(make_synthetic_sequence(n_frames=241, width=160, height=120))[:240:stride]
    fe = TrackerFrontend(cfg, build_source(cfg))
    T_0w = np.linalg.inv(frames[0].pose_gt)
    up = lambda a: np.repeat(np.repeat(a, upsample, axis=0), upsample, axis=1)  # noqa: E731
    K = np.array(frames[0].K, dtype=np.float64)
    K[:2, :2] *= upsample
    K[:2, 2] = upsample * (K[:2, 2] + 0.5) - 0.5  # pixel centres of the upsampled image
    errors = []
    for lap in range(2):
        for f in frames:
            n_posed = len(fe.trajectory()[1])
            fe.process(up(f.rgb), up(f.depth), K, 8.0 * lap + f.timestamp)
            if len(fe.trajectory()[1]) > n_posed:  # this frame got a pose
                est = sim3_to_matrix(fe.trajectory()[2][-1]).numpy()
                errors.append(np.linalg.norm(est[:3, 3] - (T_0w @ f.pose_gt)[:3, 3]))
        if lap == 0:
            first_lap_keyframes = fe.num_keyframes
    assert len(errors) >= 2 * len(frames) - 2  # the second frame waits for the first to initialise
    assert max(errors) < 0.02, np.round(errors, 3)
    assert fe.num_keyframes == first_lap_keyframes and fe.n_reused > 0
