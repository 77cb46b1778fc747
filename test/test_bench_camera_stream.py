"""``benchmarks/bench_camera_stream.py``: the synthetic lap its ``--tracker`` publisher sends (ROS-free), and
a short ``--tracker`` run into a real tracker node whose counts add up."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_camera_stream.py"


def _bench():
    """The benchmark script as a module (registered first: its dataclass looks its module up)."""
    if "bench_camera_stream" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_camera_stream", SCRIPT)
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_camera_stream"]


def test_lap_is_a_nearest_neighbour_upsampling_with_matching_intrinsics() -> None:
    bench = _bench()
    assert bench._render_factor(640, 480) == 4 and bench._render_factor(1280, 720) == 8
    assert bench._render_factor(848, 480) == 4 and bench._render_factor(100, 80) == 1
    lap = bench.render_lap((640, 480), n_frames=240, max_frames=3)
    assert lap.factor == 4 and lap.rgb.shape == (3, 120, 160, 3) and lap.depth_mm.dtype == np.uint16
    assert 500 < np.median(lap.depth_mm) < 5000  # millimetres of a room
    rgb, depth = lap.frame(4)  # modulo the rendered frames: frame 1
    rgb = np.frombuffer(rgb, np.uint8).reshape(480, 640, 3)
    depth = np.frombuffer(depth, np.uint16).reshape(480, 640)
    np.testing.assert_array_equal(rgb[::4, ::4], lap.rgb[1])
    np.testing.assert_array_equal(depth[3::4, 2::4], lap.depth_mm[1])
    # a pixel centre of the render and the centre of its 4x4 block project from the same ray
    from online3r_ros.synthetic import make_synthetic_sequence

    K_small = next(iter(make_synthetic_sequence(n_frames=4, width=160, height=120, max_frames=1))).K
    uv = np.array([10.0, 70.0, 1.0])
    ray = np.linalg.solve(K_small, uv)
    np.testing.assert_allclose(lap.K @ ray, [4 * 10 + 1.5, 4 * 70 + 1.5, 1.0])


def test_timeline_sets_memory_against_frames_and_keyframes() -> None:
    """Keyframe counts logged at monotonic times, the stream starting at 2 s at 30 Hz for 90 frames: frames
    published by each time (none before the start, all after the end) and each node's RSS interpolated."""
    log = [(1.0, None, None), (2.5, 1, 0), (6.0, 3, 2)]
    memory = {"tracker": (np.array([0.0, 4.0]), np.array([100.0, 140.0]))}
    tl = _bench()._timeline(log, stream_start=2.0, rate=30.0, frames=90, memory=memory)
    assert tl == {
        "t_s": [-1.0, 0.5, 4.0],
        "frames": [0, 16, 90],
        "keyframes": [None, 1, 3],
        "mapper_keyframes": [None, 0, 2],
        "tracker_rss_mib": [110.0, 125.0, 140.0],
    }


@pytest.mark.ros
@pytest.mark.slow
def test_tracker_mode_accounts_for_every_frame(tmp_path, dds_domain) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (run scripts/setup.sh)")
    out = tmp_path / "runs.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROS_DOMAIN_ID": str(dds_domain), "OMP_NUM_THREADS": "1"}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cmd = [sys.executable, str(SCRIPT), "--tracker", "--size", "160x120", "--duration", "3"]
    cmd += ["--publisher", "reliable", "--image-qos", "auto", "--driver-dds", "online3r-profile"]
    cmd += ["--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:])
    (r,) = json.loads(out.read_text())
    assert r["error"] is None and r["settled"] and r["exit_code"] == 0, (r, proc.stdout)
    assert r["published"] == 90 and 0 < r["received"] <= 90 and r["driver_dds"] == "online3r-profile"
    assert r["lost_in_transport"] == sum(r["lost_by_input"].values())  # DDS's count, per input
    assert r["received"] + r["lost_by_input"].get("image", 0) <= 90
    assert r["received"] == r["processed"] + r["dropped"] + r["rejected"], r
    assert r["paired"] == r["processed"] + r["dropped"]
    assert r["rejected"] == sum(r["rejected_reasons"].values()) and "no_depth" not in r["rejected_reasons"]
    assert 0 < r["poses"] <= r["processed"], r  # lost frames publish no pose
    assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"]
    assert 50 < r["rss_start_mib"] <= r["rss_max_mib"] and r["rss_end_mib"] <= r["rss_max_mib"]
    assert f"published 90, received {r['received']}" in proc.stdout
    timeline = r["timeline"]  # logged as the stream starts (the 3-s stream is shorter than its period)
    assert set(timeline) == {"t_s", "frames", "keyframes", "mapper_keyframes", "tracker_rss_mib"}
    assert len(set(map(len, timeline.values()))) == 1 and timeline["tracker_rss_mib"][0] > 50
