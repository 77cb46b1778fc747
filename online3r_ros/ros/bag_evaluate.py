"""Replay a bag into the running system and record what it answers: the library half of ``online3r bag
evaluate`` (the CLI parses, scores with :func:`~online3r_ros.eval.scoring.score_run` and writes).

:func:`evaluate_bag`:

1. starts the tracker, mapper and retrieval nodes as processes (:class:`~online3r_ros.cli.launch.NodeGroup`
   on :func:`~online3r_ros.launch_description.node_specs`, as ``online3r launch``/``demo`` do), the tracker
   listening to the bag's own camera topics (its ``image_topic``/``depth_topic``/``camera_info_topic``
   parameters, so nothing is remapped), their state files (map, database, trajectories) in ``OUT/state`` and
   their logs in ``OUT/logs``;
2. plays only the camera topics with :func:`~online3r_ros.ros.bag_play.play_bag`:

   - lock-step (``lockstep=True``): each image leaves when the tracker answered the previous one (its pose,
     or its status counting it processed / rejected), or after ``frame_timeout`` s (counted); the stream
     follows the tracker, not the bag's clock, so the nodes run on wall time (no ``/clock``: a simulated
     clock would stand still while the player waits, and with it the nodes' status and path timers);
   - real time (``rate`` R): the bag's schedule at R times its speed with ``/clock`` (bag time) and
     ``use_sim_time`` on every node, as a robot's recording replayed; the clock keeps running after the last
     message while the results settle;

3. records every output (:data:`OUTPUT_TOPICS`: odometry, camera pose, paths, map, markers, statuses,
   ``/tf``) with :class:`~online3r_ros.ros.bag_record.BagRecorder` into ``OUT/output.mcap`` (one MCAP file;
   of the :data:`SNAPSHOT_TOPICS`, each message a whole path or map, only the last message)
   and keeps the live view of :class:`~online3r_ros.ros.replay.OutputRecorder` for pacing and scoring;
4. waits for the last results (:func:`~online3r_ros.ros.replay.session.settle_outputs`: last pose, final
   path, the full map on request), saves the map (``mapper/save_map``) and stops the nodes;
5. samples each node's RSS from ``/proc`` every ``memory_period`` s throughout.

The result's :class:`~online3r_ros.eval.scoring.RunOutputs` (:func:`~online3r_ros.eval.live_run.
live_run_outputs`) carries the camera poses, keyframes, map, latencies, counts, loop edges and memory.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile

from online3r_ros.bags.errors import BagError
from online3r_ros.bags.reader import deserialize, iter_messages, open_bag, topic_connections
from online3r_ros.bags.rgbd import RgbdTopics
from online3r_ros.eval.live_run import growth_per_1000_frames, live_run_outputs
from online3r_ros.eval.progress import progress
from online3r_ros.eval.scoring import RunOutputs
from online3r_ros.ros import topics as T
from online3r_ros.ros.bag_play import play_bag, standalone_node
from online3r_ros.ros.bag_record import BagRecorder
from online3r_ros.ros.replay import OutputRecorder, SpinThread, call_trigger, settle_outputs, wait_until
from online3r_ros.ros.time import stamp_to_ns
from online3r_ros.utils.proc_memory import RssSampler

__all__ = [
    "OUTPUT_TOPICS",
    "SNAPSHOT_TOPICS",
    "BagEvalOptions",
    "BagEvalRun",
    "evaluate_bag",
    "image_stamps",
    "launch_arguments",
]

#: What the nodes publish for users, recorded into ``output.mcap`` (``/tf_static`` included).
OUTPUT_TOPICS: tuple[str, ...] = (
    *(
        "/" + spec.name.lstrip("/")
        for spec in (
            T.ODOMETRY,
            T.CAMERA_POSE,
            T.TRACKER_STATUS,
            T.PATH,
            T.KEYFRAME_PATH,
            T.KEYFRAME_POSES,
            T.MAP,
            T.MAP_UPDATES,
            T.MARKERS,
            T.MAPPER_STATUS,
            T.RETRIEVAL_STATUS,
            T.DIAGNOSTICS,
        )
    ),
    "/tf",
    "/tf_static",
)
#: Outputs that restate a whole state in every message: only their last message goes into the bag.
SNAPSHOT_TOPICS: tuple[str, ...] = tuple(
    "/" + spec.name.lstrip("/") for spec in (T.PATH, T.KEYFRAME_PATH, T.KEYFRAME_POSES, T.MAP, T.MARKERS)
)
OUTPUT_FILE = "output.mcap"


@dataclass(frozen=True)
class BagEvalOptions:
    """How :func:`evaluate_bag` runs.

    ``lockstep``: pace images by the tracker's answers (else real time at ``rate``, with ``/clock`` at
    ``clock_hz``); ``frame_timeout``: seconds a lock-step image waits for the previous one's answer;
    ``mapper_lag``: lock-step also holds an image while the mapper has integrated fewer than the tracker's
    keyframes minus this many (a mapper slower than the tracker then paces the run instead of falling ever
    further behind; ``mapper_timeout`` s at most per wait, counted as a timeout; negative: never wait);
    ``slam_config``/``checkpoint``/``device``/``torch_threads``: the nodes' parameters of those names
    (``None``/0: the parameter file's); ``node_parameters``: ``{node: {parameter: value}}`` applied last;
    ``startup_timeout``/``settle_timeout``: seconds for the nodes to come up / the last results to arrive;
    ``memory_period``: seconds between RSS samples; ``record_topics``: what goes into the output bag, of
    ``latest_only_topics`` (each message a whole path or map) only the last message;
    ``show_progress``: progress bar (``None``: on a terminal).
    """

    lockstep: bool = True
    rate: float = 1.0
    clock_hz: float = 40.0
    frame_timeout: float = 10.0
    mapper_lag: int = 1
    mapper_timeout: float = 120.0
    slam_config: Path | None = None
    checkpoint: Path | None = None
    device: str | None = None
    torch_threads: int = 0
    node_parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    startup_timeout: float = 120.0
    settle_timeout: float = 30.0
    memory_period: float = 1.0
    record_topics: tuple[str, ...] = OUTPUT_TOPICS
    latest_only_topics: tuple[str, ...] = SNAPSHOT_TOPICS
    show_progress: bool | None = None


@dataclass
class BagEvalRun:
    """What :func:`evaluate_bag` produced: ``run`` (for ``score_run``), the ``output_bag`` and its message
    counts per topic (``recorded``), images published (``frames_sent``) and lock-step waits that timed out
    (``timeouts``), the nodes' exit codes, the saved map (``map_file``, ``None`` when saving failed), what
    did not go as planned (``notes``), why the run stopped early (``error``) and the wall time (s)."""

    run: RunOutputs
    output_bag: Path
    recorded: dict[str, int] = field(default_factory=dict)
    frames_sent: int = 0
    timeouts: int = 0
    node_exit_codes: dict[str, int | None] = field(default_factory=dict)
    map_file: Path | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    wall_s: float = 0.0


def image_stamps(bag: str | Path, topic: str) -> list[int]:
    """Header stamps (ns) of the images on ``topic``, in the order a player publishes them (log time)."""
    stamps = []
    with open_bag(bag) as reader:
        for conn, _, raw in iter_messages(reader, topic_connections(reader, topic)):
            stamps.append(stamp_to_ns(deserialize(reader, raw, conn.msgtype).header.stamp))
    return stamps


def launch_arguments(topics: RgbdTopics, opts: BagEvalOptions) -> dict[str, str]:
    """The launch arguments (``online3r launch`` names) of the nodes for a bag with ``topics``."""
    args = {
        "image": topics.image,
        "image_transport": "compressed" if topics.compressed else "raw",
        "camera_info": topics.camera_info or "",
        "depth": "" if opts.checkpoint is not None else (topics.depth or ""),
        "use_sim_time": "false" if opts.lockstep else "true",
    }
    if opts.checkpoint is not None:
        args["checkpoint"] = str(Path(opts.checkpoint).resolve())
    else:
        args["source"] = "depth"
    if opts.slam_config is not None:
        args["slam_config"] = str(Path(opts.slam_config).resolve())
    if opts.device:
        args["device"] = opts.device
    if opts.torch_threads:
        args["torch_threads"] = str(int(opts.torch_threads))
    return args


def _node_parameters(state: Path, opts: BagEvalOptions) -> dict[str, dict[str, Any]]:
    """Per-node parameters: state files under ``state``, a fresh map, no periodic full map (requested at
    the end: a large map every few seconds would fill the output bag), a 0.2 s status period of tracker and
    mapper (lock-step needs to see frames that got no pose, and the mapper's keyframe count)."""
    params: dict[str, dict[str, Any]] = {
        "tracker": {
            "trajectory_path": str(state / "tracker_trajectory.txt"),
            "tf_static_wait": 0.0,
            "diagnostics_period": 0.2,
        },
        "mapper": {
            "map_path": str(state / "map.pt"),
            "load_on_start": False,
            "autosave": False,
            "map_period": 0.0,
            "trajectory_path": str(state / "mapper_trajectory.txt"),
            "diagnostics_period": 0.2,
        },
        "retrieval": {"database_path": str(state / "retrieval.pt"), "load_on_start": False},
    }
    for node, values in opts.node_parameters.items():
        params.setdefault(node, {}).update(values)
    return params


class _Pacer:
    """The player's ``before_message`` hook: notes when each image leaves (monotonic s, by header stamp),
    holds it in lock-step until the previous image was answered, advances the progress bar."""

    def __init__(
        self,
        image_topic: str,
        stamps: list[int],
        recorder: OutputRecorder,
        *,
        lockstep: bool,
        timeout: float,
        nodes_ok: Callable[[], bool],
        bar: Any,
        mapper_lag: int = -1,
        mapper_timeout: float = 0.0,
    ) -> None:
        self.image_topic = image_topic
        self.stamps = stamps
        self.recorder = recorder
        self.lockstep = lockstep
        self.timeout = timeout
        self.mapper_lag = mapper_lag
        self.mapper_timeout = mapper_timeout
        self.nodes_ok = nodes_ok
        self.bar = bar
        self.sent: dict[int, float] = {}
        self.timeouts = 0
        self.last_log_ns = 0

    def answered(self, k: int) -> bool:
        """Image ``k`` got its pose, or the tracker's status counts ``k + 1`` images handled."""
        poses = self.recorder.camera_poses
        if poses and poses[-1].stamp_ns >= self.stamps[k]:
            return True
        st = self.recorder.tracker_status or {}
        return sum(int(st.get(key) or 0) for key in ("processed", "dropped", "rejected")) >= k + 1

    def mapper_caught_up(self) -> bool:
        """The mapper's status counts at least the tracker's keyframes minus ``mapper_lag``."""
        tracker = int((self.recorder.tracker_status or {}).get("keyframes") or 0)
        mapper = int((self.recorder.mapper_status or {}).get("keyframes") or 0)
        return mapper >= tracker - self.mapper_lag

    def __call__(self, topic: Any, log_ns: int) -> None:
        self.last_log_ns = log_ns
        if topic.name != self.image_topic:
            return
        k = len(self.sent)
        if k >= len(self.stamps):
            return
        if self.lockstep and k > 0:
            ok = wait_until(lambda: self.answered(k - 1) or not self.nodes_ok(), self.timeout, 0.002)
            self.timeouts += 0 if ok else 1
            if self.mapper_lag >= 0 and not self.mapper_caught_up():
                caught_up = lambda: self.mapper_caught_up() or not self.nodes_ok()  # noqa: E731
                ok = wait_until(caught_up, self.mapper_timeout, 0.01)
                self.timeouts += 0 if ok else 1
        self.sent[self.stamps[k]] = time.monotonic()
        self.bar.update(1)


def _keep_clock(node: Any, start_ns: int, rate: float, hz: float, stop: threading.Event) -> threading.Thread:
    """Publish ``/clock`` from ``start_ns`` on, advancing ``rate`` times wall time, until ``stop``."""
    from rosgraph_msgs.msg import (
        Clock,
    )  # optional package, imported only for a real-time replay (play_bag too)

    pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))

    def run() -> None:
        t0, msg = time.monotonic(), Clock()
        while not stop.wait(1.0 / hz):
            msg.clock.sec, msg.clock.nanosec = divmod(
                start_ns + int((time.monotonic() - t0) * rate * 1e9), 10**9
            )
            pub.publish(msg)

    thread = threading.Thread(target=run, name="online3r-clock", daemon=True)
    thread.start()
    return thread


