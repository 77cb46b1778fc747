"""End-to-end frame rate and latency of the ROS 2 path (tracker + mapper processes over DDS) next to the
offline runner (``online3r run``'s library) on the same synthetic RGB-D frames.

    .venv/bin/python benchmarks/bench_ros_vs_offline.py [--frames 30] [--width 160 --height 120] [--rate 0]

ROS path: the nodes are started with the launch description (isolated DDS domain, localhost discovery);
frames are streamed in lock-step by default (frame i leaves as soon as the pose of frame i - 1 arrived, i.e.
as fast as the tracker keeps up), or at a fixed ``--rate`` (then the tracker drops stale frames and the
figures show how many). Throughput = poses received / (arrival of the last pose - send time of the first
frame); latency = pose arrival - image send time (both in this process), percentiles over all poses.

Offline path: :func:`online3r_ros.slam.runner.run_frames` on the same frames in this process (tracking, fusion
and global optimisation in one loop); throughput = frames / time inside ``SlamSystem.process``.

Prints both throughputs, their ratio (the ROS path may cost at most 15% of throughput: ratio >= 0.85) and the
latency percentiles; ``--json FILE`` also writes them. Timings on a shared, loaded machine are noisy.

Threads: each node and the offline runner get ``--node-threads`` / ``--offline-threads`` torch threads
(default half the cores each). More threads than free cores make torch spin-wait: on the shared 2-core
machine the offline runner with 2 threads measured 1.3 frames/s against 14.4 with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from online3r_ros.cli.launch import NodeGroup  # noqa: E402
from online3r_ros.launch_description import node_specs  # noqa: E402
from online3r_ros.synthetic import make_synthetic_sequence  # noqa: E402

MAX_COST = 0.15


def run_offline(frames: list, slam_config: str | None, threads: int) -> dict:
    import torch

    from online3r_ros.slam import runner
    from online3r_ros.slam.config import load_config

    torch.set_num_threads(threads)

    cfg = load_config(slam_config, overrides={"source": {"kind": "depth"}})
    system = runner.build_system(cfg)
    result = runner.run_frames(system, frames)
    n = sum(result.states.values())
    return {
        "frames": n,
        "posed": result.n_posed,
        "process_s": result.process_s,
        "fps": n / result.process_s if result.process_s > 0 else None,
        "states": dict(result.states),
        "keyframes": system.num_keyframes,
    }


def run_ros(frames: list, rate: float | None, slam_config: str | None, log_dir: Path, threads: int) -> dict:
    from online3r_ros.ros.replay import run_session

    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    topics = {"image": "bench/image", "depth": "bench/depth", "camera_info": "bench/camera_info"}
    arguments = dict(topics, source="depth")
    if slam_config:
        arguments["slam_config"] = slam_config
    extra = {
        # status at 20 Hz: in lock-step a frame without pose is released by the status, not a time-out
        "tracker": {"tf_static_wait": 0.0, "torch_threads": threads, "diagnostics_period": 0.05},
        "mapper": {
            "load_on_start": False,
            "autosave": False,
            "map_path": str(log_dir / "map.pt"),
            "torch_threads": threads,
        },
    }
    group = NodeGroup(node_specs(arguments, extra_parameters=extra), log_dir=log_dir, echo=None)
    group.start()

    def check() -> str | None:
        ended = group.poll()
        return ", ".join(f"{n} exited ({c})" for n, c in ended) if ended else None

    try:
        session = run_session(
            frames, rate_hz=rate, topics=topics, check_nodes=check, startup_timeout=120, settle_timeout=60
        )
    finally:
        group.stop()
    if session.error:
        raise RuntimeError(f"ROS session failed: {session.error} (logs in {log_dir})")
    sent = {f.stamp_ns: f.sent for f in session.sent}
    poses = [p for p in session.camera_poses if p.stamp_ns in sent]
    latency = np.array([1e3 * (p.received - sent[p.stamp_ns]) for p in poses])
    span = poses[-1].received - session.sent[0].sent if poses else 0.0
    st = session.tracker_status or {}
    return {
        "frames_sent": len(session.sent),
        "poses": len(poses),
        "span_s": span,
        "fps": len(poses) / span if span > 0 else None,
        "stream_s": session.stream_s,
        "tracker": {k: st.get(k) for k in ("received", "processed", "dropped", "rejected", "state")},
        "tracker_stage_ms": {k: v.get("mean_ms") for k, v in (st.get("stage_ms") or {}).items()},
        "latency_ms": (
            {f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 99)}
            | {"max": float(latency.max()), "mean": float(latency.mean())}
            if latency.size
            else {}
        ),
        "notes": session.notes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--rate", type=float, default=0.0, help="fixed camera rate in Hz (0: lock-step)")
    ap.add_argument("--slam-config", default=None, help="pipeline YAML for both paths (default: built-in)")
    per_node = max(1, (os.cpu_count() or 2) // 2)
    ap.add_argument(
        "--node-threads", type=int, default=per_node, help=f"torch threads of each node ({per_node})"
    )
    ap.add_argument(
        "--offline-threads",
        type=int,
        default=per_node,
        help=f"torch threads of the offline runner ({per_node}, as one node: with more, torch threads "
        "oversubscribe a loaded machine and the offline figure collapses)",
    )
    ap.add_argument("--order", choices=("offline-first", "ros-first"), default="offline-first")
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp/online3r_bench_ros_logs"))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    try:
        import rclpy  # noqa: F401
    except ImportError:
        print("rclpy is not installed: run scripts/setup.sh", file=sys.stderr)
        return 5

    seq = make_synthetic_sequence(
        n_frames=args.frames, width=args.width, height=args.height, laps=args.frames / 240
    )
    frames = list(seq)
    print(
        f"{len(frames)} synthetic RGB-D frames {args.width}x{args.height}; ROS mode: "
        + ("lock-step" if args.rate <= 0 else f"{args.rate:g} Hz")
        + f"; torch threads: offline {args.offline_threads}, per node {args.node_threads}",
        flush=True,
    )
    results: dict = {}
    order = ("offline", "ros") if args.order == "offline-first" else ("ros", "offline")
    for which in order:
        t0 = time.perf_counter()
        if which == "offline":
            results["offline"] = run_offline(frames, args.slam_config, args.offline_threads)
        else:
            rate = args.rate if args.rate > 0 else None
            results["ros"] = run_ros(frames, rate, args.slam_config, args.log_dir, args.node_threads)
        print(f"  {which}: done in {time.perf_counter() - t0:.1f} s", flush=True)

    off, ros = results["offline"], results["ros"]
    ratio = ros["fps"] / off["fps"] if ros["fps"] and off["fps"] else None
    results["ratio"] = ratio
    results["within_budget"] = ratio is not None and ratio >= 1.0 - MAX_COST
    lat = ros["latency_ms"]
    tr = ros["tracker"]
    received = tr["received"] or 0
    dropped = tr["dropped"] or 0

    def num(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(f"offline runner : {num(off['fps'])} frames/s ({off['frames']} frames, {off['process_s']:.1f} s)")
    print(
        f"ROS over DDS   : {num(ros['fps'])} poses/s ({ros['poses']}/{ros['frames_sent']} frames posed, "
        f"tracker received {received}, processed {tr['processed'] or 0}, dropped {dropped}"
        + (f" = {100.0 * dropped / received:.0f}%)" if received else ")")
    )
    verdict = "OK" if results["within_budget"] else "OVER"
    if args.rate > 0:
        verdict += (
            "; fixed rate: bounded by the camera rate and the drops, run lock-step (--rate 0) for the budget"
        )
    print(f"ratio ROS/offline: {num(ratio)} (budget >= {1 - MAX_COST:.2f}: {verdict})")
    if lat.get("max") is not None:
        print(
            f"latency image stamp -> pose arrival: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, "
            f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
        )
    if ros["notes"]:
        print("notes: " + "; ".join(ros["notes"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
