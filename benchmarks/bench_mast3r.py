"""Speed / memory benchmark of the full-size MASt3R network (random weights) on one image pair.

Builds the released ViT-L configuration (688.6M parameters) on the meta device, materialises it with
``to_empty`` and fills it with random values (seconds instead of minutes of init), then times one pair
(default 512x384) stage by stage: encoder (both images, batched as the reference ``forward`` does), decoder,
heads. Each implementation runs in its own subprocess so that peak RSS is measured separately:

- ``fast``: ours (fused SDPA attention, table RoPE, oneDNN matmuls with fused GELU/residual, NNPACK
  Winograd 3x3 convolutions in the DPT heads, channels-last post-processing).
- ``naive``: the same module switched to reference-style code (explicit softmax(QK^T)V, croco's
  pure-PyTorch RoPE2D, pixel-shuffle post-processing), as a same-machine stand-in for the reference.

The reference implementation itself was measured at about 9.5 s per pair on the project's 2-core CPU
(encoder ~3 s, decoder ~3.5 s, heads ~2.7 s; issue 4), printed for comparison.

    .venv/bin/python benchmarks/bench_mast3r.py                 # CPU, 2 threads, float32, fast + naive
    .venv/bin/python benchmarks/bench_mast3r.py --impl fast --repeats 3
    .venv/bin/python benchmarks/bench_mast3r.py --device cuda --amp bf16   # CUDA: half-precision enc/dec

Peak memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (whole process, includes the 2.75 GB of weights;
the weights-only RSS is printed too) and ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

REFERENCE_S = {"encoder": 3.0, "decoder": 3.5, "heads": 2.7, "total": 9.5}  # issue 4, 2-core CPU, float32


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


@torch.no_grad()
def build_random_model(device: str):
    """Full-size MASt3R with random weights, without running the (slow) reference-style init."""
    from online3r_ros.model import MAST3R_VITL_KWARGS, build_mast3r

    with torch.device("meta"):
        model = build_mast3r(**MAST3R_VITL_KWARGS)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    for name, p in model.named_parameters():
        if p.ndim == 1 and "norm" in name:
            p.fill_(1.0)
        elif p.ndim == 1:
            p.normal_(0.0, 0.02, generator=gen)
        else:
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
    return model.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(model, img1, img2, device: str, amp_dtype) -> dict[str, dict[str, float]]:
    """One pair, timed per stage: {'wall': {stage: s}, 'cpu': {stage: process CPU s (all threads)}}."""
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None
    )
    marks = []

    def mark() -> None:
        _sync(device)
        marks.append((time.perf_counter(), time.process_time()))

    with torch.inference_mode():
        mark()
        with autocast:
            model.encode(img2)  # one image: a tracking step, the keyframe's features being cached
        mark()
        with autocast:
            feat, pos = model.encode(torch.cat([img1, img2]))
            (f1, f2), (p1, p2) = feat.chunk(2), pos.chunk(2)
            mark()
            dec1, dec2 = model.decode(f1, p1, f2, p2)
            mark()
            res1, res2 = model.heads(dec1, dec2, tuple(img1.shape[-2:]), tuple(img2.shape[-2:]))
        mark()
    assert res1["pts3d"].dtype == torch.float32 and res2["pts3d"].shape[1:3] == img1.shape[-2:]
    out = {}
    for clock, name in ((0, "wall"), (1, "cpu")):
        t = [m[clock] for m in marks]
        out[name] = {
            "encoder": t[2] - t[1],
            "decoder": t[3] - t[2],
            "heads": t[4] - t[3],
            "total": t[4] - t[1],
            "encoder_1": t[1] - t[0],
            "tracking_step": (t[1] - t[0]) + (t[4] - t[2]),
        }
    return out


@torch.inference_mode()
def count_flops(model, img1, img2) -> dict[str, float]:
    """Floating-point operations per stage of one pair (torch's FlopCounterMode: matmuls, convolutions,
    attention), counted on the reference-style path, so direct-convolution FLOPs for the heads."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    with FlopCounterMode(display=False) as fc:
        model.encode(img2)
    counts["encoder_1"] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        feat, pos = model.encode(torch.cat([img1, img2]))
    counts["encoder"] = fc.get_total_flops()
    (f1, f2), (p1, p2) = feat.chunk(2), pos.chunk(2)
    with FlopCounterMode(display=False) as fc:
        dec1, dec2 = model.decode(f1, p1, f2, p2)
    counts["decoder"] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        model.heads(dec1, dec2, tuple(img1.shape[-2:]), tuple(img2.shape[-2:]))
    counts["heads"] = fc.get_total_flops()
    counts["total"] = counts["encoder"] + counts["decoder"] + counts["heads"]
    counts["tracking_step"] = counts["encoder_1"] + counts["decoder"] + counts["heads"]
    return counts


def gemm_peak_gflops() -> float:
    """This CPU's float32 matrix-multiply rate at the encoder's shapes (best of a few, GFLOP/s)."""
    g = torch.Generator().manual_seed(0)
    best = 0.0
    for m, k, n in ((1536, 1024, 4096), (1536, 4096, 1024), (1536, 1024, 1024)):
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for _ in range(2):
            a @ b
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - t) / 1e9)
    return best


