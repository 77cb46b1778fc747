"""Pieces shared by the tracker and mapper nodes: SLAM config from parameters, the worker thread, main()."""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
import torch
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from online3r_ros.model.checkpoint import CheckpointError, CheckpointNotFoundError
from online3r_ros.ros.dds import use_large_data_profile
from online3r_ros.ros.nodes.diagnostics import diagnostic_array, status_string
from online3r_ros.ros.nodes.params import (
    NodeParams,
    P,
    ParameterError,
    declare_and_read,
    resolve_path,
    resolve_torch_threads,
)
from online3r_ros.ros.nodes.params import _config_dir as config_dir
from online3r_ros.slam.config import ConfigError, SlamConfig, load_config

__all__ = [
    "setup_node_params",
    "publish_node_diagnostics",
    "start_worker",
    "stop_worker",
    "slam_config_from_params",
    "resolve_checkpoint",
    "run_node",
    "LogOnce",
]


def resolve_checkpoint(name: str) -> Path:
    """The checkpoint ``name`` (a ``.pth``/``.safetensors`` file or a Hugging Face folder): absolute, relative
    to the cwd, or in the package's ``config/``. Raises ``CheckpointNotFoundError`` (exit code 1, as every
    checkpoint problem) when none exists."""
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, config_dir() / p]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise CheckpointNotFoundError(
        f"checkpoint not found: {name} (looked in {', '.join(str(c) for c in candidates)})"
    )


