"""How well do the ground-truth poses and our estimate agree with the depth images themselves?

For pairs of frames ``(i, i + gap)`` along an RGB-D sequence this scores each relative pose by the
point-to-plane agreement of the two depth images (``online3r_ros.eval.depth_pair_consistency``: truncated RMS,
inlier share) for (a) the dataset's ground truth and (b) an estimated trajectory, and, with ``--icp``, asks an
independent referee where the depth data want the relative pose to be: Open3D's point-to-plane ICP on the
full-resolution depth, started once from the ground-truth relative pose and once from ours. The printed shifts
say how far each relative pose is from the depth-optimal one.

Why: the 7-Scenes ground truth was made with KinectFusion, not a motion-capture system. If the ground truth
fits the depth worse than our estimate does, an ATE measured against it has a floor set by the ground truth's
own error, not by the tracker.

    .venv/bin/python benchmarks/gt_depth_consistency.py              # runs the pipeline first (~25 s)
    .venv/bin/python benchmarks/gt_depth_consistency.py --traj OUT/frames.tum --icp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "7scenes_redkitchen_0000_0499"


def _estimate(data: Path, traj: str | None, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps [N], T_WC [N, 4, 4]) from a TUM file, or from running the pipeline (default config)."""
    from online3r_ros.eval import read_tum

    if traj:
        return read_tum(traj)
    from online3r_ros.slam import runner
    from online3r_ros.slam.config import load_config

    cfg = load_config(None, {"source": {"kind": "depth"}})
    result = runner.run_dataset(data, cfg, max_frames=max_frames)
    tr = result.system.trajectory()
    return np.asarray(tr.timestamps, dtype=np.float64), np.asarray(tr.T_WC, dtype=np.float64)


