"""Bad bags give one typed error with a one-line message, and the CLI one error line and exit code 3
(never a traceback): missing, truncated (MCAP, sqlite3, ROS 1), no image topic, colour/depth of different
sizes, unknown topics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")

from online3r_ros.bags import (  # noqa: E402
    BagError,
    BagNotFoundError,
    BagWriter,
    CorruptBagError,
    FrameSizeError,
    NoImageTopicError,
    RgbdTopics,
    UnknownTopicError,
    iter_rgbd_frames,
    list_topics,
    read_trajectory,
)
from online3r_ros.bags.messages import camera_info_msg, image_msg  # noqa: E402
from online3r_ros.cli.main import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "evo_bags_and_trajectories"


def _rgbd_bag(path: Path, colour_wh=(8, 6), depth_wh=(8, 6), info_wh=(8, 6), storage="mcap") -> Path:
    """A tiny synthetic RGB-D bag (seeded pixels) with 3 frames."""
    rng = np.random.default_rng(7)
    K = np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
    with BagWriter(path, storage) as w:
        for i in range(3):
            stamp = 1_000_000_000 + i * 33_333_333
            rgb = rng.integers(0, 256, (colour_wh[1], colour_wh[0], 3), dtype=np.uint8)
            depth = rng.integers(0, 5000, (depth_wh[1], depth_wh[0]), dtype=np.uint16)
            w.write("/cam/depth", image_msg(depth, "16UC1", stamp, "cam"), stamp)
            w.write("/cam/camera_info", camera_info_msg(K, *info_wh, stamp, "cam"), stamp)
            w.write("/cam/image", image_msg(rgb, "rgb8", stamp, "cam"), stamp)
    return path


def _cut(src: Path, dst: Path, fraction: float = 0.4) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 3 and exactly one stderr line; return it."""
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("online3r bag: error: "), err
    return err[0]


def test_synthetic_bag_reads_and_pairs(tmp_path) -> None:
    bag = _rgbd_bag(tmp_path / "ok", storage="sqlite3")
    frames = list(iter_rgbd_frames(bag))
    assert [f.stamp_ns for f in frames] == [1_000_000_000, 1_033_333_333, 1_066_666_666]
    assert all(f.depth.shape == (6, 8) and f.K[0, 0] == 10.0 for f in frames)


def test_missing_bag(tmp_path, capsys) -> None:
    with pytest.raises(BagNotFoundError, match="does not exist"):
        list_topics(tmp_path / "nope.mcap")
    assert "does not exist" in _cli_error(capsys, ["bag", "info", str(tmp_path / "nope")])
    assert "does not exist" in _cli_error(capsys, ["bag", "play", str(tmp_path / "nope")])


def test_truncated_bags(tmp_path, capsys) -> None:
    bag = _rgbd_bag(tmp_path / "full")
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(bag / "metadata.yaml", cut)
    _cut(bag / "full.mcap", cut / "full.mcap")
    sq = _rgbd_bag(tmp_path / "sq", storage="sqlite3")
    _cut(sq / "sq.db3", sq / "sq.db3.part")
    (sq / "sq.db3.part").replace(sq / "sq.db3")
    cases = [cut, sq]
    if DATA.exists():
        cases += [
            _cut(DATA / "ROS_example.bag", tmp_path / "ros1.bag"),
            _cut(DATA / "nav2_turtlebot.mcap", tmp_path / "n.mcap"),
        ]
    for path in cases:
        with pytest.raises(CorruptBagError, match="truncated or corrupt") as info:
            list(iter_rgbd_frames(path)) if path in (cut, sq) else read_trajectory(path)
        assert "\n" not in str(info.value)
        assert "truncated or corrupt" in _cli_error(capsys, ["bag", "info", str(path)])


def test_not_a_bag(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file" * 10)
    with pytest.raises(CorruptBagError):
        list_topics(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "unknown bag format" in _cli_error(capsys, ["bag", "info", str(text)])


def test_no_image_topic_lists_the_bag(tmp_path) -> None:
    if not DATA.exists():
        pytest.skip(f"shared data not found: {DATA}")
    with pytest.raises(NoImageTopicError) as info:
        next(iter_rgbd_frames(DATA / "nav2_turtlebot.mcap"))
    message = str(info.value)
    assert "no colour image topic" in message and "/odom (nav_msgs/msg/Odometry, 2639)" in message
    assert "/tf_static" in message and "\n" not in message


def test_mismatched_sizes(tmp_path) -> None:
    with pytest.raises(FrameSizeError, match=r"colour 8x6 \(/cam/image\) but depth 4x3 \(/cam/depth\)"):
        next(iter_rgbd_frames(_rgbd_bag(tmp_path / "depth", depth_wh=(4, 3))))
    with pytest.raises(FrameSizeError, match="/cam/camera_info does not fit /cam/image"):
        next(iter_rgbd_frames(_rgbd_bag(tmp_path / "info", info_wh=(16, 12))))


def test_unknown_and_wrong_topics(tmp_path) -> None:
    bag = _rgbd_bag(tmp_path / "b")
    with pytest.raises(UnknownTopicError, match=r"topic /nope is not in the bag; it holds /cam/camera_info"):
        next(iter_rgbd_frames(bag, RgbdTopics(image="/nope")))
    with pytest.raises(BagError, match="is a sensor_msgs/msg/CameraInfo, expected"):
        next(iter_rgbd_frames(bag, RgbdTopics(image="/cam/camera_info")))
    with pytest.raises(UnknownTopicError, match="not a trajectory"):
        read_trajectory(bag, "/cam/image")


def test_cli_subprocess_prints_no_traceback(tmp_path) -> None:
    bag = _rgbd_bag(tmp_path / "b")
    _cut(bag / "b.mcap", bag / "b.part")
    (bag / "b.part").replace(bag / "b.mcap")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "online3r_ros.cli.main", "bag", "info", str(bag)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "truncated or corrupt" in proc.stderr
