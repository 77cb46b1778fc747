"""ROS 2 layer: message conversion, QoS profiles, TF. The only part of the package that imports rclpy.

Modules (import them directly; this package imports nothing eagerly so ``import online3r_ros.ros`` is cheap):

- :mod:`~online3r_ros.ros.errors`: typed exceptions (no ROS dependency).
- :mod:`~online3r_ros.ros.time`: stamps <-> nanoseconds / seconds.
- :mod:`~online3r_ros.ros.image`: ``sensor_msgs/Image`` <-> numpy, depth in metres.
- :mod:`~online3r_ros.ros.compressed`: ``CompressedImage`` jpeg/png/compressedDepth.
- :mod:`~online3r_ros.ros.camera_info`: ``CameraInfo`` <-> :class:`Intrinsics`, rectification maps.
- :mod:`~online3r_ros.ros.pointcloud`: ``PointCloud2`` <-> numpy (vectorised).
- :mod:`~online3r_ros.ros.pose`: SE(3)/Sim(3) <-> ``geometry_msgs``/``nav_msgs``, REP-103 frame chain.
- :mod:`~online3r_ros.ros.qos`: QoS profiles (imports rclpy).
- :mod:`~online3r_ros.ros.tf`: :class:`TfBroadcaster` (imports rclpy; tf2_msgs lazily).

The readers are duck-typed, so they also accept ``rosbags`` messages; builders import the message packages
lazily.
"""
