"""``online3r bag evaluate BAG --out DIR``: replay a bag into the nodes, record their outputs, score them.

Thin layer: argument parsing, input checks, ground truth, DDS isolation and messages here; the run is
:func:`online3r_ros.ros.bag_evaluate.evaluate_bag`, the scores :func:`online3r_ros.eval.scoring.score_run`
and :func:`~online3r_ros.eval.scoring.write_evaluation`. Registered by :mod:`online3r_ros.cli.bag` (this
module has no ``register``, so it is not a subcommand of its own).

Checked before any node starts, each a one-line error with exit code 3 (2 for usage): the bag (missing,
corrupt), its camera topics (no colour image topic: the bag's topics are listed; a named topic that is not
there), the first frame (colour and depth of different sizes, a CameraInfo that does not fit), the ground
truth, ``--config``. Exit codes: 0, 1 (no pose at all, a node died, the nodes did not come up), 2, 3, 4
(bad ``--config``), 5 (rclpy missing), 6 (a ``--fail-above``/``--fail-below`` threshold failed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..bags import (
    BagError,
    NoImageTopicError,
    RgbdTopics,
    find_rgbd_topics,
    iter_rgbd_frames,
    list_topics,
    read_trajectory,
)
from ..bags.trajectory import POSE_TYPES
from ..eval.scoring import ReconstructionSettings, score_run, write_evaluation
from ..eval.verdicts import METRICS, ThresholdError, parse_thresholds
from .evaluate import load_reference
from .main import (
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_MISSING_COMPONENT,
    EXIT_NO_TRAJECTORY,
    EXIT_OK,
    EXIT_THRESHOLD,
    EXIT_USAGE,
    CliError,
)

__all__ = ["add_parser", "bag_evaluate_command", "camera_topics", "groundtruth_topic"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``online3r bag`` subcommands."""
    e = sub.add_parser(
        "evaluate",
        help="play a bag into the tracker, mapper and retrieval nodes, record their outputs and score them",
        description=(
            "Start the nodes (as 'online3r launch'), play BAG's camera topics into them, record every "
            "output into DIR/output.mcap and score it: DIR/metrics.json and DIR/report.md with its plots "
            "(ATE/RPE against the ground truth, latency image->pose, drops, lost frames, loop closures, "
            "memory per node, and with --dataset the reconstruction). Exit code 6 when a threshold fails."
        ),
        epilog="metrics for thresholds: " + ", ".join(METRICS),
    )
    e.add_argument("bag", type=Path, help="rosbag2 folder, .mcap, .db3 or ROS 1 .bag with RGB-D images")
    e.add_argument("--out", type=Path, required=True, help="output folder (output.mcap, metrics, report)")
    e.add_argument("--image", default=None, help="colour image topic (default: found by encoding)")
    e.add_argument("--depth", default=None, help="aligned depth topic (default: beside the image)")
    e.add_argument("--camera-info", default=None, help="CameraInfo topic (default: beside the image)")
    gt = e.add_mutually_exclusive_group()
    gt.add_argument("--groundtruth", type=Path, default=None, help="ground truth: TUM, EuRoC .csv or KITTI")
    gt.add_argument(
        "--groundtruth-topic",
        default=None,
        help="ground-truth pose topic of BAG (default: its */groundtruth/pose topic when there is one)",
    )
    e.add_argument("--groundtruth-times", type=Path, default=None, help="KITTI times of --groundtruth")
    e.add_argument("--config", type=Path, default=None, help="SLAM configuration YAML of the nodes")
    e.add_argument("--checkpoint", type=Path, default=None, help="MASt3R checkpoint: the MASt3R source")
    e.add_argument("--device", default=None, help="torch device of the nodes (cpu, cuda, cuda:N)")
    e.add_argument("--torch-threads", type=int, default=0, help="torch threads per node (0: auto)")
    mode = e.add_mutually_exclusive_group()
    mode.add_argument(
        "--lockstep", action="store_true", help="send each image once the previous one is answered (default)"
    )
    mode.add_argument("--rate", type=_positive, default=None, help="real time at R x the bag's speed")
    e.add_argument(
        "--frame-timeout", type=_positive, default=10.0, help="lock-step: seconds to wait per image (10)"
    )
    e.add_argument(
        "--mapper-lag",
        type=int,
        default=1,
        help="lock-step: hold the next image while the mapper is more than N keyframes behind the tracker "
        "(1; -1: never wait for the mapper)",
    )
    e.add_argument("--dataset", type=Path, default=None, help="dataset folder: reconstruction metrics")
    e.add_argument("--fail-above", default=None, metavar="M=V,...", help="fail when metric M > V")
    e.add_argument("--fail-below", default=None, metavar="M=V,...", help="fail when metric M < V")
    e.add_argument("--max-diff", type=float, default=0.01, help="timestamp association window [s] (0.01)")
    e.add_argument("--startup-timeout", type=_positive, default=120.0, help="seconds for the nodes to start")
    e.add_argument("--settle-timeout", type=_positive, default=30.0, help="seconds for the last results")
    e.add_argument("--domain-id", type=int, default=None, help="DDS domain (default: a free one, localhost)")
    e.add_argument("--ambient-domain", action="store_true", help="keep the caller's DDS domain settings")
    e.add_argument("--overwrite", action="store_true", help="replace an existing DIR/output.mcap")
    e.add_argument(
        "--every-snapshot",
        action="store_true",
        help="record every message of the outputs that restate a whole path or map (default: the last one)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar, print only errors")
    e.set_defaults(func=bag_evaluate_command)
    return e


