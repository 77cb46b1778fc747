"""Sim(3)/SE(3): round trips, matrix exponential, adjoint identity, Jacobians vs finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from online3r_ros.geometry import lie


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def _rand_xi(n: int, dim: int = 7, scale: float = 1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    xi = torch.randn(n, dim, generator=_gen(seed), dtype=torch.float64) * scale
    # keep rotation angles below pi so that log(exp(xi)) == xi
    angle = xi[:, 3:6].norm(dim=-1, keepdim=True)
    xi[:, 3:6] *= torch.clamp(3.0 / angle, max=1.0)
    return xi.to(dtype)


def _hat_sim3(xi: torch.Tensor) -> torch.Tensor:
    G = xi.new_zeros(*xi.shape[:-1], 4, 4)
    G[..., :3, :3] = lie.skew(xi[..., 3:6]) + xi[..., 6, None, None] * torch.eye(3, dtype=xi.dtype)
    G[..., :3, 3] = xi[..., :3]
    return G


def _hat_se3(xi: torch.Tensor) -> torch.Tensor:
    G = xi.new_zeros(*xi.shape[:-1], 4, 4)
    G[..., :3, :3] = lie.skew(xi[..., 3:6])
    G[..., :3, 3] = xi[..., :3]
    return G


def _special_xis() -> torch.Tensor:
    """Near-identity, tiny angle / unit scale, large scale and near-pi rotations."""
    rows = [
        [0, 0, 0, 0, 0, 0, 0],
        [1e-9, -2e-9, 3e-9, 1e-10, 0, -1e-10, 1e-12],
        [0.3, -0.2, 0.1, 1e-6, 2e-6, -1e-6, 0.0],
        [0.3, -0.2, 0.1, 0.0, 0.0, 0.0, 0.5],
        [0.3, -0.2, 0.1, 5e-3, -5e-3, 2e-3, -1e-7],
        [0.3, -0.2, 0.1, 0.01, 0.0, 0.0, 2.5],
        [0.3, -0.2, 0.1, 0.2, 0.3, -0.1, -3.0],
        [1.0, 2.0, 3.0, 0.0, 0.0, math.pi - 1e-3, 0.1],
        [1.0, 2.0, 3.0, 1.2, -0.4, 0.7, 1.99],
        [1.0, 2.0, 3.0, 1.2, -0.4, 0.7, 2.01],
    ]
    return torch.tensor(rows, dtype=torch.float64)


def test_quat_matrix_round_trip():
    q = torch.randn(200, 4, generator=_gen(1), dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = q * torch.sign(q[:, 3:])
    R = lie.quat_to_matrix(q)
    assert torch.allclose(
        R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(200, 3, 3), atol=1e-12
    )
    assert torch.allclose(torch.linalg.det(R), torch.ones(200, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(lie.matrix_to_quat(R), q, atol=1e-12)
    # 180 degree rotations (trace = -1) are the hard case for the trace formula
    for axis in torch.eye(3, dtype=torch.float64):
        R = lie.quat_to_matrix(torch.cat([axis, torch.zeros(1, dtype=torch.float64)]))
        assert torch.allclose(lie.quat_to_matrix(lie.matrix_to_quat(R)), R, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_sim3_exp_matches_matrix_exponential(dtype, tol):
    xi = torch.cat([_rand_xi(64, seed=2), _special_xis()])
    T = lie.sim3_exp(xi.to(dtype))
    assert T.dtype == dtype
    M = lie.sim3_to_matrix(T.to(torch.float64))
    M_ref = torch.linalg.matrix_exp(_hat_sim3(xi))
    err = (M - M_ref).abs() / (1.0 + M_ref.abs())
    assert err.max().item() < tol


def test_se3_exp_matches_matrix_exponential():
    xi = torch.cat([_rand_xi(64, dim=6, seed=3), _special_xis()[:, :6]])
    M = lie.se3_to_matrix(lie.se3_exp(xi))
    assert torch.allclose(M, torch.linalg.matrix_exp(_hat_se3(xi)), atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_sim3_exp_log_round_trip(dtype, tol):
    xi = torch.cat([_rand_xi(64, seed=4), _special_xis()]).to(dtype)
    xi_back = lie.sim3_log(lie.sim3_exp(xi))
    assert torch.allclose(xi_back, xi, atol=tol, rtol=tol)
    # log then exp from random group elements
    T = lie.sim3_exp(_rand_xi(32, seed=5, scale=2.0).to(dtype))
    T2 = lie.sim3_exp(lie.sim3_log(T))
    assert torch.allclose(lie.sim3_to_matrix(T2), lie.sim3_to_matrix(T), atol=10 * tol, rtol=tol)


def test_se3_exp_log_round_trip():
    xi = torch.cat([_rand_xi(64, dim=6, seed=6), _special_xis()[:, :6]])
    assert torch.allclose(lie.se3_log(lie.se3_exp(xi)), xi, atol=1e-9)


def test_compose_inverse_act_consistent_with_matrices():
    A = lie.sim3_exp(_rand_xi(16, seed=7))
    B = lie.sim3_exp(_rand_xi(16, seed=8))
    X = torch.randn(16, 3, generator=_gen(9), dtype=torch.float64)
    MA, MB = lie.sim3_to_matrix(A), lie.sim3_to_matrix(B)
    assert torch.allclose(lie.sim3_to_matrix(lie.sim3_compose(A, B)), MA @ MB, atol=1e-10)
    assert torch.allclose(lie.sim3_to_matrix(lie.sim3_inverse(A)), torch.linalg.inv(MA), atol=1e-10)
    Xh = torch.cat([X, torch.ones(16, 1, dtype=torch.float64)], -1)
    assert torch.allclose(lie.sim3_act(A, X), (MA @ Xh[..., None])[:, :3, 0], atol=1e-10)
    # unbatched transform on many points (single GEMM path) and broadcasting
    P = torch.randn(5, 7, 3, generator=_gen(10), dtype=torch.float64)
    ref = (MA[0, :3, :3] @ P[..., None])[..., 0] + MA[0, :3, 3]
    assert torch.allclose(lie.sim3_act(A[0], P), ref, atol=1e-10)
    assert torch.allclose(lie.sim3_act(A[0][None, None], P), ref, atol=1e-10)
    # SE(3)
    a, b = lie.sim3_to_se3(A), lie.sim3_to_se3(B)
    assert torch.allclose(
        lie.se3_to_matrix(lie.se3_compose(a, b)), lie.se3_to_matrix(a) @ lie.se3_to_matrix(b), atol=1e-10
    )
    assert torch.allclose(
        lie.se3_compose(a, lie.se3_inverse(a)), lie.se3_identity(16, dtype=torch.float64), atol=1e-12
    )
    assert torch.allclose(lie.sim3_from_se3(a, 2.0)[..., 7], torch.full((16,), 2.0, dtype=torch.float64))


def test_matrix_round_trips():
    T = lie.sim3_exp(_rand_xi(32, seed=11, scale=1.5))
    assert torch.allclose(lie.sim3_from_matrix(lie.sim3_to_matrix(T)), T, atol=1e-10)
    t = lie.sim3_to_se3(T)
    assert torch.allclose(lie.se3_from_matrix(lie.se3_to_matrix(t)), t, atol=1e-10)
    with pytest.raises(ValueError, match="positive determinant"):
        M = torch.eye(4, dtype=torch.float64)
        M[0, 0] = -1
        lie.sim3_from_matrix(M)


def test_identity_and_shape_errors():
    I = lie.sim3_identity(2, 3, dtype=torch.float64)
    assert I.shape == (2, 3, 8)
    assert torch.allclose(lie.sim3_log(I), torch.zeros(2, 3, 7, dtype=torch.float64))
    assert lie.se3_identity().shape == (7,)
    with pytest.raises(ValueError, match="xi must have shape"):
        lie.sim3_exp(torch.zeros(6))
    with pytest.raises(ValueError, match="T must have shape"):
        lie.sim3_act(torch.zeros(7), torch.zeros(3))


@pytest.mark.parametrize("group", ["sim3", "se3"])
def test_adjoint_identity(group):
    dim = 7 if group == "sim3" else 6
    T = getattr(lie, f"{group}_exp")(_rand_xi(32, dim=dim, seed=12))
    xi = _rand_xi(32, dim=dim, seed=13, scale=0.5)
    exp, compose, adj = (getattr(lie, f"{group}_{n}") for n in ("exp", "compose", "adjoint"))
    lhs = compose(T, exp(xi))
    rhs = compose(exp((adj(T) @ xi[..., None])[..., 0]), T)
    to_m = getattr(lie, f"{group}_to_matrix")
    assert torch.allclose(to_m(lhs), to_m(rhs), atol=1e-9)


@pytest.mark.parametrize("group", ["sim3", "se3"])
def test_act_jacobian_vs_finite_differences(group):
    dim = 7 if group == "sim3" else 6
    exp, act = getattr(lie, f"{group}_exp"), getattr(lie, f"{group}_act")
    T = exp(_rand_xi(8, dim=dim, seed=14))
    X = torch.randn(8, 3, generator=_gen(15), dtype=torch.float64)
    P = act(T, X)
    J = getattr(lie, f"{group}_act_jacobian")(P)
    eps = 1e-6
    J_fd = torch.zeros_like(J)
    for k in range(dim):
        d = torch.zeros(dim, dtype=torch.float64)
        d[k] = eps
        P_plus = act(getattr(lie, f"{group}_retract")(T, d.expand(8, dim)), X)
        P_minus = act(getattr(lie, f"{group}_retract")(T, -d.expand(8, dim)), X)
        J_fd[..., k] = (P_plus - P_minus) / (2 * eps)
    assert torch.allclose(J, J_fd, atol=1e-8)


def test_exp_derivative_at_zero_is_generator():
    # d Exp(xi)/d xi at 0 acting on X equals the act jacobian; checked through autograd at exactly zero
    X = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)

    def f(xi):
        return lie.sim3_act(lie.sim3_exp(xi), X)

    J = torch.autograd.functional.jacobian(f, torch.zeros(7, dtype=torch.float64))
    assert torch.allclose(J, lie.sim3_act_jacobian(X), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_identity(dtype):
    xi = torch.zeros(3, 7, dtype=dtype, requires_grad=True)
    T = lie.sim3_exp(xi)
    (T * torch.arange(8, dtype=dtype)).sum().backward()
    assert torch.isfinite(xi.grad).all()
    T0 = lie.sim3_identity(3, dtype=dtype).requires_grad_(True)
    lie.sim3_log(T0).sum().backward()
    assert torch.isfinite(T0.grad).all()
    q = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, requires_grad=True)
    lie.so3_log(q).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_gradcheck_exp_log():
    xi = torch.cat([_rand_xi(4, seed=16), _special_xis()[[2, 4, 6]]]).requires_grad_(True)
    assert torch.autograd.gradcheck(lie.sim3_exp, (xi,), eps=1e-7, atol=1e-6)
    T = lie.sim3_exp(_rand_xi(4, seed=17)).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lie.sim3_log, (T,), eps=1e-7, atol=1e-6)


def test_so3_exp_log_small_and_large_angles():
    w = torch.tensor([[1e-12, 0, 0], [1e-5, 2e-5, 0], [0, 0, 3.0], [0.5, -0.5, 0.5]], dtype=torch.float64)
    q = lie.so3_exp(w)
    assert torch.allclose(q.norm(dim=-1), torch.ones(4, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(lie.so3_log(q), w, atol=1e-12)
    assert torch.allclose(lie.quat_to_matrix(q), torch.linalg.matrix_exp(lie.skew(w)), atol=1e-12)


def test_repeated_composition_keeps_unit_quaternions():
    """A constant-velocity motion model composes poses with themselves every frame; float32 products must not
    drift off the unit sphere (that once collapsed the rotation to identity after ~20 frames)."""
    from online3r_ros.geometry.lie import sim3_compose, sim3_exp, sim3_inverse

    T = sim3_exp(torch.tensor([0.1, 0.2, 0.0, 0.01, 0.02, 0.03, 0.0]))
    T[3:7] *= 0.999  # a slightly non-unit input, as a float32 optimiser may return
    last, prev = T.clone(), T.clone()
    for _ in range(40):
        last, prev = sim3_compose(last, sim3_compose(sim3_inverse(prev), last)), last
    assert torch.allclose(last[3:7].norm(), torch.tensor(1.0), atol=1e-6)
