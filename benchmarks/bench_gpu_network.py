"""The full-size MASt3R network on a GPU: tracking-step time per precision, CUDA graphs, deviations, tuning.

Builds the released ViT-L configuration (688.6M parameters) with random weights (``bench_mast3r.
build_random_model``; the DPT heads' last convolution scaled by 0.3 as in the parity fixtures, so the
exp/expm1 outputs stay finite) and real 7-Scenes images at 512x384 (random images without the data).

Figures (one line each, ``name value unit``; ``--json`` writes them all):

- ``step_ms[...]``: one tracking step, ``MASt3REngine.asymmetric(frame, keyframe)`` on a frame never seen
  before (encoder of one image, decoder against the keyframe's cached features, both heads, outputs cloned
  out of the engine): host wall time with ``torch.cuda.synchronize`` around each call, median of
  ``--repeats`` after ``--warmup``. Variants: float32 eager (TF32 off), float32 eager with TF32 matmuls,
  bfloat16 eager, bfloat16 CUDA graph (the default on CUDA), float16 CUDA graph; ``[cpu float32]`` on
  this machine's CPU for comparison.
- ``dev[...]``: deviation of a variant's outputs from float32 on the same device: median relative point error
  ``|X - X32| / |X32|``, median relative confidence error, median descriptor angle (degrees), both views.
- ``parity_cuda_vs_cpu_fp32``: float32 CUDA (TF32 off) against float32 CPU, max relative error of the points
  (``max |X - X_cpu| / max |X_cpu|``), the full-size check of the CPU parity fixtures.
- ``tune_step_ms``: one online prompt-tuning step as Online3R does it at a new keyframe (stand-in loss, the
  prompt issue's losses are not built yet): deep prompts ``[24, 32, 1024]``, the new and the previous
  keyframe encoded with gradients (batch 2), decoder and heads on three pairs (new-previous and new-two
  older keyframes with frozen features, batch 3), an L1 loss to fixed pointmaps, backward to the prompts,
  one AdamW step. bfloat16 weights, no CUDA graph.

    python benchmarks/bench_gpu_network.py --device cuda --json net.json
    python benchmarks/bench_gpu_network.py --device cpu --repeats 1 --warmup 0     # CPU figures only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mast3r import build_random_model  # noqa: E402

from online3r_ros.model.inference import MASt3REngine, NetImage, Prediction  # noqa: E402
from online3r_ros.model.preprocess import preprocess_image  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"


def load_images(n: int) -> list[np.ndarray]:
    """``n`` colour frames 10 apart from 7-Scenes (uint8 HxWx3), or seeded random images without the data."""
    import cv2

    paths = [DATA / f"frame-{10 * i:06d}.color.jpg" for i in range(n)]
    if all(p.is_file() for p in paths):
        return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    print(f"[net] {DATA} not found: random images", flush=True)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


class Frames:
    """Fresh ``NetImage`` objects (new cache keys) of a few prepared images on one device."""

    def __init__(self, images: list[np.ndarray], device: str) -> None:
        preps = [preprocess_image(im, size=512) for im in images]
        self.imgs = [(p.img.to(device), p.true_shape.to(device)) for p in preps]
        self.key = 0

    def __call__(self, i: int) -> NetImage:
        self.key += 1
        img, ts = self.imgs[i % len(self.imgs)]
        return NetImage(self.key, img, ts)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(engine: MASt3REngine, frames: Frames, warmup: int, repeats: int) -> tuple[float, list]:
    """Median wall ms of ``engine.asymmetric(new frame, keyframe)``; also the last step's predictions."""
    kf = frames(0)
    engine.features(kf)
    times, out = [], None
    for r in range(warmup + repeats):
        fr = frames(1 + r % 3)
        sync(engine.device.type)
        t = time.perf_counter()
        out = engine.asymmetric(fr, kf)
        sync(engine.device.type)
        if r >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), [p for p in out]


def reference_step(engine: MASt3REngine, frames: Frames) -> list[Prediction]:
    """Predictions of the step on frame 1 against keyframe 0 (deterministic inputs for deviations)."""
    kf, fr = frames(0), frames(1)
    return list(engine.asymmetric(fr, kf))


def deviation(preds: list[Prediction], refs: list[Prediction]) -> dict[str, float]:
    """Median relative point / confidence error and median descriptor angle (deg), both views pooled."""
    pts, conf, ang = [], [], []
    for p, r in zip(preds, refs, strict=True):
        X, Xr = p.X.float().cpu(), r.X.float().cpu()
        pts.append(((X - Xr).norm(dim=-1) / Xr.norm(dim=-1).clamp_min(1e-12)).flatten())
        conf.append(((p.C.cpu() - r.C.cpu()).abs() / r.C.cpu()).flatten())
        cos = (p.D.cpu() * r.D.cpu()).sum(-1).clamp(-1, 1)
        ang.append(torch.rad2deg(torch.acos(cos)).flatten())
    med = lambda xs: float(torch.cat(xs).nanmedian())  # noqa: E731
    return {"points_rel": med(pts), "conf_rel": med(conf), "desc_deg": med(ang)}


