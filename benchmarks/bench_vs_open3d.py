#!/usr/bin/env python3
"""Side-by-side: Open3D frame-to-frame RGB-D odometry vs the online3r_ros pipeline (RGB-D source).

Both run on the same frames, pre-loaded into memory (disk decoding is excluded from both frame rates), on
this machine's CPU. Printed: all-frames ATE RMSE after SE(3) and after Sim(3) alignment (evo), frames per
second, and the throughput ratio.

Open3D side (as the peer measured it): ``open3d.pipelines.odometry.compute_rgbd_odometry`` between
consecutive frames, hybrid (photometric + geometric) Jacobian, default ``OdometryOption`` apart from
``depth_max = 4 m`` (depth truncated at 4 m), identity initial guess, poses chained; a failed step keeps
the previous pose (counted and reported). Skipped with a clear message when open3d is not importable.

``--baseline-rev REV`` compares this tree's pipeline with the one at git revision ``REV`` instead (a
temporary worktree): both run as subprocesses on the same frames, alternating, ``--rounds`` times each, and
the ATE, frame rates and their ratio are printed (the machine's speed drifts; alternating rounds expose it).

Usage::

    .venv/bin/python benchmarks/bench_vs_open3d.py [--data ../shared/data/7scenes_redkitchen_0000_0499]
        [--max-frames 500] [--config FILE] [--skip-open3d] [--skip-ours] [--threads N]
    .venv/bin/python benchmarks/bench_vs_open3d.py --baseline-rev HEAD~5 [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"


def load_frames(path: Path, max_frames: int | None, stride: int = 1) -> list:
    """All frames (``online3r_ros.datasets.base.Frame``) of the dataset, decoded into memory."""
    from online3r_ros.datasets import open_dataset

    reader = open_dataset(path, stride=stride, max_frames=max_frames)
    frames = list(reader)
    if reader.skipped:
        print(f"[data] {len(reader.skipped)} frame(s) skipped by the reader:", file=sys.stderr)
        for item in reader.skipped[:10]:
            print(f"  {item.path}: {item.reason}", file=sys.stderr)
    return frames


def run_open3d(frames: list, depth_trunc: float = 4.0) -> dict:
    """Open3D frame-to-frame RGB-D odometry (hybrid term, default options, depth_max = depth_trunc).

    Returns ``{"timestamps": [N], "T_WC": [N,4,4], "seconds": float, "failures": int}``; the first frame is
    the world frame (identity). Timing covers RGBD image creation + odometry, not disk decoding.
    """
    import open3d as o3d

    odo = o3d.pipelines.odometry
    option = odo.OdometryOption()
    option.depth_max = float(depth_trunc)
    jacobian = odo.RGBDOdometryJacobianFromHybridTerm()
    K = frames[0].K
    h, w = frames[0].rgb.shape[:2]
    intr = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])

    def rgbd(frame):
        depth_mm = np.ascontiguousarray(frame.depth, dtype=np.float32)
        return o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(frame.rgb)),
            o3d.geometry.Image(depth_mm),
            depth_scale=1.0,  # depth is already in metres
            depth_trunc=float(depth_trunc),
            convert_rgb_to_intensity=True,
        )

    poses = np.zeros((len(frames), 4, 4))
    poses[0] = np.eye(4)
    failures = 0
    t0 = time.perf_counter()
    prev = rgbd(frames[0])
    for i in range(1, len(frames)):
        cur = rgbd(frames[i])
        ok, T_prev_cur, _ = odo.compute_rgbd_odometry(cur, prev, intr, np.eye(4), jacobian, option)
        if not ok:
            failures += 1
            T_prev_cur = np.eye(4)
        poses[i] = poses[i - 1] @ T_prev_cur
        prev = cur
    seconds = time.perf_counter() - t0
    return {
        "timestamps": np.array([f.timestamp for f in frames]),
        "T_WC": poses,
        "seconds": seconds,
        "failures": failures,
    }


def run_ours(frames: list, config_path: str | None) -> dict:
    """The online3r_ros pipeline on the frames (synchronous SlamSystem, RGB-D source)."""
    from online3r_ros.slam.config import load_config
    from online3r_ros.slam.runner import build_system

    cfg = load_config(config_path, overrides={"source": {"kind": "depth"}})
    system = build_system(cfg)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    for frame in frames:
        out = system.process(frame)
        for k, v in out.timings_ms.items():
            stages[k] = stages.get(k, 0.0) + v
    seconds = time.perf_counter() - t0
    traj = system.trajectory()
    h, w = system.keyframes.image_size(0)
    return {
        "timestamps": traj.timestamps,
        "T_WC": traj.T_WC,
        "seconds": seconds,
        "failures": len(frames) - len(traj),
        "keyframes": system.num_keyframes,
        "edges": len(system.backend.graph),
        "stages_ms_per_frame": {k: v / len(frames) for k, v in stages.items()},
        "setup": f"{w}x{h}, {cfg.source.points_per_frame or 'all'} points/frame, {system.pose_group}, "
        f"keyframe below {cfg.tracking.match_frac_thresh:.2f} overlap, "
        f"proximity edges {cfg.system.proximity_edges}, "
        f"edge points {cfg.local_opt.max_points_per_edge or 'all'}",
    }


def ate(frames: list, result: dict) -> dict:
    """ATE RMSE (m) after SE(3) and Sim(3) alignment against the frames' ground truth (evo)."""
    from online3r_ros.eval import compute_ate

    gt_t = np.array([f.timestamp for f in frames if f.pose_gt is not None])
    gt_T = np.stack([f.pose_gt for f in frames if f.pose_gt is not None])
    est_t, est_T = result["timestamps"], result["T_WC"]
    return {al: compute_ate(est_t, est_T, gt_t, gt_T, alignment=al).rmse for al in ("se3", "sim3")}


