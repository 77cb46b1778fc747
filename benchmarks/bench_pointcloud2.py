"""PointCloud2 packing/unpacking throughput (xyz + rgb + confidence), vectorised vs a naive per-point loop.

Usage::

    .venv/bin/python benchmarks/bench_pointcloud2.py [--sizes 1000000 4000000] [--repeats 3] [--naive 20000]

Prints points/s (best of ``--repeats``) for :func:`numpy_to_pointcloud2` (the whole message: packing + the
``uint8[]`` field copy) and :func:`pointcloud2_to_numpy`, and for a naive ``struct.pack`` loop over a small
subset to show the speedup. Round trips are checked bit for bit. Single-threaded numpy; timings on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import struct
import time
from functools import partial

import numpy as np

from online3r_ros.ros.pointcloud import numpy_to_pointcloud2, pointcloud2_to_numpy


def _best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _naive_pack(xyz: np.ndarray, rgb: np.ndarray, conf: np.ndarray) -> bytes:
    """What a straightforward per-point implementation does (reference for the speedup)."""
    out = bytearray()
    for (x, y, z), (r, g, b), c in zip(xyz.tolist(), rgb.tolist(), conf.tolist(), strict=True):
        out += struct.pack("<fffIf", x, y, z, (r << 16) | (g << 8) | b, c)
    return bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", type=int, default=20_000, help="points for the naive per-point loop")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    header = ("points", "pack Mpts/s", "pack ms", "unpack Mpts/s", "unpack ms", "MB")
    print("{:>10} {:>12} {:>9} {:>14} {:>10} {:>7}".format(*header))
    vector_rate = None
    for n in args.sizes:
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
        conf = rng.uniform(0, 10, size=n).astype(np.float32)
        t_pack, msg = _best_time(partial(numpy_to_pointcloud2, xyz, rgb, conf, frame_id="map"), args.repeats)
        t_unpack, back = _best_time(partial(pointcloud2_to_numpy, msg), args.repeats)
        assert np.array_equal(back.xyz, xyz) and np.array_equal(back.rgb, rgb)
        assert np.array_equal(back.confidence, conf)
        megabytes = len(msg.data) / 1e6
        print(
            f"{n:>10} {n / t_pack / 1e6:>12.2f} {t_pack * 1e3:>9.1f} {n / t_unpack / 1e6:>14.2f} "
            f"{t_unpack * 1e3:>10.1f} {megabytes:>7.1f}"
        )
        vector_rate = vector_rate or n / t_pack
        del msg, back

    m = args.naive
    xyz, rgb = rng.normal(size=(m, 3)).astype(np.float32), rng.integers(0, 256, (m, 3), dtype=np.uint8)
    conf = rng.uniform(0, 10, size=m).astype(np.float32)
    t_naive, naive = _best_time(lambda: _naive_pack(xyz, rgb, conf), 1)
    assert naive == bytes(numpy_to_pointcloud2(xyz, rgb, conf).data)  # same bytes as the vectorised packer
    naive_rate = m / t_naive
    print(f"naive struct.pack loop ({m} points): {naive_rate / 1e6:.3f} Mpts/s")
    print(f"speedup of the vectorised packer at {args.sizes[0]} points: {vector_rate / naive_rate:.0f}x")


if __name__ == "__main__":
    main()
