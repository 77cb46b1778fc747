"""Time and peak memory of one online prompt-tuning step on the full-size MASt3R (random weights).

One step = the encoder on 4 images (previous keyframe, new keyframe, two partners) with gradients to the
prompts, the decoder + heads on 3 pairs (1 local, 2 global), the backward pass and the AdamW update
(``PromptTuner.step``, ``iters_per_keyframe`` = 1; the losses-after pass is timed apart). Goal (issue 13):
on an H100/H200 one step <= 60 ms and peak <= 12 GB; on CPU the figure is printed.

    .venv/bin/python benchmarks/bench_prompt_tuning.py                       # CPU, float32, 2 threads
    .venv/bin/python benchmarks/bench_prompt_tuning.py --device cuda          # bfloat16 network on CUDA
    .venv/bin/python benchmarks/bench_prompt_tuning.py --no-checkpointing     # keep all activations

Peak memory: ``ru_maxrss`` of the process (includes the 2.75 GB of float32 weights; the weights-only RSS is
printed too) and ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mast3r import build_random_model  # noqa: E402

from online3r_ros.model.inference import MASt3REngine, NetImage  # noqa: E402
from online3r_ros.slam.config import TuningConfig  # noqa: E402
from online3r_ros.tuning import PromptTuner, TuningJob  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="engine precision (default: bfloat16 on CUDA, float32)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-checkpointing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = args.precision or ("bfloat16" if device.type == "cuda" else "float32")
    model = build_random_model(args.device)
    engine = MASt3REngine(model, device, precision, cuda_graphs=False)
    weights_rss = _rss_mib()
    g = torch.Generator().manual_seed(0)
    h, w = args.height, args.width
    nets = [
        NetImage(i, (torch.rand(1, 3, h, w, generator=g) * 2 - 1).to(device), torch.tensor([[h, w]]))
        for i in range(4)
    ]
    fused = torch.randn(h, w, 3, generator=g)
    job = TuningJob(2, nets[1], nets[0], fused, torch.ones(h, w) * 2, (nets[2], nets[3]))
    cfg = TuningConfig(grad_checkpointing=not args.no_checkpointing)
    tuner = PromptTuner(engine, cfg, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps, after = [], []
    for _ in range(args.repeats + (1 if device.type == "cuda" else 0)):  # CUDA: one warm-up step
        t0 = time.perf_counter()
        update = tuner.step(job)
        steps.append(update.time_ms)
        after.append((time.perf_counter() - t0) * 1e3 - update.time_ms)
    if device.type == "cuda":
        steps, after = steps[1:], after[1:]
    report = {
        "device": str(device),
        "precision": precision,
        "image": [w, h],
        "prompts": list(update.prompts.shape),
        "grad_checkpointing": cfg.grad_checkpointing,
        "step_ms": [round(v, 1) for v in steps],
        "losses_after_pass_ms": [round(v, 1) for v in after],
        "peak_rss_mib": round(_rss_mib()),
        "weights_rss_mib": round(weights_rss),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        report["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
