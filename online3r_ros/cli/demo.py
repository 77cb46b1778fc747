"""``online3r demo``: the whole ROS 2 system on a synthetic RGB-D camera, end to end, in about a minute.

1. renders a textured synthetic room seen from a camera flying a loop that returns to its start
   (``--trajectory loop``, the default; ``orbit``: around the room's centre), with exact depth and ground
   truth (:mod:`online3r_ros.synthetic`);
2. starts the tracker, mapper and retrieval nodes as separate processes
   (:class:`~online3r_ros.cli.launch.NodeGroup`, the same description ``online3r launch`` and the ROS launch
   file use);
3. streams the frames over DDS at camera rate (colour, depth, CameraInfo) and records what the nodes publish
   (camera poses, odometry, paths, map, TF, statuses);
4. writes into ``--out``: ``map.ply`` (the published dense map), ``trajectory.tum`` (final all-frames path),
   ``odometry.tum`` (live per-frame camera poses), ``keyframes.tum``, ``groundtruth.tum``, ``trajectory.png``
   (estimate vs ground truth, loop-closure edges in magenta), ``summary.json`` and ``logs/<node>.log``; prints
   the summary (ATE, frame rate, latency, drops, loop edges).

DDS isolation: by default the demo runs on a random domain id (1..101) with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, so it never talks to other ROS 2 systems; ``--ambient-domain``
keeps the caller's ``ROS_DOMAIN_ID``/discovery settings (e.g. to watch the demo in rviz2 on the same domain).

SLAM settings: the built-in defaults, as for any RGB-D camera (``--slam-config FILE`` gives both nodes
another file as their ``slam_config`` parameter). The synthetic room has views of one or two flat walls,
which the default RGB-D tracking detects (``tracking.icp_degenerate_ratio``) and constrains with colour.

``--checkpoint FILE`` runs the MASt3R source on the rendered colour images (no depth is published; camera
info still is, so tracking is calibrated); expect it to be slow without a GPU (``--device cuda``).

Exit codes: 0 done; 1 no pose was published or a node died; 3 bad input (checkpoint not found); 5 ROS 2
Python packages missing (run ``scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from .main import EXIT_INPUT, EXIT_MISSING_COMPONENT, EXIT_NO_TRAJECTORY, EXIT_OK, CliError, positive_int

__all__ = [
    "register",
    "demo_command",
    "DemoSettings",
    "default_torch_threads",
    "demo_slam_config",
    "run_demo",
]

FRAMES_PER_LAP = 240  # the synthetic orbit's default step (1.8 cm, 1.5 deg per frame) at this many frames/lap
FRAMES_PER_LOOP = 150  # the loop trajectory: one lap (2.8 m, ~2 cm per frame) and 10% past the start
TOPIC_PREFIX = "demo/camera"


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class DemoSettings(argparse.Namespace):
    """Defaults of :func:`run_demo` (the CLI's options)."""

    out = Path("out/demo")
    frames = 150
    rate = 5.0
    width = 320
    height = 240
    step = 1.0
    trajectory = "loop"
    seed = 0
    checkpoint = None
    slam_config = None
    device = None
    torch_threads = None
    ambient_domain = False
    domain_id = None
    startup_timeout = 120.0
    settle_timeout = 30.0
    quiet = False


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand."""
    d = DemoSettings
    p = subparsers.add_parser(
        "demo",
        help="synthetic RGB-D camera -> tracker + mapper nodes over DDS -> map, trajectories, plot, ATE",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--frames", type=positive_int, default=d.frames, help=f"frames to stream ({d.frames})")
    p.add_argument(
        "--rate",
        type=_non_negative_float,
        default=d.rate,
        help=f"camera rate in Hz ({d.rate:g}); 0: send each frame when the tracker answered the previous one",
    )
    p.add_argument("--width", type=positive_int, default=d.width, help=f"image width ({d.width})")
    p.add_argument("--height", type=positive_int, default=d.height, help=f"image height ({d.height})")
    p.add_argument(
        "--step",
        type=_non_negative_float,
        default=d.step,
        help="camera motion per frame relative to the default orbit (1.8 cm, 1.5 deg) (1)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="scene seed (0)")
    p.add_argument(
        "--trajectory",
        choices=("loop", "orbit"),
        default=d.trajectory,
        help=f"loop: a loop through the room and back past its start in {FRAMES_PER_LOOP} / --step frames "
        "(loop closure); orbit: around the room's centre (default loop)",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="MASt3R checkpoint: use the MASt3R source")
    p.add_argument(
        "--slam-config",
        type=Path,
        default=None,
        help="SLAM configuration YAML of the nodes (config/online3r.yaml format; default: the built-in "
        "defaults)",
    )
    p.add_argument("--device", default=None, help="torch device of the nodes (cpu, cuda, cuda:N)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=d.torch_threads,
        help="torch CPU threads of each node (default and 0: half the usable CPU cores, at least 1: the two "
        "nodes share the CPU, and oversubscribed torch threads are many times slower)",
    )
    p.add_argument(
        "--ambient-domain",
        action="store_true",
        help="use the caller's ROS_DOMAIN_ID and discovery range instead of an isolated localhost domain",
    )
    p.add_argument("--domain-id", type=int, default=None, help="isolated domain id to use (default: random)")
    p.add_argument(
        "--startup-timeout",
        type=_non_negative_float,
        default=d.startup_timeout,
        help=f"seconds to wait for the nodes to come up ({d.startup_timeout:g})",
    )
    p.add_argument(
        "--settle-timeout",
        type=_non_negative_float,
        default=d.settle_timeout,
        help=f"seconds to wait for the last results after the stream ({d.settle_timeout:g})",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=demo_command)
    return p


def demo_slam_config(path: Path | None = None) -> Path | None:
    """The SLAM config file of the demo's nodes: ``path`` (must exist), else ``None`` (the defaults)."""
    if path is not None and not Path(path).is_file():
        raise CliError(f"SLAM config {path} not found", EXIT_INPUT)
    return None if path is None else Path(path).resolve()


def default_torch_threads() -> int:
    """torch threads per node when tracker and mapper share this machine: half the usable cores, at least 1
    (what the nodes' ``torch_threads: 0`` means)."""
    from ..ros.nodes.params import resolve_torch_threads

    return resolve_torch_threads(0)


def _isolate_dds(settings: argparse.Namespace) -> dict[str, str]:
    """Set this process's DDS environment (inherited by the nodes) and say what it is."""
    if settings.ambient_domain:
        return {
            "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "0 (default)"),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "(default)"),
        }
    domain = settings.domain_id if settings.domain_id is not None else random.SystemRandom().randint(1, 101)
    if not 0 <= domain <= 232:
        raise CliError(f"--domain-id must be in 0..232, got {domain}", 2)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_STATIC_PEERS", None)
    return {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def run_demo(settings: argparse.Namespace) -> dict:
    """Run the demo with ``settings`` (see :class:`DemoSettings`); returns the summary dict (also written).

    Raises:
        CliError: missing ROS packages, a checkpoint that does not exist, nodes that never came up.
    """
    from ..launch_description import node_specs
    from ..synthetic import make_loop_sequence, make_synthetic_sequence
    from .launch import NodeGroup

    try:
        import rclpy  # noqa: F401

        from ..ros import replay
    except ImportError as exc:
        raise CliError(
            f"the ROS 2 Python packages are missing ({exc}); run 'bash scripts/setup.sh'",
            EXIT_MISSING_COMPONENT,
        ) from exc
    if settings.checkpoint is not None and not Path(settings.checkpoint).is_file():
        raise CliError(f"checkpoint {settings.checkpoint} not found", EXIT_INPUT)
    slam_config = demo_slam_config(getattr(settings, "slam_config", None))

    say = (lambda *_: None) if settings.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    dds = _isolate_dds(settings)
    rate = float(settings.rate)
    fps = rate if rate > 0 else 30.0

    t_render = time.perf_counter()
    if getattr(settings, "trajectory", "loop") == "loop":
        seq = make_loop_sequence(
            n_frames=max(int(round(FRAMES_PER_LOOP / max(settings.step, 1e-6))), 2),
            width=settings.width,
            height=settings.height,
            seed=settings.seed,
            fps=fps,
            max_frames=settings.frames,
        )
    else:
        seq = make_synthetic_sequence(
            n_frames=settings.frames,
            width=settings.width,
            height=settings.height,
            seed=settings.seed,
            laps=settings.frames * settings.step / FRAMES_PER_LAP,
            fps=fps,
        )
    frames = list(seq)
    render_s = time.perf_counter() - t_render
    say(
        f"[demo] rendered {len(frames)} frames {settings.width}x{settings.height} in {render_s:.1f} s; "
        f"DDS domain {dds['ROS_DOMAIN_ID']} ({dds['ROS_AUTOMATIC_DISCOVERY_RANGE']})"
    )

    use_mast3r = settings.checkpoint is not None
    arguments = {
        "image": f"{TOPIC_PREFIX}/image",
        "camera_info": f"{TOPIC_PREFIX}/camera_info",
        "depth": "" if use_mast3r else f"{TOPIC_PREFIX}/depth",
    }
    if use_mast3r:
        arguments["checkpoint"] = str(Path(settings.checkpoint).resolve())
    else:
        arguments["source"] = "depth"
    if settings.device:
        arguments["device"] = settings.device
    if slam_config is not None:
        arguments["slam_config"] = str(slam_config)
    state = out / "state"
    state.mkdir(exist_ok=True)
    n_threads = int(settings.torch_threads or 0) or default_torch_threads()
    threads = {"torch_threads": n_threads}
    extra = {
        "tracker": {
            "trajectory_path": str(state / "tracker_trajectory.txt"),
            "tf_static_wait": 0.0,
            **threads,
        },
        "mapper": {
            **threads,
            "map_path": str(state / "map.pt"),
            "load_on_start": False,  # a demo always starts from an empty map
            "autosave": False,
            "trajectory_path": str(state / "mapper_trajectory.txt"),
        },
        "retrieval": {**threads, "database_path": str(state / "retrieval.pt"), "load_on_start": False},
    }
    specs = node_specs(arguments, extra_parameters=extra)
    group = NodeGroup(specs, log_dir=out / "logs", echo=None)
    say(f"[demo] starting {', '.join(s.name for s in specs)} (logs in {out / 'logs'})")
    t_start = time.perf_counter()
    group.start()

    def check_nodes() -> str | None:
        ended = group.poll()
        if ended:
            return "node(s) ended during the demo: " + ", ".join(f"{n} (exit code {c})" for n, c in ended)
        return None

    try:
        session = replay.run_session(
            frames,
            rate_hz=rate if rate > 0 else None,
            topics=arguments,
            check_nodes=check_nodes,
            startup_timeout=settings.startup_timeout,
            settle_timeout=settings.settle_timeout,
            say=say,
        )
    finally:
        codes = group.stop()
    summary = write_demo_outputs(out, seq, session, node_codes=codes)
    summary["settings"] = {
        "frames": settings.frames,
        "rate_hz": rate,
        "width": settings.width,
        "height": settings.height,
        "step": settings.step,
        "trajectory": getattr(settings, "trajectory", "loop"),
        "seed": settings.seed,
        "source": "mast3r" if use_mast3r else "depth",
        "checkpoint": str(settings.checkpoint) if use_mast3r else None,
        "slam_config": None if slam_config is None else str(slam_config),
        "device": settings.device,
        "torch_threads": n_threads,
    }
    summary["dds"] = dds
    summary["log_tails"] = {
        name: _log_tail(out / "logs" / f"{name}.log")
        for name, code in codes.items()
        if code not in (0, None) or summary.get("error")
    }
    summary["render_s"] = render_s
    summary["wall_s"] = time.perf_counter() - t_start
    from ..eval.reports import write_json

    write_json(out / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------ outputs
def _log_tail(path: Path, lines: int = 6) -> list[str]:
    """The last non-empty lines of a node's log (shown when something went wrong)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _trajectory(items, index_of: dict, timestamps):
    """``[(stamp_ns, T)]`` of published poses -> (sequence timestamps [N], T [N, 4, 4]) of known stamps."""
    import numpy as np

    rows = [(timestamps[index_of[s]], T) for s, T in items if s in index_of]
    rows.sort(key=lambda r: r[0])
    if not rows:
        return np.zeros(0), np.zeros((0, 4, 4))
    return np.array([r[0] for r in rows]), np.stack([r[1] for r in rows])


def write_demo_outputs(out: Path, seq, session, node_codes: dict | None = None) -> dict:
    """Write the trajectories (TUM), map (PLY), plot (PNG) of a demo session; return the summary dict."""
    import numpy as np

    from ..eval.ate import EvaluationError, compute_ate, evaluate_trajectory
    from ..eval.plot import apply_alignment, plot_trajectories
    from ..eval.ply import write_ply
    from ..eval.reports import latency_stats
    from ..eval.trajectory_io import write_tum

    gt_t, gt_T = seq.gt_trajectory()
    index_of = {f.stamp_ns: f.index for f in session.sent}
    n_sent = len(session.sent)
    gt_t, gt_T = gt_t[:n_sent], gt_T[:n_sent]
    live = _trajectory([(p.stamp_ns, p.T) for p in session.camera_poses], index_of, gt_t)
    final = _trajectory(session.path, index_of, gt_t)
    keyframes = _trajectory(session.keyframe_path, index_of, gt_t)
    paths = {
        "trajectory": write_tum(out / "trajectory.tum", *final),
        "odometry": write_tum(out / "odometry.tum", *live),
        "keyframes": write_tum(out / "keyframes.tum", *keyframes),
        "groundtruth": write_tum(out / "groundtruth.tum", gt_t, gt_T),
    }
    # map: the full map the mapper published last, else the incremental chunks
    cloud = session.map_cloud
    if cloud is not None and len(cloud.xyz):
        xyz, rgb, conf, map_from = cloud.xyz, cloud.rgb, cloud.confidence, "online3r/map"
    elif session.map_updates:
        chunks = [session.map_updates[k] for k in sorted(session.map_updates)]
        xyz = np.concatenate([c.xyz for c in chunks])
        rgb = np.concatenate([c.rgb for c in chunks]) if all(c.rgb is not None for c in chunks) else None
        has_conf = all(c.confidence is not None for c in chunks)
        conf = np.concatenate([c.confidence for c in chunks]) if has_conf else None
        map_from = "online3r/map_updates"
    else:
        xyz, rgb, conf, map_from = np.zeros((0, 3), np.float32), None, None, None
    n_points = write_ply(out / "map.ply", xyz, rgb, conf)
    paths["map"] = out / "map.ply"

    ate: dict = {}
    for name, (t, T) in (("trajectory", final), ("odometry", live), ("keyframes", keyframes)):
        ate[name] = evaluate_trajectory(t, T, gt_t, gt_T) if len(t) else None
    curves = {"ground truth": (gt_t, gt_T[:, :3, 3])}
    subtitle = ""
    loops = np.zeros((0, 2, 3)) if session.loop_segments is None else np.asarray(session.loop_segments)
    for label, (t, T) in (("final path", final), ("live poses", live)):
        if len(t) < 3:
            curves[label] = (t, T[:, :3, 3])
            continue
        try:
            res = compute_ate(t, T, gt_t, gt_T, "se3")
            curves[label] = (t, apply_alignment(T[:, :3, 3], res.rotation, res.translation, res.scale))
            subtitle += f"{label}: ATE {res.rmse * 100:.2f} cm (SE(3), {res.n_matched} poses)   "
            if label == "final path" and len(loops):  # the loop edges join keyframe cameras of the same map
                aligned = apply_alignment(loops.reshape(-1, 3), res.rotation, res.translation, res.scale)
                loops = aligned.reshape(-1, 2, 3)
        except EvaluationError:
            curves[label] = (t, T[:, :3, 3])
    paths["plot"] = plot_trajectories(
        out / "trajectory.png",
        curves,
        title="online3r demo: estimate vs ground truth",
        subtitle=subtitle.strip(),
        segments={"loop-closure edges": loops} if len(loops) else None,
    )

    sent_at = {f.stamp_ns: f.sent for f in session.sent}
    latency_ms = [
        1e3 * (p.received - sent_at[p.stamp_ns]) for p in session.camera_poses if p.stamp_ns in sent_at
    ]
    first_sent = session.sent[0].sent if session.sent else None
    n_poses = len(live[0])
    span = (session.camera_poses[-1].received - first_sent) if (n_poses and first_sent is not None) else 0.0
    status = session.tracker_status or {}
    summary = {
        "schema": "online3r_ros.demo/1",
        "error": session.error or (None if n_poses else "no camera pose was published"),
        "notes": list(session.notes),
        "frames_sent": n_sent,
        "frames_with_pose": n_poses,
        "keyframes": len(keyframes[0]),
        "loop_edges": int(len(loops)),
        "path_poses": len(final[0]),
        "map_points": int(n_points),
        "map_from": map_from,
        "tracker": {
            k: status.get(k) for k in ("state", "received", "processed", "dropped", "rejected", "keyframes")
        },
        "mapper": {k: v for k, v in (session.mapper_status or {}).items() if not isinstance(v, (list, dict))},
        "tf_edges": sorted(f"{a}->{b}" for a, b in session.tf_edges),
        "frame_ids": dict(session.frame_ids),
        "counts": session.counts,
        "ate": ate,
        "stream_rate_hz": (n_sent - 1) / session.stream_s if session.stream_s > 0 else None,
        "pose_rate_hz": n_poses / span if span > 0 else None,
        "latency_ms": latency_stats(latency_ms),
        "startup_s": session.wait_s,
        "settle_s": session.settle_s,
        "node_exit_codes": dict(node_codes or {}),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    return summary


def _fmt_ate(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    parts = []
    for al in ("se3", "sim3"):
        v = entry.get(al) or {}
        parts.append(f"{al} {v['rmse'] * 100:.2f} cm" if "rmse" in v else f"{al} n/a")
    return ", ".join(parts)


def summary_text(summary: dict) -> str:
    """The printed summary of a demo run."""
    lat = summary.get("latency_ms") or {}
    tr = summary.get("tracker") or {}
    lines = [
        f"online3r demo: {summary['frames_sent']} frames sent at "
        f"{summary.get('stream_rate_hz') or 0:.1f} Hz; poses for {summary['frames_with_pose']} (tracker: "
        f"received {tr.get('received') or 0}, processed {tr.get('processed') or 0}, "
        f"dropped {tr.get('dropped') or 0}, "
        f"state {tr.get('state')}); {summary['keyframes']} keyframes, "
        f"{summary.get('loop_edges', 0)} loop edges; "
        f"map {summary['map_points']} points",
        f"ATE final path: {_fmt_ate(summary['ate'].get('trajectory'))}; "
        f"live poses: {_fmt_ate(summary['ate'].get('odometry'))}",
        f"pose rate {summary.get('pose_rate_hz') or 0:.2f} Hz; latency image->pose "
        + (f"p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, max {lat['max']:.0f} ms" if lat else "n/a"),
    ]
    for note in summary.get("notes") or []:
        lines.append(f"note: {note}")
    if summary.get("error"):
        lines.append(f"ERROR: {summary['error']}")
        for name, tail in (summary.get("log_tails") or {}).items():
            if tail:
                lines.append(f"last lines of {name}'s log:")
                lines.extend(f"  {line}" for line in tail)
    lines.append("outputs: " + ", ".join(summary.get("outputs", {}).values()))
    return "\n".join(lines)


def demo_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r demo``."""
    summary = run_demo(args)
    print(summary_text(summary))
    if not args.quiet:
        print(f"summary written to {Path(args.out) / 'summary.json'}", file=sys.stderr)
    if summary.get("error"):
        return EXIT_NO_TRAJECTORY
    return EXIT_OK
