"""Long lock-step run through ``online3r bag evaluate``: a synthetic RGB-D bag of many frames (an orbit of the
synthetic room, one lap rendered and flown again and again, stamps advancing at 30 Hz) through tracker,
mapper and retrieval; reports ATE, RSS per node (first / last / max, growth per 1,000 frames after the
first 20%), the run's wall time and frame rate, and whether the saved map loads.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_bag_long_run.py --frames 2000 --out /tmp/long_run

The mapper optimises a window of the newest ``--window`` keyframes (``local_opt.window``): with every
keyframe (0, the reference) each optimisation grows with the map and the mapper falls ever further behind.
Lock-step waits for the mapper too (``bag evaluate --mapper-lag 1``).

Writes OUT/bag (the input), OUT/eval (output.mcap, metrics.json, report.md, plots) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from online3r_ros.bags import BagWriter
from online3r_ros.bags.messages import camera_info_msg, image_msg, pose_stamped_msg
from online3r_ros.slam.config import load_config
from online3r_ros.slam.map_files import read_map
from online3r_ros.synthetic import make_synthetic_sequence

REPO = Path(__file__).resolve().parents[1]
FRAMES_PER_LAP = 240
START_NS = 1_000_000_000_000  # 1000 s: a stamp of 0 reads as "no time" (bags README)
PERIOD_NS = 33_333_333


def write_bag(path: Path, n_frames: int, width: int, height: int) -> Path:
    """``n_frames`` frames of the orbit (one lap rendered once), colour rgb8, depth 16UC1 mm, CameraInfo,
    ground truth on /groundtruth/pose."""
    seq = make_synthetic_sequence(n_frames=FRAMES_PER_LAP, width=width, height=height)
    lap = list(seq)
    with BagWriter(path, "mcap") as w:
        for i in range(n_frames):
            f = lap[i % FRAMES_PER_LAP]
            ns = START_NS + i * PERIOD_NS
            depth_mm = np.clip(np.round(f.depth * 1000.0), 0, 65535).astype(np.uint16)
            w.write("/camera/depth", image_msg(depth_mm, "16UC1", ns, "camera"), ns)
            w.write("/camera/camera_info", camera_info_msg(f.K, width, height, ns, "camera"), ns)
            w.write("/camera/image", image_msg(f.rgb, "rgb8", ns, "camera"), ns)
            w.write("/groundtruth/pose", pose_stamped_msg(f.pose_gt, ns, "gt_world"), ns)
    return path


def final_path_ate(output: Path, bag: Path) -> float | None:
    """ATE (m, SE(3) alignment) of the mapper's last all-frames path (the optimised trajectory; ``ate_m`` is
    of the poses the tracker published live) against the bag's ground truth; ``None`` without a path."""
    from online3r_ros.bags import read_trajectory
    from online3r_ros.bags.errors import BagError
    from online3r_ros.eval import compute_ate

    try:
        t_est, T_est = read_trajectory(output, "/online3r/path")[:2]
    except BagError:  # no path recorded: reported as missing
        return None
    t_gt, T_gt = read_trajectory(bag, "/groundtruth/pose")[:2]
    return compute_ate(np.asarray(t_est), np.asarray(T_est), np.asarray(t_gt), np.asarray(T_gt)).rmse


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--window", type=int, default=20, help="local_opt.window of the run (0: every keyframe)")
    p.add_argument("--out", type=Path, default=Path("/tmp/online3r_long_run"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "slam.yaml"
    config.write_text(
        f"source:\n  kind: depth\n  width: {args.width}\n  height: {args.height}\n"
        f"local_opt:\n  window: {args.window}\n"
    )
    bag = args.out / "bag"
    if not bag.exists():
        write_bag(bag, args.frames, args.width, args.height)
    out = args.out / "eval"
    cmd = [sys.executable, "-m", "online3r_ros.cli.main", "bag", "evaluate", str(bag), "--out", str(out),
           "--lockstep", "--config", str(config), "--overwrite", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ONLINE3R_NO_PROGRESS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    m = json.loads((out / "metrics.json").read_text())
    state = read_map(m["map_file"], load_config(config)) if m.get("map_file") else None
    summary = {
        "command": " ".join(cmd),
        "frames": args.frames,
        "size": f"{args.width}x{args.height}",
        "window": args.window,
        "wall_s": round(wall, 1),
        "run_wall_s": m["run_wall_s"],
        "fps": round(m["frames_sent"] / m["run_wall_s"], 2),
        "posed": m["frames_with_pose"],
        "lost": m["frames_without_pose"],
        "timeouts": m["lockstep_timeouts"],
        "keyframes": m["n_keyframes"],
        "tracker_keyframes": m["tracker"].get("keyframes"),
        "mapper_keyframes": m["mapper"].get("keyframes_integrated"),
        "loop_closures": m.get("n_loop_closures"),
        "ate_m": m["ate"]["frames"]["se3"].get("rmse"),
        "final_path_ate_m": final_path_ate(out / "output.mcap", bag),
        "rss_mb": m["memory_rss_mb"],
        "growth_mb_per_1000_frames": m["memory_growth_mb_per_1000_frames"],
        "map_file_mb": round(Path(m["map_file"]).stat().st_size / 2**20, 2) if m.get("map_file") else None,
        "map_loads": state is not None,
        "notes": m["notes"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
