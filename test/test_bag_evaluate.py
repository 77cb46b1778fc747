"""``online3r bag evaluate``: the live-run assembly (ROS-free), the input checks (one line, non-zero exit, no
node started), ``online3r evaluate`` on an output bag, and the round trip 7-Scenes -> MCAP / sqlite3 ->
nodes over DDS (lock-step) -> output.mcap -> metrics, compared with ``online3r run`` on the same frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")

from online3r_ros.bags import BagWriter, list_topics, read_trajectory  # noqa: E402
from online3r_ros.bags.messages import camera_info_msg, image_msg, pose_stamped_msg  # noqa: E402
from online3r_ros.eval.live_run import (  # noqa: E402
    frame_counts,
    growth_per_1000_frames,
    latencies_ms,
    live_run_outputs,
    loop_edges_from_segments,
    pose_arrays,
)
from online3r_ros.eval.trajectory_io import write_tum  # noqa: E402
from online3r_ros.utils.proc_memory import RssSampler, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"
N_FRAMES = 40
START = 1000.0  # 7-Scenes frame 0 is at 0 s: tf2 and a simulated clock read 0 as "no time" (bags README)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The round trip's SLAM config, for `online3r run` and the nodes alike: an 80x60 working resolution keeps
#: 40 frames through three nodes on a 2-core machine well inside the 60 s budget.
SLAM_CONFIG = "source:\n  kind: depth\n  width: 80\n  height: 60\n"
#: |ATE(bag evaluate) - ATE(online3r run)| allowed on the same 40 frames, metres. The tracker node applies
#: the mapper's keyframe corrections when they arrive over DDS, the offline runner at once, so the two can
#: differ by timing; measured 0.01 mm (3.67 vs 3.66 mm). 0.5 mm is ~15% of the ATE: a lost or dropped frame,
#: a depth-scale or intrinsics error through the bag path moves it by millimetres or more.
ATE_TOL = 5e-4


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ONLINE3R_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "online3r_ros.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------- live-run assembly
def _T(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def test_pose_arrays_sort_by_stamp_and_keep_the_last_of_a_repeated_stamp() -> None:
    t, T = pose_arrays([(2_000_000_000, _T(2)), (1_000_000_000, _T(1)), (2_000_000_000, _T(3))])
    np.testing.assert_array_equal(t, [1.0, 2.0])
    np.testing.assert_array_equal(T[:, 0, 3], [1.0, 3.0])
    assert pose_arrays([])[1].shape == (0, 4, 4)


def test_latency_is_first_arrival_minus_send_time_of_sent_stamps() -> None:
    sent = {10: 1.0, 20: 2.0, 30: 3.0}
    received = [(20, 2.5), (10, 1.1), (20, 2.2), (99, 5.0)]  # 20 twice (first wins), 99 never sent
    np.testing.assert_allclose(latencies_ms(sent, received), [100.0, 200.0])


def test_frame_counts_split_unposed_frames_into_drops_and_lost() -> None:
    status = {"processed": 8, "rejected": 1, "relocalised": 2}
    assert frame_counts(10, 6, status) == {"posed": 6, "lost": 3, "drops": 1, "relocalised": 2}
    assert frame_counts(10, 10, {"processed": 10}) == {"posed": 10, "lost": 0, "drops": 0, "relocalised": 0}
    assert frame_counts(5, 3, None) == {"posed": 3, "lost": 2, "drops": None, "relocalised": None}


def test_loop_segments_become_keyframe_index_pairs() -> None:
    kf = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    segments = np.array([[kf[3], kf[0]], [kf[0], kf[3]], [kf[2], [9.0, 9, 9]]])  # a repeat; an unknown end
    assert loop_edges_from_segments(segments, kf) == [(0, 3)]
    assert loop_edges_from_segments(None, kf) == [] and loop_edges_from_segments(segments, None) == []


def test_live_run_outputs_fill_what_score_run_needs() -> None:
    sent = {1_000_000_000 + k * 100_000_000: float(k) for k in range(5)}
    stamps = sorted(sent)
    poses = [(s, _T(k), sent[s] + 0.05) for k, s in enumerate(stamps[:4])] + [(123, _T(9), 9.0)]
    run = live_run_outputs(
        sent=sent,
        camera_poses=poses,
        keyframe_path=[(stamps[0], _T(0)), (stamps[3], _T(3))],
        loop_segments=np.array([[[0.0, 0, 0], [3.0, 0, 0]]]),
        tracker_status={"processed": 5, "rejected": 0},
        memory={"tracker": (np.array([0.0, 1.0]), np.array([100.0, 110.0]))},
        source="out.mcap",
    )
    assert len(run.frames[0]) == 4 and run.posed == 4 and run.lost == 1 and run.drops == 0
    np.testing.assert_allclose(run.latency_ms, [50.0] * 4)
    assert run.loop_edges == [(0, 1)] and run.map_points is None and run.source == "out.mcap"


def test_memory_growth_is_the_slope_against_frames_after_warm_up() -> None:
    t_frames = np.arange(1000) * 0.1  # 10 frames per second
    t_rss = np.arange(0.0, 100.0, 1.0)
    rss = 300.0 + 0.02 * np.searchsorted(t_frames, t_rss, side="right")  # 20 MB per 1,000 frames
    rss[:5] += 200.0  # start-up: excluded by the warm-up
    assert growth_per_1000_frames(t_rss, rss, t_frames) == pytest.approx(20.0, rel=1e-6)
    assert growth_per_1000_frames(t_rss[:2], rss[:2], t_frames) is None  # too few samples


def test_rss_of_this_process_is_sampled() -> None:
    assert rss_mb(os.getpid()) > 1.0
    assert rss_mb(2**22 + 12345) is None  # beyond pid_max: no such process
    sampler = RssSampler({"me": os.getpid()}, period=0.01)
    with sampler:
        time.sleep(0.1)
    t, rss = sampler.series()["me"]
    assert len(t) >= 2 and np.all(np.diff(t) > 0) and np.all(rss > 1.0)


# -------------------------------------------------------------------------------------------- bad input
def test_lockstep_holds_images_while_the_mapper_is_behind() -> None:
    """The pacer releases image k once image k-1 is answered and the mapper has integrated the tracker's
    keyframes minus ``mapper_lag``; a mapper that never catches up costs one counted timeout per image."""
    import threading
    from types import SimpleNamespace

    from online3r_ros.ros.bag_evaluate import _Pacer

    rec = SimpleNamespace(camera_poses=[], tracker_status={"processed": 1, "keyframes": 3}, mapper_status={})
    bar = SimpleNamespace(update=lambda n: None)
    topic = SimpleNamespace(name="/image")
    pacer = _Pacer("/image", [10, 20, 30], rec, lockstep=True, timeout=5.0, nodes_ok=lambda: True, bar=bar,
                   mapper_lag=1, mapper_timeout=5.0)  # fmt: skip
    pacer(topic, 0)  # the first image never waits
    rec.mapper_status = {"keyframes": 1}  # two behind: image 1 waits until the mapper reaches 2
    threading.Timer(0.3, lambda: rec.mapper_status.update(keyframes=2)).start()
    t0 = time.monotonic()
    pacer(topic, 0)
    assert time.monotonic() - t0 >= 0.25 and pacer.timeouts == 0 and len(pacer.sent) == 2
    rec.tracker_status = {"processed": 2, "keyframes": 9}
    pacer.mapper_timeout = 0.1
    pacer(topic, 0)  # the mapper stays 7 behind: released after the timeout, counted
    assert pacer.timeouts == 1 and len(pacer.sent) == 3
    never = _Pacer("/image", [10, 20], rec, lockstep=True, timeout=5.0, nodes_ok=lambda: True, bar=bar,
                   mapper_lag=-1, mapper_timeout=5.0)  # fmt: skip
    never(topic, 0)
    t0 = time.monotonic()
    never(topic, 0)
    assert time.monotonic() - t0 < 0.1 and never.timeouts == 0


def _rgbd_bag(path: Path, depth_size: tuple[int, int] = (64, 48), with_image: bool = True) -> Path:
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    with BagWriter(path, "mcap") as w:
        for i in range(3):
            stamp = 1_700_000_000_000_000_000 + i * 100_000_000
            w.write(
                "/cam/depth",
                image_msg(np.full(depth_size[::-1], 1000, np.uint16), "16UC1", stamp, "c"),
                stamp,
            )
            w.write("/cam/camera_info", camera_info_msg(K, 64, 48, stamp, "c"), stamp)
            if with_image:
                w.write("/cam/image", image_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", stamp, "c"), stamp)
            w.write("/groundtruth/pose", pose_stamped_msg(np.eye(4), stamp, "gt_world"), stamp)
    return path


def test_a_bag_without_image_topic_is_one_line_listing_its_topics(tmp_path) -> None:
    bag = _rgbd_bag(tmp_path / "no_image", with_image=False)
    proc = _cli("bag", "evaluate", str(bag), "--out", str(tmp_path / "ev"))
    line = _one_error_line(proc)
    assert proc.returncode == 3
    assert "no colour image topic" in line and "/cam/depth" in line and "/groundtruth/pose" in line
    assert not (tmp_path / "ev" / "logs").exists()  # no node was started


def test_colour_and_depth_of_different_sizes_is_one_line(tmp_path) -> None:
    bag = _rgbd_bag(tmp_path / "sizes", depth_size=(32, 24))
    proc = _cli("bag", "evaluate", str(bag), "--out", str(tmp_path / "ev"))
    line = _one_error_line(proc)
    assert proc.returncode == 3 and "colour 64x48" in line and "depth 32x24" in line


def test_other_bad_inputs_are_one_line(tmp_path) -> None:
    missing = _cli("bag", "evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "ev"))
    assert missing.returncode == 3 and "does not exist" in _one_error_line(missing)
    bag = _rgbd_bag(tmp_path / "ok")
    unknown = _cli("bag", "evaluate", str(bag), "--out", str(tmp_path / "ev"), "--depth", "/nope")
    assert unknown.returncode == 3 and "--depth /nope is not in" in _one_error_line(unknown)
    bad_gt = tmp_path / "gt.txt"
    bad_gt.write_text("not a trajectory\n")
    wrong = _cli("bag", "evaluate", str(bag), "--out", str(tmp_path / "ev"), "--groundtruth", str(bad_gt))
    assert wrong.returncode == 3 and _one_error_line(wrong).startswith("online3r bag: error: --groundtruth: ")


# ---------------------------------------------------------------------------- online3r evaluate on a bag
def test_online3r_evaluate_scores_an_output_bag(tmp_path) -> None:
    """An output bag (camera poses as the tracker publishes them) against a TUM ground truth and against a
    bag's ground-truth topic: the ATE of a known offset."""
    rng = np.random.default_rng(3)
    t = 1000.0 + np.arange(30) / 10
    gt = np.stack([np.eye(4)] * 30)
    gt[:, :3, 3] = np.cumsum(rng.normal(0, 0.05, (30, 3)), axis=0)
    est = gt.copy()
    est[:, :3, 3] += rng.normal(0, 0.01, (30, 3))
    bag = tmp_path / "out_bag"
    with BagWriter(bag, "mcap") as w:
        for ti, T in zip(t, est, strict=True):
            ns = int(round(ti * 1e9))
            w.write("/online3r/camera_pose", pose_stamped_msg(T, ns, "map"), ns)
            w.write(
                "/online3r/odometry_like", pose_stamped_msg(np.eye(4), ns, "odom"), ns
            )  # a 2nd pose topic
    write_tum(tmp_path / "gt.tum", t, gt)
    gt_bag = tmp_path / "gt_bag"
    with BagWriter(gt_bag, "sqlite3") as w:
        for ti, T in zip(t, gt, strict=True):
            ns = int(round(ti * 1e9))
            w.write("/groundtruth/pose", pose_stamped_msg(T, ns, "gt_world"), ns)
    from online3r_ros.eval.ate import compute_ate

    want = compute_ate(t, est, t, gt, "se3").rmse
    for i, ref in enumerate((tmp_path / "gt.tum", gt_bag)):
        out = tmp_path / f"eval{i}"
        proc = _cli("evaluate", str(bag), "--groundtruth", str(ref), "--out", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr
        m = json.loads((out / "metrics.json").read_text())
        assert m["ate"]["frames"]["se3"]["rmse"] == pytest.approx(want, rel=1e-6)  # TUM text, quaternions
        assert m["ate"]["frames"]["se3"]["n_matched"] == 30 and (out / "report.md").is_file()


# ------------------------------------------------------------------------------------ round trip (DDS)
@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    """40 7-Scenes frames: ``online3r run`` on the dataset, and the same frames converted to MCAP and
    sqlite3 (stamps from 1000 s)."""
    if not SCENES.is_dir():
        pytest.skip(f"shared data not found: {SCENES}")
    tmp = tmp_path_factory.mktemp("bag_evaluate")
    config = tmp / "slam.yaml"
    config.write_text(SLAM_CONFIG)
    n = str(N_FRAMES)
    proc = _cli("run", str(SCENES), "--out", str(tmp / "run"), "--max-frames", n, "--config", str(config),
                "--quiet", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = tmp / f"bag_{storage}"
        proc = _cli("bag", "convert", str(SCENES), "--out", str(bags[storage]), "--storage", storage,
                    "--max-frames", n, "--start", str(START), "--quiet")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    run_ate = json.loads((tmp / "run" / "metrics.json").read_text())["ate"]["frames"]["se3"]["rmse"]
    return {"tmp": tmp, "config": config, "bags": bags, "run_ate": run_ate}


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_lockstep_round_trip_matches_online3r_run(roundtrip, storage, dds_domain) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (run scripts/setup.sh)")
    bag, out = roundtrip["bags"][storage], roundtrip["tmp"] / f"eval_{storage}"
    env = {"OMP_NUM_THREADS": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    t0 = time.monotonic()
    proc = _cli("bag", "evaluate", str(bag), "--out", str(out), "--lockstep", "--config",
                str(roundtrip["config"]), "--domain-id", str(dds_domain), "--fail-above", "ate=0.05",
                env=env, timeout=180)  # fmt: skip
    wall = time.monotonic() - t0
    logs = {p.name: p.read_text()[-2000:] for p in (out / "logs").glob("*.log")} if out.is_dir() else {}
    assert proc.returncode == 0, (proc.stdout, proc.stderr, logs)
    assert wall < 60, f"bag evaluate took {wall:.0f} s"
    m = json.loads((out / "metrics.json").read_text())
    ate = m["ate"]["frames"]["se3"]["rmse"]
    assert ate == pytest.approx(roundtrip["run_ate"], abs=ATE_TOL), (ate, roundtrip["run_ate"])
    assert m["ate"]["frames"]["se3"]["n_matched"] == N_FRAMES and m["frames_with_pose"] == N_FRAMES
    assert m["frames_sent"] == N_FRAMES and m["lockstep_timeouts"] == 0
    assert m["frames_without_pose"] == 0 and m["frames_dropped"] == 0
    assert m["latency_ms"]["count"] == N_FRAMES and 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["max"]
    assert set(m["memory_rss_mb"]) == {"tracker", "mapper", "retrieval"}
    assert all(v["max"] > 50 for v in m["memory_rss_mb"].values())  # python + torch: not an empty sample
    assert m["groundtruth"].endswith(":/groundtruth/pose") and m["passed"] is True
    assert m["node_exit_codes"] == {"tracker": 0, "mapper": 0, "retrieval": 0}
    assert "rpe" in m and m["map_file"] and Path(m["map_file"]).is_file()
    report = (out / "report.md").read_text()
    for png in ("trajectory.png", "error.png", "latency.png", "memory.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC and png in report
    # the output bag: every pose output and TF, one pose per frame
    recorded = {t.name: t.count for t in list_topics(out / "output.mcap")}
    assert recorded["/online3r/camera_pose"] == N_FRAMES and recorded["/online3r/odometry"] == N_FRAMES
    assert recorded["/tf"] >= N_FRAMES and "/online3r/tracker_status" in recorded and "/tf_static" in recorded
    # the outputs that restate a whole path or map: their last message only (a long run's bag stays linear)
    for topic in ("/online3r/path", "/online3r/keyframe_path", "/online3r/map"):
        assert recorded[topic] == 1 and m["recorded"][topic] >= 1, (topic, recorded, m["recorded"])
    t_path, _ = read_trajectory(out / "output.mcap", "/online3r/path")
    assert len(t_path) == N_FRAMES  # the final path: every frame
    t_out, _ = read_trajectory(out / "output.mcap")  # the camera pose topic, chosen by default
    np.testing.assert_allclose(t_out, START + np.arange(N_FRAMES) / 30.0, atol=1e-6)
    # online3r evaluate on the output bag against the input bag's ground truth: the same ATE
    again = _cli("evaluate", str(out / "output.mcap"), "--groundtruth", str(bag), "--out", str(out / "re"))
    assert again.returncode == 0, again.stderr
    m2 = json.loads((out / "re" / "metrics.json").read_text())
    assert m2["ate"]["frames"]["se3"]["rmse"] == pytest.approx(ate, rel=1e-12)
