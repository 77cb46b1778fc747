"""ROS-free parts of the two-node pipeline (no DDS): frontend/backend packets, ordering, re-anchoring,
odometry continuity, atomic map save/load, parameter validation, diagnostics, and (with the message packages)
the node-to-node packing."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from online3r_ros.geometry.lie import sim3_compose, sim3_exp
from online3r_ros.ros.nodes import params as P
from online3r_ros.ros.nodes.diagnostics import ERROR, OK, WARN, NodeStats
from online3r_ros.slam.backend import MapperBackend
from online3r_ros.slam.config import load_config
from online3r_ros.slam.frontend import TrackerFrontend
from online3r_ros.slam.motion import rigid_matrix
from online3r_ros.slam.packets import MapperState
from online3r_ros.slam.runner import build_source, build_system
from online3r_ros.synthetic import make_synthetic_sequence

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    torch.set_num_threads(1)
    return load_config()


@pytest.fixture(scope="module")
def frames():
    # 160 frames per lap: 2.7 cm and 2.25 deg per frame -> a second keyframe within 14 frames
    return list(make_synthetic_sequence(n_frames=160, width=96, height=72, max_frames=14))


def _run(cfg, frames, deliver=None):
    """Frontend + backend in one process; ``deliver(packets)`` may reorder what reaches the backend."""
    fe = TrackerFrontend(cfg, build_source(cfg), session=7)
    be = MapperBackend(cfg, build_source(cfg), wait_s=1e9)
    steps, held = [], []
    for f in frames:
        st = fe.process(f.rgb, f.depth, f.K, f.timestamp)
        steps.append(st)
        packets = [p for p in (st.observation, st.keyframe) if p is not None]
        held += packets if deliver is None else []
        for p in packets if deliver is None else deliver(packets):
            (be.submit_keyframe if hasattr(p, "prev_observations") else be.submit_observation)(p)
        for u in be.step(now=0.0):
            fe.apply_keyframe_poses(u.T_WC)
    return fe, be, steps


@pytest.fixture(scope="module")
def pipeline(cfg, frames):
    return _run(cfg, frames)


def test_mapper_copy_equals_the_trackers_local_copy(pipeline) -> None:
    fe, be, steps = pipeline
    assert be.num_keyframes == fe.num_keyframes >= 2
    assert steps[-1].state.value == "tracking"
    for i in range(be.num_keyframes):
        a, b = fe.keyframes.get(i, device="cpu"), be.keyframes.get(i, device="cpu")
        assert torch.equal(a.X, b.X) and torch.equal(a.C, b.C) and (a.N, a.N_updates) == (b.N, b.N_updates)
    assert be.edges() == [(i, i + 1) for i in range(be.num_keyframes - 1)]


def test_two_process_split_matches_slam_system(cfg, frames, pipeline) -> None:
    fe, be, _ = pipeline
    system = build_system(cfg)
    for f in frames:
        system.process(f)
    assert system.num_keyframes == be.num_keyframes
    assert torch.equal(be.keyframe_poses(), system.keyframes.get_poses().cpu())
    ts, poses = be.trajectory()
    ref = system.trajectory()
    np.testing.assert_array_equal(ts, ref.timestamps)
    assert torch.equal(poses, ref.poses)


def test_keyframe_waits_for_the_previous_keyframes_observations(cfg, frames, pipeline) -> None:
    """Keyframes delivered before the observations they follow (different topics): same map."""
    held_obs: list = []

    def keyframes_first(packets):
        kfs = [p for p in packets if hasattr(p, "prev_observations")]
        held_obs.extend(p for p in packets if not hasattr(p, "prev_observations"))
        if kfs and kfs[0].kf_id > 0:
            out = kfs + held_obs[:]
            held_obs.clear()
            return out
        return kfs

    fe, be, _ = _run(cfg, frames, keyframes_first)
    ref = pipeline[1]
    assert be.num_keyframes == ref.num_keyframes
    for i in range(be.num_keyframes - 1):  # the last keyframe's observations are still held
        assert torch.equal(be.keyframes.get(i, device="cpu").X, ref.keyframes.get(i, device="cpu").X)
    torch.testing.assert_close(be.keyframe_poses(), ref.keyframe_poses())


def test_backend_waits_then_gives_up_after_wait_s(cfg, pipeline) -> None:
    fe = pipeline[0]
    be = MapperBackend(cfg, build_source(cfg), wait_s=2.0)
    assert be.submit_keyframe(fe.keyframe_packet(0)) and be.step(now=0.0)[0].kf_id == 0
    pkt = dataclasses.replace(fe.keyframe_packet(1), prev_observations=10_000, N=1, N_updates=1)
    be.submit_keyframe(pkt, now=10.0)
    assert be.step(now=11.0) == [] and be.num_keyframes == 1  # waiting for observations of keyframe 0
    assert [u.kf_id for u in be.step(now=12.5)] == [1]
    assert not be.submit_keyframe(pkt)  # duplicate
    other = dataclasses.replace(fe.keyframe_packet(0), session=99)
    generation = be.generation
    assert be.submit_keyframe(other) and be.num_keyframes == 0 and be.session == 99  # keyframe 0: new map
    assert be.generation == generation  # the new session's frontend sends everything anyway
    obs = next(s.observation for s in pipeline[2] if s.observation is not None)
    be.submit_observation(dataclasses.replace(obs, session=5))  # another session, not its keyframe 0
    assert be.session == 5 and be.generation != generation  # cleared: the frontend must re-send


def test_a_late_backend_knows_the_frames_fused_into_resent_keyframes(cfg, pipeline) -> None:
    """A mapper that starts (or restarts) after the tracker never saw the observations fused into the
    keyframes it is re-sent: the working copies carry those frames' poses, so its trajectory is complete."""
    fe, ref, _ = pipeline
    late = MapperBackend(cfg, build_source(cfg), wait_s=0.0)
    for k in range(fe.num_keyframes):
        pkt = fe.keyframe_packet(k)
        promoted = int(k + 1 < fe.num_keyframes)  # the frame that became keyframe k+1: that one's record
        assert pkt.N_updates > 1 and len(pkt.fused_frames[0]) == pkt.N_updates - 1 - promoted
        late.submit_keyframe(pkt)
    late.step(now=0.0)
    ts, _ = late.trajectory()
    ts_ref, _ = ref.trajectory()
    np.testing.assert_array_equal(ts, ts_ref)  # every frame, none twice
    obs = next(s.observation for s in pipeline[2] if s.observation is not None and s.observation.kf_id == 0)
    late.submit_observation(obs)  # an old observation arriving after the re-send: already in the copy
    late.step(now=0.0)
    np.testing.assert_array_equal(late.trajectory()[0], ts_ref)


