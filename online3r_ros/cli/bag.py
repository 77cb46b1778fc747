"""``online3r bag convert|info|play|record``: datasets to rosbag2, bag contents, and bags over DDS.

Thin layer: argument parsing and messages here; the work is :mod:`online3r_ros.bags` (ROS-free: conversion,
reading) and :mod:`online3r_ros.ros.bag_play` / :mod:`online3r_ros.ros.bag_record` (rclpy). Errors are one
line with the exit codes of :mod:`online3r_ros.cli.main` (3: bad bag or dataset, 5: rclpy missing).

- ``online3r bag convert DATASET --out BAG [--storage mcap|sqlite3] [--compressed [jpeg|png]] [--rate HZ]
  [--start SEC]``
- ``online3r bag info BAG``: storage, duration, topics (type, count), camera topics, trajectories.
- ``online3r bag play BAG [--rate R] [--clock [HZ]] [--loop] [--topics T ...] [--remap a:=b ...]``
- ``online3r bag record TOPIC ... --out BAG [--all] [--no-tf] [--duration S] [--storage ...]``: stops on
  Ctrl-C or after ``--duration``; ``/tf`` and ``/tf_static`` are recorded too unless ``--no-tf``.
- ``online3r bag evaluate BAG --out DIR [--lockstep | --rate R] ...``: :mod:`online3r_ros.cli.bag_eval`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from .bag_eval import add_parser as add_evaluate_parser
from .main import EXIT_INPUT, EXIT_MISSING_COMPONENT, EXIT_OK, EXIT_USAGE, CliError, positive_int

__all__ = ["register"]

_RCLPY_HINT = "rclpy is not importable (run scripts/setup.sh and activate .venv, or source a ROS 2 distro)"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _remap(text: str) -> tuple[str, str]:
    old, sep, new = text.partition(":=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected FROM:=TO, got {text!r}")
    return old, new


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bag`` subcommand and its own subcommands."""
    p = subparsers.add_parser(
        "bag",
        help="convert datasets to rosbag2, inspect bags, play and record them over DDS",
        description="Bags without a ROS distro (rosbags + rclpy wheels): rosbag2 sqlite3/MCAP, ROS 1 .bag.",
    )
    sub = p.add_subparsers(dest="bag_command", metavar="<subcommand>")
    p.set_defaults(func=lambda args: _usage(p))

    c = sub.add_parser("convert", help="dataset folder (7-Scenes, TUM RGB-D, images) -> rosbag2")
    c.add_argument("dataset", type=Path, help="dataset folder")
    c.add_argument("--out", type=Path, required=True, help="bag folder to create")
    c.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage (default: mcap)")
    c.add_argument(
        "--compressed",
        nargs="?",
        const="jpeg",
        choices=("jpeg", "png"),
        default=None,
        help="colour as CompressedImage on /image/compressed (default format: jpeg)",
    )
    c.add_argument("--rate", type=_positive_float, default=None, metavar="HZ", help="re-time frames at HZ")
    c.add_argument(
        "--start",
        type=float,
        default=None,
        metavar="SEC",
        help="shift all stamps so the first frame is at SEC (7-Scenes starts at 0 s)",
    )
    c.add_argument("--max-frames", type=positive_int, default=None, help="convert at most N frames")
    c.add_argument("--stride", type=positive_int, default=1, help="use every N-th frame")
    c.add_argument(
        "--intrinsics", default=None, metavar="FX,FY,CX,CY", help="override the dataset's intrinsics"
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    c.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    c.set_defaults(func=convert_command)

    i = sub.add_parser("info", help="topics, types, counts, duration and extractable trajectories of a bag")
    i.add_argument("bag", type=Path, help="rosbag2 folder, .mcap, .db3 or ROS 1 .bag")
    i.set_defaults(func=info_command)

    pl = sub.add_parser("play", help="publish a bag over DDS (original QoS, optional /clock)")
    pl.add_argument("bag", type=Path, help="rosbag2 folder, .mcap, .db3 or ROS 1 .bag")
    pl.add_argument("--rate", type=_positive_float, default=1.0, help="speed factor (default 1.0)")
    pl.add_argument(
        "--clock", nargs="?", type=_positive_float, const=40.0, default=None, metavar="HZ",
        help="publish /clock with the bag time (default 40 Hz, and before every message)",
    )  # fmt: skip
    pl.add_argument("--loop", action="store_true", help="replay until Ctrl-C")
    pl.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="play only these topics")
    pl.add_argument(
        "--remap", type=_remap, action="append", default=[], metavar="FROM:=TO", help="rename a topic"
    )
    pl.add_argument(
        "--delay", type=float, default=0.5, help="seconds to wait for subscribers first (default 0.5)"
    )
    pl.set_defaults(func=play_command)

    r = sub.add_parser("record", help="record topics from DDS into a rosbag2")
    r.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to record")
    r.add_argument("--out", type=Path, required=True, help="bag folder to create")
    r.add_argument("--all", action="store_true", help="record every topic")
    r.add_argument("--no-tf", action="store_true", help="do not add /tf and /tf_static")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage (default: mcap)")
    r.add_argument("--duration", type=_positive_float, default=None, metavar="S", help="stop after S seconds")
    r.add_argument("--use-sim-time", action="store_true", help="log times from /clock")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    r.set_defaults(func=record_command)
    add_evaluate_parser(sub)
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def convert_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r bag convert``."""
    from ..bags import BagError
    from ..bags.convert import convert_dataset

    if not args.dataset.exists():
        raise CliError(f"dataset {args.dataset} does not exist", EXIT_INPUT)
    try:
        result = convert_dataset(
            args.dataset,
            args.out,
            storage=args.storage,
            compressed=args.compressed,
            rate_hz=args.rate,
            start_s=args.start,
            max_frames=args.max_frames,
            stride=args.stride,
            intrinsics=args.intrinsics,
            overwrite=args.overwrite,
            show_progress=False if args.quiet else None,
        )
    except BagError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    if not args.quiet:
        topics = ", ".join(f"{t} {n}" for t, n in sorted(result.counts.items()))
        print(
            f"wrote {result.path} ({result.storage}): {result.n_frames} frames, "
            f"{result.start_s:.3f}-{result.end_s:.3f} s; {topics}",
            file=sys.stderr,
        )
        if result.skipped:
            print(f"skipped {len(result.skipped)} frame(s), first: {result.skipped[0]}", file=sys.stderr)
    return EXIT_OK


def info_text(path: Path) -> str:
    """The ``online3r bag info`` report of the bag at ``path``."""
    from ..bags import NoImageTopicError, bag_summary, find_rgbd_topics, list_trajectories

    s = bag_summary(path)
    width = max([len(t.name) for t in s.topics] + [5])
    type_width = max([len(t.msgtype) for t in s.topics] + [5])
    lines = [
        f"bag:          {s.path} ({s.storage})",
        f"duration:     {s.duration_s:.3f} s ({s.start_ns / 1e9:.3f} .. {s.end_ns / 1e9:.3f})",
        f"messages:     {s.message_count}",
        "topics:",
        *(f"  {t.name:<{width}}  {t.msgtype:<{type_width}}  {t.count}" for t in s.topics),
    ]
    try:
        cam = find_rgbd_topics(path)
        lines.append(
            f"camera:       image {cam.image}, depth {cam.depth or '-'}, camera_info {cam.camera_info or '-'}"
        )
    except NoImageTopicError:
        lines.append("camera:       no colour image topic")
    trajectories = list_trajectories(path)
    lines.append("trajectories:" + ("" if trajectories else " none"))
    lines += [f"  {t.describe()}" for t in trajectories]
    return "\n".join(lines)


def info_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r bag info``."""
    from ..bags import BagError

    try:
        print(info_text(args.bag))
    except BagError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    return EXIT_OK


