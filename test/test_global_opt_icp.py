"""Tests for the backend point-to-plane ICP term (slam.icp_edges) inside the global optimiser."""

import math

import pytest
import torch

from online3r_ros.geometry.lie import (
    sim3_compose,
    sim3_exp,
    sim3_inverse,
    sim3_log,
    sim3_retract,
    sim3_to_matrix,
)
from online3r_ros.slam.global_opt import GlobalOptConfig, GlobalOptError, GlobalOptimizer
from online3r_ros.slam.graph import FactorGraph
from online3r_ros.slam.icp_edges import build_icp_term, point_to_plane_factor_terms
from online3r_ros.slam.keyframes import KeyframeStore

DT = torch.float64
H, W = 48, 64
K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]], dtype=DT)


def _cast(T):
    """Pointmap ``[H, W, 3]`` of camera ``T`` inside a tilted box room (distance along each pixel ray)."""
    uu, vv = torch.meshgrid(torch.arange(W, dtype=DT), torch.arange(H, dtype=DT), indexing="xy")
    rays = torch.stack(((uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], torch.ones_like(uu)), -1)
    Rs = sim3_to_matrix(T)[:3, :3]
    d = rays.reshape(-1, 3) @ Rs.T
    o = T[:3]
    lo = torch.tensor([-2.0, -1.5, -1.0], dtype=DT)
    hi = torch.tensor([2.0, 1.5, 3.0], dtype=DT)
    t = torch.where(d > 0, (hi - o) / d, (lo - o) / d)
    t = torch.where(d.abs() < 1e-12, torch.full_like(t, math.inf), t)
    return (t.min(dim=-1).values[:, None] * rays.reshape(-1, 3)).reshape(H, W, 3)


def _scene(n=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    xi = torch.zeros(n, 7, dtype=DT)
    xi[:, 3] = -0.35 + 0.05 * torch.randn(n, generator=g, dtype=DT)  # look down a little: floor + walls
    xi[:, 4] = -0.45 + 0.1 * torch.linspace(-1, 1, n, dtype=DT)  # facing a corner: 3 planes in view
    xi[:, 5] = 0.1 * torch.randn(n, generator=g, dtype=DT)
    T = sim3_exp(xi)
    T[:, 0] = 0.3 * torch.linspace(-1, 1, n, dtype=DT)
    T[:, 1] = 0.05 * torch.randn(n, generator=g, dtype=DT)
    return T, [_cast(T[k]) for k in range(n)]


def _store_graph(T0, Xs, edges):
    """Store with poses ``T0``; every edge gets one dummy match per direction (the ICP term needs no
    matches, the graph needs an edge) with q below Q_conf for the pixel term."""
    store = KeyframeStore(pose_dtype=DT)
    store.K = K
    for k, X in enumerate(Xs):
        store.append(T0[k], X, torch.ones(H, W, dtype=DT), frame_index=k)
    graph = FactorGraph(min_match_frac=0.0, Q_conf=0.0)
    P = H * W
    for i, j in edges:
        idx = torch.arange(P)[None]
        ok = torch.zeros(1, P, dtype=torch.bool)
        ok[0, 0] = True
        q = torch.full((1, P), 1.0)
        assert bool(graph.add_edges([i], [j], idx, ok, q, idx, ok, q).accepted.all())
    return store, graph


def _pose_err(T_est, T_true):
    return sim3_log(sim3_compose(sim3_inverse(T_true), T_est))[:, :6].norm(dim=-1)


def test_point_to_plane_jacobian_matches_finite_differences():
    T_true, Xs = _scene(5)
    T_true, Xs = T_true[1:3], Xs[1:3]
    T_ab = sim3_compose(
        sim3_inverse(T_true[0]), sim3_compose(sim3_exp(0.01 * torch.ones(7, dtype=DT)), T_true[1])
    )
    T_ab[7] = 1.0
    X_a = Xs[0][::4, ::4].reshape(-1, 3)
    g = torch.Generator().manual_seed(0)
    n_a = torch.nn.functional.normalize(torch.randn(X_a.shape, generator=g, dtype=DT), dim=-1)
    m = X_a.shape[0]
    Kb = torch.tensor([K[0, 0], K[1, 1], K[0, 2], K[1, 2], W, H, 0.0], dtype=DT).expand(m, 7)
    valid = torch.ones(H * W, dtype=torch.bool)

    def res(T):
        M = sim3_to_matrix(T)[:3].expand(m, 3, 4)
        return point_to_plane_factor_terms(M, X_a, n_a, Xs[1].reshape(-1, 3), valid, Kb, 10.0)

    r, J, ok = res(T_ab)
    assert int(ok.sum()) > m // 2
    eps = 1e-7  # small enough that no nearest-pixel association changes
    for c in range(7):
        d = torch.zeros(7, dtype=DT)
        d[c] = eps
        rp = res(sim3_retract(T_ab, d))[0]
        rm = res(sim3_retract(T_ab, -d))[0]
        torch.testing.assert_close(J[ok, c], ((rp - rm) / (2 * eps))[ok], rtol=1e-4, atol=1e-6)


def test_icp_term_recovers_perturbed_se3_poses():
    """Pixel term disabled (no usable match): the re-associated point-to-plane term alone brings perturbed
    keyframes of the box room back to their true poses."""
    n = 5
    T_true, Xs = _scene(n)
    g = torch.Generator().manual_seed(7)
    xi = 0.02 * torch.randn(n, 7, dtype=DT, generator=g)
    xi[:, 6] = 0
    xi[0] = 0
    T0 = sim3_compose(sim3_exp(xi), T_true)
    edges = [(k, k + 1) for k in range(n - 1)] + [(0, 2), (1, 3), (2, 4), (0, 4)]
    store, graph = _store_graph(T0, Xs, edges)
    cfg = GlobalOptConfig(
        calibrated=True, pose_model="se3", icp_sigma=0.01, icp_stride=1, max_iters=30, Q_conf=2.0
    )
    res = GlobalOptimizer(cfg).optimize(store, graph)
    err0 = float(_pose_err(T0, T_true).max())
    err = float(_pose_err(store.get_poses(), T_true).max())
    assert res.cost_history[-1] < 0.1 * res.cost_history[0]
    assert err < 0.1 * err0 and err < 2e-3, (err0, err)
    # without the ICP term nothing constrains the poses (the only match is below Q_conf)
    store2, graph2 = _store_graph(T0, Xs, edges)
    res2 = GlobalOptimizer(GlobalOptConfig(calibrated=True, pose_model="se3", Q_conf=2.0)).optimize(
        store2, graph2
    )
    assert res2.status == "nothing_to_optimize"


def test_icp_term_absent_without_intrinsics_and_config_validation():
    T_true, Xs = _scene(2)
    store, graph = _store_graph(T_true, Xs, [(0, 1)])
    store.K = None
    batch = graph.factor_batch()
    cfg = GlobalOptConfig(calibrated=True, icp_sigma=0.01)
    assert build_icp_term(store, batch.a, batch.b, batch.a, batch.b, cfg, torch.device("cpu"), DT) is None
    for bad in ({"icp_sigma": -1.0}, {"icp_stride": 0}, {"icp_dist_thresh": 0.0}):
        with pytest.raises(GlobalOptError, match="icp"):
            GlobalOptConfig(**bad)
