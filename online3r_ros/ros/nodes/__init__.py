"""ROS 2 nodes: ``tracker`` and ``mapper`` (run them with their console scripts or ``python -m``)."""
