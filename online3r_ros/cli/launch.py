"""``online3r launch [name:=value ...] [--dry-run]``: the ROS 2 nodes as separate processes, no distro needed.

Starts the nodes of :func:`online3r_ros.launch_description.node_specs` (the description the ROS launch file
uses too) as child processes of this one: Python nodes with ``<this python> -m <module> --ros-args ...``,
rviz2 from ``PATH`` (skipped with a note when it is not installed). Their output is prefixed with the node
name. SIGINT/SIGTERM are forwarded to every node; a node that does not stop within ``--grace`` seconds is
terminated, then killed. When a required node (the tracker) exits while the system runs, the others are
stopped and ``online3r launch`` exits non-zero; a node with ``respawn`` (the mapper) is started again
``respawn_delay`` seconds after it exits, as ``ros2 launch`` does.

Exit codes: 0 the nodes were stopped on request (Ctrl-C, SIGTERM), 1 a required node ended on its own (the
others are then stopped), 2 usage error (bad launch argument).  ``--dry-run`` prints one line per node,
``name: command`` (shell-quoted; ``name [not on PATH]: ...`` for a missing non-Python executable,
``name [respawn after N s]: ...`` for a respawning node), and starts nothing.

Library use (``online3r demo`` does this)::

    group = NodeGroup(node_specs({"image": "/cam/image"}), log_dir=Path("logs"))
    group.start()
    ...                                   # group.poll() -> list of (name, exit code) that ended
    codes = group.stop()                  # {name: exit code}
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..launch_description import (
    LAUNCH_ARGUMENTS,
    LaunchSpecError,
    NodeSpec,
    node_specs,
    parse_launch_arguments,
    ros_arguments,
)
from .main import EXIT_OK, EXIT_USAGE, CliError

__all__ = ["NodeGroup", "NodeProcess", "command_for", "register", "launch_command", "EXIT_NODE_DIED"]

EXIT_NODE_DIED = 1


def command_for(
    spec: NodeSpec, python: str | None = None, *, installed_only: bool = True
) -> list[str] | None:
    """The argv starting ``spec``: ``python -m module ... --ros-args ...`` for Python nodes, the executable
    on ``PATH`` for others; ``None`` when a non-Python executable is not installed (with
    ``installed_only=False``: the bare executable name instead)."""
    if spec.module is not None:
        return [python or sys.executable, "-m", spec.module, *spec.arguments, *ros_arguments(spec)]
    exe = shutil.which(spec.executable)
    if exe is None:
        if installed_only:
            return None
        exe = spec.executable
    return [exe, *spec.arguments, *ros_arguments(spec)]


def _pump(stream: IO[bytes], prefix: str, sink: IO[str] | None, log: IO[bytes] | None) -> None:
    """Copy a child's output line by line: to ``log`` raw, to ``sink`` with ``[name]`` prefixed."""
    for line in iter(stream.readline, b""):
        if log is not None:
            log.write(line)
            log.flush()
        if sink is not None:
            try:
                sink.write(f"{prefix}{line.decode(errors='replace').rstrip()}\n")
                sink.flush()
            except ValueError:  # sink closed during interpreter shutdown
                pass
    stream.close()


@dataclass
class NodeProcess:
    """A started node: its spec, the ``Popen``, the output thread and the log file (if any)."""

    spec: NodeSpec
    popen: subprocess.Popen
    pump: threading.Thread
    log_path: Path | None
    exit_code: int | None = None


