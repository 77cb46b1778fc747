"""Benchmark of the global pose-graph optimisation (online3r_ros.slam.global_opt) vs graph size.

Synthetic pose graphs: keyframes on a looping trajectory (one lap = ``--lap`` keyframes), each keyframe sees a
window of a shared world point list (exact matches, small pointmap noise), consecutive edges plus loop edges
to the same place one lap earlier for every ``--loop-every``-th keyframe; ``--points`` matches per edge and
direction. For 50, 200 and 500 keyframes it prints the time per Gauss-Newton iteration split into residual +
Jacobian evaluation and per-factor accumulation ("linearize"), block-sparse assembly ("assemble") and the
sparse factorisation/solve ("solve"), the ratio to the keyframe count (about constant = linear growth), the
memory of the matches and the process peak RSS, then a full ``GlobalOptimizer.optimize`` run from perturbed
poses with its convergence.

    .venv/bin/python benchmarks/bench_global_opt.py [--sizes 50 200 500] [--points 2000] [--device cpu]

Timings on a shared machine are noisy (other processes compete for the CPU): compare ratios, repeat runs.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import torch

import online3r_ros.slam.global_opt as go
from online3r_ros.geometry.lie import sim3_act, sim3_compose, sim3_exp, sim3_inverse, sim3_log
from online3r_ros.slam.graph import FactorGraph
from online3r_ros.slam.keyframes import KeyframeStore


def build(n_kf: int, points: int, lap: int, loop_every: int, H: int, W: int, device: str, seed: int = 0):
    """Store + graph of a synthetic looping trajectory; returns (store, graph, true poses)."""
    g = torch.Generator().manual_seed(seed)
    P = H * W
    shift = P // 4
    n_world = lap * shift
    Y = torch.rand(n_world, 3, generator=g, dtype=torch.float64) * 4 - 2
    ang = torch.arange(n_kf, dtype=torch.float64) * (2 * math.pi / lap)
    xi = torch.zeros(n_kf, 7, dtype=torch.float64)
    xi[:, 3:6] = 0.1 * torch.randn(n_kf, 3, generator=g, dtype=torch.float64)
    xi[:, 6] = 0.1 * torch.randn(n_kf, generator=g, dtype=torch.float64)
    T_true = sim3_exp(xi)
    T_true[:, 0] = 6 * torch.cos(ang)
    T_true[:, 1] = 6 * torch.sin(ang)
    store = KeyframeStore(device=device, pose_dtype=torch.float64)
    sels = []
    for k in range(n_kf):
        sel = ((k % lap) * shift + torch.randperm(P, generator=g)) % n_world
        X = sim3_act(sim3_inverse(T_true[k]), Y[sel]).float()
        X += 1e-3 * torch.randn(X.shape, generator=g)
        sels.append(sel)
        store.append(T_true[k], X.reshape(H, W, 3), torch.ones(H, W), frame_index=k)
    graph = FactorGraph(max_points_per_edge=points, device=device)
    edges = [(k - 1, k) for k in range(1, n_kf)]
    edges += [(k - lap, k) for k in range(lap, n_kf, loop_every)]
    inv = torch.full((n_world,), -1, dtype=torch.long)
    for i, j in edges:
        inv.fill_(-1)
        inv[sels[i]] = torch.arange(P)
        m_ji = inv[sels[j]]
        inv.fill_(-1)
        inv[sels[j]] = torch.arange(P)
        m_ij = inv[sels[i]]
        q = torch.full((1, P), 3.0)
        graph.add_edges(
            [i],
            [j],
            m_ji.clamp_min(0)[None],
            (m_ji >= 0)[None],
            q,
            m_ij.clamp_min(0)[None],
            (m_ij >= 0)[None],
            q,
        )
    return store, graph, T_true


def time_stages(store, graph, cfg: go.GlobalOptConfig, repeats: int) -> dict:
    device = store.device
    ids = graph.keyframe_ids()
    var_of_kf = torch.arange(len(ids))
    t0 = time.perf_counter()
    prob = go._build_problem(store, graph.factor_batch(), var_of_kf, cfg, device, getattr(torch, cfg.dtype))
    t_gather = time.perf_counter() - t0
    T = store.get_poses(ids).to(device, getattr(torch, cfg.dtype))
    n = T.shape[0]
    var = torch.arange(-1, n - 1, device=device)
    D = 7 if cfg.pose_model == "sim3" else 6
    lin, asm, sol = [], [], []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        _, H_loc, g_loc, _ = go._linearize(T, prob, cfg)
        _sync(device)
        t1 = time.perf_counter()
        Hs, gvec = go._assemble(T, prob, var, H_loc, g_loc, n - 1, D)
        t2 = time.perf_counter()
        x = go.solve_sparse(Hs, -gvec)
        t3 = time.perf_counter()
        assert x is not None
        lin.append(t1 - t0)
        asm.append(t2 - t1)
        sol.append(t3 - t2)
    return {
        "gather": t_gather,
        "linearize": statistics.median(lin),
        "assemble": statistics.median(asm),
        "solve": statistics.median(sol),
        "n_points": prob.n_points,
        "n_factors": prob.fa.numel(),
        "nnz": Hs.nnz,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 500])
    ap.add_argument("--points", type=int, default=2000, help="matches per edge and direction")
    ap.add_argument("--lap", type=int, default=50, help="keyframes per loop of the trajectory")
    ap.add_argument(
        "--loop-every", type=int, default=5, help="a loop edge for every N-th keyframe after a lap"
    )
    ap.add_argument("--hw", type=int, nargs=2, default=[48, 64], help="pointmap size H W")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch default; 1 is steadier on a busy machine)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = go.GlobalOptConfig(dtype=args.dtype, max_iters=10)
    print(
        f"device={args.device} dtype={args.dtype} torch_threads={torch.get_num_threads()} "
        f"points/edge/direction={args.points} pointmap={args.hw[0]}x{args.hw[1]}"
    )
    header = (
        f"{'kf':>5} {'edges':>6} {'points':>9} {'gather s':>9} {'lin ms':>8} {'asm ms':>8} {'solve ms':>9} "
        f"{'iter ms':>8} {'iter ms/kf':>10} {'match MiB':>9} {'peak RSS MiB':>12}"
    )
    print(header)
    rows = []
    for n in args.sizes:
        store, graph, T_true = build(n, args.points, args.lap, args.loop_every, *args.hw, args.device)
        st = time_stages(store, graph, cfg, args.repeats)
        it = st["linearize"] + st["assemble"] + st["solve"]
        mem = graph.memory_report()["total_bytes"] / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((n, it))
        print(
            f"{n:5d} {len(graph):6d} {st['n_points']:9d} {st['gather']:9.3f} {1e3 * st['linearize']:8.1f} "
            f"{1e3 * st['assemble']:8.1f} {1e3 * st['solve']:9.2f} {1e3 * it:8.1f} {1e3 * it / n:10.3f} "
            f"{mem:9.2f} {rss:12.0f}"
        )
        # full optimisation from perturbed poses (all but the first keyframe)
        gen = torch.Generator().manual_seed(1)
        dxi = 0.01 * torch.randn(n, 7, generator=gen, dtype=torch.float64)
        dxi[0] = 0
        store.set_poses(list(range(n)), sim3_compose(sim3_exp(dxi), T_true))
        res = go.GlobalOptimizer(cfg).optimize(store, graph)
        err = sim3_log(sim3_compose(sim3_inverse(T_true), store.get_poses().cpu())).norm(dim=-1)
        print(
            f"      optimize: {res.iterations} iters, status={res.status}, "
            f"total {res.timings['total_s']:.2f} s, cost {res.cost_history[0]:.3g} -> "
            f"{res.cost_history[-1]:.3g}, max pose err {float(err.max()):.2e}"
        )
    if len(rows) > 1:
        base_n, base_t = rows[0]
        ratios = ", ".join(
            f"{n}kf: x{t / base_t:.2f} time for x{n / base_n:.1f} keyframes" for n, t in rows[1:]
        )
        print(f"growth vs {base_n} keyframes: {ratios}")


if __name__ == "__main__":
    main()
