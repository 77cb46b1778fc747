"""The place-recognition parts one by one: the keyframe database (:class:`PlaceRecognizer`), pose support,
the feature/loop messages, the loop-edge markers, late loop closure in the backend, and what a saved session
keeps. Synthetic 320x240 views of the loop sequence (SIFT needs texture and resolution)."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
import torch

from online3r_ros.geometry.lie import sim3_from_matrix, sim3_identity
from online3r_ros.retrieval.place import PlaceCandidate
from online3r_ros.retrieval.relpose import estimate_relative_pose, pose_support
from online3r_ros.slam.config import load_config
from online3r_ros.slam.places import make_describer, make_place_recognizer
from online3r_ros.slam.runner import build_source, build_system
from online3r_ros.slam.system import SlamSystem
from online3r_ros.synthetic import make_loop_sequence

CFG = load_config()


@cache
def _frames() -> tuple:
    """Views 0, 6, 12, ... 60 of the loop (handheld steps), then 3 (between the first two)."""
    seq = make_loop_sequence(n_frames=200, width=320, height=240, seed=0)
    return tuple(seq[i] for i in (*range(0, 61, 6), 3))


@cache
def _features() -> tuple:
    describe = make_describer(CFG, build_source(CFG))
    return tuple(describe(None, f.rgb, f.depth, f.K) for f in _frames())


def _relative_gt(a, b) -> np.ndarray:
    return np.linalg.inv(a.pose_gt) @ b.pose_gt


def test_place_recognizer_ranks_the_right_keyframe_and_survives_a_round_trip() -> None:
    places = make_place_recognizer(CFG)
    feats = _features()
    for i, f in enumerate(feats[:-1]):
        places.add(i, f)
    places.add(0, feats[5])  # a second add of an id is ignored
    assert len(places) == len(feats) - 1
    query = feats[-1]  # view 3: between keyframes 0 and 1
    cands = places.candidates(query)
    assert cands and cands[0].kf_id in (0, 1) and cands[0].pose.ok
    gt = _relative_gt(_frames()[cands[0].kf_id], _frames()[-1])
    est = cands[0].T_kf_query
    assert np.linalg.norm(est[:3].numpy() - gt[:3, 3]) < 0.03
    assert places.candidates(query, exclude=[0, 1]) == [] or all(
        c.kf_id > 1 for c in places.candidates(query, exclude=[0, 1])
    )
    state = places.state_dict()
    again = make_place_recognizer(CFG)
    again.load_state_dict(state)
    assert [(c.kf_id, round(c.score, 9)) for c in again.candidates(query)] == [
        (c.kf_id, round(c.score, 9)) for c in cands
    ]
    places.reset()
    assert len(places) == 0 and places.candidates(query) == []


def test_loop_candidates_exclude_the_recent_keyframes_and_then_index_the_query() -> None:
    places = make_place_recognizer(CFG)
    feats = _features()
    for i, f in enumerate(feats[:4]):
        places.add(i, f)
    assert places.loop_candidates(4, feats[-1], exclude_recent=4) == []  # 0..3 are all recent
    assert 4 in places
    found = places.loop_candidates(20, feats[-1], exclude_recent=5)  # view 3 again, as a late keyframe
    assert found and found[0].kf_id in (0, 1, 4) and found[0].T_kf_query is not None


def test_pose_support_tells_the_right_pose_from_a_wrong_one() -> None:
    feats, frames = _features(), _frames()
    rel = estimate_relative_pose(feats[1], feats[0])
    assert rel.ok
    right = sim3_from_matrix(torch.from_numpy(_relative_gt(frames[0], frames[1])))
    wrong = right.clone()
    wrong[0] += 0.15
    n_right, n_valid = pose_support(feats[1], feats[0], rel, right)
    n_wrong, _ = pose_support(feats[1], feats[0], rel, wrong)
    assert n_valid > 20 and n_right >= 0.8 * rel.n_inliers and n_wrong <= 0.1 * n_valid
    assert pose_support(feats[1], feats[0], rel, wrong, tolerance=100.0)[0] == n_valid


@pytest.mark.ros
def test_features_and_loops_round_trip_through_standard_messages() -> None:
    pytest.importorskip("std_msgs.msg", reason="std_msgs is not installed")
    from online3r_ros.ros.nodes.msgs import MessageFormatError
    from online3r_ros.ros.nodes.retrieval_msgs import (
        array_to_features,
        array_to_loops,
        features_to_array,
        loops_to_array,
    )

    f = _features()[0]
    session, kf_id, back = array_to_features(features_to_array(7, 3, f))
    assert (session, kf_id, back.kind, back.image_size) == (7, 3, f.kind, f.image_size)
    torch.testing.assert_close(back.points, f.points, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(back.desc, f.desc) and torch.equal(back.xy, f.xy)
    T = sim3_identity(dtype=torch.float64)
    T[0] = 0.25
    cands = [PlaceCandidate(2, 0.5, T), PlaceCandidate(5, 0.1, None)]
    session, kf_id, out = array_to_loops(loops_to_array(7, 9, cands))
    assert (session, kf_id) == (7, 9)
    assert [(c.kf_id, c.score) for c in out] == [(2, 0.5), (5, 0.1)]
    assert torch.equal(out[0].T_kf_query, T) and out[1].T_kf_query is None
    bad = features_to_array(7, 3, f)
    bad.data = bad.data[:-1]
    with pytest.raises(MessageFormatError):
        array_to_features(bad)


@pytest.mark.ros
def test_loop_edges_have_their_own_marker_namespace() -> None:
    pytest.importorskip("visualization_msgs.msg", reason="visualization_msgs is not installed")
    from std_msgs.msg import Header

    from online3r_ros.ros.nodes.markers import map_markers

    poses = np.stack([np.eye(4)] * 4)
    poses[:, 0, 3] = np.arange(4)
    msg = map_markers(
        Header(frame_id="map"), poses, None, (64, 48), [(0, 1), (1, 2), (0, 3)], 0.1, loops=[(0, 3)]
    )
    by_ns = {m.ns: m for m in msg.markers}
    assert len(by_ns["edges"].points) == 4 and len(by_ns["loops"].points) == 2
    assert (
        by_ns["loops"].points[1].x == 3.0 and by_ns["loops"].color.r == 1.0 and by_ns["loops"].color.g == 0.0
    )


def test_late_loop_candidates_close_the_loop_and_the_session_keeps_the_features(tmp_path) -> None:
    """A mapper without a loop hook (as in the nodes) gets the loop from a retrieval node later
    (:meth:`MapperBackend.close_loops`); a saved session keeps every keyframe's features and relocalises
    from the whole map after loading. (Keyframe reuse off: the revisit then makes new keyframes, which is
    where loops are found; with reuse the tracker would take the start's keyframes, its drift being small.)"""
    overrides = {"retrieval": {"loop_closure": False}, "system": {"proximity_edges": 0}}
    cfg = load_config(overrides={**overrides, "tracking": {"reuse_keyframes": 0}})
    seq = make_loop_sequence(n_frames=200, width=320, height=240, seed=0, stride=3)
    system = build_system(cfg)
    for f in seq:
        system.process(f)
    backend = system.backend
    n = backend.num_keyframes
    assert n >= 4 and backend.loop_edges == [] and all(f is not None for f in backend.kf_features)
    places = make_place_recognizer(load_config())
    found = []
    for i, f in enumerate(backend.kf_features):
        found += [(i, c) for c in places.loop_candidates(i, f, exclude_recent=3)]
    assert found, "the loop sequence revisits its start: retrieval must find it"
    kf, cand = found[-1]
    update = backend.close_loops(kf, [cand])
    assert update is not None and update.loops == ((cand.kf_id, kf),) and update.optimised
    assert backend.loop_edges == [(cand.kf_id, kf)]
    assert backend.close_loops(n + 5, [cand]) is None  # not in the map
    system.save(tmp_path / "session")
    loaded = SlamSystem.load(tmp_path / "session", build_source(cfg))
    assert loaded.backend.loop_edges == backend.loop_edges
    assert len(loaded.frontend.place.places) == len(system.frontend.place.places) == n
    t_end = loaded.frontend.last_timestamp
    steps = [
        loaded.frontend.process(f.rgb, f.depth, f.K, timestamp=t_end + 1 + k)
        for k, f in enumerate((seq[1], seq[2]))
    ]
    assert steps[-1].state.value == "reloc" and steps[-1].has_pose  # the loop's start is in the loaded map


def test_features_that_travel_apart_join_their_keyframe_in_the_map() -> None:
    """The nodes send a keyframe's features on their own topic: the mapper keeps them with the keyframe
    whether they arrive before or after it (so a saved map can be relocalised in); another session's are
    refused."""
    cfg = load_config(overrides={"retrieval": {"loop_closure": False}})
    seq = make_loop_sequence(n_frames=200, width=320, height=240, seed=0, stride=3, max_frames=12)
    system = build_system(cfg)
    packets = []
    for f in seq:
        step = system.frontend.process(f.rgb, f.depth, f.K, f.timestamp)
        if step.keyframe is not None:
            packets.append(step.keyframe)
    from online3r_ros.slam.backend import MapperBackend

    backend = MapperBackend(cfg, build_source(cfg), wait_s=0.0)
    first, second = packets[0], packets[1]
    strip = [dataclasses.replace(p, features=None, frame=None) for p in packets[:2]]
    assert backend.submit_features(first.session, 1, second.features)  # before its keyframe
    for p in strip:
        backend.submit_keyframe(p)
    backend.step()
    assert backend.kf_features[0] is None and backend.kf_features[1] is second.features
    assert backend.submit_features(first.session, 0, first.features)  # after it
    assert backend.kf_features[0] is first.features
    assert not backend.submit_features(first.session + 1, 0, second.features)
    assert backend.state_dict()["kf_features"][0]["kind"] == "sift"


def test_features_of_another_kind_are_refused_and_leave_the_database_unchanged() -> None:
    places = make_place_recognizer(CFG)
    places.add(0, _features()[0])
    other = dataclasses.replace(_features()[1], kind="mast3r")
    with pytest.raises(ValueError, match="mast3r"):
        places.loop_candidates(1, other, exclude_recent=1)
    assert len(places) == 1 and 1 not in places


def test_only_a_metric_source_lifts_features_to_3d() -> None:
    """The prior-free pose is metric; a network source's poses are in its own units, so its features carry
    no 3D points (its relocalisation and loops are verified by tracking and the edge test instead)."""
    from types import SimpleNamespace

    f = _frames()[0]
    metric = make_describer(CFG, build_source(CFG))(None, f.rgb, f.depth, f.K)
    network = make_describer(CFG, SimpleNamespace(metric=False))(None, f.rgb, f.depth, f.K)
    assert metric.points is not None and network.points is None
    assert torch.equal(metric.desc, network.desc)