#: Fast DDS profile of the player's writers: a 0.1 s heartbeat instead of the default 3 s. A large image goes
#: out in UDP fragments; when one is lost the reader only asks again after the writer's next heartbeat (or
#: its next sample). A camera's stream sends the next sample 33 ms later; a lock-step player sends nothing
#: until the answer comes, so each lost fragment stalled the run by 3 s (40 7-Scenes frames: 56 s, latency
#: p90 3.0 s; with this profile 15 s, p90 0.17 s, identical ATE).
_PLAYER_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <data_writer profile_name="online3r_bag_player" is_default_profile="true">
    <times><heartbeat_period><sec>0</sec><nanosec>100000000</nanosec></heartbeat_period></times>
  </data_writer>
</profiles>
"""
_PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


@contextmanager
def _player_profile(folder: Path) -> Iterator[None]:
    """Point Fast DDS at :data:`_PLAYER_PROFILE` while this process's participant is created (read when the
    first one is; a profile file of the caller's own wins). The nodes, started before, keep their defaults."""
    if any(os.environ.get(v) for v in _PROFILE_VARS):
        yield
        return
    path = folder / "fastdds_player.xml"
    path.write_text(_PLAYER_PROFILE)
    os.environ[_PROFILE_VARS[0]] = str(path)
    try:
        yield
    finally:
        os.environ.pop(_PROFILE_VARS[0], None)


