"""SIFT + ASMK retrieval on real 7-Scenes frames: extraction time, add/query time vs size, top-1 recall,
prior-free pose time.

* Extraction: :class:`SiftExtractor` with the pipeline's settings (``retrieval.max_features``,
  ``sift_max_side``, ``sift_contrast`` of the default config, unless ``--max-features``/``--max-side``) on
  640x480 7-Scenes frames as the reader gives them (colour registered to depth, with depth + K), median over
  ``--n-extract`` frames.
* Prior-free pose: :func:`estimate_relative_pose` (matching, RANSAC, verification) of frame i against frame
  i - 10 for 50 pairs, and :func:`pose_support` of the ground-truth pose; medians.
* Timing vs database size 10 / 100 / 1000: the database holds the first N of a 1000-image list made of the 500
  redkitchen frames and the same 500 frames mirrored left-right (a mirrored image has different SIFT
  descriptors, so it is a distinct image of the same kind); ``add`` is the mean per image while filling it,
  ``query`` the median of 20 queries (held-out frames 5, 30, 55, ...; features already extracted).
* Recall (step 10, then 30): database = every step-th frame (0, 10, ..., 490: 50 keyframes); queries = the
  frames half-way between keyframes (5, 15, ..., 495: 50 queries). Top-1 is correct when (a) it is within
  +-2*step frames of the query (one of the 4 nearest keyframes in time), (b) its ground-truth camera is within
  0.5 m and 30 deg of the query's (a correct place, revisits included). Also counted: queries with no result
  above ``min_score``.

    PYTHONPATH=. python benchmarks/bench_retrieval.py [--codebook FILE] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from online3r_ros.datasets import open_dataset
from online3r_ros.geometry.lie import sim3_from_matrix
from online3r_ros.retrieval.codebook import Codebook, load_default_codebook
from online3r_ros.retrieval.database import ImageDatabase
from online3r_ros.retrieval.relpose import estimate_relative_pose, pose_support
from online3r_ros.retrieval.sift import SiftExtractor
from online3r_ros.slam.config import load_config

REPO = Path(__file__).resolve().parents[1]


def load_frames(folder: Path) -> list:
    """``(rgb, depth, pose)`` of every frame as the 7-Scenes reader gives them (colour registered)."""
    reader = open_dataset(folder)
    return [(f.rgb, f.depth, f.pose_gt) for f in (reader._load(i) for i in range(len(reader._entries)))]


def relpose_timing(feats, poses) -> None:
    """Prior-free pose of frame i against frame i - 10, 50 pairs: time, acceptance, error vs ground truth."""
    t_pose, t_sup, errs, n_ok = [], [], [], 0
    for i in range(10, 500, 10):
        t0 = time.perf_counter()
        rel = estimate_relative_pose(feats[i], feats[i - 10])
        t_pose.append(time.perf_counter() - t0)
        gt = np.linalg.inv(poses[i - 10]) @ poses[i]
        t0 = time.perf_counter()
        pose_support(feats[i], feats[i - 10], rel, sim3_from_matrix(torch.from_numpy(gt)))
        t_sup.append(time.perf_counter() - t0)
        if rel.ok:
            n_ok += 1
            errs.append(np.linalg.norm(rel.T_ref_query[:3].numpy() - gt[:3, 3]))
    print(
        f"prior-free pose (frame i vs i-10, {len(t_pose)} pairs): median {1e3 * np.median(t_pose):.1f} ms "
        f"(max {1e3 * np.max(t_pose):.1f}), accepted {n_ok}, median error of the accepted "
        f"{100 * np.median(errs):.1f} cm (max {100 * np.max(errs):.1f}); "
        f"pose_support {1e3 * np.median(t_sup):.2f} ms"
    )


def recall(feats, poses, cb, step: int) -> None:
    """Database every ``step``-th frame, queries half-way between keyframes; prints top-1 recall."""
    db = ImageDatabase(cb)
    for i in range(0, len(feats), step):
        db.add(i, feats[i])
    hits_t = hits_p = none = 0
    queries = list(range(step // 2, len(feats), step))
    for q in queries:
        res = db.query(feats[q], k=3)
        if not res:
            none += 1
            continue
        top = res[0][0]
        hits_t += abs(top - q) <= 2 * step
        dist = np.linalg.norm(poses[top, :3, 3] - poses[q, :3, 3])
        cosang = np.clip(poses[top, :3, 2] @ poses[q, :3, 2], -1, 1)
        hits_p += dist <= 0.5 and np.degrees(np.arccos(cosang)) <= 30
    n = len(queries)
    print(
        f"top-1 recall, {n} queries (frames {step // 2}, {step // 2 + step}, ...) vs {len(db)} keyframes "
        f"(every {step}th): within +-{2 * step} frames {hits_t / n:.1%}, "
        f"within 0.5 m & 30 deg {hits_p / n:.1%}, "
        f"no result above min_score {none}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codebook", type=Path, default=None, help="codebook .npz (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--max-features", type=int, default=None)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--n-extract", type=int, default=30)
    ap.add_argument("--no-timing", action="store_true", help="recall only (skip the 1000-image database)")
    args = ap.parse_args()

    folder = args.data / "7scenes_redkitchen_0000_0499"
    K = np.loadtxt(folder / "camera-intrinsics.txt")
    rc = load_config().retrieval
    ex = SiftExtractor(
        max_features=args.max_features or rc.max_features,
        max_side=args.max_side or rc.sift_max_side,
        contrast_threshold=rc.sift_contrast,
    )
    cb = Codebook.load(args.codebook) if args.codebook else load_default_codebook()
    print(
        f"extractor max_features={ex.max_features} max_side={ex.max_side}; "
        f"codebook {cb.size}x{cb.dim} {cb.kind}"
    )

    frames = load_frames(folder)
    feats, t_ex = [], []
    for i, (rgb, depth, _) in enumerate(frames):
        t0 = time.perf_counter()
        feats.append(ex.extract(rgb, depth, K))
        if i < args.n_extract:
            t_ex.append(time.perf_counter() - t0)
    n_feat = np.array([len(f) for f in feats])
    print(
        f"SIFT extraction (640x480, with depth): median {1e3 * np.median(t_ex):.1f} ms, "
        f"min {1e3 * np.min(t_ex):.1f} ms; features/frame mean {n_feat.mean():.0f} (min {n_feat.min()})"
    )

    poses = np.stack([p for _, _, p in frames])
    relpose_timing(feats, poses)
    # recall
    for step in (10, 30):
        recall(feats, poses, cb, step)
    if args.no_timing:
        return

    # timing vs size: 500 frames + 500 mirrored
    t0 = time.perf_counter()
    mirrored = [ex.extract(np.ascontiguousarray(rgb[:, ::-1])) for rgb, _, _ in frames]
    print(f"(extracted 500 mirrored frames in {time.perf_counter() - t0:.1f} s)")
    pool = feats + mirrored
    qidx = list(range(5, 500, 25))[:20]
    for size in (10, 100, 1000):
        ids = [j for j in range(1000) if j not in qidx][:size] if size < 1000 else list(range(1000))
        db = ImageDatabase(cb)
        t0 = time.perf_counter()
        for j in ids:
            db.add(j, pool[j])
        t_add = (time.perf_counter() - t0) / len(ids)
        tq = []
        for q in qidx:
            t1 = time.perf_counter()
            db.query(feats[q], k=3, exclude=(q,))
            tq.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        state = db.state_dict()
        db.remove(ids[:1])
        t_rm = time.perf_counter() - t1
        print(
            f"database {size:5d} images: add {1e3 * t_add:.2f} ms/image, "
            f"query median {1e3 * np.median(tq):.1f} ms "
            f"(max {1e3 * np.max(tq):.1f}), state_dict+remove(1) {1e3 * t_rm:.1f} ms, "
            f"{len(state['words'])} stored words"
        )


if __name__ == "__main__":
    main()
