"""Full-resolution RGB-D streams over DDS into the tracker's input path: received, paired, latency, memory.

A publisher process plays a camera driver: colour (rgb8), aligned depth (16UC1) and CameraInfo with one stamp
per frame, depth published just before its colour image (as RGB-D drivers often do), at ``--rate`` Hz and
``--size`` WxH, reliable or best effort (``--publisher``). This process subscribes exactly as the tracker
node does (``image_qos`` ``auto``: :class:`~online3r_ros.ros.adaptive_qos.AdaptiveSubscription`, keep-last
10; or a fixed profile) and pairs with the tracker's :class:`~online3r_ros.ros.nodes.inputs.InputSync`
(every colour image is offered for pairing; nothing is processed, so nothing is dropped as stale). Printed per
run: colour / depth / CameraInfo messages received of those published, colour images paired with their depth
and CameraInfo, latency from stamp to reception (p50 / p90 ms), this process's RSS at start and end.

    .venv/bin/python benchmarks/bench_camera_stream.py                       # 640x480 and 1280x720, 30 Hz
    .venv/bin/python benchmarks/bench_camera_stream.py --size 640x480 --publisher best_effort --duration 60
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = "--publisher-child"


def _qos(kind: str, depth: int = 10):
    from online3r_ros.ros.qos import sensor_data_qos

    return sensor_data_qos(depth, reliable=kind == "reliable")


def publish(size: tuple[int, int], rate: float, frames: int, reliability: str) -> None:
    """The camera-driver stand-in (child process)."""
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from online3r_ros.ros.camera_info import Intrinsics, intrinsics_to_camera_info

    w, h = size
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
    K = np.array([[w * 0.9, 0, w / 2], [0, w * 0.9, h / 2], [0, 0, 1.0]])
    info = intrinsics_to_camera_info(Intrinsics(width=w, height=h, K=K, frame_id="camera"))
    t0 = time.monotonic()
    for i in range(frames):
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


def run(size: tuple[int, int], rate: float, duration: float, publisher: str, image_qos: str) -> dict:
    """One publisher/subscriber run; returns the counts (see the module docstring)."""
    import rclpy
    from sensor_msgs.msg import CameraInfo, Image

    from online3r_ros.ros.adaptive_qos import AdaptiveSubscription
    from online3r_ros.ros.nodes.inputs import InputSync
    from online3r_ros.ros.qos import qos_from_parameter
    from online3r_ros.ros.time import stamp_to_ns

    frames = int(round(duration * rate))
    rss0 = _rss_mib()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_tracker_inputs", context=context)
    sync = InputSync(need_depth=True, need_info=True, sync_tolerance=0.002, sync_wait=0.5)
    counts = {"rgb": 0, "depth": 0, "info": 0, "paired": 0, "unpaired": 0, "stale": 0}
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
    for msg_type, topic, cb in inputs:
        if image_qos == "auto":
            adaptive.append(AdaptiveSubscription(node, msg_type, topic, cb, depth=10))
        else:
            node.create_subscription(msg_type, topic, cb, qos_from_parameter(image_qos, depth=10))
    child = subprocess.Popen(
        [sys.executable, __file__, CHILD, f"{size[0]}x{size[1]}", str(rate), str(frames), publisher],
        env=dict(os.environ),
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
        "published": frames,
        **counts,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p90_ms": float(np.percentile(lat, 90)),
        "rss_start_mib": rss0,
        "rss_end_mib": _rss_mib(),
    }


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        size, rate, frames, reliability = sys.argv[2:6]
        publish(_size(size), float(rate), int(frames), reliability)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=_size, nargs="+", default=[(640, 480), (1280, 720)])
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of stream per run")
    ap.add_argument("--publisher", nargs="+", default=["reliable", "best_effort"])
    ap.add_argument("--image-qos", nargs="+", default=["auto", "sensor_data"], help="the tracker's image_qos")
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
    for size in args.size:
        for publisher in args.publisher:
            for qos in args.image_qos:
                r = run(size, args.rate, args.duration, publisher, qos)
                n = r["published"]
                print(
                    f"stream[{r['size']} publisher={publisher} image_qos={qos}] received "
                    f"colour {r['rgb']}/{n} "
                    f"depth {r['depth']}/{n} info {r['info']}/{n}, paired {r['paired']}/{n} "
                    f"({100 * r['paired'] / n:.1f}%), unpaired {r['unpaired']}, stale {r['stale']}, "
                    f"latency p50 "
                    f"{r['latency_p50_ms']:.1f} ms p90 {r['latency_p90_ms']:.1f} ms, RSS "
                    f"{r['rss_start_mib']:.0f} -> {r['rss_end_mib']:.0f} MiB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
