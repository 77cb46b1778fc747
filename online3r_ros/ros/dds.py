"""Fast DDS settings that carry full-resolution images between processes on one machine.

Fast DDS (the default rmw) hands a message to a reader on the same host through a shared-memory segment
owned by the *writing* process: 512 KiB by default. A 1280x720 rgb8 image (2.7 MB) or its 16UC1 depth
(1.8 MB) crosses that segment in fragments, and when the reader's transport thread is a moment late the writer
reuses fragment buffers the reader has not copied yet. A reliable reader then holds every later image back
until the writer repairs the fragment or its keep-last history gives the sample up (about 0.3 s at 30 Hz with
history 10: the image is lost, the next ones arrive in a burst); a best-effort reader just loses it. Measured
with ``benchmarks/bench_camera_stream.py --tracker`` (1280x720 RGB-D at 30 Hz into the tracker node, 30 s):
the default segment lost 1.0-2.2% of the images in twelve runs (reliable publisher; best effort: 96%), each
reported by DDS as lost (the tracker's ``lost_in_transport``); a 16 MiB segment in the *publisher* lost none,
reliable or best effort, and cut the pose latency (p50 239 -> 160 ms); the same profile in the tracker alone
changed nothing.

:func:`large_data_profile` is that profile (``fastdds_large_data.xml``, installed with the package: the
built-in shared-memory and UDPv4 transports, the segment 16 MiB). :func:`use_large_data_profile` makes it
this process's default before ``rclpy.init`` unless the user already configured Fast DDS; the nodes call it,
so what they publish (keyframes, maps, prompts) crosses in one piece. The camera driver needs it as well:
``export FASTDDS_DEFAULT_PROFILES_FILE=$(online3r dds-profile)`` before starting it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["FASTDDS_SETTINGS", "large_data_profile", "use_large_data_profile"]

#: Environment variables by which a user configures Fast DDS: when one is set, the nodes leave Fast DDS alone.
FASTDDS_SETTINGS = (
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_BUILTIN_TRANSPORTS",
)
_FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "": the default rmw (Fast DDS)


def large_data_profile() -> Path:
    """The shipped Fast DDS XML profile (module docstring); the file exists in every install."""
    return Path(__file__).with_name("fastdds_large_data.xml")


def use_large_data_profile(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` to :func:`large_data_profile` in ``environ`` (default:
    ``os.environ``; call before ``rclpy.init``) when the rmw is Fast DDS and none of
    :data:`FASTDDS_SETTINGS` is set. Returns the path it set, or ``None`` when it left things as they were.

    >>> env = {}
    >>> use_large_data_profile(env).endswith("fastdds_large_data.xml")
    True
    >>> use_large_data_profile({"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}) is None
    True
    >>> use_large_data_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None
    True
    """
    env = os.environ if environ is None else environ
    if env.get("RMW_IMPLEMENTATION", "") not in _FASTDDS_RMWS:
        return None
    if any(env.get(name) for name in FASTDDS_SETTINGS):
        return None
    path = str(large_data_profile())
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path