def _ros_modules():
    try:
        from ..ros import bag_play, bag_record
    except ImportError as exc:
        raise CliError(f"{_RCLPY_HINT} ({exc})", EXIT_MISSING_COMPONENT) from exc
    return bag_play, bag_record


def play_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r bag play``."""
    from ..bags import BagError
    from ..bags.reader import resolve_bag_path

    try:
        resolve_bag_path(args.bag)
    except BagError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    bag_play, _ = _ros_modules()
    stop = threading.Event()
    with bag_play.standalone_node("online3r_bag_player") as node:
        try:
            report = bag_play.play_bag(
                node,
                args.bag,
                rate=args.rate,
                topics=args.topics,
                remap=dict(args.remap),
                clock_hz=args.clock,
                loop=args.loop,
                stop=stop,
                wait_for_subscribers=args.delay,
            )
        except BagError as exc:
            raise CliError(str(exc), EXIT_INPUT) from exc
    total = sum(report.published.values())
    print(
        f"played {total} messages on {len(report.published)} topics in {report.wall_s:.1f} s", file=sys.stderr
    )
    for topic, why in sorted(report.skipped.items()):
        print(f"skipped {topic}: {why}", file=sys.stderr)
    return EXIT_OK


def record_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r bag record``."""
    from ..bags import BagError

    if not args.topics and not args.all:
        raise CliError("name at least one TOPIC, or pass --all", EXIT_USAGE)
    bag_play, bag_record = _ros_modules()
    topics = list(args.topics) + ([] if args.no_tf or args.all else ["/tf", "/tf_static"])
    from rclpy.executors import SingleThreadedExecutor

    with bag_play.standalone_node("online3r_bag_recorder", use_sim_time=args.use_sim_time) as node:
        try:
            recorder = bag_record.BagRecorder(
                node, args.out, topics, storage=args.storage, all_topics=args.all, overwrite=args.overwrite
            )
        except BagError as exc:
            raise CliError(str(exc), EXIT_INPUT) from exc
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        print(f"recording to {args.out} (Ctrl-C to stop)", file=sys.stderr)
        end = None if args.duration is None else time.monotonic() + args.duration
        next_poll = 0.0
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:  # SIGINT/SIGTERM end the recording normally (also when a shell started us with SIGINT ignored)
            while not stop.is_set() and (end is None or time.monotonic() < end):
                if time.monotonic() >= next_poll:
                    recorder.poll()
                    next_poll = time.monotonic() + 0.2
                executor.spin_once(timeout_sec=0.05)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            counts = recorder.close()
            executor.shutdown(timeout_sec=1.0)
    total = sum(counts.values())
    print(f"recorded {total} messages on {len(counts)} topics into {args.out}", file=sys.stderr)
    missing = [t for t in recorder.missing if t not in ("/tf", "/tf_static") or not args.no_tf]
    if missing:
        print(f"never seen: {', '.join(missing)}", file=sys.stderr)
    for topic, why in sorted(recorder.skipped.items()):
        print(f"skipped {topic}: {why}", file=sys.stderr)
    return EXIT_OK
