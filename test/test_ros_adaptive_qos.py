"""Input subscriptions that follow their publishers' reliability (online3r_ros.ros.adaptive_qos), over real
Fast DDS in one process on a domain of its own."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from online3r_ros.ros.adaptive_qos import AdaptiveSubscription, reliability_for  # noqa: E402
from online3r_ros.ros.qos import sensor_data_qos  # noqa: E402

pytestmark = pytest.mark.ros
RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def test_reliability_rule() -> None:
    assert reliability_for([], BEST_EFFORT) == BEST_EFFORT  # nothing to match yet: unchanged
    assert reliability_for([RELIABLE, RELIABLE], BEST_EFFORT) == RELIABLE
    assert reliability_for([RELIABLE, BEST_EFFORT], RELIABLE) == BEST_EFFORT  # the only one matching both


def _spin_until(executor, condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_subscription_follows_the_publishers(dds_domain: int) -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=dds_domain)
    try:
        node = rclpy.create_node("adaptive_qos_test", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        got: list[str] = []
        sub = AdaptiveSubscription(node, String, "adaptive/input", lambda m: got.append(m.data), depth=10)
        assert sub.reliability == RELIABLE and sub.refresh() is None  # no publisher yet
        best_effort = node.create_publisher(String, "adaptive/input", sensor_data_qos(5))
        assert _spin_until(executor, lambda: node.count_publishers("adaptive/input") == 1)
        change = sub.refresh()
        assert sub.reliability == BEST_EFFORT and "best effort" in change
        assert _spin_until(executor, lambda: best_effort.get_subscription_count() == 1)
        best_effort.publish(String(data="a"))
        assert _spin_until(executor, lambda: got == ["a"])  # a best-effort writer now reaches the reader
        node.destroy_publisher(best_effort)
        reliable = node.create_publisher(String, "adaptive/input", sensor_data_qos(5, reliable=True))
        assert _spin_until(
            executor,
            lambda: (
                [i.qos_profile.reliability for i in node.get_publishers_info_by_topic(sub.topic)]
                == [RELIABLE]
            ),
        )
        assert "every publisher is reliable" in sub.refresh() and sub.reliability == RELIABLE
        assert _spin_until(executor, lambda: reliable.get_subscription_count() == 1)
        reliable.publish(String(data="b"))
        assert _spin_until(executor, lambda: got == ["a", "b"])
        assert sub.refresh() is None
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