def test_newer_local_keyframes_follow_the_correction(cfg, pipeline) -> None:
    """Keyframes the mapper has not integrated yet follow their anchor's correction (where the mapper will
    place them), a relocalised one (anchored to an older keyframe) that keyframe's."""
    fe0 = pipeline[0]
    fe = TrackerFrontend(cfg, build_source(cfg))
    ids = [*range(fe0.num_keyframes), fe0.num_keyframes - 1]  # the same keyframes, the last one twice
    for k, src in enumerate(ids):  # rebuild a local store
        pkt = fe0.keyframe_packet(src)
        fe.keyframes.append(pkt.T_WC, pkt.X, pkt.C)
        fe.kf_anchor.append(k - 1)
    assert fe.num_keyframes >= 3
    old = fe.keyframes.get_poses().clone()
    delta = sim3_exp(torch.tensor([0.1, -0.05, 0.02, 0.01, 0.02, -0.03, 0.0], dtype=torch.float64))
    fe.apply_keyframe_poses(sim3_compose(delta, old[:1]))  # the mapper knows keyframe 0 only
    torch.testing.assert_close(fe.keyframes.get_poses(), sim3_compose(delta.expand_as(old), old))

    fe.kf_anchor[2] = 0  # keyframe 2 relocalised on keyframe 0; the mapper knows 0 and 1 (1 moved apart)
    old = fe.keyframes.get_poses().clone()
    moved = torch.stack([old[0], sim3_compose(delta, old[1])])
    fe.apply_keyframe_poses(moved)
    torch.testing.assert_close(fe.keyframes.get_poses()[2], old[2])  # keyframe 0 did not move


