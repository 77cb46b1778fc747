"""End-to-end frame rate of the SLAM pipeline (``SlamSystem``, as ``online3r run``) on CPU or CUDA.

Random MASt3R weights break tracking, so the geometry comes from the RGB-D source of real 7-Scenes frames
and the network's cost is put into the loop honestly (``--mode net``):

- ``rgbd``: the default RGB-D configuration, exactly what ``online3r run --source depth`` runs.
- ``net``: the same, plus the full-size MASt3R network (688.6M parameters, random weights, bfloat16, CUDA
  graph) run where the MASt3R source runs it: the tracking step (one new frame encoded, decoder against the
  keyframe's features, both heads) once per tracked frame, ``decoder(f, f)`` at initialisation, and the
  symmetric decoder over every new keyframe's edge pairs in the backend. The network's outputs are computed
  and awaited (each step ends in a host sync of the pipeline) but the pose and the map use the RGB-D
  pointmaps: what is timed is the network's cost plus the real pipeline's, not MASt3R's tracking accuracy.
- ``net+tune``: ``net`` plus one prompt-tuning step per new keyframe in the backend (the stand-in step of
  ``bench_gpu_network.py``: the engine's prompts change, so keyframe features are re-encoded on next use).

Frames are loaded into memory first. Printed: frames/s over all ``SlamSystem.process`` calls and the final
flush (serial by default: tracker and mapper in one thread, the reference's single-thread mode; with
``--mapper-thread`` the mapper runs beside the tracker, ``system.mapper_thread``), the tracker's ms per frame
(serial: the call minus the mapper's share), mapper ms per keyframe, keyframes, ATE RMSE (SE(3) Umeyama,
frames matched by index to the 7-Scenes ground truth).

    python benchmarks/bench_gpu_pipeline.py --device cuda --mode net --frames 200
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_network import DATA, StandInTuner, build_network  # noqa: E402

from online3r_ros.datasets import open_dataset  # noqa: E402
from online3r_ros.eval.umeyama import ate_rmse  # noqa: E402
from online3r_ros.model.inference import MASt3REngine, NetImage  # noqa: E402
from online3r_ros.model.preprocess import preprocess_image  # noqa: E402
from online3r_ros.slam.backend import BackendHooks  # noqa: E402
from online3r_ros.slam.config import load_config  # noqa: E402
from online3r_ros.slam.system import SlamSystem  # noqa: E402
from online3r_ros.sources.base import PointmapSource  # noqa: E402
from online3r_ros.sources.rgbd import RGBDSource  # noqa: E402


class NetworkInTheLoop(PointmapSource):
    """RGB-D pointmaps, with the MASt3R network run wherever the MASt3R source would run it (timing only)."""

    def __init__(self, rgbd: RGBDSource, engine: MASt3REngine) -> None:
        super().__init__(rgbd.device)
        self.rgbd, self.engine = rgbd, engine
        self.metric, self.calibrated = rgbd.metric, rgbd.calibrated
        self.has_descriptors, self.pose_dependent = rgbd.has_descriptors, rgbd.pose_dependent
        self.nets: dict[int, NetImage] = {}
        self._keys = itertools.count()
        self._last_pair: tuple[int, int] | None = None
        self.network_calls = 0

    def prepare(self, image, *, index=0, timestamp=0.0, depth=None, K=None):
        sf = self.rgbd.prepare(image, index=index, timestamp=timestamp, depth=depth, K=K)
        prep = preprocess_image(np.asarray(image), size=512)
        self.nets[index] = NetImage(
            next(self._keys), prep.img.to(self.device), prep.true_shape.to(self.device)
        )
        return sf

    def predict_mono(self, frame):
        self.engine.mono(self.nets[frame.index])
        self.network_calls += 1
        return self.rgbd.predict_mono(frame)

    def predict_asymmetric(self, frame, keyframe, T_CkCf_guess=None):
        pair = (frame.index, keyframe.index)
        if pair != self._last_pair:  # once per tracked frame, as the MASt3R source
            self.engine.asymmetric(self.nets[frame.index], self.nets[keyframe.index])
            self.network_calls += 1
            self._last_pair = pair
        return self.rgbd.predict_asymmetric(frame, keyframe, T_CkCf_guess)

    def predict_symmetric(self, pairs, T_CiCj_guesses=None):
        if pairs:
            self.engine.symmetric_list([(self.nets[a.index], self.nets[b.index]) for a, b in pairs])
            self.network_calls += 1
        return self.rgbd.predict_symmetric(pairs, T_CiCj_guesses)


def tuning_hooks(source: NetworkInTheLoop, tuner: StandInTuner) -> BackendHooks:
    """One stand-in prompt-tuning step per integrated keyframe (new, previous and two older keyframes)."""

    def on_keyframe(backend, update) -> None:
        store = backend.keyframes
        n = len(store)
        if n < 2:
            return
        ids = [n - 1, n - 2, max(0, n - 3), max(0, n - 4)]
        nets = [source.nets[store.frame_index(i)] for i in ids]
        tuner.step(nets[0], nets[1], nets[2:])

    return BackendHooks(on_keyframe=on_keyframe)


def run(args: argparse.Namespace) -> dict:
    system_keys = {"device": args.device, "mapper_thread": args.mapper_thread}
    if args.no_deterministic:
        system_keys["deterministic"] = False
    cfg = load_config(overrides={"system": system_keys})
    frames = list(open_dataset(args.data, max_frames=args.frames))
    rgbd = RGBDSource.from_config(cfg, device=args.device)
    source: PointmapSource = rgbd
    hooks = None
    if args.mode != "rgbd":
        engine = MASt3REngine(build_network(), args.device, "bfloat16" if args.device != "cpu" else "float32")
        source = NetworkInTheLoop(rgbd, engine)
        if args.mode == "net+tune":
            tuner = StandInTuner(engine)
            hooks = tuning_hooks(source, tuner)
    system = SlamSystem(cfg, source, hooks)
    warm = SlamSystem(cfg, source)  # warm-up on a throw-away system (kernels, graphs, allocator)
    for fr in frames[: args.warmup]:
        warm.process(fr)
    warm.close()
    tracker_ms, mapper_ms, total = [], [], 0.0
    stages: dict[str, list[float]] = {}
    profiler = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        profiler = profile(activities=acts)
        profiler.__enter__()
    for fr in frames:
        t = time.perf_counter()
        step = system.process(fr)
        for k, v in step.timings_ms.items():
            stages.setdefault(k, []).append(float(v))
        dt = (time.perf_counter() - t) * 1e3
        total += dt
        backend_ms = sum(step.map_update.timings_ms.values()) if step.map_update is not None else 0.0
        tracker_ms.append(dt if args.mapper_thread else dt - backend_ms)  # thread: not spent in this call
        if step.map_update is not None:
            mapper_ms.append(backend_ms)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        key = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        for sort in ("self_cpu_time_total", key):
            print(profiler.key_averages().table(sort_by=sort, row_limit=args.profile), flush=True)
    t = time.perf_counter()
    mapper_ms += [sum(u.timings_ms.values()) for u in system.flush()]  # the mapper's last keyframes
    total += (time.perf_counter() - t) * 1e3
    traj = system.trajectory()
    system.close()
    gt = {i: f.pose_gt for i, f in enumerate(frames) if f.pose_gt is not None}
    rows = [r for r, i in enumerate(traj.indices) if int(i) in gt]
    ate = float("nan")
    if len(rows) >= 3:
        est = traj.T_WC[rows, :3, 3]
        ref = np.stack([gt[int(traj.indices[r])][:3, 3] for r in rows])
        ate = ate_rmse(est, ref, with_scale=False)
    return {
        "mode": args.mode,
        "mapper_thread": args.mapper_thread,
        "deterministic": not args.no_deterministic,
        "device": args.device,
        "frames": len(frames),
        "fps": len(frames) / (total / 1e3),
        "tracker_ms_median": statistics.median(tracker_ms),
        "tracker_fps": len(frames) / (sum(tracker_ms) / 1e3),
        "mapper_ms_per_keyframe": statistics.median(mapper_ms) if mapper_ms else 0.0,
        "keyframes": system.num_keyframes,
        "posed": len(traj),
        "ate_se3_m": ate,
        "network_calls": getattr(source, "network_calls", 0),
        "stage_ms_median": {k: statistics.median(v) for k, v in sorted(stages.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mode", choices=("rgbd", "net", "net+tune"), default="rgbd")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument(
        "--mapper-thread", action="store_true", help="system.mapper_thread: mapper beside tracker"
    )
    ap.add_argument("--warmup", type=int, default=3, help="frames run once first on a throw-away system")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", type=int, default=0, help="torch profiler: print the N costliest ops")
    ap.add_argument("--no-deterministic", action="store_true", help="system.deterministic: false (CUDA)")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found (7-Scenes redkitchen frames, ../shared/data)")
    torch.manual_seed(0)
    res = run(args)
    print(
        f"pipeline[{res['mode']}{' thread' if args.mapper_thread else ''}] device={res['device']} "
        f"fps={res['fps']:.2f} "
        f"tracker_ms={res['tracker_ms_median']:.1f} tracker_fps={res['tracker_fps']:.1f} "
        f"mapper_ms_per_kf={res['mapper_ms_per_keyframe']:.1f} kf={res['keyframes']} "
        f"posed={res['posed']}/{res['frames']} ate_se3={res['ate_se3_m']:.4f} m "
        f"net_calls={res['network_calls']}",
        flush=True,
    )
    print("stage ms (median over frames that ran it):", json.dumps(res["stage_ms_median"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
