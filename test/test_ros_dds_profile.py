"""The Fast DDS profile for full-resolution images (``online3r_ros.ros.dds``) and the message-lost reporting
of the tracker's input subscriptions (``online3r_ros.ros.adaptive_qos.create_input_subscription``), over
real Fast DDS between two processes on a domain of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
from sensor_msgs.msg import Image  # noqa: E402

from online3r_ros.ros import dds  # noqa: E402
from online3r_ros.ros.adaptive_qos import create_input_subscription  # noqa: E402
from online3r_ros.ros.qos import sensor_data_qos  # noqa: E402

pytestmark = pytest.mark.ros
NS = {"f": "http://www.eprosima.com"}


def test_profile_is_used_only_where_nothing_else_is_set() -> None:
    env: dict[str, str] = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}
    assert dds.use_large_data_profile(env) == str(dds.large_data_profile())
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(dds.large_data_profile())
    for name in dds.FASTDDS_SETTINGS:  # the user's own Fast DDS set-up wins, untouched
        mine = {name: "/etc/my_fastdds.xml"}
        assert dds.use_large_data_profile(mine) is None and mine == {name: "/etc/my_fastdds.xml"}


def test_shipped_profile_keeps_the_builtin_transports_with_a_large_segment() -> None:
    root = ET.parse(dds.large_data_profile()).getroot()
    descriptors = {
        d.findtext("f:transport_id", namespaces=NS): d for d in root.iterfind(".//f:transport_descriptor", NS)
    }
    types = sorted(d.findtext("f:type", namespaces=NS) for d in descriptors.values())
    assert types == ["SHM", "UDPv4"]  # what Fast DDS uses by default: other hosts still reach the nodes
    shm = next(d for d in descriptors.values() if d.findtext("f:type", namespaces=NS) == "SHM")
    assert int(shm.findtext("f:segment_size", namespaces=NS)) >= 8 * 2**20  # a 1280x720 RGB-D frame: 4.6 MB
    participant = root.find(".//f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//f:userTransports/f:transport_id", NS)]
    assert sorted(used) == sorted(descriptors)


_SEGMENT_CHILD = """
import os, rclpy
before = set(os.listdir("/dev/shm"))
rclpy.init()
node = rclpy.create_node("segment_probe")
new = [f for f in set(os.listdir("/dev/shm")) - before if f.startswith("fastdds_") and "_" not in f[8:]]
new = [f for f in new if not f.startswith("fastdds_port")]  # the segments, not the listening ports
print(max(os.stat("/dev/shm/" + f).st_size for f in new))
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm: Fast DDS has no shared memory here")
def test_fast_dds_takes_the_profile(dds_domain: int) -> None:
    """A process started like the nodes (the profile set before ``rclpy.init``) gets a 16 MiB segment from
    Fast DDS (512 KiB without), and Fast DDS reports no error reading the file."""

    def segment_size(profile: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k not in dds.FASTDDS_SETTINGS}
        env["ROS_DOMAIN_ID"] = str(dds_domain)
        if profile is not None:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
        out = subprocess.run(
            [sys.executable, "-c", _SEGMENT_CHILD], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "Error" not in out.stderr, out.stderr
        return int(out.stdout.split()[-1])

    default, large = segment_size(None), segment_size(str(dds.large_data_profile()))
    assert default < 2**20 and large >= 16 * 2**20, (default, large)


_BURST_CHILD = """
import sys, time, rclpy
from sensor_msgs.msg import Image
from online3r_ros.ros.qos import sensor_data_qos
big, small = int(sys.argv[1]), int(sys.argv[2])
rclpy.init()
node = rclpy.create_node("burst")
pub = node.create_publisher(Image, "burst/image", sensor_data_qos(5))
deadline = time.monotonic() + 20
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
small_image = Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3))
pub.publish(small_image)  # first: a reader counts gaps from the first sequence number it saw
time.sleep(0.5)
image = Image(height=720, width=1280, encoding="rgb8", step=3 * 1280, data=bytes(1280 * 720 * 3))
for i in range(big):  # as fast as it goes: the receiver's UDP buffer overflows, whole images are lost
    pub.publish(image)
for i in range(small):  # paced small ones after: the reader sees the gap in the sequence numbers
    time.sleep(0.2)
    pub.publish(small_image)
time.sleep(1.0)
node.destroy_node()
rclpy.shutdown()
"""


def test_messages_lost_in_transport_are_reported(dds_domain: int) -> None:
    """A best-effort burst of 1280x720 images over UDP loses images; the reader's ``on_lost`` accounts for
    every one of them (received + reported lost = published)."""
    big, small = 40, 5
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=dds_domain)
    try:
        node = rclpy.create_node("lost_probe", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received, lost = [], []
        create_input_subscription(
            node, Image, "burst/image", lambda m: received.append(m.width), sensor_data_qos(100), lost.append
        )
        env = {k: v for k, v in os.environ.items() if k not in dds.FASTDDS_SETTINGS}
        env.update(ROS_DOMAIN_ID=str(dds_domain), FASTDDS_BUILTIN_TRANSPORTS="UDPv4")
        child = subprocess.Popen([sys.executable, "-c", _BURST_CHILD, str(big), str(small)], env=env)
        try:
            deadline = time.monotonic() + 60
            while child.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            for _ in range(20):  # what is still queued
                executor.spin_once(timeout_sec=0.05)
        finally:
            child.kill()
            child.wait()
        assert received.count(1) == 1 + small  # the paced small images arrived: every gap is known
        assert sum(lost) > 0, "no image lost: the burst did not overflow the receive buffer"
        assert len(received) + sum(lost) == 1 + big + small
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