def test_odometry_is_continuous_across_corrections(cfg, frames) -> None:
    fe = TrackerFrontend(cfg, build_source(cfg))
    steps = [fe.process(f.rgb, f.depth, f.K, f.timestamp) for f in frames[:4]]
    assert not fe.apply_map_update(fe.keyframes.get_poses() * 0 + 1, fe.session + 1)  # another session
    before = fe.map_to_odom()
    np.testing.assert_allclose(before, np.eye(4), atol=1e-9)  # no correction yet: odom == map
    delta = sim3_exp(torch.tensor([0.2, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0], dtype=torch.float64))
    fe.apply_keyframe_poses(sim3_compose(delta.expand(fe.num_keyframes, 8), fe.keyframes.get_poses()))
    nxt = fe.process(frames[4].rgb, frames[4].depth, frames[4].K, frames[4].timestamp)
    step_odom = np.linalg.inv(steps[-1].T_odom) @ nxt.T_odom
    step_world = np.linalg.inv(rigid_matrix(fe.frame_world_pose(3))) @ rigid_matrix(nxt.T_WC)
    np.testing.assert_allclose(step_odom, step_world, atol=1e-6)  # the odometry step is the true motion
    assert np.linalg.norm(step_odom[:3, 3]) < 0.1  # no 20 cm jump
    np.testing.assert_allclose(fe.map_to_odom(), rigid_matrix(delta), atol=1e-6)  # the jump is in map->odom


def test_map_save_load_round_trip_is_atomic(cfg, pipeline, tmp_path) -> None:
    be = pipeline[1]
    be.stamps_ns = {float(t): 10**18 + i for i, t in enumerate(be.kf_stamps)}
    path = be.save(tmp_path / "maps" / "map.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.pt"]  # no temp file left
    other = MapperBackend(cfg, build_source(cfg))
    other.load(path)
    assert other.session == be.session and other.edges() == be.edges()
    torch.testing.assert_close(other.keyframe_poses(), be.keyframe_poses())
    np.testing.assert_array_equal(other.trajectory()[0], be.trajectory()[0])
    assert other.stamps_ns == be.stamps_ns and other.obs_count == be.obs_count
    chunk_a, chunk_b = other.map_points(), be.map_points()
    assert len(chunk_a) > 100
    np.testing.assert_array_equal(chunk_a.points, chunk_b.points)
    (tmp_path / "bad.pt").write_bytes(b"not a map")
    with pytest.raises(ValueError, match="cannot read map"):
        other.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "missing.pt")


def test_a_new_session_never_replaces_the_saved_map(cfg, frames, tmp_path) -> None:
    from online3r_ros.slam.map_files import map_file_session

    path = tmp_path / "online3r_map.pt"
    maps = {}
    for session in (7, 8, 7, 9):  # a time jump, a looped bag coming back to an old session id, another
        fe = TrackerFrontend(cfg, build_source(cfg), session=session)
        be = MapperBackend(cfg, build_source(cfg), wait_s=1e9)
        for f in frames[:6]:
            st = fe.process(f.rgb, f.depth, f.K, f.timestamp)
            for p in (st.observation, st.keyframe):
                if p is not None:
                    (be.submit_keyframe if hasattr(p, "prev_observations") else be.submit_observation)(p)
            be.step(now=0.0)
        be.save(path)
        maps[session] = be.keyframe_poses()
        be.save(path)  # the same session again: replaced in place, no backup
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "online3r_map.pt",
        "online3r_map.session-7-2.pt",  # the second session-7 map, kept when session 9 saved
        "online3r_map.session-7.pt",
        "online3r_map.session-8.pt",
    ]
    assert map_file_session(path) == 9 and map_file_session(tmp_path / "online3r_map.session-8.pt") == 8
    assert be.last_backup is None  # the last save was the same session's
    loaded = MapperBackend(cfg, build_source(cfg))
    loaded.load(tmp_path / "online3r_map.session-8.pt")  # load_map can name any session's file
    assert loaded.session == 8
    torch.testing.assert_close(loaded.keyframe_poses(), maps[8])
    (tmp_path / "junk.pt").write_bytes(b"not a map")
    assert map_file_session(tmp_path / "junk.pt") is None and map_file_session(tmp_path / "none.pt") is None


