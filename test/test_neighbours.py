"""Keyframe neighbourhoods: proximity edges and the RGB-D tracking model's keyframes."""

from __future__ import annotations

import torch

from online3r_ros.geometry.lie import sim3_exp, sim3_identity
from online3r_ros.slam.config import load_config
from online3r_ros.slam.keyframes import KeyframeStore
from online3r_ros.slam.neighbours import (
    model_keyframe_ids,
    nearby_keyframes,
    proximity_candidates,
    tracking_keyframe,
)
from online3r_ros.sources.base import SourceFrame


def pose(x: float, yaw: float) -> torch.Tensor:
    return sim3_exp(torch.tensor([x, 0.0, 0.0, 0.0, yaw, 0.0, 0.0], dtype=torch.float64))


# keyframes 0..4 along x; 5 comes back next to 1 (0.1 m) looking the same way, near 0 but turned 90 deg
POSES = torch.stack(
    [pose(0.0, 1.57), pose(0.5, 0.0), pose(2.0, 0.0), pose(3.0, 0.0), pose(4.0, 0.0), pose(0.6, 0.0)]
)


def test_proximity_candidates_pick_near_keyframes_with_similar_view() -> None:
    T = POSES
    assert proximity_candidates(T, 5, 3, 1.0, 30.0, metric=True) == [1]
    assert proximity_candidates(T, 5, 3, 1.0, 100.0, metric=True) == [1, 0]  # nearest first
    assert proximity_candidates(T, 5, 1, 1.0, 100.0, metric=True) == [1]
    assert proximity_candidates(T, 5, 3, 1.0, 30.0, metric=False) == []  # no scale: no distances
    assert proximity_candidates(sim3_identity(2, dtype=torch.float64), 1, 3, 1.0, 30.0, metric=True) == []
    # the previous keyframe (4) is never a proximity candidate: it gets its own edge
    assert proximity_candidates(T, 5, 6, 10.0, 180.0, metric=True) == [1, 2, 3, 0]


def test_nearby_keyframes_ranks_by_distance_and_angle_and_excludes() -> None:
    ref = pose(0.58, 0.1)  # 0.02 m from 5, 0.08 m from 1, same angle to both
    assert nearby_keyframes(POSES, ref, 10, 1.0, 30.0) == [5, 1]
    assert nearby_keyframes(POSES, ref, 10, 1.0, 30.0, exclude=[5]) == [1]
    assert nearby_keyframes(POSES, ref, 1, 1.0, 30.0) == [5]
    assert nearby_keyframes(POSES, ref, 0, 1.0, 30.0) == []
    assert nearby_keyframes(POSES[:0], ref, 3, 1.0, 30.0) == []
    assert nearby_keyframes(POSES, ref, 10, 2.0, 100.0) == [5, 1, 2, 0]


def test_model_keyframes_previous_first_then_nearest() -> None:
    T = POSES
    assert model_keyframe_ids(T, 5, 3, 1.0, 30.0) == [4, 1]  # 4: previous (far, but the latest view)
    assert model_keyframe_ids(T, 5, 1, 1.0, 30.0) == [4]
    assert model_keyframe_ids(T, 5, 0, 1.0, 30.0) == []
    assert model_keyframe_ids(T, 0, 3, 1.0, 100.0) == [1, 5]  # no previous keyframe; never itself
    assert model_keyframe_ids(T, 1, 6, 1.0, 100.0) == [0, 5]
    assert model_keyframe_ids(T[:1], 0, 3, 1.0, 30.0) == []


def test_tracking_keyframe_carries_neighbours_at_their_current_poses() -> None:
    store = KeyframeStore(pose_dtype=torch.float64)
    frames = []
    for k, T in enumerate(POSES):
        X = torch.full((4, 5, 3), float(k + 1))
        store.append(T, X, torch.ones(4, 5), frame_index=k)
        frames.append(SourceFrame(k, float(k), torch.zeros(4, 5, 3), None, None, {}))
    cfg = load_config(
        None, {"tracking": {"model_keyframes": 3, "model_max_dist": 1.0, "model_max_angle": 30.0}}
    )
    tk = tracking_keyframe(store, frames, 5, cfg)
    assert tk.kf_id == 5 and tk.frame is frames[5]
    assert [n.kf_id for n in tk.neighbours] == [4, 1]
    assert all(not n.neighbours for n in tk.neighbours)
    assert torch.allclose(tk.neighbours[1].T_WC.double(), POSES[1])
    assert float(tk.neighbours[1].X[0, 0, 0]) == 2.0
    # moved keyframes (a global optimisation): the model follows the store's current poses
    store.set_poses([1], pose(3.0, 0.0)[None])
    assert [n.kf_id for n in tracking_keyframe(store, frames, 5, cfg).neighbours] == [4]
    assert tracking_keyframe(store, frames, 5, None).neighbours == []
    off = load_config(None, {"tracking": {"model_keyframes": 0}})
    assert tracking_keyframe(store, frames, 5, off).neighbours == []
