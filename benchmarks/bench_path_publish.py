"""The mapper's all-frames ``nav_msgs/Path``: Python message objects + rclpy serialisation vs
:func:`~online3r_ros.ros.path_cdr.path_cdr` (numpy), and on the receiving side (the recorder of ``bag
evaluate`` and the benchmarks) rclpy deserialisation + one matrix per pose vs
:func:`~online3r_ros.ros.path_cdr.path_from_cdr`, side by side, best of ``--repeats``.

Usage::

    .venv/bin/python benchmarks/bench_path_publish.py [--sizes 1000 9000 36000] [--repeats 3]

Per size: milliseconds to build and serialise the message both ways (what publishing costs the mapper under
its lock; publishing the bytes themselves takes well under a millisecond), a check that both deserialise to
the same message, and milliseconds to read it back into ``(stamp, [4, 4] pose)`` pairs both ways
(:meth:`~online3r_ros.ros.replay.OutputRecorder._path_poses`) with a check that they agree. Needs rclpy (the
project's environment).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from online3r_ros.ros.path_cdr import path_cdr
from online3r_ros.ros.pose import matrices_to_poses, pose_to_matrix
from online3r_ros.ros.replay import OutputRecorder
from online3r_ros.ros.time import ns_to_stamp, stamp_to_ns


def _best(fn, repeats: int) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best, out


def _objects(frame: str, stamps: np.ndarray, poses: np.ndarray) -> bytes:
    """What the mapper did before: one PoseStamped object per frame, then rclpy's serialiser."""
    msg = Path(header=Header(frame_id=frame, stamp=ns_to_stamp(int(stamps[-1]))))
    msg.poses = [
        PoseStamped(header=Header(frame_id=frame, stamp=ns_to_stamp(t)), pose=p)
        for t, p in zip(stamps.tolist(), matrices_to_poses(poses), strict=True)
    ]
    return serialize_message(msg)


def _objects_read(data: bytes) -> list[tuple[int, np.ndarray]]:
    """What the recorder did before: rclpy's deserialiser, then one matrix per pose."""
    msg = deserialize_message(data, Path)
    return [(stamp_to_ns(p.header.stamp), pose_to_matrix(p.pose)) for p in msg.poses]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 9000, 36000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        poses = np.tile(np.eye(4), (n, 1, 1))
        poses[:, :3, 3] = rng.normal(size=(n, 3))
        stamps = 1_700_000_000 * 10**9 + np.arange(n, dtype=np.int64) * 33_333_333
        ms_obj, ref = _best(partial(_objects, "map", stamps, poses), args.repeats)
        ms_cdr, ours = _best(partial(path_cdr, "map", int(stamps[-1]), stamps, poses), args.repeats)
        same = deserialize_message(ours, Path) == deserialize_message(ref, Path)
        print(
            f"path of {n} poses: message objects {ms_obj:.1f} ms, path_cdr {ms_cdr:.2f} ms "
            f"({ms_obj / ms_cdr:.0f}x), {len(ours) / 1e6:.2f} MB, same message: {same}"
        )
        ms_read_obj, old = _best(partial(_objects_read, ref), args.repeats)
        ms_read_cdr, (_, new) = _best(partial(OutputRecorder._path_poses, ref), args.repeats)
        agree = [t for t, _ in old] == [t for t, _ in new] and all(
            np.allclose(a, b, atol=1e-12) for (_, a), (_, b) in zip(old, new, strict=True)
        )
        print(
            f"  read back: message objects {ms_read_obj:.1f} ms, path_from_cdr {ms_read_cdr:.2f} ms "
            f"({ms_read_obj / ms_read_cdr:.0f}x), same poses: {agree}"
        )


if __name__ == "__main__":
    main()