def test_process_rejects_time_going_backwards_without_changing_state(cfg, frames) -> None:
    fe = TrackerFrontend(cfg, build_source(cfg))
    fe.process(frames[1].rgb, frames[1].depth, frames[1].K, frames[1].timestamp)
    with pytest.raises(ValueError, match="not after"):
        fe.process(frames[0].rgb, frames[0].depth, frames[0].K, frames[0].timestamp)
    small = frames[2].rgb[:-8]
    with pytest.raises(ValueError, match="image size changed"):
        fe.process(small, frames[2].depth[:-8], frames[2].K, frames[2].timestamp)
    assert fe.num_keyframes == 1 and fe.last_timestamp == frames[1].timestamp and fe.n_frames == 1
    session = fe.session
    fe.reset()
    assert fe.session != session and fe.num_keyframes == 0 and fe.last_timestamp == -math.inf


def test_a_time_jump_or_a_long_loss_starts_a_new_session(cfg, frames) -> None:
    fe = TrackerFrontend(cfg, build_source(cfg), time_jump_reset=0.5)
    for f in frames[:3]:
        fe.process(f.rgb, f.depth, f.K, f.timestamp + 10.0)
    session = fe.session
    with pytest.raises(ValueError, match="not after"):  # a small step back is rejected
        fe.process(frames[3].rgb, frames[3].depth, frames[3].K, frames[2].timestamp + 9.8)
    assert fe.session == session
    step = fe.process(frames[3].rgb, frames[3].depth, frames[3].K, frames[3].timestamp)  # 10 s back: a jump
    assert "time went backwards" in step.reset_reason and step.session == fe.session != session
    assert step.keyframe is not None and step.keyframe.kf_id == 0 and fe.n_frames == 1

    lossy = TrackerFrontend(load_config(overrides={"system": {"max_lost_frames": 2}}), build_source(cfg))
    lossy.process(frames[0].rgb, frames[0].depth, frames[0].K, frames[0].timestamp)
    session = lossy.session
    blank = np.zeros_like(frames[1].depth)
    steps = [lossy.process(f.rgb, blank, f.K, f.timestamp) for f in frames[1:3]]
    assert [s.state.value for s in steps] == ["lost", "lost"] and steps[0].reset_reason == ""
    assert "max_lost_frames" in steps[1].reset_reason and lossy.session != session
    assert lossy.num_keyframes == 0 and lossy.state.value == "init"


# ---------------------------------------------------------------------------------------------- parameters
def test_parameter_validation_names_the_parameter() -> None:
    ok = P.validate({}, P.TrackerParams)
    assert isinstance(ok, P.TrackerParams) and ok.map_frame == "map" and ok.publish_tf is True
    assert P.validate({"base_to_camera": [0, 0, 0, 0, 0, 0, 1]}, P.TrackerParams).base_to_camera == (
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
    )  # fmt: skip
    cases = [
        ({"sync_tolerance": -1.0}, "sync_tolerance"),
        ({"image_transport": "theora"}, "image_transport"),
        ({"torch_threads": 1.5}, "torch_threads"),
        ({"odom_frame": "map"}, "odom_frame"),
        ({"base_to_camera": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]}, "base_to_camera"),
        ({"base_to_camera": [1.0, 2.0]}, "base_to_camera"),
        ({"camera_frame": ""}, "camera_frame"),
        ({"no_such_thing": 1}, "no_such_thing"),
    ]
    for values, name in cases:
        with pytest.raises(P.ParameterError, match=f"parameter '{name}'"):
            P.validate(values, P.TrackerParams)
    with pytest.raises(P.ParameterError, match="parameter 'map_period'"):
        P.validate({"map_period": -2.0}, P.MapperParams)
    with pytest.raises(P.ParameterError, match="parameter 'slam_config'"):
        P.resolve_path("no/such/file.yaml", "slam_config")
    assert P.resolve_path("online3r.yaml", "slam_config") == (REPO / "config" / "online3r.yaml").resolve()


def test_node_parameter_file_lists_every_parameter_with_its_default() -> None:
    import yaml

    text = (REPO / "config" / "online3r_ros.yaml").read_text()
    assert text == P.documented_yaml(), "config/online3r_ros.yaml is stale: regenerate it (see its header)"
    doc = yaml.safe_load(text)
    assert set(doc) == {"/**/tracker", "/**/mapper", "/**/retrieval"}  # the wildcard: any namespace
    for node, cls in (
        ("tracker", P.TrackerParams),
        ("mapper", P.MapperParams),
        ("retrieval", P.RetrievalParams),
    ):
        values = doc[P.NODE_KEY_PREFIX + node]["ros__parameters"]
        expected = {k: v for k, v in P.defaults(cls).items() if v != ()}
        assert values == expected
        P.validate(values, cls)


