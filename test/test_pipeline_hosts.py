"""One pipeline, two hosts: SlamSystem (in process) and the nodes' wiring (packets packed into ROS messages)
give the same poses; the ROS-free pieces the nodes use (re-send protocol, REP-105 algebra, input pairing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from online3r_ros.geometry.lie import sim3_compose, sim3_exp, sim3_inverse
from online3r_ros.ros.frames import ExternalOdometry, RobotFrames
from online3r_ros.ros.nodes.inputs import InputSync
from online3r_ros.ros.pose import T_LINK_OPTICAL, invert, tqs_to_matrix
from online3r_ros.slam.backend import MapperBackend
from online3r_ros.slam.config import load_config
from online3r_ros.slam.frontend import TrackerFrontend
from online3r_ros.slam.motion import rigid_matrix
from online3r_ros.slam.packets import MapperState
from online3r_ros.slam.runner import build_source, build_system
from online3r_ros.slam.session import GapRequests, LinkAction, MapperLink, first_missing, next_generation
from online3r_ros.synthetic import make_synthetic_sequence


@pytest.fixture(scope="module")
def frames():
    return list(make_synthetic_sequence(width=96, height=72, seed=0, max_frames=60))


@pytest.fixture(scope="module")
def cfg():
    return load_config(
        overrides={"source": {"width": 96, "height": 72}, "tracking": {"match_frac_thresh": 0.6}}
    )


@pytest.mark.ros
def test_slam_system_and_the_nodes_wiring_give_identical_poses(cfg, frames) -> None:
    """60 frames through SlamSystem, and through a frontend and a backend that exchange their packets as
    the nodes do (PointCloud2 / Float64MultiArray packing, a re-prepared keyframe frame on the backend)."""
    M = pytest.importorskip(
        "online3r_ros.ros.nodes.msgs", reason="the ROS message packages are not installed"
    )
    system = build_system(cfg)
    for f in frames:
        system.process(f)

    fe = TrackerFrontend(cfg, build_source(cfg))
    be = MapperBackend(cfg, build_source(cfg), wait_s=1.0)
    stamp = 0
    for f in frames:
        step = fe.process(f.rgb, f.depth, f.K, f.timestamp)
        if step.observation is not None:
            be.submit_observation(M.cloud_to_observation(M.observation_to_cloud(step.observation, stamp)))
        if step.keyframe is not None:
            pkt, _ = M.cloud_to_keyframe(M.keyframe_to_cloud(step.keyframe, stamp, T_LINK_OPTICAL))
            assert pkt.frame is None  # the mapper prepares the keyframe's frame again
            be.submit_keyframe(pkt, now=0.0)
        for update in be.step(now=0.0):
            session, poses = M.array_to_poses(M.poses_to_array(update.T_WC, be.session))
            assert fe.apply_map_update(poses, session)

    assert fe.num_keyframes == be.num_keyframes == system.num_keyframes >= 4
    assert torch.equal(be.keyframe_poses(), system.keyframes.get_poses())
    idx, ts, poses = fe.trajectory()
    ref = system.trajectory()
    assert np.array_equal(idx, ref.indices) and np.array_equal(ts, ref.timestamps)
    assert torch.equal(poses, ref.poses)
    assert be.edges() == system.backend.edges()


def test_a_keyframe_made_before_a_correction_arrived_lands_on_its_corrected_anchor(cfg, frames) -> None:
    """The nodes' race behind a late loop closure: the backend moves keyframe 1 (a loop closed there)
    while the frontend, not yet told, makes keyframe 2 from it. The backend places keyframe 2 by its pose
    relative to the anchor, not where the uncorrected map had it; the packet's anchor pose survives the
    message packing."""
    M = pytest.importorskip(
        "online3r_ros.ros.nodes.msgs", reason="the ROS message packages are not installed"
    )
    fe = TrackerFrontend(cfg, build_source(cfg))
    packets = []
    for f in frames:
        step = fe.process(f.rgb, f.depth, f.K, f.timestamp)
        if step.keyframe is not None:
            packets.append(step.keyframe)
        if len(packets) == 3:
            break
    assert len(packets) == 3 and packets[2].anchor_id == 1
    assert torch.equal(packets[2].T_WA, packets[1].T_WC)  # the frontend heard of no correction
    be = MapperBackend(cfg, build_source(cfg), wait_s=0.0)
    for pkt in packets[:2]:
        be.submit_keyframe(pkt)
    be.step()
    correction = sim3_exp(torch.tensor([0.3, -0.1, 0.2, 0.05, 0.1, -0.02, 0.0], dtype=torch.float64))
    moved = sim3_compose(correction, be.keyframe_poses()[1])
    be.keyframes.set_poses([1], moved[None])

    pkt, _ = M.cloud_to_keyframe(M.keyframe_to_cloud(packets[2], 0, T_LINK_OPTICAL))
    assert torch.equal(pkt.T_WA, packets[2].T_WA)
    be.integrate(pkt, optimise=False)
    T_anchor_kf = sim3_compose(sim3_inverse(packets[1].T_WC), packets[2].T_WC)  # what tracking measured
    placed = be.keyframe_poses()[2]
    assert torch.allclose(placed, sim3_compose(moved, T_anchor_kf), atol=1e-9)
    assert (placed[:3] - packets[2].T_WC[:3]).norm() > 0.1  # not where the frontend's map had it


def test_mapper_link_resends_what_the_backend_lacks() -> None:
    link = MapperLink()
    st = link.on_state(MapperState(generation=1, session=7, num_keyframes=2), session=7, num_keyframes=5)
    assert (st.action, st.first, st.stop) == (LinkAction.RESEND, 2, 5)
    assert link.on_state(MapperState(1, 7, 2), 7, 5).action is LinkAction.NONE  # already handled
    # a restarted backend with a map of another session: everything, but only once it can hear us
    assert link.on_state(MapperState(2, 99, 3), 7, 5, can_send=False).action is LinkAction.DEFER
    st = link.on_state(MapperState(2, 99, 3), 7, 5, can_send=True)
    assert (st.action, st.first, st.stop) == (LinkAction.RESEND, 0, 5)
    assert link.on_state(MapperState(3, 7, 5), 7, 5).action is LinkAction.NONE  # nothing missing
    assert link.on_state(MapperState(4, None, 0, reset=True), 7, 5).action is LinkAction.RESET
    fresh = MapperLink()  # a reset announced before the frontend ever heard the backend: not for us
    assert fresh.on_state(MapperState(9, None, 0, reset=True), 7, 0).action is LinkAction.NONE


def test_a_keyframe_lost_in_transport_is_asked_for_again(cfg, frames) -> None:
    """Keyframe 1 never arrives (lost over DDS) while keyframe 2 and observations of later keyframes do:
    after ``gap_s`` the backend counts a request into its announcement, the frontend's link answers with a
    re-send from keyframe 1, and the map is complete again."""
    fe = TrackerFrontend(cfg, build_source(cfg))
    be = MapperBackend(cfg, build_source(cfg), wait_s=0.0, gap_s=2.0)
    link = MapperLink()
    assert link.on_state(be.state(), fe.session, 0).action is LinkAction.NONE  # the mapper's first word
    for f in frames:
        step = fe.process(f.rgb, f.depth, f.K, f.timestamp)
        if step.observation is not None:
            be.submit_observation(step.observation)
        if step.keyframe is not None and step.keyframe.kf_id != 1:  # keyframe 1 is lost
            be.submit_keyframe(step.keyframe, now=0.0)
        be.step(now=0.0)
        if fe.num_keyframes >= 3:
            break
    assert be.num_keyframes == 1 and fe.num_keyframes == 3
    assert be.request_missing(now=10.0) is None  # waiting starts now
    assert be.request_missing(now=11.0) is None
    assert be.request_missing(now=12.0) == 1 and be.state().request == 1
    assert be.request_missing(now=13.0) is None  # not again before another gap_s
    step = link.on_state(be.state(), fe.session, fe.num_keyframes)
    assert (step.action, step.first, step.stop) == (LinkAction.RESEND, 1, 3)
    for k in range(step.first, step.stop):
        be.submit_keyframe(fe.keyframe_packet(k), now=13.0)
    be.step(now=13.0)
    assert be.num_keyframes == 3 and be.request_missing(now=20.0) is None
    assert link.on_state(be.state(), fe.session, fe.num_keyframes).action is LinkAction.NONE


def test_gap_requests_ask_again_after_the_wait_and_every_wait_while_missing() -> None:
    gaps = GapRequests(gap_s=2.0)
    assert not gaps.update(False, now=0.0)
    assert not gaps.update(True, now=1.0) and not gaps.update(True, now=2.5)  # missing since 1.0
    assert gaps.update(True, now=3.0) and gaps.requests == 1
    assert not gaps.update(True, now=4.0) and gaps.update(True, now=5.0) and gaps.requests == 2
    assert not gaps.update(False, now=5.5)  # it arrived: the wait starts over at the next gap
    assert not gaps.update(True, now=6.0) and not gaps.update(True, now=7.9) and gaps.requests == 2


def test_first_missing_counts_the_keyframes_held_without_a_gap() -> None:
    assert first_missing(set()) == 0 and first_missing({0, 1, 2}) == 3
    assert first_missing({1, 2}) == 0 and first_missing({0, 1, 3, 4}) == 2
    assert first_missing({0: "a", 2: "b"}.keys()) == 1


def test_next_generation_always_grows() -> None:
    now = next_generation()
    assert next_generation(now) > now and next_generation(now + 10**15) == now + 10**15 + 1


def test_a_retrieval_database_gets_the_features_it_lacks_from_the_frontend(cfg, frames) -> None:
    """The retrieval node's side of the protocol, without DDS: a database that missed keyframes 0 and 2
    announces the ones it holds without a gap; the frontend's link names what to re-send, and the re-sent
    features (out of order) complete it."""
    from online3r_ros.slam.places import make_place_recognizer

    fe = TrackerFrontend(cfg, build_source(cfg))
    for f in frames:
        fe.process(f.rgb, f.depth, f.K, f.timestamp)
        if fe.num_keyframes >= 4:
            break
    assert fe.num_keyframes == 4 and all(fe.keyframe_features(k) is not None for k in range(4))
    places = make_place_recognizer(cfg)
    for k in (1, 3):  # 0 and 2 lost in transport
        places.loop_candidates(k, fe.keyframe_features(k), cfg.retrieval.exclude_recent)
    held = first_missing(places.features.keys())
    assert held == 0
    step = MapperLink().on_state(MapperState(1, fe.session, held, request=1), fe.session, fe.num_keyframes)
    assert (step.action, step.first, step.stop) == (LinkAction.RESEND, 0, 4)
    for k in range(step.first, step.stop):
        places.loop_candidates(k, fe.keyframe_features(k), cfg.retrieval.exclude_recent)  # held ones: ignored
    assert first_missing(places.features.keys()) == 4 and len(places) == 4


def test_robot_frames_chain_map_odom_base() -> None:
    T_bc = tqs_to_matrix([0.1, -0.02, 0.3], [-0.5, 0.5, -0.5, 0.5])
    frames = RobotFrames(T_bc)
    T_WC = sim3_exp(torch.tensor([0.3, -0.1, 0.2, 0.05, -0.1, 0.2, 0.0], dtype=torch.float64))
    correction = rigid_matrix(
        sim3_exp(torch.tensor([0.2, 0.0, -0.1, 0.0, 0.0, 0.1, 0.0], dtype=torch.float64))
    )
    T_odom = invert(correction) @ rigid_matrix(T_WC)  # the odometry drifted by the correction
    T_map_base = T_bc @ rigid_matrix(T_WC) @ invert(T_bc)
    chain = frames.odom_in_map(correction) @ frames.base_in_odom(T_odom)
    np.testing.assert_allclose(chain, T_map_base, atol=1e-12)
    np.testing.assert_allclose(frames.camera_in_map(T_WC), T_bc @ rigid_matrix(T_WC), atol=1e-12)
    T_odom_base_ext = tqs_to_matrix([1.0, 2.0, 0.0], [0.0, 0.0, np.sin(0.2), np.cos(0.2)])
    ext = frames.odom_in_map_external(T_WC, T_odom_base_ext) @ T_odom_base_ext
    np.testing.assert_allclose(ext, T_map_base, atol=1e-12)
    several = torch.stack([T_WC, sim3_exp(torch.tensor([0.1, 0.2, 0.3, 0.3, 0.0, -0.2, 0.4]).double())])
    np.testing.assert_allclose(
        frames.cameras_in_map(several), np.stack([frames.camera_in_map(P) for P in several]), atol=1e-12
    )  # batched, scale dropped (the second pose has scale e^0.4)
    assert frames.cameras_in_map(torch.zeros(0, 8)).shape == (0, 4, 4)


def test_external_odometry_interpolates_at_the_stamp_and_gives_up_after_the_wait() -> None:
    odo = ExternalOdometry(tolerance_s=0.05, wait_s=0.01)
    odo.add(1_000_000_000, np.eye(4))
    B = tqs_to_matrix([1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    odo.add(2_000_000_000, B)
    np.testing.assert_allclose(odo.at(1_500_000_000)[:3, 3], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(odo.at(2_040_000_000), B)  # nearest sample, within the tolerance
    assert odo.at(3_000_000_000) is None  # waited, nothing near


def _msg(sec: float) -> SimpleNamespace:
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=int(sec), nanosec=int(sec % 1 * 1e9)))
    )


def _info(sec: float, fx: float = 500.0) -> SimpleNamespace:
    """A CameraInfo-like message (duck-typed) stamped ``sec`` with focal length ``fx``."""
    zero = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=_msg(sec).header.stamp, frame_id="camera"),
        width=64,
        height=48,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, 32.0, 0.0, 500.0, 24.0, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, 32.0, 0.0, 0.0, 500.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x=0,
        binning_y=0,
        roi=zero,
    )


def test_input_sync_takes_the_camera_info_of_the_image_stamp() -> None:
    sync = InputSync(need_depth=False, need_info=True, sync_tolerance=0.002, sync_wait=0.5)
    old, new = _info(1.0, fx=400.0), _info(3.0, fx=600.0)
    assert sync.put_info(new) is None and sync.put_info(old) is None  # any arrival order
    sync.put_image(_msg(2.0), now=0.0)
    assert sync.take(now=0.0)[2] is old  # the latest one at or before the image, not the newest
    sync.put_image(_msg(3.0005), now=0.0)
    assert sync.take(now=0.0)[2] is new  # its own stamp, within the tolerance
    bad = _info(4.0, fx=-1.0)
    assert "invalid camera info at 4.000000" in sync.put_info(bad)
    sync.put_image(_msg(4.0), now=0.0)
    assert sync.take(now=0.0)[2] is bad  # the frame of the bad calibration gets it (and is rejected)
    sync.put_image(_msg(5.0), now=0.0)
    assert sync.take(now=0.0)[2] is new  # an invalid CameraInfo is never used for another frame
    assert "bad stamp" in sync.put_info(SimpleNamespace(header=_msg(-1.0).header))
    late = InputSync(need_depth=False, need_info=True, sync_tolerance=0.002, sync_wait=0.5)
    late.put_image(_msg(7.0), now=0.0)
    assert late.take(now=0.1) is None  # waits for a CameraInfo
    late.put_info(_info(7.0))
    assert late.take(now=0.2)[2] is not None
    late.put_image(_msg(6.0), now=1.0)
    assert late.take(now=1.1) is None and late.take(now=1.6)[2] is None  # none at or before: handed out alone


def test_input_sync_pairs_depth_by_stamp_and_waits_for_it() -> None:
    sync = InputSync(need_depth=True, need_info=True, sync_tolerance=0.002, sync_wait=0.5)
    assert sync.take(now=0.0) is None
    sync.put_image(_msg(10.0), now=0.0)
    sync.put_image(_msg(10.1), now=0.0)
    info = _info(9.0)
    assert sync.put_info(info) is None
    assert sync.take(now=0.1) is None  # no depth yet
    depth0 = _msg(10.0)
    sync.depths.append(depth0)
    image, d, got = sync.take(now=0.1)  # the older image is complete: taken while the newer waits
    assert d is depth0 and got is info and image.header.stamp.sec == 10 and len(sync.images) == 1
    depth1 = _msg(10.101)
    sync.depths.append(depth1)
    image, d, _ = sync.take(now=0.1)
    assert d is depth1 and not sync.images and sync.drain_stale() == 0
    for t in (11.0, 11.1, 11.2):
        sync.put_image(_msg(t), now=1.0)
    sync.depths.append(_msg(11.2))  # depth of the newest first (either order)
    image, _, _ = sync.take(now=1.0)
    assert image.header.stamp.nanosec == _msg(11.2).header.stamp.nanosec and sync.drain_stale() == 2
    sync.put_image(_msg(12.0), now=2.0)
    assert sync.take(now=2.2) is None
    image, d, _ = sync.take(now=2.6)  # waited sync_wait: handed out without depth, for the caller to reject
    assert d is None and not sync.images
    for t in range(20):  # bounded: the oldest waiting images are dropped as stale
        sync.put_image(_msg(20.0 + t), now=3.0)
    assert len(sync.images) == sync.max_images and sync.drain_stale() == 20 - sync.max_images
    sync.put_image(SimpleNamespace(header=_msg(-1.0).header), now=3.0)
    with pytest.raises(ValueError):
        sync.take(now=3.0)