def build_network() -> torch.nn.Module:
    """Full-size MASt3R, random weights on the CPU (the DPT heads' last convolution scaled by 0.3)."""
    model = build_random_model("cpu")
    with torch.no_grad():
        for head in (model.downstream_head1, model.downstream_head2):
            head.dpt.head[4].weight.mul_(0.3)
    return model


class StandInTuner:
    """One Online3R-shaped prompt-tuning step per call (stand-in loss; see the module docstring).

    Deep prompts ``[enc_depth, 32, Denc]`` (float32, zero init) installed in ``engine``; AdamW, lr 1e-4.
    """

    def __init__(self, engine: MASt3REngine, tokens: int = 32) -> None:
        self.engine = engine
        self.prompts = torch.nn.Parameter(engine.model.new_prompts(tokens, dtype=torch.float32))
        self.opt = torch.optim.AdamW([self.prompts], lr=1e-4)
        engine.set_prompts(self.prompts)

    def step(self, new: NetImage, prev: NetImage, older: list[NetImage]) -> torch.Tensor:
        """Encode ``new`` and ``prev`` with gradients, decode ``new`` against ``prev`` and the ``older``
        keyframes' frozen features (one batch), L1 to a constant target, backward, AdamW; returns the
        detached loss (no host sync)."""
        eng = self.engine
        feat, pos = eng.encode_grad(torch.cat([new.img, prev.img]), torch.cat([new.true_shape] * 2))
        frozen = [eng.features_for_grad(f) for f in older]
        f2 = torch.cat([feat[1:], *(f for f, _ in frozen)])
        p2 = torch.cat([pos[1:], *(p for _, p in frozen)])
        n = f2.shape[0]
        a, b = eng.decode_grad(
            feat[:1].expand(n, -1, -1), pos[:1].expand(n, -1, -1), new.shape, f2, p2, new.shape
        )
        loss = (a.X - 1.0).abs().mean() + 0.5 * (b.X - 1.0).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        eng.prompts_updated()
        return loss.detach()


def tune_step_ms(model: torch.nn.Module, frames: Frames, device: str, warmup: int, repeats: int) -> float:
    """One prompt-tuning step (see the module docstring); median wall ms."""
    engine = MASt3REngine(model, device, "bfloat16" if device.startswith("cuda") else "float32")
    tuner = StandInTuner(engine)
    new, prev, old1, old2 = (frames(i) for i in range(4))
    times = []
    for r in range(warmup + repeats):
        sync(device)
        t = time.perf_counter()
        tuner.step(new, prev, [old1, old2])
        sync(device)
        if r >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--cpu-repeats", type=int, default=2, help="CPU float32 steps for the comparison (0: skip)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    dev = args.device
    t0 = time.perf_counter()
    base = build_network()
    images = load_images(4)
    fig: dict[str, float] = {}
    print(f"[net] model built in {time.perf_counter() - t0:.1f} s", flush=True)

    if args.cpu_repeats > 0:
        cpu = MASt3REngine(copy.deepcopy(base), "cpu", "float32")
        cpu_frames = Frames(images, "cpu")
        fig["step_ms[cpu float32]"], _ = time_steps(cpu, cpu_frames, 1, args.cpu_repeats)
        cpu_ref = reference_step(cpu, Frames(images, "cpu"))
        del cpu
        print(f"[net] step_ms[cpu float32] {fig['step_ms[cpu float32]']:.1f} ms", flush=True)
    if dev.startswith("cuda"):
        frames = Frames(images, dev)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        eng = MASt3REngine(copy.deepcopy(base), dev, "float32", cuda_graphs=False)
        ref = reference_step(eng, frames)
        fig["step_ms[cuda float32 eager]"], _ = time_steps(eng, frames, args.warmup, args.repeats)
        if args.cpu_repeats > 0:
            num = max(float((r.X.cpu() - c.X).abs().max()) for r, c in zip(ref, cpu_ref, strict=True))
            fig["parity_cuda_vs_cpu_fp32"] = num / max(float(c.X.abs().max()) for c in cpu_ref)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        fig["step_ms[cuda float32 eager tf32]"], _ = time_steps(eng, frames, args.warmup, args.repeats)
        del eng
        for precision, graphs in (("bfloat16", False), ("bfloat16", True), ("float16", True)):
            name = f"cuda {precision} {'graph' if graphs else 'eager'}"
            eng = MASt3REngine(copy.deepcopy(base), dev, precision, cuda_graphs=graphs)
            fig[f"step_ms[{name}]"], _ = time_steps(eng, frames, args.warmup, args.repeats)
            for k, v in deviation(reference_step(eng, frames), ref).items():
                fig[f"dev[{name}].{k}"] = v
            if graphs:
                assert eng.stats.graph_replays > 0, "the graph path was not taken"
            del eng
            torch.cuda.empty_cache()
            print(f"[net] step_ms[{name}] {fig[f'step_ms[{name}]']:.2f} ms", flush=True)
        fig["cuda_peak_alloc_mib"] = torch.cuda.max_memory_allocated() / 2**20
        fig["tune_step_ms[cuda bfloat16]"] = tune_step_ms(copy.deepcopy(base), frames, dev, 3, 10)
    for k, v in fig.items():
        print(f"{k} {v:.6g}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
