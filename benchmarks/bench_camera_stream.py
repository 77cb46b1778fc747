"""Full-resolution RGB-D streams over DDS into the tracker's input path or the tracker node itself.

A publisher process plays a camera driver: colour (rgb8), aligned depth (16UC1) and CameraInfo with one stamp
per frame, depth published just before its colour image (as RGB-D drivers often do), at ``--rate`` Hz and
``--size`` WxH, reliable or best effort (``--publisher``), on ``bench/color``, ``bench/depth`` and
``bench/camera_info``, with Fast DDS as a driver gets it by default (``--driver-dds fastdds-default``: none of
:data:`~online3r_ros.ros.dds.FASTDDS_SETTINGS` set) or with this package's profile
(``online3r-profile``: ``FASTDDS_DEFAULT_PROFILES_FILE=$(online3r dds-profile)``, see ``ros/dds.py``).

Input path (default): the publisher sends random noise. This process subscribes exactly as the tracker
node does (``image_qos`` ``auto``: :class:`~online3r_ros.ros.adaptive_qos.AdaptiveSubscription`, keep-last
10; or a fixed profile) and pairs with the tracker's :class:`~online3r_ros.ros.nodes.inputs.InputSync`
(every colour image is offered for pairing; nothing is processed, so nothing is dropped as stale). Printed per
run: colour / depth / CameraInfo messages received of those published, messages DDS reported lost (all three
topics), colour images paired with their depth and CameraInfo, latency from stamp to reception (p50 / p90 ms),
this process's RSS at start and end.

Tracker (``--tracker``): the publisher sends one lap of the synthetic orbit
(:func:`~online3r_ros.synthetic.make_synthetic_sequence`: ``--lap-frames`` distinct poses, default 240: 8 s at
30 Hz, 1.5 deg and 1.8 cm per frame, the pace of 7-Scenes; looped, the timestamps increasing; only the
stream's frames are rendered when it is shorter than a lap), rendered once at ``1/f`` of the stream size
(``f`` the largest integer dividing width and height that leaves the render at least :data:`RENDER_WIDTH`
wide: 160x120 for 640x480, 160x90 for 1280x720) and upsampled ``f`` times nearest-neighbour: rgb8, depth 16UC1
millimetres (0 where the render has none), CameraInfo with the render's ``K`` scaled to the stream (``fx, fy``
times ``f``, ``c' = f (c + 0.5) - 0.5``), no distortion. The real tracker node runs as a process, started as
``online3r bag evaluate`` starts it (:class:`~online3r_ros.cli.launch.NodeGroup` on
:func:`~online3r_ros.launch_description.node_specs`, the tracker only: ``source`` depth, raw images, wall
time, the run's ``image_qos``, status every 0.5 s, no wait for ``/tf_static``; logs in a temporary folder,
kept and named when the run failed). The publisher starts once the tracker subscribes to all three topics;
after the stream the run waits (30 s at most) until the tracker's status accounts for every image it received,
then stops the tracker. Printed per run (counts from the last ``online3r/tracker_status``):

- published: frames sent (colour + depth + CameraInfo each);
- received: the tracker's ``received`` (colour images its callback saw; published - received were lost in
  transport);
- lost in transport: the tracker's ``lost_in_transport`` (colour, depth and CameraInfo messages DDS reported
  lost before they reached it);
- paired = ``processed`` + ``dropped``: images taken with their depth and CameraInfo, or superseded in the
  input queue by a newer complete image (``dropped``: stale, by design, as the tracker runs slower than the
  camera; a superseded image is not checked for its depth). received = paired + rejected once settled;
- rejected, with its ``rejected_<reason>`` counters: ``no_depth`` / ``no_camera_info`` (incomplete after
  ``sync_wait``: lost in pairing), others (a conversion or processing error);
- poses: camera poses that arrived here (processed frames that were not lost);
- latency p50 / p90: camera pose arrival here (wall time) - its header stamp (the image's stamp, the
  publisher's wall clock): transport, queueing and processing;
- tracker RSS: at the first sample (every 0.5 s) after the stream began -> at the end (counts settled), the
  maximum since the stream began, and the growth in MiB per 1,000 frames published
  (:func:`~online3r_ros.eval.live_run.growth_per_1000_frames`; ``n/a`` for streams too short for it).

``--pipeline`` also starts the mapper and the retrieval node beside the tracker (their map and database in
the temporary folder) and prints the same RSS figures for them, and the keyframes the mapper holds.
``--json`` also gets a ``timeline`` per run: every 10 s of the stream the frames published, the tracker's
and the mapper's keyframes and each node's RSS, to set memory growth against the map's.

    .venv/bin/python benchmarks/bench_camera_stream.py                       # 640x480 and 1280x720, 30 Hz
    .venv/bin/python benchmarks/bench_camera_stream.py --tracker --duration 30 --size 1280x720 \
        --publisher reliable best_effort --image-qos auto --driver-dds fastdds-default online3r-profile
    .venv/bin/python benchmarks/bench_camera_stream.py --size 640x480 --publisher best_effort --duration 60
    .venv/bin/python benchmarks/bench_camera_stream.py --tracker --duration 10 --publisher reliable \\
        --image-qos auto --json tracker_stream.json
    .venv/bin/python benchmarks/bench_camera_stream.py --tracker --pipeline --duration 1200 --size 640x480 \\
        --publisher reliable --image-qos auto                          # the 20-minute memory run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHILD = "--publisher-child"
RENDER_WIDTH = 160  # the lap is rendered about this wide (rendering at full size is slow)


def _driver_env(driver_dds: str) -> dict[str, str]:
    """The publisher process's environment: this one without the user's Fast DDS settings, plus the package's
    profile for ``online3r-profile``."""
    from online3r_ros.ros.dds import FASTDDS_SETTINGS, large_data_profile

    env = {k: v for k, v in os.environ.items() if k not in FASTDDS_SETTINGS}
    if driver_dds == "online3r-profile":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(large_data_profile())
    return env


def _qos(kind: str, depth: int = 10):
    from online3r_ros.ros.qos import sensor_data_qos

    return sensor_data_qos(depth, reliable=kind == "reliable")


def _render_factor(width: int, height: int, target: int = RENDER_WIDTH) -> int:
    """The largest integer ``f`` dividing both ``width`` and ``height`` with ``width / f >= target`` (1 when
    none does): the lap is rendered at ``(width / f) x (height / f)`` and upsampled ``f`` times."""
    g = math.gcd(width, height)
    return max([f for f in range(1, g + 1) if g % f == 0 and width // f >= target] or [1])


@dataclass(frozen=True)
class Lap:
    """One pre-rendered lap of the synthetic orbit at ``1 / factor`` of the stream size: ``rgb`` [N, h, w, 3]
    uint8, ``depth_mm`` [N, h, w] uint16 (0: no depth), ``K`` 3x3 of the upsampled (stream-size) image."""

    rgb: np.ndarray
    depth_mm: np.ndarray
    factor: int
    K: np.ndarray

    def frame(self, i: int) -> tuple[bytes, bytes]:
        """Frame ``i`` (modulo the lap) at stream size, nearest-neighbour: ``(rgb8 bytes, 16UC1 bytes)``."""
        k, f = i % len(self.rgb), self.factor
        up = lambda a: np.repeat(np.repeat(a, f, axis=0), f, axis=1)  # noqa: E731
        return up(self.rgb[k]).tobytes(), up(self.depth_mm[k]).tobytes()


def render_lap(size: tuple[int, int], n_frames: int, max_frames: int | None = None) -> Lap:
    """:func:`~online3r_ros.synthetic.make_synthetic_sequence`'s orbit, ``n_frames`` distinct poses (its
    closing pose, equal to the first, left out so the loop repeats no pose; only the first ``max_frames``
    rendered when given), rendered small (see :func:`_render_factor`). Depth: metres rounded to mm,
    non-finite or out-of-range values 0. ``K``: the render's ``fx, fy`` times ``factor``,
    ``c' = factor * (c + 0.5) - 0.5`` (pixel-centre convention)."""
    from online3r_ros.synthetic import make_synthetic_sequence

    w, h = size
    f = _render_factor(w, h)
    n = n_frames if max_frames is None else max(1, min(n_frames, max_frames))
    seq = make_synthetic_sequence(n_frames=n_frames + 1, width=w // f, height=h // f, max_frames=n)
    frames = list(seq)
    rgb = np.stack([fr.rgb for fr in frames])
    depth = np.stack([fr.depth for fr in frames]).astype(np.float64) * 1000.0
    valid = np.isfinite(depth) & (depth > 0) & (depth < 65535)
    depth_mm = np.where(valid, np.rint(depth), 0.0).astype(np.uint16)
    K = np.array(frames[0].K, dtype=np.float64)
    K[:2, :2] *= f
    K[:2, 2] = f * (K[:2, 2] + 0.5) - 0.5
    return Lap(rgb=rgb, depth_mm=depth_mm, factor=f, K=K)


def publish(size: tuple[int, int], rate: float, frames: int, reliability: str, lap_frames: int = 0) -> None:
    """The camera-driver stand-in (child process): random noise, or with ``lap_frames`` the synthetic lap
    (which also prints ``t0 <monotonic s>`` when the first frame leaves, for the parent)."""
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from online3r_ros.ros.camera_info import Intrinsics, intrinsics_to_camera_info

    w, h = size
    lap = render_lap(size, lap_frames, frames) if lap_frames > 0 else None
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    qos = _qos(reliability)
    pubs = {
        "rgb": node.create_publisher(Image, "bench/color", qos),
        "depth": node.create_publisher(Image, "bench/depth", qos),
        "info": node.create_publisher(CameraInfo, "bench/camera_info", qos),
    }
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(p.get_subscription_count() == 0 for p in pubs.values()):
        time.sleep(0.05)  # publish once the reader matched (a reader may re-subscribe after ~1 s: auto QoS)
    time.sleep(1.5)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes()
    depth = rng.integers(500, 4000, (h, w), dtype=np.uint16).tobytes()
    K = np.array([[w * 0.9, 0, w / 2], [0, w * 0.9, h / 2], [0, 0, 1.0]]) if lap is None else lap.K
    info = intrinsics_to_camera_info(Intrinsics(width=w, height=h, K=K, frame_id="camera"))
    t0 = time.monotonic()
    if lap is not None:
        print(f"t0 {t0:.6f}", flush=True)
    for i in range(frames):
        if lap is not None:
            rgb, depth = lap.frame(i)
        now = node.get_clock().now().to_msg()
        for key, enc, data, step in (("depth", "16UC1", depth, 2 * w), ("rgb", "rgb8", rgb, 3 * w)):
            m = Image(height=h, width=w, encoding=enc, step=step, is_bigendian=0)
            m.header.stamp, m.header.frame_id, m.data = now, "camera", data
            pubs[key].publish(m)
        info.header.stamp = now
        pubs["info"].publish(info)
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    time.sleep(2.0)
    rclpy.shutdown()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run(
    size: tuple[int, int], rate: float, duration: float, publisher: str, image_qos: str, driver_dds: str
) -> dict:
    """One publisher/subscriber run; returns the counts (see the module docstring)."""
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from online3r_ros.ros.adaptive_qos import AdaptiveSubscription, create_input_subscription
    from online3r_ros.ros.nodes.inputs import InputSync
    from online3r_ros.ros.qos import qos_from_parameter
    from online3r_ros.ros.time import stamp_to_ns

    frames = int(round(duration * rate))
    rss0 = _rss_mib()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_tracker_inputs", context=context)
    sync = InputSync(need_depth=True, need_info=True, sync_tolerance=0.002, sync_wait=0.5)
    counts = {"rgb": 0, "depth": 0, "info": 0, "lost": 0, "paired": 0, "unpaired": 0, "stale": 0}
    latency_ms: list[float] = []

    def on_rgb(msg) -> None:
        counts["rgb"] += 1
        latency_ms.append((node.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-6)
        sync.put_image(msg, time.monotonic())

    def on_depth(msg) -> None:
        counts["depth"] += 1
        sync.depths.append(msg)

    def on_info(msg) -> None:
        counts["info"] += 1
        sync.put_info(msg)

    inputs = [(Image, "bench/color", on_rgb), (Image, "bench/depth", on_depth)]
    inputs.append((CameraInfo, "bench/camera_info", on_info))
    adaptive = []

    def on_lost(n: int) -> None:
        counts["lost"] += n

    for msg_type, topic, cb in inputs:
        if image_qos == "auto":
            adaptive.append(AdaptiveSubscription(node, msg_type, topic, cb, depth=10, on_lost=on_lost))
        else:
            qos = qos_from_parameter(image_qos, depth=10)
            create_input_subscription(node, msg_type, topic, cb, qos, on_lost)
    child = subprocess.Popen(
        [sys.executable, __file__, CHILD, f"{size[0]}x{size[1]}", str(rate), str(frames), publisher],
        env=_driver_env(driver_dds),
    )
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    next_refresh = time.monotonic()
    try:
        while child.poll() is None:
            executor.spin_once(timeout_sec=0.01)
            now = time.monotonic()
            if now >= next_refresh:
                for sub in adaptive:
                    sub.refresh()
                next_refresh = now + 1.0
            taken = sync.take(now)
            counts["stale"] += sync.drain_stale()
            if taken is not None:
                counts["paired" if taken[1] is not None and taken[2] is not None else "unpaired"] += 1
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        rclpy.shutdown(context=context)
    lat = np.asarray(latency_ms) if latency_ms else np.full(1, np.nan)
    return {
        "size": f"{size[0]}x{size[1]}",
        "publisher": publisher,
        "image_qos": image_qos,
        "driver_dds": driver_dds,
        "published": frames,
        **counts,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p90_ms": float(np.percentile(lat, 90)),
        "rss_start_mib": rss0,
        "rss_end_mib": _rss_mib(),
    }


def _tracker_up(node: Any, topics: tuple[str, ...]) -> bool:
    return all(node.count_subscribers(t) > 0 for t in topics)


def _settled(status: dict | None) -> bool:
    """The tracker's status accounts for every image it received (processed, dropped or rejected)."""
    st = status or {}
    handled = sum(int(st.get(k) or 0) for k in ("processed", "dropped", "rejected"))
    return bool(st) and int(st.get("received") or 0) == handled


def run_tracker(
    size: tuple[int, int],
    rate: float,
    duration: float,
    publisher: str,
    image_qos: str,
    driver_dds: str = "fastdds-default",
    *,
    startup_timeout: float = 180.0,
    settle_timeout: float = 30.0,
    memory_period: float = 0.5,
    timeline_period: float = 10.0,
    lap_frames: int = 240,
    input_queue: int | None = None,
    pipeline: bool = False,
    keep_logs: bool = False,
) -> dict[str, Any]:
    """One run of the synthetic lap into a tracker node process (``pipeline``: with the mapper and the
    retrieval node); returns the counts (module docstring)."""
    from online3r_ros.cli.launch import NodeGroup
    from online3r_ros.eval.live_run import growth_per_1000_frames
    from online3r_ros.launch_description import node_specs
    from online3r_ros.ros.bag_play import standalone_node
    from online3r_ros.ros.replay import OutputRecorder, SpinThread, wait_until
    from online3r_ros.utils.proc_memory import RssSampler

    frames = int(round(duration * rate))
    inputs = ("/bench/color", "/bench/depth", "/bench/camera_info")
    tmp = Path(tempfile.mkdtemp(prefix="bench_camera_stream_"))
    arguments = {
        "image": inputs[0],
        "depth": inputs[1],
        "camera_info": inputs[2],
        "image_transport": "raw",
        "source": "depth",
        "use_sim_time": "false",
    }
    params = {
        "image_qos": image_qos,
        "diagnostics_period": 0.5,
        "tf_static_wait": 0.0,
        "trajectory_path": str(tmp / "tracker_trajectory.txt"),
        **({} if input_queue is None else {"input_queue": input_queue}),
    }
    files = {
        "mapper": {"map_path": str(tmp / "map.pt"), "trajectory_path": str(tmp / "mapper_trajectory.txt")},
        "retrieval": {"database_path": str(tmp / "retrieval.pt")},
    }
    nodes = ("tracker", "mapper", "retrieval") if pipeline else ("tracker",)
    specs = [s for s in node_specs(arguments, {"tracker": params, **files}) if s.name in nodes]
    group = NodeGroup(specs, log_dir=tmp / "logs", echo=None)
    r: dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "publisher": publisher, "image_qos": image_qos}
    r["driver_dds"] = driver_dds
    r["input_queue"] = input_queue
    r.update(published=frames, error=None, settled=False, logs=str(tmp / "logs"), nodes=list(nodes))
    group.start()
    pids = {spec.name: proc.popen.pid for spec, proc in zip(specs, group.processes, strict=True)}
    sampler = RssSampler(pids, memory_period).start()
    child = None
    try:
        with standalone_node("bench_tracker_stream") as node:
            live = OutputRecorder(node, record_tf=False)
            spin = SpinThread(node)
            try:
                alive = lambda: bool(group.running())  # noqa: E731
                if not wait_until(lambda: not alive() or _tracker_up(node, inputs), startup_timeout, 0.1):
                    r["error"] = f"the tracker did not subscribe within {startup_timeout:.0f} s"
                elif not alive():
                    r["error"] = "the tracker ended before the stream"
                if r["error"]:
                    return r
                stream = [f"{size[0]}x{size[1]}", str(rate), str(frames), publisher, str(lap_frames)]
                child = subprocess.Popen(
                    [sys.executable, __file__, CHILD, *stream],
                    env=_driver_env(driver_dds),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                keyframe_log: list[tuple[float, Any, Any]] = []

                def log_keyframes() -> None:
                    tracker, mapper = live.tracker_status or {}, live.mapper_status or {}
                    t = time.monotonic() - sampler.t0
                    keyframe_log.append((t, tracker.get("keyframes"), mapper.get("keyframes")))

                out = _wait_logging(child, duration + 120.0, timeline_period, log_keyframes)
                t0 = [float(line.split()[1]) for line in out.splitlines() if line.startswith("t0 ")]
                if child.returncode != 0:
                    r["error"] = f"the publisher exited with code {child.returncode}"
                r["settled"] = wait_until(lambda: _settled(live.tracker_status), settle_timeout, 0.1)
                time.sleep(1.0)  # two more status periods: the last counts, not an in-between snapshot
                r["settled"] = r["settled"] and _settled(live.tracker_status)
                status, poses = live.tracker_status or {}, live.camera_poses
                mapper_status = live.mapper_status or {}
                memory = sampler.series()
            finally:
                spin.stop()
    except subprocess.TimeoutExpired:
        r["error"] = "the publisher did not finish"
        return r
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        r["exit_code"] = group.stop().get("tracker")
        sampler.stop()
    wall_offset = time.time() - time.monotonic()  # arrival (monotonic) -> wall time, the stamps' clock
    lat = np.array([(p.received + wall_offset) * 1e3 - p.stamp_ns * 1e-6 for p in poses]) if poses else None
    counts = {
        k: int(status.get(k) or 0)
        for k in ("received", "processed", "dropped", "rejected", "lost_in_transport")
    }
    r.update(counts, paired=counts["processed"] + counts["dropped"], poses=len(poses))
    r.update(state=status.get("state"), keyframes=status.get("keyframes"), resets=status.get("resets", 0))
    r.update(stage_ms=status.get("stage_ms"), tracker_latency_ms=status.get("latency_ms"))
    r["lost_by_input"] = {
        k[len("lost_in_transport_") :]: int(v)
        for k, v in status.items()
        if k.startswith("lost_in_transport_")
    }
    r["rejected_reasons"] = {
        k[len("rejected_") :]: int(v) for k, v in status.items() if k.startswith("rejected_") and v
    }
    r["latency_p50_ms"] = float(np.percentile(lat, 50)) if lat is not None else float("nan")
    r["latency_p90_ms"] = float(np.percentile(lat, 90)) if lat is not None else float("nan")
    r["keyframes_reused"] = status.get("keyframes_reused")
    if pipeline:
        r["mapper_keyframes"] = mapper_status.get("keyframes")
        r["mapper_queue_max"] = mapper_status.get("queue_max")
        r["mapper_stage_ms"] = mapper_status.get("stage_ms")
    for name in nodes if t0 else ():
        if name not in memory:
            continue
        t, rss = memory[name]
        t_frames = t0[0] - sampler.t0 + np.arange(frames) / rate  # the publisher's schedule
        during = t >= t_frames[0]
        prefix = "rss" if name == "tracker" else f"{name}_rss"
        r[f"{prefix}_start_mib"] = float(rss[during][0]) if during.any() else float(rss[-1])
        r[f"{prefix}_end_mib"] = float(rss[-1])
        r[f"{prefix}_max_mib"] = float(rss[during].max(initial=rss[-1]))
        r[f"{prefix}_growth_mib_per_1000_frames"] = growth_per_1000_frames(t, rss, t_frames)
    if t0 and keyframe_log:
        r["timeline"] = _timeline(keyframe_log, t0[0] - sampler.t0, rate, frames, memory)
    if r["error"] is None and not r["settled"]:
        r["error"] = f"the tracker's counts did not settle within {settle_timeout:.0f} s"
    if r["error"] is None and r["exit_code"] == 0 and not keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)
        r["logs"] = None
    return r


def _wait_logging(child: subprocess.Popen, timeout: float, period: float, log: Any) -> str:
    """Wait for ``child`` to exit (``timeout`` s at most) calling ``log()`` every ``period`` s; its stdout."""
    end = time.monotonic() + timeout
    next_log = time.monotonic()
    while child.poll() is None:
        now = time.monotonic()
        if now > end:
            raise subprocess.TimeoutExpired(child.args, timeout)
        if now >= next_log:
            log()
            next_log = now + period
        time.sleep(0.1)
    return child.stdout.read()


def _timeline(
    keyframe_log: list[tuple[float, Any, Any]],
    stream_start: float,
    rate: float,
    frames: int,
    memory: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, list]:
    """The JSON's ``timeline``: at each keyframe-count sample (seconds since the stream began) the frames
    published by then, the tracker's and the mapper's keyframes, and each node's RSS (MiB, interpolated
    between its samples), so that memory growth can be set against the map's."""
    t = np.array([entry[0] for entry in keyframe_log])
    since = t - stream_start
    out: dict[str, list] = {
        "t_s": np.round(since, 1).tolist(),
        "frames": np.clip(np.floor(since * rate) + 1, 0, frames).astype(int).tolist(),
        "keyframes": [entry[1] for entry in keyframe_log],
        "mapper_keyframes": [entry[2] for entry in keyframe_log],
    }
    for name, (t_rss, rss) in memory.items():
        out[f"{name}_rss_mib"] = np.round(np.interp(t, t_rss, rss), 1).tolist()
    return out


def _by_input(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""


def _tracker_line(r: dict[str, Any]) -> str:
    n = max(int(r["published"]), 1)
    queue = "" if r.get("input_queue") is None else f" input_queue={r['input_queue']}"
    head = (
        f"tracker[{r['size']} publisher={r['publisher']} driver_dds={r['driver_dds']} "
        f"image_qos={r['image_qos']}{queue}]"
    )
    if "received" not in r:
        return f"{head} FAILED: {r['error']} (logs in {r['logs']})"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected_reasons"].items()))
    line = (
        f"{head} published {r['published']}, received {r['received']} ({100 * r['received'] / n:.1f}%), "
        f"lost in transport {r['lost_in_transport']}{_by_input(r['lost_by_input'])}, "
        f"paired {r['paired']} ({100 * r['paired'] / n:.1f}%): processed {r['processed']}, dropped (stale) "
        f"{r['dropped']}, rejected {r['rejected']}{f' ({reasons})' if reasons else ''}; poses {r['poses']}, "
        f"latency p50 {r['latency_p50_ms']:.1f} ms p90 {r['latency_p90_ms']:.1f} ms"
    )
    line += f", keyframes {r.get('keyframes')} ({r.get('keyframes_reused')} reuses)"
    if r.get("mapper_keyframes") is not None:
        line += f", mapper keyframes {r['mapper_keyframes']} (queue max {r.get('mapper_queue_max')}"
        for stage, t in sorted((r.get("mapper_stage_ms") or {}).items()):
            if stage.startswith("publish"):
                line += f", {stage} {t['mean_ms']:.1f} / {t['max_ms']:.1f} ms mean / max"
        line += ")"
    if r.get("tracker_latency_ms"):
        lat = r["tracker_latency_ms"]
        line += f", tracker-side latency {lat['mean']:.0f} ms mean, {lat['max']:.0f} max (recent frames)"
    for name in r.get("nodes", ["tracker"]):
        prefix = "rss" if name == "tracker" else f"{name}_rss"
        if f"{prefix}_start_mib" in r:
            growth = r[f"{prefix}_growth_mib_per_1000_frames"]
            line += (
                f", {name} RSS {r[f'{prefix}_start_mib']:.0f} -> {r[f'{prefix}_end_mib']:.0f} "
                f"(max {r[f'{prefix}_max_mib']:.0f}) MiB, "
                + ("growth n/a" if growth is None else f"growth {growth:+.1f} MiB/1000 frames")
            )
    if r["error"]:
        line += f"; {r['error']} (logs in {r['logs']})"
    elif r["logs"]:
        line += f"; tracker exit code {r['exit_code']} (logs in {r['logs']})"
    return line


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        size, rate, frames, reliability, lap_frames = (sys.argv[2:7] + ["0"])[:5]
        publish(_size(size), float(rate), int(frames), reliability, int(lap_frames))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=_size, nargs="+", default=[(640, 480), (1280, 720)])
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of stream per run")
    ap.add_argument("--publisher", nargs="+", default=["reliable", "best_effort"])
    ap.add_argument("--image-qos", nargs="+", default=["auto", "sensor_data"], help="the tracker's image_qos")
    ap.add_argument(
        "--driver-dds",
        nargs="+",
        choices=["fastdds-default", "online3r-profile"],
        default=["fastdds-default", "online3r-profile"],
        help="the publisher's Fast DDS set-up (module docstring)",
    )
    ap.add_argument("--tracker", action="store_true", help="stream the synthetic lap into a tracker node")
    ap.add_argument("--lap-frames", type=int, default=240, help="--tracker: frames per lap of the orbit")
    ap.add_argument(
        "--input-queue", type=int, default=None, help="--tracker: its input_queue (default: the node's)"
    )
    ap.add_argument(
        "--pipeline", action="store_true", help="--tracker: also run the mapper and the retrieval node"
    )
    ap.add_argument("--keep-logs", action="store_true", help="--tracker: keep the nodes' logs of every run")
    ap.add_argument("--json", type=Path, help="also write every run's figures to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "ROS_DOMAIN_ID" not in os.environ:
        from online3r_ros.ros.replay.domain import reserve_domain_id

        lease = reserve_domain_id()
        os.environ["ROS_DOMAIN_ID"] = str(lease.domain_id)
    print(
        f"{Path(__file__).name}: {args.rate:g} Hz, {args.duration:g} s per run, "
        f"domain {os.environ['ROS_DOMAIN_ID']}"
    )
    results = []
    runs = [
        (size, publisher, dds, qos)
        for size in args.size
        for publisher in args.publisher
        for dds in args.driver_dds
        for qos in args.image_qos
    ]
    for size, publisher, dds, qos in runs:
        if args.tracker:
            r = run_tracker(
                size,
                args.rate,
                args.duration,
                publisher,
                qos,
                dds,
                lap_frames=args.lap_frames,
                input_queue=args.input_queue,
                pipeline=args.pipeline,
                keep_logs=args.keep_logs,
            )
            results.append(r)
            print(_tracker_line(r), flush=True)
            continue
        r = run(size, args.rate, args.duration, publisher, qos, dds)
        results.append(r)
        n = r["published"]
        print(
            f"stream[{r['size']} publisher={publisher} driver_dds={dds} image_qos={qos}] received "
            f"colour {r['rgb']}/{n} "
            f"depth {r['depth']}/{n} info {r['info']}/{n}, lost {r['lost']}, paired {r['paired']}/{n} "
            f"({100 * r['paired'] / n:.1f}%), unpaired {r['unpaired']}, stale {r['stale']}, "
            f"latency p50 "
            f"{r['latency_p50_ms']:.1f} ms p90 {r['latency_p90_ms']:.1f} ms, RSS "
            f"{r['rss_start_mib']:.0f} -> {r['rss_end_mib']:.0f} MiB",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
