"""The short version of issue 14's long run: ``benchmarks/bench_bag_long_run.py`` end to end (a synthetic
RGB-D bag, lock-step through tracker, mapper and retrieval over DDS, with a small optimisation window so the
windowed path runs): every frame posed, the mapper kept up with the tracker, memory sampled per node, the
saved map loads, and the ATE is that of a run that did not fall apart (the 4000-frame run before the window
and the mapper wait: 2.6 m)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")
pytest.importorskip("rclpy", reason="rclpy is not installed")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_long_run_keeps_the_mapper_up_and_saves_a_loadable_map(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # bag evaluate reserves its own isolated DDS domain
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_bag_long_run.py"), "--frames", "300",
           "--window", "5", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["posed"] >= 299 and r["timeouts"] == 0, r
    assert r["tracker_keyframes"] > 5 and r["mapper_keyframes"] == r["tracker_keyframes"], r
    assert r["map_loads"] and r["map_file_mb"] > 0, r
    # a sanity bound, not the accuracy: over DDS a loop closed late can leave ~40 frames after the revisit
    # 0.2-0.9 m off (window 0 as well; in process 5 cm): measured and open, see the README's long-run notes
    assert r["ate_m"] < 0.5 and r["final_path_ate_m"] < 0.5, r
    assert set(r["rss_mb"]) == {"tracker", "mapper", "retrieval"}, r
    assert all(v["max"] > 50 for v in r["rss_mb"].values()), r  # sampled from the running nodes
    assert set(r["growth_mb_per_1000_frames"]) == {"tracker", "mapper", "retrieval"}, r