def _scalars(status: Mapping | None) -> dict:
    """The scalar entries of a node's JSON status (counters, state), for metrics.json."""
    return {k: v for k, v in (status or {}).items() if not isinstance(v, (list, dict))}


def _nodes_up(node: Any, image_topic: str) -> bool:
    """The tracker listens to the images, the mapper to keyframes, mapper and retrieval to features."""
    return (
        node.count_subscribers(image_topic) > 0
        and node.count_subscribers("/" + T.KEYFRAMES.name) > 0
        and node.count_subscribers("/" + T.KEYFRAME_FEATURES.name) >= 2
    )


def _move_single_file(folder: Path, target: Path) -> Path:
    """The one storage file of the bag ``folder`` moved to ``target`` (the folder removed)."""
    files = sorted(folder.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(f"{folder}: expected one .mcap file, found {len(files)}")
    files[0].replace(target)
    shutil.rmtree(folder)
    return target


def evaluate_bag(
    bag: str | Path,
    out_dir: str | Path,
    topics: RgbdTopics,
    opts: BagEvalOptions | None = None,
    *,
    say: Callable[[str], Any] = lambda _: None,
) -> BagEvalRun:
    """Play ``bag`` (its camera ``topics``) into freshly started nodes and record their outputs (see the
    module docstring). DDS: this process's ``ROS_DOMAIN_ID`` / discovery settings, inherited by the nodes.

    Raises:
        BagError: unreadable bag, ``OUT/output.mcap`` exists. ``OSError``: the nodes cannot be started.
    """
    from online3r_ros.cli.launch import NodeGroup
    from online3r_ros.launch_description import node_specs

    opts = opts or BagEvalOptions()
    out, t_start = Path(out_dir), time.monotonic()
    target = out / OUTPUT_FILE
    if target.exists():
        raise BagError(f"{target} exists already; choose another --out or remove it")
    stamps = image_stamps(bag, topics.image)
    if not stamps:
        raise BagError(f"{bag}: no message on {topics.image}")
    state = out / "state"
    state.mkdir(parents=True, exist_ok=True)
    specs = node_specs(launch_arguments(topics, opts), _node_parameters(state, opts))
    group = NodeGroup(specs, log_dir=out / "logs", echo=None)
    result = BagEvalRun(run=RunOutputs(frames=(np.zeros(0), np.zeros((0, 4, 4)))), output_bag=target)
    dead: list[str] = []
    pacer: _Pacer | None = None

    def nodes_ok() -> bool:
        ended = group.poll()
        if ended and not dead:
            dead.append(
                "node(s) ended during the run: " + ", ".join(f"{n} (exit code {c})" for n, c in ended)
            )
        return not dead

    group.start()
    sampler = RssSampler({p.spec.name: p.popen.pid for p in group.processes}, opts.memory_period).start()
    try:
        with ExitStack() as stack:
            with _player_profile(state):
                node = stack.enter_context(standalone_node("online3r_bag_evaluate"))
            live = OutputRecorder(node)
            recorder = BagRecorder(
                node, out / ".output_bag", opts.record_topics, latest_only=opts.latest_only_topics
            )
            spin = SpinThread(node)
            stop_clock = threading.Event()
            try:
                say(f"starting {', '.join(s.name for s in specs)} (logs in {out / 'logs'})")
                up = wait_until(
                    lambda: not nodes_ok() or _nodes_up(node, topics.image), opts.startup_timeout, 0.1
                )
                if dead or not up:
                    result.error = (
                        dead[0] if dead else f"the nodes did not come up in {opts.startup_timeout:.0f} s"
                    )
                    return result
                recorder.poll()
                with progress(None, total=len(stamps), desc="bag evaluate", enabled=opts.show_progress,
                              unit="frame") as bar:  # fmt: skip
                    pacer = _Pacer(topics.image, stamps, live, lockstep=opts.lockstep,
                                   timeout=opts.frame_timeout, nodes_ok=nodes_ok, bar=bar,
                                   mapper_lag=opts.mapper_lag,
                                   mapper_timeout=opts.mapper_timeout)  # fmt: skip
                    poll_timer = node.create_timer(0.5, recorder.poll)
                    play_bag(
                        node,
                        bag,
                        rate=1e9 if opts.lockstep else opts.rate,
                        topics=[t for t in (topics.image, topics.depth, topics.camera_info) if t],
                        clock_hz=None if opts.lockstep else opts.clock_hz,
                        wait_for_subscribers=5.0,
                        before_message=pacer,
                    )
                if not opts.lockstep:
                    _keep_clock(node, pacer.last_log_ns, opts.rate, opts.clock_hz, stop_clock)
                result.frames_sent, result.timeouts = len(pacer.sent), pacer.timeouts
                last = max(pacer.sent.items(), key=lambda kv: kv[1])
                result.notes += settle_outputs(
                    node, live, last_stamp_ns=last[0], last_sent=last[1], n_sent=len(pacer.sent),
                    timeout=opts.settle_timeout, nodes_ok=nodes_ok,
                )  # fmt: skip
                ok, message = call_trigger(node, "mapper/save_map", 60.0) if nodes_ok() else (False, "")
                result.map_file = state / "map.pt" if ok else None
                if not ok and message:
                    result.notes.append(f"mapper/save_map failed: {message}")
                time.sleep(0.5)  # one more status period so the counters cover the whole run
                recorder.poll()
                node.destroy_timer(poll_timer)
            finally:
                stop_clock.set()
                spin.stop()
                result.recorded = recorder.close()
            result.run = live_run_outputs(
                sent=pacer.sent,
                camera_poses=[(p.stamp_ns, p.T, p.received) for p in live.camera_poses],
                keyframe_path=live.keyframe_path,
                map_points=None if live.map_cloud is None else live.map_cloud.xyz,
                loop_segments=live.loop_segments,
                tracker_status=live.tracker_status,
                info={"tracker": _scalars(live.tracker_status), "mapper": _scalars(live.mapper_status)},
                pose_group="sim3" if opts.checkpoint is not None else "se3",
                source=str(target),
            )
    finally:
        result.node_exit_codes = group.stop()
        sampler.stop()
        result.run.memory = sampler.series() or None
        if result.run.memory and pacer is not None:
            t_frames = np.array(sorted(pacer.sent.values())) - sampler.t0
            growth = {
                n: growth_per_1000_frames(t, rss, t_frames) for n, (t, rss) in result.run.memory.items()
            }
            result.run.info["memory_growth_mb_per_1000_frames"] = growth
        result.error = result.error or (dead[0] if dead else None)
        if (out / ".output_bag").is_dir():
            _move_single_file(out / ".output_bag", target)
        result.wall_s = time.monotonic() - t_start
    return result
