"""Print the GPU check's figures (JSON files written by ``gpu_check.sh``) against the issue's targets.

python benchmarks/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def flatten(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts/lists as ``{'a.b[0]': value}``."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def load(out: Path) -> dict[str, float]:
    figs: dict[str, float] = {}
    for path in sorted(out.glob("*.json")):
        try:
            figs.update(flatten(json.loads(path.read_text()), path.stem))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{path.name}: unreadable ({exc})")
    return figs


def row(target: str, gpu: float | None, cpu: float | None, goal: str, ok: bool | None) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
    verdict = {True: "met", False: "NOT met", None: "-"}[ok]
    return f"| {target} | {fmt(gpu)} | {fmt(cpu)} | {goal} | {verdict} |"


def first(figs: dict[str, float], *keys: str) -> float | None:
    for k in keys:
        if k in figs:
            return figs[k]
    return None


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu_check")
    figs = load(out)
    print("all figures:")
    for k, v in figs.items():
        print(f"  {k} = {v:.6g}")
    step = first(figs, "network.step_ms[cuda float16 graph]")  # source.precision auto on CUDA
    tune = first(figs, "network.tune_step_ms[cuda bfloat16]")
    track_gpu = first(figs, "tracking_cuda.results[0].median_ms")  # matching + GN (MASt3R's path)
    track_cpu = first(figs, "tracking_cpu.results[0].median_ms")
    icp_gpu = first(figs, "tracking_cuda.results[1].median_ms")  # ICP + GN (RGB-D default)
    icp_cpu = first(figs, "tracking_cpu.results[1].median_ms")
    ms = lambda v: None if v is None else 1e3 * v  # noqa: E731
    gopt_gpu = ms(first(figs, "gopt_cuda.sizes[0].per_call_s"))
    gopt_gpu32 = ms(first(figs, "gopt_cuda_f32.sizes[0].per_call_s"))
    gopt_cpu = ms(first(figs, "gopt_cpu.sizes[0].per_call_s"))
    runs = ("cpu_rgbd", "cuda_rgbd", "cuda_rgbd_thread_nondet", "cuda_net_tune", "cuda_net_tune_thread")
    fps = {k: first(figs, f"pipeline_{k}.fps") for k in runs}

    def below(v: float | None, limit: float) -> bool | None:
        return None if v is None else v <= limit

    print("\n| target | GPU | CPU path | goal | |")
    print("|---|---|---|---|---|")
    print(
        row(
            "network tracking step, ms",
            step,
            first(figs, "network.step_ms[cpu float32]"),
            "<= 12",
            below(step, 12),
        )
    )
    print(row("prompt-tuning step, ms", tune, None, "<= 60", below(tune, 60)))
    print(row("matching + tracking GN, ms/frame", track_gpu, track_cpu, "<= 4", below(track_gpu, 4)))
    print(row("  RGB-D ICP + GN, ms/frame", icp_gpu, icp_cpu, "-", None))
    print(row("global opt, 200 keyframes, ms/call", gopt_gpu, gopt_cpu, "<= 20", below(gopt_gpu, 20)))
    print(row("  same, float32 compute", gopt_gpu32, None, "<= 20", below(gopt_gpu32, 20)))
    at_least = lambda v, goal: None if v is None else v >= goal  # noqa: E731
    e2e = fps["cuda_net_tune_thread"]
    print(row("end to end, network + tuning, mapper thread, frames/s", e2e, None, ">= 30", at_least(e2e, 30)))
    print(row("  same, serial (single thread), frames/s", fps["cuda_net_tune"], None, "-", None))
    faster = (
        None if fps["cuda_rgbd"] is None or fps["cpu_rgbd"] is None else fps["cuda_rgbd"] > fps["cpu_rgbd"]
    )
    print(row("RGB-D source, serial, frames/s", fps["cuda_rgbd"], fps["cpu_rgbd"], "GPU > CPU", faster))
    nondet = fps["cuda_rgbd_thread_nondet"]
    print(row("RGB-D source, mapper thread, deterministic false, frames/s", nondet, None, "-", None))
    par = first(figs, "network.parity_cuda_vs_cpu_fp32")
    print(row("full-size fp32 CUDA vs CPU, max rel", par, None, "<= 1e-4", below(par, 1e-4)))
    for p in ("bfloat16 graph", "float16 graph"):
        for k in ("points_rel", "conf_rel", "desc_deg"):
            v = first(figs, f"network.dev[cuda {p}].{k}")
            print(row(f"{p} vs fp32, median {k}", v, None, "stated", None))


if __name__ == "__main__":
    main()