def camera_topics(bag: Path, image: str | None, depth: str | None, camera_info: str | None) -> RgbdTopics:
    """The camera topics: those given, the rest found (``""`` for depth / camera_info: none).

    Raises:
        BagError: missing/corrupt bag, a named topic not in the bag or of the wrong type,
            :class:`NoImageTopicError` (no colour topic found and none given; lists the bag's topics).
    """
    types = {t.name: t.msgtype for t in list_topics(bag)}
    for flag, name in (("--image", image), ("--depth", depth), ("--camera-info", camera_info)):
        if name and name not in types:
            raise BagError(f"{flag} {name} is not in {bag}; it holds {', '.join(sorted(types))}")
    try:
        found = find_rgbd_topics(bag)
    except NoImageTopicError:
        if image is None:
            raise
        found = RgbdTopics(image=image)
    chosen = image or found.image
    if types[chosen] not in (IMAGE, COMPRESSED):
        raise BagError(f"--image {chosen} is a {types[chosen]}, not an Image or CompressedImage")
    depth_topic = found.depth if depth is None else depth or None
    if depth_topic and types[depth_topic] != IMAGE:
        raise BagError(f"depth topic {depth_topic} is a {types[depth_topic]}; the tracker reads depth Images")
    return RgbdTopics(
        image=chosen,
        depth=depth_topic,
        camera_info=found.camera_info if camera_info is None else camera_info or None,
        compressed=types[chosen] == COMPRESSED,
    )


def groundtruth_topic(bag: Path) -> str | None:
    """The bag's ground-truth pose topic (name ending ``groundtruth/pose``), ``None`` without one."""
    hits = [
        t.name
        for t in list_topics(bag)
        if t.msgtype in POSE_TYPES and t.name.strip("/").endswith("groundtruth/pose")
    ]
    return hits[0] if len(hits) == 1 else None


def _reference(args: argparse.Namespace) -> tuple[tuple, str]:
    """``--groundtruth``, else ``--groundtruth-topic`` or the bag's own ground-truth topic, else the
    ``--dataset``'s poses."""
    topic = None if args.groundtruth is not None else args.groundtruth_topic or groundtruth_topic(args.bag)
    if topic is None:
        if args.groundtruth is None and args.dataset is None:
            raise CliError(
                f"{args.bag} has no groundtruth/pose topic: give --groundtruth FILE, --groundtruth-topic "
                "TOPIC or --dataset DIR",
                EXIT_USAGE,
            )
        return load_reference(args)
    try:
        return read_trajectory(args.bag, topic), f"{args.bag}:{topic}"
    except BagError as exc:
        raise CliError(f"--groundtruth-topic: {exc}", EXIT_INPUT) from exc


def _check_inputs(args: argparse.Namespace) -> RgbdTopics:
    """Camera topics and the first frame of the bag (sizes), the SLAM config; one-line errors."""
    try:
        topics = camera_topics(args.bag, args.image, args.depth, args.camera_info)
        if args.checkpoint is None and (topics.depth is None or topics.camera_info is None):
            missing = "depth" if topics.depth is None else "CameraInfo"
            raise BagError(
                f"{args.bag} has no {missing} topic beside {topics.image}; the RGB-D source needs colour, "
                "depth and CameraInfo (name them with --depth/--camera-info, or use --checkpoint for MASt3R)"
            )
        next(iter_rgbd_frames(args.bag, topics, max_frames=1), None)  # FrameSizeError on a size mismatch
    except BagError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CliError(f"checkpoint {args.checkpoint} not found", EXIT_INPUT)
    if args.config is not None:
        from ..slam.config import ConfigError, load_config

        try:
            load_config(args.config)
        except (FileNotFoundError, ConfigError) as exc:
            raise CliError(f"--config: {exc}", EXIT_CONFIG) from exc
    return topics