def _icp_shift(depth_a, depth_b, K, T_init, o3d) -> tuple[float, float, np.ndarray]:
    """Open3D point-to-plane ICP of b onto a from ``T_init``: (translation shift m, rotation shift deg, T)."""
    H, W = depth_a.shape
    intr = o3d.camera.PinholeCameraIntrinsic(W, H, K[0, 0], K[1, 1], K[0, 2], K[1, 2])

    def cloud(d):
        img = o3d.geometry.Image(np.ascontiguousarray(d.astype(np.float32)))
        pc = o3d.geometry.PointCloud.create_from_depth_image(img, intr, depth_scale=1.0, depth_trunc=4.0)
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.05, max_nn=30))
        return pc

    pa, pb = cloud(depth_a), cloud(depth_b).uniform_down_sample(4)
    est = o3d.pipelines.registration.TransformationEstimationPointToPlane()
    crit = o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=50)
    T = T_init
    for dist in (0.05, 0.02):
        T = o3d.pipelines.registration.registration_icp(pb, pa, dist, T, est, crit).transformation
    D = np.linalg.inv(T_init) @ T
    angle = np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1) / 2, -1.0, 1.0)))
    return float(np.linalg.norm(T[:3, 3] - T_init[:3, 3])), float(angle), T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--traj", help="estimated trajectory (TUM); default: run the pipeline on --data")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--gap", type=int, default=20, help="frames between the two images of a pair")
    ap.add_argument("--every", type=int, default=20, help="frames between consecutive pairs' first images")
    ap.add_argument("--icp", action="store_true", help="also refine both relative poses with Open3D ICP")
    ap.add_argument("--verbose", action="store_true", help="print every pair")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from online3r_ros.datasets import open_dataset
    from online3r_ros.eval import depth_pair_consistency

    if not args.data.exists():
        sys.exit(f"dataset not found: {args.data}")
    o3d = None
    if args.icp:
        try:
            import open3d as o3d
        except ImportError as exc:
            sys.exit(f"--icp needs open3d ({exc})")

    t_est, T_est = _estimate(args.data, args.traj, args.max_frames)
    reader = open_dataset(args.data, max_frames=args.max_frames)
    frames = {}
    for f in reader:
        if f.depth is not None and f.pose_gt is not None:
            frames[f.index] = f
    idx = sorted(frames)
    est_by_index = {}
    for i in idx:
        j = int(np.argmin(np.abs(t_est - frames[i].timestamp)))
        if abs(t_est[j] - frames[i].timestamp) < 1e-3:
            est_by_index[i] = T_est[j]
    pairs = [(a, a + args.gap) for a in idx[:: args.every] if a + args.gap in frames]
    pairs = [(a, b) for a, b in pairs if a in est_by_index and b in est_by_index]
    if not pairs:
        sys.exit("no frame pair with depth, ground truth and an estimated pose")

    rows = []
    for a, b in pairs:
        fa, fb = frames[a], frames[b]
        da, db = torch.as_tensor(fa.depth), torch.as_tensor(fb.depth)
        K = torch.as_tensor(fa.K)
        T_gt = np.linalg.inv(fa.pose_gt) @ fb.pose_gt
        T_es = np.linalg.inv(est_by_index[a]) @ est_by_index[b]
        s_gt = depth_pair_consistency(da, db, K, torch.as_tensor(T_gt), stride=2)
        s_es = depth_pair_consistency(da, db, K, torch.as_tensor(T_es), stride=2)
        row = {
            "pair": (a, b),
            "gt": s_gt,
            "est": s_es,
            "gap_t": float(np.linalg.norm(T_gt[:3, 3] - T_es[:3, 3])),
        }
        if o3d is not None:
            row["icp_gt"] = _icp_shift(fa.depth, fb.depth, fa.K, T_gt, o3d)[:2]
            row["icp_est"] = _icp_shift(fa.depth, fb.depth, fa.K, T_es, o3d)[:2]
        rows.append(row)
        if args.verbose:
            line = (
                f"{a:5d}->{b:<5d} GT {1000 * s_gt.truncated_rms:5.2f} mm "
                f"({100 * s_gt.inlier_fraction:4.1f}% in)"
                f"  est {1000 * s_es.truncated_rms:5.2f} mm ({100 * s_es.inlier_fraction:4.1f}% in)"
                f"  |t_gt - t_est| {100 * row['gap_t']:5.2f} cm"
            )
            if o3d is not None:
                line += (
                    f"  ICP moves GT {100 * row['icp_gt'][0]:5.2f} cm {row['icp_gt'][1]:4.2f} deg,"
                    f" est {100 * row['icp_est'][0]:5.2f} cm {row['icp_est'][1]:4.2f} deg"
                )
            print(line)

    gt_rms = np.array([r["gt"].truncated_rms for r in rows])
    es_rms = np.array([r["est"].truncated_rms for r in rows])
    gt_in = np.array([r["gt"].inlier_fraction for r in rows])
    es_in = np.array([r["est"].inlier_fraction for r in rows])
    gaps = np.array([r["gap_t"] for r in rows])
    source = args.traj or "the pipeline"
    print(f"{args.data.name}: {len(rows)} pairs (i, i+{args.gap}), estimate from {source}")
    print(
        f"point-to-plane truncated RMS (tau 2 cm), median: ground truth {1000 * np.median(gt_rms):.2f} mm, "
        f"estimate {1000 * np.median(es_rms):.2f} mm; estimate fits better in "
        f"{int((es_rms < gt_rms).sum())}/{len(rows)} pairs"
    )
    print(
        f"inliers (|r| < 2 cm), median: ground truth {100 * np.median(gt_in):.1f}%, "
        f"estimate {100 * np.median(es_in):.1f}%"
    )
    print(
        f"relative translation, ground truth vs estimate: median {100 * np.median(gaps):.2f} cm, "
        f"RMS {100 * np.sqrt(np.mean(gaps**2)):.2f} cm"
    )
    if o3d is not None:
        sg = np.array([r["icp_gt"][0] for r in rows])
        se = np.array([r["icp_est"][0] for r in rows])
        rg = np.array([r["icp_gt"][1] for r in rows])
        re_ = np.array([r["icp_est"][1] for r in rows])
        print(
            "Open3D point-to-plane ICP (full resolution) moves the relative pose, median: "
            f"from ground truth {100 * np.median(sg):.2f} cm / {np.median(rg):.2f} deg, "
            f"from the estimate {100 * np.median(se):.2f} cm / {np.median(re_):.2f} deg"
        )


if __name__ == "__main__":
    main()