def slam_config_from_params(p: NodeParams) -> SlamConfig:
    """``SlamConfig`` from ``slam_config`` (file) + ``source``/``checkpoint``/``device`` overrides;
    :class:`ParameterError` naming the parameter on any problem."""
    path = resolve_path(p.slam_config, "slam_config")
    overrides: dict[str, dict] = {}
    if p.source:
        overrides.setdefault("source", {})["kind"] = p.source
    if p.checkpoint:
        overrides.setdefault("source", {})["checkpoint"] = str(resolve_checkpoint(p.checkpoint))
    if p.device:
        overrides.setdefault("system", {})["device"] = p.device
    try:
        return load_config(path, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        raise ParameterError("slam_config", str(exc)) from exc


def setup_node_params(node: Any, cls: type[P]) -> tuple[P, SlamConfig]:
    """The start of every node: declare and read its parameters (dataclass ``cls``) on ``node``, apply
    ``torch_threads`` and build the ``SlamConfig``. Returns ``(params, config)``; raises
    :class:`ParameterError` naming the parameter."""
    p = declare_and_read(node, cls)
    torch.set_num_threads(resolve_torch_threads(p.torch_threads))
    return p, slam_config_from_params(p)


def publish_node_diagnostics(node: Any, stats: Any, hardware_id: str) -> None:
    """Publish ``stats`` (a ``NodeStats``) on the node's ``pub_diag`` (``/diagnostics``, stamped now, as
    ``hardware_id``) and its one-line summary on ``pub_status``."""
    node.pub_diag.publish(diagnostic_array(stats, node.get_clock().now().to_msg(), hardware_id))
    node.pub_status.publish(status_string(stats))


def start_worker(node: Any, role: str, cfg: Any, details: str) -> None:
    """Start ``node._work`` as the daemon thread ``node._worker`` (named ``<role>-worker``) and log
    ``"<role> ready: source=... device=... torch_threads=... <details>"``."""
    node._worker = threading.Thread(target=node._work, name=f"{role}-worker", daemon=True)
    node._worker.start()
    node.get_logger().info(
        f"{role} ready: source={cfg.source.kind} device={cfg.system.device} "
        f"torch_threads={torch.get_num_threads()} {details}"
    )


def take_queued(node: Any, timeout: float) -> list | None:
    """The worker's wait: up to ``timeout`` s for messages in ``node._queue`` (under ``node._wake``); returns
    them all (possibly none), or ``None`` once the node is stopping."""
    with node._wake:
        if not node._queue:
            node._wake.wait(timeout=timeout)
        if not node._running:
            return None
        items = list(node._queue)
        node._queue.clear()
        return items


def stop_worker(node: Any, timeout: float = 5.0) -> None:
    """Stop a node's worker thread: clear ``node._running`` under ``node._wake`` (a ``Condition``), wake
    every waiter and join ``node._worker`` for at most ``timeout`` seconds."""
    with node._wake:
        node._running = False
        node._wake.notify_all()
    node._worker.join(timeout=timeout)


_NUMBERS = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


# rclpy ties each call site of a logger method to one severity ("Logger severity cannot be changed between
# calls"), so LogOnce calls each severity from a function of its own.
def _log_at_error(log: Callable[[str], Any], line: str) -> None:
    log(line)


def _log_at_warning(log: Callable[[str], Any], line: str) -> None:
    log(line)


def _log_at_info(log: Callable[[str], Any], line: str) -> None:
    log(line)


def _log_at_other(log: Callable[[str], Any], line: str) -> None:
    log(line)


_CALL_SITES = {
    "error": _log_at_error,
    "warning": _log_at_warning,
    "warn": _log_at_warning,
    "info": _log_at_info,
}


class LogOnce:
    """Log each kind of message at most once per ``period`` seconds. The kind is the text with its numbers
    masked, so per-frame stamps or counts do not defeat the limit; the next line of a kind says how many
    were held back. At most ``max_kinds`` kinds are remembered (the oldest forgotten): bounded memory."""

    def __init__(self, period: float = 2.0, max_kinds: int = 256) -> None:
        self._time = time.monotonic
        self.period = period
        self.max_kinds = max_kinds
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (time logged, held back since)

    def __call__(self, log: Callable[[str], Any], text: str) -> None:
        kind = _NUMBERS.sub("#", text)
        now = self._time()
        last, held = self._last.pop(kind, (-1e9, 0))
        if now - last >= self.period:
            line = text if not held else f"{text} (and {held} similar in the last {now - last:.0f} s)"
            _CALL_SITES.get(getattr(log, "__name__", ""), _log_at_other)(log, line)
            last, held = now, 0
        else:
            held += 1
        self._last[kind] = (last, held)  # re-inserted: the dict's order is least recently seen first
        while len(self._last) > self.max_kinds:
            del self._last[next(iter(self._last))]


def _checkpoint_error(exc: BaseException) -> BaseException | None:
    """The ``CheckpointError`` in ``exc``'s cause/context chain (a source may wrap it), else ``None``."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, CheckpointError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def run_node(factory: Callable[[Any], Any], name: str, args: list[str] | None = None) -> int:
    """Init rclpy, build the node with ``factory(context)``, spin until SIGINT/SIGTERM or shutdown.

    Exit codes, each failure as ONE ``[name] FATAL: ...`` line on stderr (no traceback): 0 normal shutdown,
    2 bad parameters / arguments (the message names the parameter), 1 other start failures (a missing,
    corrupted or non-MASt3R checkpoint, no CUDA, ...).

    Shutdown order: rclpy's own signal handlers are not installed (they would invalidate the context while
    the node's worker thread is still publishing a frame); SIGINT/SIGTERM set a flag, the spin loop ends,
    ``node.stop()`` joins the worker, and only then are the node and the context destroyed.
    """
    argv = sys.argv if args is None else args
    dds_profile = use_large_data_profile()  # before rclpy.init: see ros/dds.py
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl rejects malformed --ros-args with RCLError
        print(f"[{name}] FATAL: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    node = None
    executor = None
    code = 0
    stop_requested = threading.Event()
    previous: dict[int, Any] = {}
    try:
        try:  # Ctrl-C during start-up (model loading, warm-up): KeyboardInterrupt, exit 0
            node = factory(None)
        except (ParameterError, KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line, exit 1
            ckpt = _checkpoint_error(exc)
            if ckpt is not None:
                print(
                    f"[{name}] FATAL: cannot load the MASt3R checkpoint: {type(ckpt).__name__}: {ckpt}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(
                    f"[{name}] FATAL: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True
                )
            return 1
        if dds_profile is not None:
            node.get_logger().info(f"Fast DDS profile for full-size messages: {dds_profile}")

        def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
            stop_requested.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop_requested.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ParameterError as exc:
        print(f"[{name}] FATAL: invalid parameter: {exc}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                node.stop()  # the worker ends its frame and stops while the context is still valid
            except Exception as exc:  # noqa: BLE001 - shutting down anyway; say what failed
                print(f"[{name}] error while stopping: {exc}", file=sys.stderr, flush=True)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
