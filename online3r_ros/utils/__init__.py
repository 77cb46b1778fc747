"""Small ROS-free helpers shared across the package (no torch-model or ROS imports)."""

from .atomic import save_atomic

__all__ = ["save_atomic"]
