"""TfBroadcaster: /tf and latched /tf_static, accumulation by child frame, validation, missing tf2_msgs.

The logic tests use a stand-in node and message type, so they run without tf2_msgs; the over-DDS tests need
the real ``tf2_msgs`` (built into .venv by scripts/setup.sh) and skip with that reason otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
pytest.importorskip("geometry_msgs.msg", reason="geometry_msgs is not installed")

from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from online3r_ros.ros import tf as tf_module  # noqa: E402
from online3r_ros.ros.errors import PoseError, RosDependencyError  # noqa: E402
from online3r_ros.ros.pose import T_LINK_OPTICAL, pose_to_matrix, tqs_to_matrix, transform_stamped  # noqa: E402

pytestmark = pytest.mark.ros

TF2_SKIP_REASON = (
    "tf2_msgs is not importable: it is built into .venv by the setup step (scripts/setup.sh) and needs the "
    "environment set by .venv/bin/activate"
)


class FakeTFMessage:
    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = list(transforms)


class FakePublisher:
    def __init__(self, topic: str, qos: Any) -> None:
        self.topic, self.qos, self.sent = topic, qos, []

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)


class FakeNode:
    def __init__(self) -> None:
        self.publishers: dict[str, FakePublisher] = {}
        self.destroyed: list[str] = []

    def create_publisher(self, msg_type: type, topic: str, qos: Any) -> FakePublisher:
        assert msg_type is FakeTFMessage
        self.publishers[topic] = FakePublisher(topic, qos)
        return self.publishers[topic]

    def destroy_publisher(self, pub: FakePublisher) -> None:
        self.destroyed.append(pub.topic)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[tf_module.TfBroadcaster, FakeNode]:
    monkeypatch.setattr(tf_module, "tf_message_type", lambda: FakeTFMessage)
    node = FakeNode()
    return tf_module.TfBroadcaster(node, use_tf2_ros=False), node


def _tr(parent: str, child: str, x: float = 0.0) -> Any:
    return transform_stamped(tqs_to_matrix([x, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]), parent, child, stamp=5)


def test_publishers_use_tf2_ros_qos(fake) -> None:
    broadcaster, node = fake
    assert not broadcaster.uses_tf2_ros
    tf_pub, static_pub = node.publishers["/tf"], node.publishers["/tf_static"]
    assert tf_pub.qos.reliability == ReliabilityPolicy.RELIABLE
    assert tf_pub.qos.durability == DurabilityPolicy.VOLATILE and tf_pub.qos.depth == 100
    assert static_pub.qos.reliability == ReliabilityPolicy.RELIABLE
    assert static_pub.qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and static_pub.qos.depth == 1


def test_static_transforms_accumulate_by_child_frame(fake) -> None:
    broadcaster, node = fake
    broadcaster.send_static_transform(_tr("base_link", "camera_link", 0.1))
    broadcaster.send_static_transform(
        [_tr("camera_link", "camera_optical_frame"), _tr("base_link", "imu", 0.3)]
    )
    broadcaster.send_static_transform(_tr("base_link", "camera_link", 0.2))  # replaces the first one
    sent = node.publishers["/tf_static"].sent
    assert [len(m.transforms) for m in sent] == [1, 3, 3]
    last = {t.child_frame_id: t for t in sent[-1].transforms}
    assert set(last) == {"camera_link", "camera_optical_frame", "imu"}
    assert last["camera_link"].transform.translation.x == 0.2
    assert {t.child_frame_id for t in broadcaster.static_transforms} == set(last)
    assert node.publishers["/tf"].sent == []


def test_dynamic_transforms_are_published_as_given(fake) -> None:
    broadcaster, node = fake
    broadcaster.send_transform(_tr("map", "odom"))
    broadcaster.send_transform([_tr("odom", "base_link", 1.0), _tr("map", "odom", 2.0)])
    sent = node.publishers["/tf"].sent
    assert [[t.child_frame_id for t in m.transforms] for m in sent] == [["odom"], ["base_link", "odom"]]
    assert node.publishers["/tf_static"].sent == []
    broadcaster.destroy()
    assert sorted(node.destroyed) == ["/tf", "/tf_static"]


@pytest.mark.parametrize(("parent", "child"), [("map", ""), ("", "odom"), ("odom", "odom")])
def test_bad_frame_ids_raise_and_publish_nothing(fake, parent: str, child: str) -> None:
    broadcaster, node = fake
    tr = _tr("map", "odom")
    tr.header.frame_id, tr.child_frame_id = parent, child
    with pytest.raises(PoseError) as err:
        broadcaster.send_transform([_tr("map", "odom"), tr])
    assert err.value.fields["index"] == 1
    with pytest.raises(PoseError):
        broadcaster.send_static_transform(tr)
    assert node.publishers["/tf"].sent == [] and node.publishers["/tf_static"].sent == []
    assert broadcaster.static_transforms == []


def test_bad_quaternion_raises(fake) -> None:
    broadcaster, _ = fake
    tr = _tr("map", "odom")
    tr.transform.rotation.w = 0.5
    with pytest.raises(PoseError, match="transform.rotation"):
        broadcaster.send_transform(tr)


def test_missing_tf2_msgs_raises_with_setup_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tf2_msgs", None)
    monkeypatch.setitem(sys.modules, "tf2_msgs.msg", None)
    assert not tf_module.tf2_msgs_available()
    with pytest.raises(RosDependencyError, match="setup") as err:
        tf_module.TfBroadcaster(FakeNode())
    assert isinstance(err.value, ImportError)


def test_requiring_tf2_ros_without_it_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf_module, "tf_message_type", lambda: FakeTFMessage)
    monkeypatch.setitem(sys.modules, "tf2_ros", None)
    with pytest.raises(RosDependencyError, match="tf2_ros"):
        tf_module.TfBroadcaster(FakeNode(), use_tf2_ros=True)
    assert not tf_module.TfBroadcaster(FakeNode()).uses_tf2_ros  # default falls back to own publishers


# ------------------------------------------------------------------------------------- real tf2_msgs over DDS

needs_tf2_msgs = pytest.mark.skipif(not tf_module.tf2_msgs_available(), reason=TF2_SKIP_REASON)


@needs_tf2_msgs
def test_tf_message_type_is_the_upstream_definition() -> None:
    from tf2_msgs.msg import TFMessage

    msg = tf_module.tf_message([_tr("map", "odom")])
    assert isinstance(msg, TFMessage)
    assert TFMessage.get_fields_and_field_types() == {
        "transforms": "sequence<geometry_msgs/TransformStamped>"
    }


@needs_tf2_msgs
def test_late_subscriber_receives_all_static_transforms_in_process(
    monkeypatch: pytest.MonkeyPatch, dds_domain: int
) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tf2_msgs.msg import TFMessage

    from online3r_ros.ros.qos import tf_qos, tf_static_qos

    domain = dds_domain
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        pub_node = rclpy.create_node("online3r_tf_test_pub", context=context)
        sub_node = rclpy.create_node("online3r_tf_test_sub", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        broadcaster = tf_module.TfBroadcaster(pub_node, use_tf2_ros=False)
        T_base_link = tqs_to_matrix([0.2, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0])
        broadcaster.send_static_transform(transform_stamped(T_base_link, "base_link", "camera_link", stamp=7))
        broadcaster.send_static_transform(
            transform_stamped(T_LINK_OPTICAL, "camera_link", "camera_optical_frame", stamp=7)
        )
        got: dict[str, Any] = {}
        sub_node.create_subscription(
            TFMessage, "/tf_static", lambda m: got.setdefault("static", m), tf_static_qos()
        )
        sub_node.create_subscription(TFMessage, "/tf", lambda m: got.setdefault("tf", m), tf_qos())
        deadline = time.monotonic() + 10.0
        while len(got) < 2 and time.monotonic() < deadline:
            broadcaster.send_transform(transform_stamped(np.eye(4), "odom", "base_link", stamp=8))
            executor.spin_once(timeout_sec=0.05)
        assert "static" in got and "tf" in got, f"received only {sorted(got)}"
        static = {t.child_frame_id: t for t in got["static"].transforms}
        assert set(static) == {"camera_link", "camera_optical_frame"}
        np.testing.assert_allclose(pose_to_matrix(static["camera_optical_frame"]), T_LINK_OPTICAL, atol=1e-15)
        np.testing.assert_allclose(pose_to_matrix(static["camera_link"]), T_base_link, atol=1e-15)
        assert got["tf"].transforms[0].child_frame_id == "base_link"
        executor.shutdown()
        broadcaster.destroy()
    finally:
        rclpy.try_shutdown(context=context)