def _isolate_dds(args: argparse.Namespace):
    """Reserve a DDS domain (localhost discovery) for this run and its nodes; the lease (or ``None``)."""
    if args.ambient_domain:
        return None
    from ..ros.replay.domain import reserve_domain_id

    lease = None
    if args.domain_id is None:
        lease = reserve_domain_id()
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if lease is None else lease.domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_STATIC_PEERS", None)
    return lease


def _run_info(res, args: argparse.Namespace, topics: RgbdTopics) -> dict:
    return {
        "bag": str(args.bag),
        "mode": "real time" if args.rate else "lockstep",
        "rate": args.rate,
        "camera_topics": {"image": topics.image, "depth": topics.depth, "camera_info": topics.camera_info},
        "frames_sent": res.frames_sent,
        "lockstep_timeouts": res.timeouts,
        "recorded": res.recorded,
        "node_exit_codes": res.node_exit_codes,
        "map_file": None if res.map_file is None else str(res.map_file),
        "notes": res.notes,
        "run_wall_s": round(res.wall_s, 3),
    }


def bag_evaluate_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r bag evaluate``."""
    try:
        fail_above = parse_thresholds(args.fail_above, "--fail-above")
        fail_below = parse_thresholds(args.fail_below, "--fail-below")
    except ThresholdError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if args.dataset is not None and not args.dataset.is_dir():
        raise CliError(f"--dataset {args.dataset} is not a folder", EXIT_INPUT)
    topics = _check_inputs(args)
    reference, ref_name = _reference(args)
    target = args.out / "output.mcap"
    if target.exists() and not args.overwrite:
        raise CliError(f"{target} exists already; choose another --out or pass --overwrite", EXIT_INPUT)
    if target.exists():
        target.unlink()
    try:
        from ..ros.bag_evaluate import SNAPSHOT_TOPICS, BagEvalOptions, evaluate_bag
    except ImportError as exc:
        raise CliError(
            f"rclpy is not importable ({exc}); run scripts/setup.sh", EXIT_MISSING_COMPONENT
        ) from exc
    opts = BagEvalOptions(
        lockstep=args.rate is None,
        rate=args.rate or 1.0,
        frame_timeout=args.frame_timeout,
        mapper_lag=args.mapper_lag,
        slam_config=args.config,
        checkpoint=args.checkpoint,
        device=args.device,
        torch_threads=args.torch_threads,
        startup_timeout=args.startup_timeout,
        settle_timeout=args.settle_timeout,
        show_progress=False if args.quiet else None,
        latest_only_topics=() if args.every_snapshot else SNAPSHOT_TOPICS,
    )
    lease = _isolate_dds(args)
    try:
        res = evaluate_bag(args.bag, args.out, topics, opts)
    except BagError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    finally:
        if lease is not None:
            lease.release()
    if res.error or len(res.run.frames[0]) == 0:
        why = res.error or "no camera pose was published"
        raise CliError(f"{why} (node logs in {args.out / 'logs'})", EXIT_NO_TRAJECTORY)
    res.run.info.update(_run_info(res, args, topics))
    ev = score_run(
        res.run,
        reference,
        dataset=args.dataset,
        fail_above=fail_above,
        fail_below=fail_below,
        max_diff=args.max_diff,
        reconstruction=ReconstructionSettings(),
        groundtruth_name=ref_name,
    )
    if ev.aligned is None:
        raise CliError(
            f"the poses of {target} share no timestamps with the ground truth {ref_name}", EXIT_INPUT
        )
    paths = write_evaluation(args.out, ev, title=f"online3r bag evaluate: {args.bag.name}")
    if not args.quiet:
        for v in ev.verdicts:
            print(v.line())
        for note in res.notes:
            print(f"note: {note}", file=sys.stderr)
        print(
            f"wrote {target.name}, {', '.join(p.name for p in paths.values())} to {args.out}", file=sys.stderr
        )
    if not ev.passed:
        failed = ", ".join(v.name for v in ev.verdicts if v.failed)
        print(f"online3r bag evaluate: thresholds failed: {failed}", file=sys.stderr)
        return EXIT_THRESHOLD
    return EXIT_OK