def child(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = args.device
    t = time.perf_counter()
    model = build_random_model(device)
    build_s = time.perf_counter() - t
    model.set_impl(args.impl)
    weights_rss = _current_rss_mib()
    g = torch.Generator(device="cpu").manual_seed(1)
    img1 = (torch.rand(1, 3, args.height, args.width, generator=g) * 2 - 1).to(device)
    img2 = (torch.rand(1, 3, args.height, args.width, generator=g) * 2 - 1).to(device)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    flops = None
    if args.impl == "naive":  # reference-style ops only (the fast path's fused oneDNN ops are not counted)
        flops = count_flops(model, img1, img2)
    runs = [run_once(model, img1, img2, device, amp) for _ in range(args.warmup + args.repeats)]
    runs = runs[args.warmup :]
    out = {
        "impl": args.impl,
        "build_s": build_s,
        "stages_s": {k: min(r["wall"][k] for r in runs) for k in runs[0]["wall"]},
        "stages_cpu_s": {k: min(r["cpu"][k] for r in runs) for k in runs[0]["cpu"]},
        "all_totals_s": [r["wall"]["total"] for r in runs],
        "weights_rss_mib": weights_rss,
        "peak_rss_mib": _rss_mib(),
        "flops": flops,
        "gemm_gflops": gemm_peak_gflops() if device == "cpu" else None,
    }
    if device.startswith("cuda"):
        out["cuda_peak_alloc_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["both", "fast", "naive"], default="both")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (oneDNN primitive caches)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs; the per-stage minimum is reported")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast for enc/dec")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    impls = ["fast", "naive"] if args.impl == "both" else [args.impl]
    print(
        f"MASt3R ViT-L (688.6M params, random weights), one {args.width}x{args.height} pair, "
        f"device={args.device}, threads={args.threads}, amp={args.amp}, torch {torch.__version__}; "
        f"warmup={args.warmup}, repeats={args.repeats} (min per stage)"
    )
    results = {}
    for impl in impls:
        cmd = [sys.executable, __file__, "--child", "--impl", impl]
        for k in ("device", "threads", "height", "width", "warmup", "repeats", "amp"):
            cmd += [f"--{k}", str(getattr(args, k))]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{impl} run failed:\n{proc.stderr}")
        results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])

    header = f"{'stage':<14}" + "".join(f"{impl + ' wall':>12}" for impl in impls)
    header += "".join(f"{impl + ' cpu':>12}" for impl in impls)
    header += f"{'reference':>12}" if args.device == "cpu" else ""
    flops = next((r["flops"] for r in results.values() if r.get("flops")), None)
    if flops:
        header += f"{'GFLOP':>9}" + "".join(f"{impl + ' GFLOP/s':>15}" for impl in impls)
    print(header)
    for stage in ("encoder", "decoder", "heads", "total", "encoder_1", "tracking_step"):
        row = f"{stage:<14}" + "".join(f"{results[i]['stages_s'][stage]:>11.2f}s" for i in impls)
        row += "".join(f"{results[i]['stages_cpu_s'][stage]:>11.2f}s" for i in impls)
        if args.device == "cpu":
            ref = REFERENCE_S.get(stage)
            row += f"{ref:>11.1f}s" if ref is not None else f"{'-':>12}"
        if flops:
            row += f"{flops[stage] / 1e9:>9.0f}"
            row += "".join(f"{flops[stage] / 1e9 / results[i]['stages_s'][stage]:>15.0f}" for i in impls)
        print(row)
    print(
        "(encoder = both images batched; encoder_1 = one image; tracking_step = encoder_1 + decoder + heads, "
        "the per-frame cost when the keyframe's features are cached)"
    )
    print("(wall = elapsed s; cpu = process CPU s summed over threads, less sensitive to other load)")
    for impl in impls:
        r = results[impl]
        line = (
            f"{impl}: peak RSS {r['peak_rss_mib']:.0f} MiB (weights alone {r['weights_rss_mib']:.0f} MiB), "
            f"build {r['build_s']:.1f}s, totals {', '.join(f'{t:.2f}' for t in r['all_totals_s'])} s"
        )
        if "cuda_peak_alloc_mib" in r:
            line += f", CUDA peak allocated {r['cuda_peak_alloc_mib']:.0f} MiB"
        print(line)
    if "fast" in results:
        fast = results["fast"]["stages_s"]["total"]
        if "naive" in results:
            naive = results["naive"]["stages_s"]["total"]
            print(f"fast vs naive (wall): {100 * (1 - fast / naive):.1f}% less time ({naive / fast:.2f}x)")
            fast_cpu = results["fast"]["stages_cpu_s"]["total"]
            naive_cpu = results["naive"]["stages_cpu_s"]["total"]
            print(f"fast vs naive (cpu):  {100 * (1 - fast_cpu / naive_cpu):.1f}% less CPU time")
        gemm = results["fast"].get("gemm_gflops")
        if flops and gemm:
            target = 0.75 * REFERENCE_S["total"]
            print(
                f"this CPU's float32 GEMM rate ({args.threads} threads): {gemm:.0f} GFLOP/s. A pair is "
                f"{flops['total'] / 1e9:.0f} GFLOP (reference-style count; Winograd heads need fewer): "
                f"{target:.2f} s (25% below {REFERENCE_S['total']} s) needs "
                f"{flops['total'] / 1e9 / target:.0f} "
                f"GFLOP/s, the encoder's {REFERENCE_S['encoder']} s alone "
                f"{flops['encoder'] / 1e9 / REFERENCE_S['encoder']:.0f} GFLOP/s; a tracking step "
                f"(one image encoded) is {flops['tracking_step'] / 1e9:.0f} GFLOP"
            )
        if args.device == "cpu":
            ref = REFERENCE_S["total"]
            print(
                f"reference implementation (issue 4, quiet machine): {ref} s per pair; "
                f"fast here: {fast:.2f} s, "
                f"{100 * (1 - fast / ref):.1f}% less time than that figure (meaningful only on a quiet "
                "machine; the fast/naive ratio above is the same-run comparison)"
            )


if __name__ == "__main__":
    main()
