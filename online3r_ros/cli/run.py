"""``online3r run DATASET --out DIR``: run the SLAM pipeline on a dataset folder and write the results.

Thin layer: argument parsing and messages here; the work is :func:`online3r_ros.slam.runner.run_dataset` and
:func:`online3r_ros.slam.runner.write_outputs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .main import (
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_MISSING_COMPONENT,
    EXIT_NO_TRAJECTORY,
    EXIT_OK,
    CliError,
    positive_int,
)

__all__ = ["register", "run_command"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand."""
    p = subparsers.add_parser(
        "run",
        help="run SLAM on a dataset folder (7-Scenes, TUM RGB-D, image folder) and write trajectories + map",
        description=(
            "Run the SLAM pipeline on DATASET and write DIR/frames.tum, DIR/keyframes.tum (TUM format, "
            "camera-to-world of the optical frame), DIR/map.ply, DIR/timing.json and, with ground truth, "
            "DIR/metrics.json (ATE RMSE after SE(3) and Sim(3) alignment, computed with evo)."
        ),
    )
    p.add_argument("dataset", type=Path, help="dataset folder (7-Scenes, TUM RGB-D or a folder of images)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument(
        "--source",
        choices=("depth", "mast3r"),
        default=None,
        help="pointmap source: depth (RGB-D; default) or mast3r (needs --checkpoint)",
    )
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="MASt3R checkpoint (.pth) for --source mast3r"
    )
    p.add_argument("--stride", type=positive_int, default=None, help="use every N-th frame")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames")
    p.add_argument(
        "--frames",
        default=None,
        metavar="RANGES",
        help="feed these frames in this order, e.g. 0-299,60-139,300-499 (a kidnapped camera; re-timed at "
        "the dataset's rate, ground truth kept)",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config overriding config/online3r.yaml keys"
    )
    p.add_argument(
        "--intrinsics",
        default=None,
        metavar="FX,FY,CX,CY",
        help="pinhole intrinsics overriding the dataset's",
    )
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: config)")
    p.add_argument(
        "--mapper-thread",
        action="store_true",
        help="run the mapper in a thread beside the tracker (system.mapper_thread; faster, timing-dependent)",
    )
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="warm-start prompt tuning from this prompt file (e.g. the prompts.pt of an earlier run here)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary (errors still printed)"
    )
    p.set_defaults(func=run_command)
    return p


def _overrides(args: argparse.Namespace) -> dict:
    over: dict = {}
    if args.source is not None:
        over.setdefault("source", {})["kind"] = args.source
    if args.checkpoint is not None:
        over.setdefault("source", {})["checkpoint"] = str(args.checkpoint)
    if args.device is not None:
        over.setdefault("system", {})["device"] = args.device
    if args.stride is not None:
        over.setdefault("dataset", {})["subsample"] = args.stride
    if args.mapper_thread:
        over.setdefault("system", {})["mapper_thread"] = True
    return over


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r run``; returns the exit code (see :mod:`online3r_ros.cli.main`)."""
    from ..slam import runner
    from ..slam.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, overrides=_overrides(args))
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from exc
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from exc

    if not args.dataset.exists():
        raise CliError(f"dataset {args.dataset} does not exist", EXIT_INPUT)
    if cfg.source.kind == "mast3r":
        if not cfg.source.checkpoint:
            raise CliError("--source mast3r needs --checkpoint FILE (a MASt3R .pth checkpoint)", EXIT_CONFIG)
        if not Path(cfg.source.checkpoint).is_file():
            raise CliError(f"checkpoint {cfg.source.checkpoint} not found", EXIT_INPUT)

    system = None
    if args.prompts is not None:
        from ..tuning.prompt_files import PromptFileError

        try:
            system = runner.build_system(cfg)
            system.load_prompts(args.prompts)
        except runner.MissingComponentError as exc:
            raise CliError(str(exc), EXIT_MISSING_COMPONENT) from exc
        except (PromptFileError, ValueError) as exc:
            raise CliError(str(exc), EXIT_INPUT) from exc
    try:
        result = runner.run_dataset(
            args.dataset,
            cfg,
            system=system,
            max_frames=args.max_frames,
            intrinsics=args.intrinsics,
            frames=args.frames,
            progress=not args.quiet,
        )
    except runner.MissingComponentError as exc:
        raise CliError(str(exc), EXIT_MISSING_COMPONENT) from exc
    except runner.InputError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from exc

    paths = runner.write_outputs(result, args.out, conf_threshold=cfg.map.conf_threshold)
    result.system.close()
    if not args.quiet:
        print(runner.summary_text(result, paths), file=sys.stderr)
    if result.n_posed == 0:
        print("online3r run: error: no frame could be given a pose; trajectories are empty", file=sys.stderr)
        return EXIT_NO_TRAJECTORY
    return EXIT_OK