@pytest.mark.ros
@pytest.mark.parametrize("namespace", ["", "robot1", "fleet/robot2"])
def test_node_parameter_file_applies_in_any_namespace(tmp_path, namespace) -> None:
    """rcl matches parameter-file keys against the fully qualified node name: ``/**/tracker`` reaches
    ``/robot1/tracker`` (a bare ``tracker:`` key would not)."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    pytest.importorskip("rcl_interfaces.msg", reason="rcl_interfaces is not installed")
    from rclpy.node import Node

    text = P.documented_yaml()
    assert '    map_frame: "map"' in text and "    frustum_scale: 0.1" in text
    text = text.replace('    map_frame: "map"', '    map_frame: "world"').replace(
        "    frustum_scale: 0.1", "    frustum_scale: 0.25"
    )
    path = tmp_path / "params.yaml"
    path.write_text(text)
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context, domain_id=0)
    try:
        for name, specs, key, expected in (
            ("tracker", P.TrackerParams, "map_frame", "world"),
            ("mapper", P.MapperParams, "frustum_scale", 0.25),
        ):
            node = Node(name, namespace=namespace, context=context, start_parameter_services=False)
            try:
                assert node.get_fully_qualified_name() == "/" + "/".join(filter(None, [namespace, name]))
                assert getattr(P.declare_and_read(node, specs), key) == expected
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_torch_threads_zero_is_half_the_cores() -> None:
    assert P.resolve_torch_threads(3) == 3
    assert P.resolve_torch_threads(0, cores=2) == 1  # two nodes on a 2-core machine: one thread each
    assert P.resolve_torch_threads(0, cores=1) == 1
    assert P.resolve_torch_threads(0, cores=16) == 8
    assert P.resolve_torch_threads(0) >= 1
    assert P.validate({}, P.TrackerParams).torch_threads == 0  # the default is auto


def test_node_stats_levels_and_summary() -> None:
    s = NodeStats("tracker", error_hold=5.0, input_timeout=2.0)
    s.state = "tracking"
    s.input_seen(now=100.0)
    assert s.level(now=100.5)[0] == OK
    assert s.level(now=103.0)[0] == WARN
    s.error("EncodingError: yuv422", now=100.0)
    level, message = s.level(now=101.0)
    assert level == ERROR and "yuv422" in message
    assert s.level(now=101.0 + 5.0)[0] == WARN  # the error is old, the input too
    s.input_seen(now=106.0)
    s.warning("2 image message(s) lost in transport (DDS)", now=106.0)
    assert s.level(now=107.0) == (WARN, "2 image message(s) lost in transport (DDS)")
    s.error("EncodingError: yuv422", now=107.0)
    assert s.level(now=107.5)[0] == ERROR  # an error outranks a warning
    s.input_seen(now=113.0)
    assert s.level(now=113.0)[0] == OK  # both old, input fresh
    s.count("received", 3)
    s.count("processed", 2)
    s.add_times({"track": 10.0, "total": math.nan})
    s.add_latency(12.5)
    summary = s.summary(now=100.5)
    assert summary["received"] == 3 and summary["processed"] == 2 and summary["errors"] == 2
    assert summary["stage_ms"]["track"]["mean_ms"] == 10.0 and "total" not in summary["stage_ms"]
    assert summary["latency_ms"]["last"] == 12.5


def test_topic_table_names_every_topic() -> None:
    from online3r_ros.ros import topics as T

    table = T.topic_table_markdown()
    for spec in T.TOPICS:
        assert f"`{spec.name}`" in table
    assert len({t.name for t in T.TOPICS}) == len(T.TOPICS)


def test_readme_topic_table_and_services_match_the_topic_contract() -> None:
    """The README's topic table is ``topic_table_markdown()`` verbatim (between its markers), and every
    service is listed, so README and code never drift."""
    from online3r_ros.ros import topics as T

    text = (REPO / "README.md").read_text()
    start = text.index("<!-- topic-table:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- topic-table:end -->")
    assert text[start:end].strip() == T.topic_table_markdown(), "regenerate the README topic table"
    for service in T.SERVICES:
        node, name = service.split("/~/")
        assert f"- `~/{name}` ({node}): " in text, service


# --------------------------------------------------------------------------------------- message packing
@pytest.mark.ros
def test_packets_round_trip_through_pointcloud2_exactly(pipeline) -> None:
    pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
    pytest.importorskip("std_msgs.msg", reason="std_msgs is not installed")
    from online3r_ros.ros.nodes import msgs as M
    from online3r_ros.ros.pose import T_LINK_OPTICAL

    fe, be, steps = pipeline
    pkt = fe.keyframe_packet(1, prev_observations=4)
    msg = M.keyframe_to_cloud(pkt, 1_700_000_000_123_456_789, T_LINK_OPTICAL)
    back, T_bc = M.cloud_to_keyframe(msg)
    for f in dataclasses.fields(pkt):
        if f.name == "features":  # on their own topic (below)
            continue
        a, b = getattr(pkt, f.name), getattr(back, f.name)
        if f.name == "fused_frames":
            assert len(a[0]) > 0, "keyframe 1 of the pipeline has frames fused into it"
            np.testing.assert_array_equal(a[0], b[0])
            assert torch.equal(a[1], b[1])
        elif torch.is_tensor(a):
            assert torch.equal(a.to(b.dtype), b), f.name
        else:
            assert a == b, f.name
    np.testing.assert_allclose(T_bc, T_LINK_OPTICAL, atol=1e-12)
    assert M.fused_stamps_ns(msg) == {}  # stamps not given: the mapper falls back to the seconds
    ts = pkt.fused_frames[0]
    exact = [1_700_000_000_000_000_007 + 33_333_333 * i for i in range(len(ts))]
    exact[0] = None  # unknown to the tracker (e.g. a frame of a loaded map)
    stamped = M.fused_stamps_ns(M.keyframe_to_cloud(pkt, 1, T_LINK_OPTICAL, exact))
    assert stamped == {float(t): v for t, v in zip(ts[1:], exact[1:], strict=True)}
    from online3r_ros.ros.nodes.retrieval_msgs import array_to_features, features_to_array

    assert pkt.features is not None and len(pkt.features) > 0
    session, kf_id, feats = array_to_features(features_to_array(pkt.session, pkt.kf_id, pkt.features))
    assert (session, kf_id, feats.kind, feats.image_size) == (pkt.session, 1, "sift", pkt.features.image_size)
    for name in ("desc", "xy", "points"):
        torch.testing.assert_close(
            getattr(feats, name), getattr(pkt.features, name).float(), rtol=0, atol=0, equal_nan=True
        )
    obs = next(s.observation for s in steps if s.observation is not None)
    back_obs = M.cloud_to_observation(M.observation_to_cloud(obs, 5))
    assert torch.equal(back_obs.X_kk, obs.X_kk) and torch.equal(back_obs.T_CkCf, obs.T_CkCf)
    assert (back_obs.kf_id, back_obs.seq, back_obs.timestamp) == (obs.kf_id, obs.seq, obs.timestamp)
    session, poses = M.array_to_poses(M.poses_to_array(be.keyframe_poses(), 7))
    assert session == 7 and torch.equal(poses, be.keyframe_poses())
    msg.header.frame_id = msg.header.frame_id.replace(";T_WC=", ";T_XX=")
    with pytest.raises(M.MessageFormatError, match="T_WC"):
        M.cloud_to_keyframe(msg)
    state = MapperState(generation=3, session=None, num_keyframes=2, reset=True, request=4)
    assert M.parse_mapper_state(M.mapper_state_msg(state)) == state


def test_extrapolate_pose_scales_the_last_motion_by_elapsed_time() -> None:
    from online3r_ros.slam.motion import extrapolate_pose

    step = sim3_exp(torch.tensor([0.1, 0.0, 0.0, 0.0, 0.0, 0.05, 0.0], dtype=torch.float64))
    T0 = sim3_exp(torch.tensor([0.3, -0.2, 0.1, 0.1, 0.0, 0.0, 0.0], dtype=torch.float64))
    T1 = sim3_compose(T0, step)
    torch.testing.assert_close(extrapolate_pose(T0, T1, 0.0, 1.0, 2.0), sim3_compose(T1, step))
    torch.testing.assert_close(
        extrapolate_pose(T0, T1, 0.0, 1.0, 3.0), sim3_compose(sim3_compose(T1, step), step)
    )
    torch.testing.assert_close(extrapolate_pose(T0, T1, 0.0, 1.0, 1.0), T1)  # no time elapsed: no motion
    torch.testing.assert_close(extrapolate_pose(T0, T1, 1.0, 1.0, 5.0), T1)  # no velocity from equal stamps
    far = extrapolate_pose(T0, T1, 0.0, 1.0, 1e6, max_intervals=2.0)
    torch.testing.assert_close(far, extrapolate_pose(T0, T1, 0.0, 1.0, 3.0))


def test_pose_history_interpolates_and_bounds_the_nearest_lookup() -> None:
    from online3r_ros.ros.frames import PoseHistory, interpolate_rigid
    from online3r_ros.ros.pose import tqs_to_matrix

    A = tqs_to_matrix([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    B = tqs_to_matrix([1.0, 2.0, 0.0], [0.0, 0.0, np.sin(0.5), np.cos(0.5)])  # 1 rad about z
    mid = interpolate_rigid(A, B, 0.5)
    np.testing.assert_allclose(
        mid, tqs_to_matrix([0.5, 1.0, 0.0], [0.0, 0.0, np.sin(0.25), np.cos(0.25)]), atol=1e-12
    )
    hist = PoseHistory(maxlen=3)
    hist.add(2_000, B)
    hist.add(1_000, A)  # out of order: kept sorted
    np.testing.assert_allclose(hist.lookup(1_500, tolerance_ns=0), mid, atol=1e-12)
    np.testing.assert_allclose(hist.lookup(2_000, tolerance_ns=0), B)
    np.testing.assert_allclose(hist.lookup(2_050, tolerance_ns=100), B)  # nearest, within tolerance
    assert hist.lookup(2_500, tolerance_ns=100) is None and hist.lookup(10, tolerance_ns=100) is None
    for t in (3_000, 4_000):
        hist.add(t, A)
    assert len(hist) == 3 and hist.lookup(1_000, tolerance_ns=0) is None  # the oldest sample was dropped


def test_reserved_dds_domains_are_distinct_until_released(tmp_path) -> None:
    from online3r_ros.ros.replay.domain import reserve_domain_id

    a = reserve_domain_id(1, 3, start=2, lock_dir=tmp_path)
    b = reserve_domain_id(1, 3, start=2, lock_dir=tmp_path)  # 2 is taken: the next free id
    c = reserve_domain_id(1, 3, start=2, lock_dir=tmp_path)  # wraps around
    assert (a.domain_id, b.domain_id, c.domain_id) == (2, 3, 1)
    with pytest.raises(RuntimeError, match="every DDS domain id in 1..3 is reserved"):
        reserve_domain_id(1, 3, lock_dir=tmp_path)
    b.release()
    with reserve_domain_id(1, 3, start=1, lock_dir=tmp_path) as d:
        assert d.domain_id == 3
    a.release()
    c.release()
    assert reserve_domain_id(1, 3, start=1, lock_dir=tmp_path).domain_id == 1
    with pytest.raises(ValueError, match="0..232"):
        reserve_domain_id(5, 300, lock_dir=tmp_path)


def test_demo_nodes_run_the_default_config(tmp_path) -> None:
    """``online3r demo`` runs the built-in defaults (any RGB-D camera); --slam-config picks another file,
    and a missing one is an input error."""
    from online3r_ros.cli.demo import demo_slam_config
    from online3r_ros.cli.main import EXIT_INPUT, CliError

    assert demo_slam_config() is None
    path = REPO / "config" / "online3r.yaml"
    assert demo_slam_config(path) == path
    with pytest.raises(CliError, match="not found") as err:
        demo_slam_config(tmp_path / "missing.yaml")
    assert err.value.code == EXIT_INPUT


def test_log_once_limits_each_kind_of_message_and_stays_bounded() -> None:
    from online3r_ros.ros.nodes.common import LogOnce

    clock = [0.0]
    lines: list[str] = []
    log = LogOnce(period=2.0, max_kinds=4)
    log._time = lambda: clock[0]
    for i in range(5):  # per-frame stamps in the text: still one kind of message
        log(lines.append, f"no depth image with the stamp of image {100 + 0.2 * i:.6f} within 0.5 s")
        clock[0] += 0.2
    log(lines.append, "invalid camera info at 4.000000: fx must be > 0")  # another kind: logged at once
    clock[0] = 3.0
    log(lines.append, "no depth image with the stamp of image 103.000000 within 0.5 s")
    assert lines == [
        "no depth image with the stamp of image 100.000000 within 0.5 s",
        "invalid camera info at 4.000000: fx must be > 0",
        "no depth image with the stamp of image 103.000000 within 0.5 s (and 4 similar in the last 3 s)",
    ]
    for i in range(100):
        log(lines.append, f"kind {chr(65 + i % 26)}{chr(65 + i // 26)}")
    assert len(log._last) == 4  # bounded, whatever the variety of messages


def test_log_once_logs_at_several_severities_through_one_rclpy_logger() -> None:
    """rclpy ties a call site to one severity: a warning after an error through the same LogOnce raised
    ValueError (which had turned a lost image into a failed frame in the tracker)."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    from rclpy.logging import get_logger

    from online3r_ros.ros.nodes.common import LogOnce

    logger = get_logger("log_once_test")
    log = LogOnce(period=0.0)
    for _ in range(2):
        log(logger.error, "an input error")
        log(logger.warning, "3 image message(s) lost in transport")
        log(logger.info, "a note")


