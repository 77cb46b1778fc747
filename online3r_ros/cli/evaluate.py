"""``online3r evaluate RUN --groundtruth FILE``: score an existing output without running anything.

RUN is an ``online3r run`` output folder, a trajectory file (TUM, EuRoC .csv, KITTI) or an output bag
(rosbag2 folder, ``.mcap``, ``.db3`` or ROS 1 ``.bag``; needs :mod:`online3r_ros.bags`). Thin layer: loading
and saving here; the scores are :func:`online3r_ros.eval.scoring.score_run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..eval.scoring import (
    ReconstructionSettings,
    RunFolderError,
    RunOutputs,
    load_estimate,
    score_run,
    write_evaluation,
)
from ..eval.trajectory_files import read_trajectory_file
from ..eval.trajectory_io import TrajectoryFileError
from ..eval.verdicts import METRICS, ThresholdError, parse_thresholds
from .main import EXIT_INPUT, EXIT_MISSING_COMPONENT, EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, CliError

__all__ = ["evaluate_command", "is_bag", "load_reference", "register"]

BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="score an output (run folder, trajectory file or output bag) against a ground truth",
        description=(
            "Score RUN against a ground truth and write DIR/metrics.json (same schema as 'online3r run', "
            "plus RPE, frame counts, latency, loop closures and, with --dataset and a map, reconstruction "
            "accuracy / completeness / Chamfer / F-score) and DIR/report.md with its PNG plots. Exit code 6 "
            "when a --fail-above/--fail-below threshold fails."
        ),
        epilog="metrics for thresholds: " + ", ".join(METRICS),
    )
    p.add_argument("run", type=Path, help="online3r run output folder, trajectory file, or output bag")
    p.add_argument(
        "--groundtruth",
        type=Path,
        default=None,
        help="ground-truth trajectory: TUM, EuRoC .csv or KITTI poses, or a bag with one pose topic (or a "
        "groundtruth/pose topic, as 'online3r bag convert' writes) (default: the --dataset's)",
    )
    p.add_argument(
        "--groundtruth-times", type=Path, default=None, help="KITTI times file (default: <stem>_times.txt)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/eval or RUN.eval)")
    p.add_argument("--estimate-topic", default=None, help="pose topic of an output bag (default: automatic)")
    p.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="dataset folder with depth and ground truth: the reconstruction metrics (and the ground truth)",
    )
    p.add_argument(
        "--fail-above", default=None, metavar="M=V,...", help="fail when metric M > V, e.g. ate=0.05"
    )
    p.add_argument(
        "--fail-below", default=None, metavar="M=V,...", help="fail when metric M < V, e.g. fscore=0.8"
    )
    p.add_argument("--max-diff", type=float, default=0.01, help="timestamp association window [s] (0.01)")
    p.add_argument(
        "--voxel", type=float, default=ReconstructionSettings.voxel, help="voxel size of both clouds [m]"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=ReconstructionSettings.threshold,
        help="precision/recall/F-score distance [m]",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=evaluate_command)
    return p


def is_bag(path: Path) -> bool:
    """A rosbag2 folder (``metadata.yaml``) or a bag file by suffix."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix.lower() in BAG_SUFFIXES


def _load_bag(path: Path, topic: str | None) -> RunOutputs:
    try:
        from ..bags import read_trajectory
    except ImportError as exc:
        raise CliError(
            f"{path} is a bag, and bag support is not installed (online3r_ros.bags: {exc})",
            EXIT_MISSING_COMPONENT,
        ) from exc
    try:
        t, T = read_trajectory(path, topic)
    except (ValueError, OSError, KeyError) as exc:
        raise CliError(f"{path}: {exc}", EXIT_INPUT) from exc
    return RunOutputs(frames=(t, T), posed=len(t), source=str(path))


def load_reference(args) -> tuple[tuple, str]:
    """The ground truth ``((t [M] s, T [M, 4, 4]), name)``: ``--groundtruth`` (a trajectory file, or a bag:
    its only pose topic or its ``groundtruth/pose`` topic), else the ``--dataset``'s poses."""
    if args.groundtruth is not None and is_bag(args.groundtruth):
        run = _load_bag(args.groundtruth, None)  # same errors as an estimate bag
        return run.frames, str(args.groundtruth)
    if args.groundtruth is not None:
        try:
            return read_trajectory_file(args.groundtruth, times=args.groundtruth_times), str(args.groundtruth)
        except TrajectoryFileError as exc:
            raise CliError(f"--groundtruth: {exc}", EXIT_INPUT) from exc
    if args.dataset is None:
        raise CliError("give --groundtruth FILE (or --dataset DIR with ground-truth poses)", EXIT_USAGE)
    from ..datasets import DatasetError, open_dataset

    try:
        gt = open_dataset(args.dataset).gt_trajectory()
    except DatasetError as exc:
        raise CliError(f"--dataset: {exc}", EXIT_INPUT) from exc
    if gt is None or len(gt[0]) == 0:
        raise CliError(
            f"--dataset {args.dataset} has no ground-truth poses; give --groundtruth FILE", EXIT_INPUT
        )
    return gt, f"{args.dataset} (dataset poses)"


def _out_dir(args) -> Path:
    if args.out is not None:
        return args.out
    return (
        args.run / "eval"
        if args.run.is_dir() and not is_bag(args.run)
        else args.run.with_name(args.run.name + ".eval")
    )


def _span(t) -> str:
    return f"{len(t)} poses, t {t.min():.3f}..{t.max():.3f} s" if len(t) else "no poses"


def evaluate_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r evaluate``; returns the exit code (see :mod:`online3r_ros.cli.main`)."""
    try:
        fail_above = parse_thresholds(args.fail_above, "--fail-above")
        fail_below = parse_thresholds(args.fail_below, "--fail-below")
    except ThresholdError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not args.run.exists():
        raise CliError(f"{args.run} does not exist", EXIT_INPUT)
    if args.dataset is not None and not args.dataset.is_dir():
        raise CliError(f"--dataset {args.dataset} is not a folder", EXIT_INPUT)
    if is_bag(args.run):
        run = _load_bag(args.run, args.estimate_topic)
    else:
        try:
            run = load_estimate(args.run)
        except RunFolderError as exc:
            raise CliError(str(exc), EXIT_INPUT) from exc
    reference, ref_name = load_reference(args)
    settings = ReconstructionSettings(voxel=args.voxel, threshold=args.threshold)
    ev = score_run(
        run,
        reference,
        dataset=args.dataset,
        fail_above=fail_above,
        fail_below=fail_below,
        max_diff=args.max_diff,
        reconstruction=settings,
        groundtruth_name=ref_name,
    )
    if ev.aligned is None:
        why = (((ev.metrics.get("ate") or {}).get("frames") or {}).get(ev.alignment) or {}).get("error", "")
        raise CliError(
            f"cannot compare {args.run} with the ground truth {ref_name}: {why} (estimate "
            f"{_span(run.frames[0])}, ground truth {_span(reference[0])})",
            EXIT_INPUT,
        )
    out = _out_dir(args)
    try:
        paths = write_evaluation(out, ev, title=f"online3r evaluate: {args.run.name}")
    except OSError as exc:
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}", EXIT_INPUT) from exc
    if not args.quiet:
        for v in ev.verdicts:
            print(v.line())
        print(f"wrote {', '.join(p.name for p in paths.values())} to {out}", file=sys.stderr)
    if not ev.passed:
        failed = ", ".join(v.name for v in ev.verdicts if v.failed)
        print(f"online3r evaluate: thresholds failed: {failed}", file=sys.stderr)
        return EXIT_THRESHOLD
    return EXIT_OK
