"""online3r_ros: Online3R dense SLAM for ROS 2.

The package is split in two layers whose dependencies point one way:

- a ROS-free core (``geometry``, ``model``, ``slam``, ``sources``, ``datasets``, ``eval``, ``cli``) that never
  imports rclpy, so it runs in tests, in replay and inside the nodes alike;
- a thin ROS 2 layer (``online3r_ros.ros``): message conversion, QoS, TF and, later, the nodes.
"""

__version__ = "0.1.0"
