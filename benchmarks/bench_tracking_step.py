#!/usr/bin/env python3
"""Time of one tracking step per frame (matching + Gauss-Newton), both tracking paths, CPU or CUDA.

Issue 15's target: matching (iterative projective search + refinement) and the tracking Gauss-Newton take
at most 4 ms per frame together on an H200, without per-iteration host syncs. Two paths, on the first frames
of 7-Scenes redkitchen (``--data``; ground-truth poses):

- ``matching+GN``: MASt3R's tracking (reference configuration ``source.kind: mast3r``: iterative projective
  matching of all pixels with descriptor refinement, Sim(3) ray + distance Gauss-Newton) on network-like
  pointmaps made from the depth images at MASt3R's resolution (``--match-size``, default 512x384):
  :class:`~online3r_ros.sources.depth_oracle.DepthOracleSource` (the keyframe's points moved into the frame
  with the true pose, grey-level patch descriptors). The predictions are computed before timing.
- ``icp+GN``: the RGB-D default (projective point-to-plane ICP, SE(3), 160x120, 3000 points per keyframe,
  model keyframes): the keyframe's pointmap is touched in place before each frame, as fusion does in the
  pipeline, so its normals and query pixels are recomputed inside the step as they are there.

Frame ``i`` is tracked against keyframe ``kf_every·floor((i-1)/kf_every)`` (earlier keyframes join the ICP
model, at their true poses) from the true pose of frame ``i-1``; frames are prepared before timing. Each
timed frame is ``FrameTracker.track`` with ``torch.cuda.synchronize()`` before and after on CUDA; the median
and 90th percentile over ``--frames`` frames after ``--warmup`` frames are printed, one line per path::

    tracking_step[matching+GN] device=cuda median_ms=... p90_ms=... ...

Then a few frames run again (untimed) under :func:`~online3r_ros.utils.host_syncs.count_host_syncs`:
``syncs_per_frame`` counts the value reads and data-dependent shapes of the step (on CUDA also the syncs
CUDA's sync debug mode reports, ``cuda_syncs_per_frame``). Needs PyTorch, numpy, scipy and opencv; no ROS.

    python benchmarks/bench_tracking_step.py [--device cpu|cuda] [--frames 20] [--warmup 3]
        [--paths matching icp] [--match-size 512x384] [--sync-every K] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from online3r_ros.datasets import open_dataset  # noqa: E402
from online3r_ros.geometry.lie import sim3_compose, sim3_from_matrix, sim3_inverse, sim3_log  # noqa: E402
from online3r_ros.slam.components import resolve_pose_group  # noqa: E402
from online3r_ros.slam.config import load_config  # noqa: E402
from online3r_ros.slam.tracking import FrameTracker, TrackingKeyframe  # noqa: E402
from online3r_ros.sources.depth_oracle import DepthOracleSource  # noqa: E402
from online3r_ros.sources.rgbd import RGBDSource  # noqa: E402
from online3r_ros.utils.host_syncs import count_host_syncs  # noqa: E402

PATHS = {"matching": "matching+GN", "icp": "icp+GN"}


class PrecomputedOracle(DepthOracleSource):
    """:class:`DepthOracleSource` whose predictions are computed once per (frame, keyframe) pair."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.table: dict = {}

    def predict_asymmetric(self, frame, keyframe, T_CkCf_guess=None):
        key = (frame.index, keyframe.index)
        if key not in self.table:
            self.table[key] = super().predict_asymmetric(frame, keyframe, T_CkCf_guess)
        return self.table[key]


