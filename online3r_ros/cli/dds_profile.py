"""``online3r dds-profile``: print the path of the Fast DDS profile for full-resolution images.

The nodes use it unless Fast DDS is configured otherwise (``online3r_ros/ros/dds.py`` says why). Start the
camera driver with it too, since the writer's shared-memory segment is the one that counts::

    export FASTDDS_DEFAULT_PROFILES_FILE=$(online3r dds-profile)
    ros2 launch realsense2_camera rs_launch.py ...
"""

from __future__ import annotations

import argparse

from online3r_ros.ros.dds import large_data_profile


def run(args: argparse.Namespace) -> int:  # noqa: ARG001 - the handler signature
    print(large_data_profile())
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``dds-profile`` subcommand."""
    p = subparsers.add_parser(
        "dds-profile",
        help="print the Fast DDS profile path for full-resolution camera streams (give it to the driver)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run)
    return p