def test_a_mapper_behind_integrates_its_keyframes_and_optimises_once(cfg, monkeypatch) -> None:
    """Keyframes that arrive while the backend is busy are integrated together with one optimisation."""
    frames = list(make_synthetic_sequence(n_frames=160, width=96, height=72, max_frames=40))
    fe = TrackerFrontend(cfg, build_source(cfg), session=3)
    packets = []
    for f in frames:
        st = fe.process(f.rgb, f.depth, f.K, f.timestamp)
        packets += [p for p in (st.observation, st.keyframe) if p is not None]
    n_kf = sum(hasattr(p, "prev_observations") for p in packets)
    assert n_kf >= 3
    be = MapperBackend(cfg, build_source(cfg), wait_s=1e9)
    calls = []
    optimize = be._optimizer.optimize
    monkeypatch.setattr(be._optimizer, "optimize", lambda *a, **k: calls.append(1) or optimize(*a, **k))
    for p in packets:  # everything queued before the backend runs: a mapper that fell behind
        (be.submit_keyframe if hasattr(p, "prev_observations") else be.submit_observation)(p)
    updates = be.step(now=0.0)
    assert [u.kf_id for u in updates] == list(range(n_kf)) and len(calls) == 1
    assert [u.opt_info.get("status") for u in updates[1:-1]] == ["deferred"] * (n_kf - 2)
    assert updates[-1].optimised and not any(u.optimised for u in updates[:-1])
    torch.testing.assert_close(updates[-1].T_WC, be.keyframe_poses())
    # in step with the frontend (one keyframe ready at a time) every keyframe is optimised, as before
    calls.clear()
    _, be_live, _ = _run(cfg, frames)
    assert be_live.num_keyframes == n_kf


@pytest.mark.ros
def test_prompts_travel_as_bfloat16_and_bad_ones_are_refused() -> None:
    pytest.importorskip("std_msgs.msg", reason="std_msgs is not installed")
    from online3r_ros.ros.nodes import msgs as M
    from online3r_ros.slam.packets import PromptUpdate

    update = PromptUpdate(5, torch.randn(24, 32, 1024, generator=torch.Generator().manual_seed(0)), kf_id=9)
    msg = M.prompts_to_msg(update)
    assert len(msg.data) == 2 * 24 * 32 * 1024  # ~1.5 MB for ViT-L
    back = M.msg_to_prompts(msg)
    assert (back.version, back.kf_id) == (5, 9)
    assert torch.equal(back.prompts, M.round_prompts(update).prompts)  # exactly what the mapper uses
    torch.testing.assert_close(back.prompts, update.prompts, rtol=1 / 128, atol=0)
    msg.data = msg.data[:-2]
    with pytest.raises(M.MessageFormatError, match="bytes"):
        M.msg_to_prompts(msg)
