"""Place recognition in the whole pipeline (RGB-D source, default config, this machine's CPU): the figures of
the retrieval issue, each from a run of ``SlamSystem`` over real or synthetic frames.

* loop: the synthetic loop (:func:`make_loop_sequence`, 400 frames at stride 2, 320x240, noisy depth
  sigma = 4 mm + 6 mm (z - 0.4)^2) with and without ``retrieval.loop_closure``, with the default tracking and
  with tracking that drifts (:data:`DRIFTING`): ATE (SE(3)), drift at the revisit (mean position error of
  the frames after the lap relative to the first frame, no alignment), loop edges and how many join
  keyframes more than 0.3 m apart (false loops).
* rooms: 50 frames of room 0 then 50 of room 1 (look-alike texture, other geometry): room-1 frames posed (any
  would be a false relocalisation) and loop edges.
* kidnap: 7-Scenes redkitchen frames 0-299, 60-139, 300-499 (the issue's order): frames posed, frames until
  relocalised after each jump, ATE, online poses over 10 cm while labelled tracking.
* occlusion: 7-Scenes 0-89 with frames 50-57 blank (no depth): the first posed frame after the gap and the
  largest deviation of a later frame from the same frame of an uncovered run.
* fast motion: 7-Scenes at --stride 10 and the TUM fr3 cabinet keyframes: frames posed, ATE, largest online
  error while labelled tracking.

    PYTHONPATH=. python benchmarks/bench_place_recognition.py [--data ../shared/data] [--only loop,rooms,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from online3r_ros.datasets import open_dataset
from online3r_ros.eval.ate import compute_ate
from online3r_ros.slam.config import load_config
from online3r_ros.slam.runner import build_system, metrics_report, run_dataset, run_frames
from online3r_ros.synthetic import make_loop_sequence
from online3r_ros.synthetic.occlusion import OccludedSequence
from online3r_ros.synthetic.sequence import DepthNoise
from online3r_ros.synthetic.trajectory import loop_lap_frames

REPO = Path(__file__).resolve().parents[1]
NOISE = DepthNoise(sigma0=0.004, sigma2=0.006)


def _by_frame(timestamps, T, fps: float = 30.0) -> dict:
    return {round(t * fps): M for t, M in zip(timestamps, T, strict=True)}


#: tracking that drifts on the synthetic loop (geometry-only ICP, no flow prior), so that closing the loop has
#: something to correct: the default tracking returns to the start within ~1.5 cm and reuses its keyframes
DRIFTING = {"icp_photo_sigma": 0.0, "icp_degenerate_ratio": 0.0, "flow_prior": False}


def bench_loop(tracking: dict, label: str) -> None:
    n, stride = 400, 2
    for closure in (False, True):
        seq = make_loop_sequence(n_frames=n, width=320, height=240, seed=0, depth_noise=NOISE, stride=stride)
        over = {"retrieval": {"loop_closure": closure}, "tracking": tracking}
        system = build_system(load_config(overrides=over))
        t0 = time.perf_counter()
        run_frames(system, iter(seq))
        wall = time.perf_counter() - t0
        traj = system.trajectory()
        gt_t, gt_T = seq.gt_trajectory()
        ate = compute_ate(traj.timestamps, traj.T_WC, gt_t, gt_T, "se3")
        est, gt = _by_frame(traj.timestamps, traj.T_WC), _by_frame(gt_t, gt_T)
        first = min(est)
        lap = loop_lap_frames(n) // stride
        drift = [
            np.linalg.norm(
                (np.linalg.inv(est[first]) @ est[k])[:3, 3] - (np.linalg.inv(gt[first]) @ gt[k])[:3, 3]
            )
            for k in est
            if k >= lap
        ]
        kf_t = system.backend.kf_stamps
        gt_at = dict(zip(gt_t, gt_T, strict=True))
        loops = system.backend.loop_edges
        false = sum(np.linalg.norm(gt_at[kf_t[i]][:3, 3] - gt_at[kf_t[j]][:3, 3]) > 0.3 for i, j in loops)
        print(
            f"loop ({label}) closure={'on ' if closure else 'off'}: "
            f"ATE {100 * ate.rmse:.1f} cm (max {100 * ate.max:.1f}), "
            f"drift at the revisit {100 * np.mean(drift):.1f} cm, loop edges {len(loops)} (false {false}), "
            f"{len(traj)}/{len(seq)} posed, {len(seq) / wall:.1f} frames/s"
        )


def bench_rooms() -> None:
    kw = {"n_frames": 400, "width": 320, "height": 240, "seed": 0, "stride": 4, "max_frames": 50}
    room0, room1 = list(make_loop_sequence(room=0, **kw)), list(make_loop_sequence(room=1, **kw))
    t0 = room0[-1].timestamp + 1.0
    room1 = [dataclasses.replace(f, timestamp=t0 + i / 30) for i, f in enumerate(room1)]
    system = build_system(load_config())
    result = run_frames(system, iter(room0 + room1))
    posed1 = sum(1 for t, _, _ in result.online if t >= t0)
    print(
        f"rooms: room 0 posed {len(result.online) - posed1}/{len(room0)}, room 1 posed {posed1}/{len(room1)} "
        f"(false relocalisations), loop edges {len(system.backend.loop_edges)}"
    )


def _real(name: str, path: Path, cfg, **kw) -> dict:
    t0 = time.perf_counter()
    result = run_dataset(path, cfg, **kw)
    m = metrics_report(result)
    ate = m["ate"]["frames"]["se3"]
    online = m["online_poses"]
    print(
        f"{name}: posed {m['frames_with_pose']}/{m['frames_input']}, relocalised {m['frames_relocalised']}, "
        f"ATE {100 * ate['rmse']:.2f} cm (max {100 * ate['max']:.1f}), online max while tracking "
        f"{100 * (online['max_error'].get('tracking') or 0):.1f} cm "
        f"({online['n_over'].get('tracking', 0)} > 10 cm), "
        f"loop edges {len(m['loop_edges'])}, guard {m['place_recognition']}, "
        f"{m['frames_input'] / (time.perf_counter() - t0):.1f} frames/s"
    )
    return {"result": result, "metrics": m}


def bench_kidnap(data: Path) -> None:
    run = _real(
        "kidnap 0-299,60-139,300-499",
        data / "7scenes_redkitchen_0000_0499",
        load_config(),
        frames="0-299,60-139,300-499",
    )
    states = {round(t * 30): s for t, s, _ in run["result"].online}
    for jump in (300, 380):
        back = next((i for i in range(jump, jump + 30) if i in states), None)
        print(f"  jump at view frame {jump}: first pose at {back} ({states.get(back)})")


def bench_occlusion(data: Path) -> None:
    seven = data / "7scenes_redkitchen_0000_0499"
    poses = []
    for reader in (
        OccludedSequence(open_dataset(seven), range(50, 58), max_frames=90),
        open_dataset(seven, max_frames=90),
    ):
        system = build_system(load_config())
        run_frames(system, iter(reader))
        traj = system.trajectory()
        poses.append(_by_frame(traj.timestamps, traj.T_WC))
    covered, clear = poses
    after = [i for i in covered if i >= 58]
    dev = max(np.linalg.norm(covered[i][:3, 3] - clear[i][:3, 3]) for i in after)
    print(
        f"occlusion 50-57 blank: first pose after the gap at frame {min(after)}, "
        f"largest deviation from the uncovered run {100 * dev:.2f} cm over {len(after)} frames"
    )


def bench_fast(data: Path) -> None:
    _real(
        "7-Scenes --stride 10",
        data / "7scenes_redkitchen_0000_0499",
        load_config(overrides={"dataset": {"subsample": 10}}),
    )
    _real("TUM fr3 cabinet keyframes", data / "tum_fr3_cabinet_keyframes", load_config())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--only", default="loop,rooms,kidnap,occlusion,fast")
    args = ap.parse_args()
    parts = args.only.split(",")
    if "loop" in parts:
        bench_loop({}, "default tracking")
        bench_loop(DRIFTING, "geometry-only ICP, no flow prior")
    if "rooms" in parts:
        bench_rooms()
    if "kidnap" in parts:
        bench_kidnap(args.data)
    if "occlusion" in parts:
        bench_occlusion(args.data)
    if "fast" in parts:
        bench_fast(args.data)


if __name__ == "__main__":
    main()
