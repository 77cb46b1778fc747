"""Check the environment built by scripts/setup.sh (pip-only mode).

    .venv/bin/python scripts/check_env.py           # imports + tf2_msgs type hashes
    .venv/bin/python scripts/check_env.py --dds     # ... + a TFMessage round trip between two processes
    .venv/bin/python scripts/check_env.py --hashes-only | --dds-only

Exit status 0 when every check passes, 1 otherwise (each failure is printed with its reason).
The DDS check runs on a random domain id with localhost-only discovery, so it never talks to other
ROS 2 systems.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

# Upstream RIHS01 type hashes (ROS 2 Jazzy/Kilted tf2_msgs, as `ros2 topic info -v /tf` reports them).
UPSTREAM_HASHES = {
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    "tf2_msgs/msg/TF2Error": "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
}

REQUIRED_MODULES = [
    "numpy",
    "torch",
    "cv2",
    "scipy",
    "yaml",
    "safetensors",
    "evo",
    "rosbags",
    "faiss",
    "asmk.hamming",
    "rclpy",
    "sensor_msgs.msg",
    "geometry_msgs.msg",
    "nav_msgs.msg",
    "visualization_msgs.msg",
    "diagnostic_msgs.msg",
    "std_srvs.srv",
    "tf2_msgs.msg",
    "online3r_ros",
]


def check_imports() -> list[str]:
    """Import every required module; return one message per failure."""
    errors = []
    for name in REQUIRED_MODULES:
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - report any import failure with its reason
            errors.append(f"import {name} failed: {type(exc).__name__}: {exc}")
    return errors


def check_type_hashes(prefix: Path) -> list[str]:
    """Compare the generated tf2_msgs type descriptions in ``prefix/share`` with the upstream hashes."""
    errors = []
    for type_name, expected in UPSTREAM_HASHES.items():
        package, kind, name = type_name.split("/")
        path = prefix / "share" / package / kind / f"{name}.json"
        if not path.is_file():
            errors.append(f"{type_name}: type description {path} missing")
            continue
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads(path.read_text())["type_hashes"]}
        got = hashes.get(type_name)
        if got != expected:
            errors.append(f"{type_name}: type hash {got} != upstream {expected}")
        else:
            print(f"[check_env] {type_name} type hash matches upstream ({got})")
    return errors


_PUBLISHER = """
import time, rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage
rclpy.init()
node = rclpy.create_node("online3r_check_env_pub")
qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
pub = node.create_publisher(TFMessage, "/online3r_check_env_tf", qos)
t = TransformStamped()
t.header.frame_id, t.child_frame_id = "map", "camera"
t.transform.translation.x, t.transform.rotation.w = 1.25, 1.0
pub.publish(TFMessage(transforms=[t]))
end = time.monotonic() + 30.0  # the checking process terminates this one once it has the message
try:
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
except ExternalShutdownException:  # SIGTERM from the checking process
    pass
"""


def check_dds_round_trip(timeout_s: float = 20.0) -> list[str]:
    """Publish a TFMessage from a child process and receive it here over Fast DDS."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    child = subprocess.Popen([sys.executable, "-c", _PUBLISHER], env=env)
    received: list[TFMessage] = []
    try:
        rclpy.init()
        node = rclpy.create_node("online3r_check_env_sub")
        qos = QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
        node.create_subscription(TFMessage, "/online3r_check_env_tf", received.append, qos)
        end = time.monotonic() + timeout_s
        while not received and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
        rclpy.shutdown()
    finally:
        child.terminate()
        child.wait(timeout=30)
    if not received:
        return [f"no TFMessage received over DDS within {timeout_s:.0f} s (domain {env['ROS_DOMAIN_ID']})"]
    tf = received[0].transforms[0]
    if (tf.header.frame_id, tf.child_frame_id, tf.transform.translation.x) != ("map", "camera", 1.25):
        return [f"TFMessage content changed in transit: {tf}"]
    domain = env["ROS_DOMAIN_ID"]
    print(f"[check_env] TFMessage round trip between two processes over Fast DDS ok (domain {domain})")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dds", action="store_true", help="also run a TFMessage round trip over Fast DDS")
    parser.add_argument("--hashes-only", action="store_true", help="only compare the tf2_msgs type hashes")
    parser.add_argument("--dds-only", action="store_true", help="only run the TFMessage round trip")
    args = parser.parse_args(argv)

    if args.dds_only:
        errors = check_dds_round_trip()
    else:
        errors = check_type_hashes(Path(sys.prefix))
        if not args.hashes_only:
            errors += check_imports()
            if args.dds and not errors:
                errors += check_dds_round_trip()
    for message in errors:
        print(f"[check_env] FAILED: {message}", file=sys.stderr)
    if not errors:
        print("[check_env] all checks passed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
