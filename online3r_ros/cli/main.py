"""``online3r`` console script: a thin command-line layer over the library.

Subcommands are discovered, not listed: every module ``online3r_ros.cli.<name>`` that defines
``register(subparsers) -> argparse.ArgumentParser`` (setting ``func=handler`` as a parser default, where
``handler(args) -> int``) becomes ``online3r <name>``. Adding ``demo`` or ``launch`` later means adding
``cli/demo.py`` / ``cli/launch.py``; this file does not change.

Exit codes (all subcommands):

====  ==================================================================================
0     success
1     the run finished but produced no usable trajectory (e.g. every frame lost)
2     usage error (bad arguments; printed by argparse)
3     input error: missing/unreadable dataset, bad intrinsics, no usable frames
4     configuration error (unknown key, out-of-range value, unreadable config file)
5     a needed optional component is missing (e.g. the MASt3R source or a checkpoint)
6     an evaluation threshold failed (``--fail-above`` / ``--fail-below``)
130   interrupted (Ctrl-C)
====  ==================================================================================
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

__all__ = [
    "main",
    "build_parser",
    "EXIT_OK",
    "EXIT_NO_TRAJECTORY",
    "EXIT_USAGE",
    "EXIT_INPUT",
    "EXIT_CONFIG",
    "EXIT_MISSING_COMPONENT",
    "EXIT_THRESHOLD",
    "CliError",
]

EXIT_OK = 0
EXIT_NO_TRAJECTORY = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4
EXIT_MISSING_COMPONENT = 5
EXIT_THRESHOLD = 6
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to print as one line and exit with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a clear message otherwise)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _subcommand_modules() -> list[str]:
    """Names of ``online3r_ros.cli`` modules that define ``register`` (sorted, deterministic)."""
    import online3r_ros.cli as pkg

    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "main":
            continue
        names.append(info.name)
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="online3r",
        description="Online3R dense SLAM (MASt3R-SLAM pipeline with an RGB-D or MASt3R pointmap source).",
        epilog="Run 'online3r <command> --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in _subcommand_modules():
        module = importlib.import_module(f"online3r_ros.cli.{name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``online3r`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except CliError as exc:
        print(f"online3r {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"online3r {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # run the package module's main (not this __main__ copy) so that its exception classes are the ones the
    # subcommands raise
    from online3r_ros.cli.main import main as _package_main

    sys.exit(_package_main())