class NodeGroup:
    """Start, watch and stop the nodes of a description as child processes.

    Args:
        specs: the nodes (from :func:`node_specs`).
        env: environment of the children (default: this process's).
        log_dir: also write each node's output to ``log_dir/<name>.log``.
        echo: stream to print prefixed output to (``None``: quiet; only the logs).
        python: interpreter for Python nodes (default ``sys.executable``).
    """

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        echo: IO[str] | None = sys.stdout,
        python: str | None = None,
    ) -> None:
        self.specs = list(specs)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.echo = echo
        self.python = python
        self.processes: list[NodeProcess] = []
        self.skipped: list[tuple[str, str]] = []
        self.respawns: dict[str, int] = {}  # times each node was started again
        self._respawn_at: dict[str, float] = {}  # monotonic time a node that exited starts again
        self._stopping = False

    def start(self) -> None:
        """Start every node (non-blocking). Non-Python nodes that are not installed are skipped and listed in
        :attr:`skipped`; a Python node that cannot be started raises ``OSError`` after stopping the others."""
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            proc = self._start_one(spec)
            if proc is not None:
                self.processes.append(proc)

    def _start_one(self, spec: NodeSpec, append_log: bool = False) -> NodeProcess | None:
        """Start one node; ``None`` when its executable is not installed (recorded in :attr:`skipped`)."""
        cmd = command_for(spec, self.python)
        if cmd is None:
            reason = f"'{spec.executable}' is not on PATH (install a ROS 2 distro with {spec.package})"
            self.skipped.append((spec.name, reason))
            self._say(f"[launch] not starting {spec.name}: {reason}")
            return None
        log_path = self.log_dir / f"{spec.name}.log" if self.log_dir is not None else None
        log = open(log_path, "ab" if append_log else "wb") if log_path is not None else None  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals are forwarded explicitly, once
            )
        except OSError:
            if log is not None:
                log.close()
            self.stop()
            raise
        pump = threading.Thread(
            target=self._pump_and_close,
            args=(popen.stdout, f"[{spec.name}] ", log),
            name=f"output-{spec.name}",
            daemon=True,
        )
        pump.start()
        self._say(f"[launch] started {spec.name} (pid {popen.pid}): {shlex.join(cmd)}")
        return NodeProcess(spec, popen, pump, log_path)

    def respawn_due(self, now: float) -> list[str]:
        """Start again the respawning nodes whose delay has passed; returns their names."""
        due = [name for name, at in self._respawn_at.items() if at <= now]
        for name in due:
            del self._respawn_at[name]
            i = next(i for i, p in enumerate(self.processes) if p.spec.name == name)
            old = self.processes[i]
            old.pump.join(timeout=2.0)
            proc = self._start_one(old.spec, append_log=True)
            if proc is not None:
                self.processes[i] = proc
                self.respawns[name] = self.respawns.get(name, 0) + 1
        return due

    def _pump_and_close(self, stream: IO[bytes], prefix: str, log: IO[bytes] | None) -> None:
        try:
            _pump(stream, prefix, self.echo, log)
        finally:
            if log is not None:
                log.close()

    def _say(self, text: str) -> None:
        if self.echo is not None:
            print(text, file=self.echo, flush=True)

    def poll(self) -> list[tuple[str, int]]:
        """Nodes that ended since the last call: ``[(name, exit code)]`` (negative: killed by that signal)."""
        ended = []
        for proc in self.processes:
            if proc.exit_code is None:
                code = proc.popen.poll()
                if code is not None:
                    proc.exit_code = code
                    ended.append((proc.spec.name, code))
                    what = "stopped" if self._stopping else "exited"
                    self._say(f"[launch] {proc.spec.name} (pid {proc.popen.pid}) {what} with code {code}")
        return ended

    def running(self) -> list[str]:
        return [p.spec.name for p in self.processes if p.exit_code is None and p.popen.poll() is None]

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every running node (its whole process group)."""
        for proc in self.processes:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, sig)
                except ProcessLookupError:
                    pass

    def stop(self, grace: float = 10.0, sig: int = signal.SIGINT) -> dict[str, int]:
        """Stop every node: ``sig`` (SIGINT: rclpy shuts down cleanly), SIGTERM after ``grace`` seconds,
        SIGKILL after another ``grace / 2``. Returns ``{name: exit code}``; always reaps every child."""
        self._stopping = True
        for step_sig, wait in ((sig, grace), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
            if not any(p.popen.poll() is None for p in self.processes):
                break
            self.signal_all(step_sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.popen.poll() is None for p in self.processes):
                time.sleep(0.05)
        for proc in self.processes:
            try:
                proc.popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
            proc.pump.join(timeout=2.0)
        self.poll()
        return {p.spec.name: p.popen.returncode for p in self.processes}

    def wait(self, poll_period: float = 0.1) -> int:
        """Block until a stop is requested (SIGINT/SIGTERM to this process) or a required node exits; nodes
        with ``respawn`` are started again meanwhile.

        Returns :data:`EXIT_OK` after a requested stop (or when only optional nodes ran and all ended), else
        :data:`EXIT_NODE_DIED` (a required node ended on its own)."""
        requested: list[int] = []

        def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
            requested.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = EXIT_OK
        try:
            while not requested:
                ended = self.poll()
                specs = {p.spec.name: p.spec for p in self.processes}
                died = [(n, c) for n, c in ended if specs[n].required]
                if died:
                    names = ", ".join(f"{n} (code {c})" for n, c in died)
                    self._say(f"[launch] required node(s) ended unexpectedly: {names}; stopping the others")
                    code = EXIT_NODE_DIED
                    break
                for name, _ in ended:
                    if specs[name].respawn:
                        self._respawn_at[name] = time.monotonic() + specs[name].respawn_delay
                        self._say(f"[launch] respawning {name} in {specs[name].respawn_delay:g} s")
                self.respawn_due(time.monotonic())
                if not self.running() and not self._respawn_at:
                    break
                time.sleep(poll_period)
            if requested:
                name = signal.Signals(requested[0]).name
                self._say(f"[launch] {name} received: stopping {', '.join(self.running()) or 'nothing'}")
            self.stop(sig=requested[0] if requested else signal.SIGINT)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``launch`` subcommand."""
    p = subparsers.add_parser(
        "launch",
        help="start the ROS 2 nodes (tracker, mapper, retrieval[, rviz2]) as processes, like the launch file",
        description=(
            "Start the nodes described by online3r_ros.launch_description (the description "
            "launch/online3r.launch.py uses too) as separate processes, no ROS distro needed. Arguments "
            "use the launch syntax name:=value, e.g. image:=/cam/image depth:= checkpoint:=m.pth. "
            "Ctrl-C stops every node."
        ),
        epilog="launch arguments (name:=default  description):\n"
        + "\n".join(f"  {a.name}:={a.default}\n      {a.description}" for a in LAUNCH_ARGUMENTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("arguments", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit without starting")
    p.add_argument(
        "--log-dir", type=Path, default=None, help="also write each node's output to DIR/<node>.log"
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds a node gets to stop before SIGTERM (default 10)"
    )
    p.set_defaults(func=launch_command)
    return p


def launch_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r launch``."""
    try:
        specs = node_specs(parse_launch_arguments(list(args.arguments)))
    except LaunchSpecError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if args.dry_run:
        for spec in specs:
            missing = command_for(spec) is None
            cmd = command_for(spec, installed_only=False)
            notes = (" [not on PATH]" if missing else "") + (
                f" [respawn after {spec.respawn_delay:g} s]" if spec.respawn else ""
            )
            print(f"{spec.name}{notes}: {shlex.join(cmd)}")
        return EXIT_OK
    group = NodeGroup(specs, log_dir=args.log_dir)
    try:
        group.start()
    except OSError as exc:
        raise CliError(f"cannot start the nodes: {exc}", EXIT_NODE_DIED) from exc
    return group.wait()