def _run_script(script: Path, tree: Path, args: argparse.Namespace, out: Path) -> dict:
    """``ours`` figures of ``script`` (this benchmark at some revision) run in a subprocess on ``tree``."""
    cmd = [sys.executable, str(script), "--skip-open3d", "--data", str(args.data.resolve())]
    cmd += ["--max-frames", str(args.max_frames), "--threads", str(args.threads), "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["ours"]


def compare_revision(args: argparse.Namespace) -> int:
    """This tree vs ``args.baseline_rev`` (default configs), alternating rounds; prints both and the ratio."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_rev_"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline_rev],
                   check=True, capture_output=True)  # fmt: skip
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    try:
        for r in range(args.rounds):
            for name, root in (("baseline", tree), ("current", ROOT)):
                res = _run_script(
                    root / "benchmarks" / Path(__file__).name, root, args, tmp / f"{name}{r}.json"
                )
                runs[name].append(res)
                ate_se3, ate_sim3 = res["ate"]["se3"], res["ate"]["sim3"]
                print(
                    f"round {r + 1} {name:<8} ATE SE3 {ate_se3:.4f} m  Sim3 {ate_sim3:.4f} m  "
                    f"{res['fps']:.2f} frames/s  {res['keyframes']} keyframes",
                    flush=True,
                )
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    fps = {k: statistics.median(r["fps"] for r in v) for k, v in runs.items()}
    ratio = fps["current"] / fps["baseline"]
    print(
        f"baseline {args.baseline_rev}: median {fps['baseline']:.2f} frames/s; current: median "
        f"{fps['current']:.2f} frames/s; ratio current / baseline {ratio:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"baseline_rev": args.baseline_rev, "runs": runs, "median_fps": fps}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-frames", type=int, default=500)
    parser.add_argument(
        "--config", default=None, help="pipeline config YAML (default: the built-in defaults)"
    )
    parser.add_argument("--skip-open3d", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--baseline-rev", default=None, help="compare with the pipeline at this git revision")
    parser.add_argument("--rounds", type=int, default=2, help="--baseline-rev: alternating rounds per side")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"SKIP: dataset folder {args.data} not found", file=sys.stderr)
        return 0
    if args.baseline_rev:
        return compare_revision(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    frames = load_frames(args.data, args.max_frames)
    n = len(frames)
    import torch

    print(f"data: {args.data.resolve()}  frames: {n}  ({frames[0].width}x{frames[0].height})")
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {tuple(round(x, 2) for x in os.getloadavg())}"
    )
    report: dict = {"data": str(args.data.resolve()), "frames": n}

    rows = []
    if not args.skip_open3d:
        try:
            import open3d  # noqa: F401
        except ImportError as exc:
            print(f"SKIP Open3D: open3d is not importable ({exc}); install open3d-cpu to compare.")
        else:
            res = run_open3d(frames)
            err = ate(frames, res)
            fps = (n - 1) / res["seconds"]
            rows.append(("Open3D RGB-D odometry (hybrid)", err, fps, res["failures"]))
            report["open3d"] = {"ate": err, "fps": fps, "failures": res["failures"]}
    if not args.skip_ours:
        res = run_ours(frames, args.config)
        err = ate(frames, res)
        fps = n / res["seconds"]
        rows.append((f"online3r_ros (RGB-D source, {res['keyframes']} keyframes)", err, fps, res["failures"]))
        report["ours"] = {
            "ate": err,
            "fps": fps,
            "unposed": res["failures"],
            "keyframes": res["keyframes"],
            "edges": res["edges"],
            "setup": res["setup"],
            "stages_ms_per_frame": res["stages_ms_per_frame"],
        }
        print(f"ours: {res['setup']}; {res['edges']} edges")
        print(
            "ours per-frame ms: " + ", ".join(f"{k} {v:.1f}" for k, v in res["stages_ms_per_frame"].items())
        )

    print(f"{'method':<46} {'ATE SE3 [m]':>12} {'ATE Sim3 [m]':>13} {'frames/s':>9} {'fail/unposed':>13}")
    for name, err, fps, fails in rows:
        print(f"{name:<46} {err['se3']:>12.4f} {err['sim3']:>13.4f} {fps:>9.2f} {fails:>13d}")
    if "open3d" in report and "ours" in report:
        ratio = report["ours"]["fps"] / report["open3d"]["fps"]
        report["throughput_ratio"] = ratio
        print(f"throughput ratio ours / Open3D: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
