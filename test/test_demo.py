"""``online3r demo`` end to end with few frames: tracker and mapper processes over real DDS (isolated domain,
localhost discovery), frames streamed in lock-step, outputs checked for existence and sanity.

Also: the output writer (TUM, PLY, PNG, summary) on a hand-made session (no DDS), and the plot helper.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from online3r_ros.eval.plot import apply_alignment, plot_trajectories, top_view_axes
from online3r_ros.eval.ply import read_ply
from online3r_ros.eval.trajectory_io import read_tum

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png_and_picks_the_widest_axes(tmp_path):
    t = np.linspace(0.0, 2.0, 50)
    gt = np.stack([np.cos(t), 0.01 * t, np.sin(t)], axis=1)
    assert top_view_axes(gt) == (0, 2)
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    moved = apply_alignment(gt, R, [1.0, 2.0, 3.0], 2.0)
    assert np.allclose(moved, 2.0 * gt @ R.T + [1.0, 2.0, 3.0])
    out = plot_trajectories(
        tmp_path / "sub" / "p.png",
        {
            "ground truth": (t, gt),
            "estimate": (t[:10], gt[:10] + 0.01),
            "empty": (np.zeros(0), np.zeros((0, 3))),
        },
        title="t",
        subtitle="s",
    )
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="'bad'"):
        plot_trajectories(tmp_path / "x.png", {"bad": (t, gt[:-1])})
    with pytest.raises(ValueError, match="at least one"):
        plot_trajectories(tmp_path / "x.png", {})


def test_demo_outputs_from_a_recorded_session(tmp_path):
    """The writer maps published stamps back to frames, evaluates ATE, and falls back to map updates."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    from online3r_ros.cli.demo import summary_text, write_demo_outputs
    from online3r_ros.ros.replay import RecordedPose, SentFrame, SessionResult, _Cloud
    from online3r_ros.synthetic import make_synthetic_sequence

    seq = make_synthetic_sequence(n_frames=10, width=32, height=24, laps=10 / 240)
    _, gt_T = seq.gt_trajectory()
    base = 1_800_000_000_000_000_000
    sent = [SentFrame(i, base + i * 10**8, 100.0 + 0.1 * i) for i in range(10)]
    offset = np.eye(4)
    offset[:3, 3] = [0.5, -1.0, 2.0]  # a constant map offset: removed by the alignment
    poses = [
        RecordedPose(sent[i].stamp_ns, offset @ gt_T[i], "map", "", sent[i].sent + 0.25)
        for i in range(0, 10, 2)
    ]
    rng = np.random.default_rng(0)
    chunk = _Cloud(rng.normal(size=(50, 3)).astype(np.float32), None, None, "map", base, 101.0)
    session = SessionResult(
        sent=sent,
        camera_poses=poses,
        path=[(p.stamp_ns, p.T) for p in poses] + [(12345, np.eye(4))],  # an unknown stamp is ignored
        keyframe_path=[(poses[0].stamp_ns, poses[0].T)],
        map_updates={base: chunk},
        tracker_status={"state": "tracking", "received": 10, "processed": 5, "dropped": 5},
        stream_s=0.9,
    )
    summary = write_demo_outputs(tmp_path, seq, session, node_codes={"tracker": 0, "mapper": 0})
    assert summary["error"] is None
    assert summary["frames_sent"] == 10 and summary["frames_with_pose"] == 5 and summary["path_poses"] == 5
    assert summary["map_from"] == "online3r/map_updates" and summary["map_points"] == 50
    assert summary["ate"]["trajectory"]["se3"]["rmse"] < 1e-6
    assert summary["latency_ms"]["p50"] == pytest.approx(250.0)
    assert summary["stream_rate_hz"] == pytest.approx(10.0)
    t_est, T_est = read_tum(tmp_path / "trajectory.tum")
    assert np.allclose(t_est, np.arange(0, 10, 2) / 30.0)  # sequence timestamps, not ROS stamps
    assert len(read_tum(tmp_path / "groundtruth.tum")[0]) == 10
    assert len(read_ply(tmp_path / "map.ply")["points"]) == 50
    assert (tmp_path / "trajectory.png").read_bytes()[:8] == PNG_MAGIC
    text = summary_text(summary)
    assert "ATE final path: se3 0.00 cm" in text and "processed 5" in text

    empty = write_demo_outputs(tmp_path / "empty", seq, SessionResult(sent=sent))
    assert empty["error"] == "no camera pose was published"


@pytest.mark.ros
@pytest.mark.slow
def test_demo_end_to_end_over_dds(tmp_path, dds_domain):
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    domain = str(dds_domain)
    cmd = [sys.executable, "-m", "online3r_ros.cli.main", "demo", "--out", str(out), "--frames", "6"]
    cmd += ["--rate", "0", "--domain-id", domain, "--startup-timeout", "60", "--settle-timeout", "20"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    logs = (
        {p.name: p.read_text()[-3000:] for p in (out / "logs").glob("*.log")}
        if (out / "logs").is_dir()
        else {}
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr, logs)
    assert elapsed < 240
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"] is None
    assert summary["dds"] == {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    assert summary["frames_sent"] == 6
    assert summary["frames_with_pose"] >= 3
    assert summary["node_exit_codes"] == {"tracker": 0, "mapper": 0, "retrieval": 0}
    assert {"map->odom", "odom->base_link"} <= set(summary["tf_edges"])
    ids = summary["frame_ids"]
    assert ids["odometry"] == "odom->base_link"
    assert ids["camera_pose"] == ids["path"] == ids["keyframe_path"] == ids["map"] == "map"
    assert summary["counts"]["odometry"] >= 3 and summary["counts"]["path"] >= 1
    # outputs exist and are sane
    t_gt, _ = read_tum(out / "groundtruth.tum")
    t_live, T_live = read_tum(out / "odometry.tum")
    assert len(t_gt) == 6 and len(t_live) == summary["frames_with_pose"]
    assert set(np.round(t_live, 6)) <= set(np.round(t_gt, 6))  # published stamps map back to frames
    assert np.isfinite(T_live).all()
    assert len(read_tum(out / "trajectory.tum")[0]) >= 3
    ply = read_ply(out / "map.ply")
    assert len(ply["points"]) > 100 and np.isfinite(ply["points"]).all()
    extent = np.ptp(ply["points"], axis=0)
    assert extent.max() < 50.0  # a room, not an explosion
    assert (out / "trajectory.png").read_bytes()[:8] == PNG_MAGIC
    # accuracy: loose bound (6 consecutive frames of exact synthetic depth)
    assert summary["ate"]["odometry"]["se3"]["rmse"] < 0.10
    assert summary["latency_ms"]["count"] == summary["frames_with_pose"]
    assert "ATE final path" in proc.stdout
