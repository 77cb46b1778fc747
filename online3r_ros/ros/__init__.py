"""ROS 2 layer: message conversion, QoS profiles, TF. The only part of the package that imports rclpy."""