def plan(n_frames: int, kf_every: int) -> list[tuple[int, int]]:
    """``(frame, keyframe)`` index pairs for frames ``1..n_frames``."""
    return [(i, kf_every * ((i - 1) // kf_every)) for i in range(1, n_frames + 1)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pose_error_cm(T_est: torch.Tensor, T_true: torch.Tensor) -> float:
    d = sim3_log(sim3_compose(sim3_inverse(T_true.double()), T_est.double()))
    return 100.0 * float(d[:3].norm())


def run_path(name: str, frames: list, args, device: torch.device) -> dict:
    """Time ``FrameTracker.track`` per frame on one path; returns the figures (see the module docstring)."""
    if name == "matching":
        cfg = load_config(overrides={"source": {"kind": "mast3r"}, "system": {"device": str(device)}})
        W, H = args.match_size
        source = PrecomputedOracle(device, width=W, height=H, descriptors=not args.no_descriptors)
        prepared = [
            source.prepare(f.rgb, index=i, timestamp=f.timestamp, depth=f.depth, K=f.K, T_WC=f.pose_gt)
            for i, f in enumerate(frames)
        ]
    else:
        cfg = load_config(overrides={"system": {"device": str(device)}})
        source = RGBDSource.from_config(cfg, device)
        prepared = [
            source.prepare(f.rgb, index=i, timestamp=f.timestamp, depth=f.depth, K=f.K)
            for i, f in enumerate(frames)
        ]
    T_true = [
        sim3_from_matrix(torch.as_tensor(f.pose_gt, dtype=torch.float64)).float().to(device) for f in frames
    ]
    kw = {} if args.sync_every is None else {"sync_every": args.sync_every}  # older trees lack it
    tracker = FrameTracker(source, cfg, resolve_pose_group(cfg, source), **kw)
    keyframes: dict[int, TrackingKeyframe] = {}
    n_model = cfg.tracking.model_keyframes if tracker.uses_icp_model else 0

    def keyframe(k: int) -> TrackingKeyframe:
        if k not in keyframes:
            sf = prepared[k]
            older = [keyframes[j] for j in sorted(keyframes, reverse=True) if j < k][:n_model]
            neighbours = [TrackingKeyframe(o.frame, o.T_WC, o.X, o.C, o.kf_id) for o in older]
            keyframes[k] = TrackingKeyframe(
                sf, T_true[k], sf.cache["X"].clone(), sf.cache["C"].clone(), k, neighbours
            )
        return keyframes[k]

    steps = plan(args.warmup + args.frames, args.kf_every)
    if name == "matching":  # the network's share of a step is not timed
        for i, k in steps:
            source.predict_asymmetric(prepared[i], prepared[k])

    def step(i: int, k: int, sync: bool = True):
        kf = keyframe(k)
        kf.X.mul_(1.0)  # fusion updates the keyframe in place every frame (same values, new version)
        if sync:
            _sync(device)
        t0 = time.perf_counter()
        res = tracker.track(prepared[i], kf, T_true[i - 1])
        if sync:
            _sync(device)
        return res, time.perf_counter() - t0

    times, iters, errors, lost = [], [], [], 0
    for n, (i, k) in enumerate(steps):
        res, dt = step(i, k)
        if n < args.warmup:
            continue
        times.append(1000.0 * dt)
        iters.append(res.iterations)
        lost += int(res.lost)
        if not res.lost:
            errors.append(_pose_error_cm(res.T_WC, T_true[i]))
    syncs, cuda_syncs, by_op = [], [], Counter()
    for i, k in steps[args.warmup : args.warmup + args.sync_frames]:
        _sync(device)
        with count_host_syncs() as counts:  # (the benchmark's own synchronize calls stay outside)
            step(i, k, sync=False)
        _sync(device)
        syncs.append(counts.total())
        cuda_syncs.append(counts.get("cuda", 0))
        by_op.update(counts)
    q = prepared[0]
    return {
        "path": PATHS[name],
        "device": str(device),
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "times_ms": times,
        "frames": len(times),
        "size": f"{q.width}x{q.height}",
        "mean_iterations": statistics.fmean(iters),
        "lost": lost,
        "median_error_cm": statistics.median(errors) if errors else float("nan"),
        "syncs_per_frame": statistics.median(syncs) if syncs else None,
        "cuda_syncs_per_frame": statistics.median(cuda_syncs) if device.type == "cuda" and syncs else None,
        "syncs_by_operation": {op: n / len(syncs) for op, n in sorted(by_op.items())},
        "sync_every": getattr(tracker, "sync_every", None),
    }


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="7-Scenes folder with ground truth")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["matching", "icp"])
    ap.add_argument("--frames", type=int, default=20, help="timed frames per path")
    ap.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    ap.add_argument("--kf-every", type=int, default=10, help="a new keyframe every N frames")
    ap.add_argument("--match-size", type=_size, default=(512, 384), help="WxH of the matching path")
    ap.add_argument("--no-descriptors", action="store_true", help="matching path without refinement")
    ap.add_argument("--sync-every", type=int, default=None, help="GN host-check period (default: by device)")
    ap.add_argument("--sync-frames", type=int, default=3, help="frames re-run to count host syncs (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: data folder {args.data} not found (7-Scenes layout; --data DIR)", file=sys.stderr)
        return 2
    if args.frames < 1 or args.warmup < 0 or args.kf_every < 1:
        ap.error("need --frames >= 1, --warmup >= 0, --kf-every >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: device {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    frames = list(open_dataset(args.data, max_frames=args.warmup + args.frames + 1))
    if len(frames) < args.warmup + args.frames + 1 or any(f.pose_gt is None for f in frames):
        print(f"error: {args.data} has too few frames with ground-truth poses", file=sys.stderr)
        return 2
    results = []
    for name in args.paths:
        r = run_path(name, frames, args, device)
        results.append(r)
        extra = (
            "" if r["cuda_syncs_per_frame"] is None else f" cuda_syncs_per_frame={r['cuda_syncs_per_frame']}"
        )
        print(
            f"tracking_step[{r['path']}] device={r['device']} median_ms={r['median_ms']:.3f} "
            f"p90_ms={r['p90_ms']:.3f} frames={r['frames']} size={r['size']} "
            f"mean_iters={r['mean_iterations']:.1f} lost={r['lost']} err_cm={r['median_error_cm']:.2f} "
            f"syncs_per_frame={r['syncs_per_frame']}{extra}",
            flush=True,
        )
    if args.json is not None:
        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
