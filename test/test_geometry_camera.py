"""Camera helpers: back-projection, projection + Jacobian, rays/distances, intrinsics for resized images."""

from __future__ import annotations

import math

import pytest
import torch

from online3r_ros.geometry import camera

K = torch.tensor([[500.0, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_backproject_matches_analytic_and_handles_invalid_depth():
    H, W = 6, 8
    depth = torch.linspace(0.5, 3.0, H * W, dtype=torch.float64).reshape(H, W)
    depth[0, 0] = 0.0
    depth[1, 2] = math.nan
    depth[2, 3] = math.inf
    depth[3, 4] = -1.0
    X = camera.backproject_depth(depth, K)
    assert X.shape == (H, W, 3)
    v, u = 4, 5
    z = depth[v, u]
    expected = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    assert torch.allclose(X[v, u], expected)
    for vv, uu in [(0, 0), (1, 2), (2, 3), (3, 4)]:
        assert torch.equal(X[vv, uu], torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(X).all()
    # batched depth with one K
    Xb = camera.backproject_depth(torch.stack([depth, 2 * depth]), K)
    assert torch.allclose(Xb[1, v, u], 2 * X[v, u])


def test_project_inverts_backproject():
    depth = torch.full((5, 7), 2.0, dtype=torch.float64)
    X = camera.backproject_depth(depth, K)
    uv, valid = camera.project(X, K)
    assert valid.all()
    assert torch.allclose(uv, camera.pixel_grid(5, 7, torch.float64), atol=1e-10)
    _, valid = camera.project(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64), K)
    assert not valid.any()


def test_project_with_jacobian_vs_finite_differences():
    P = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0]], dtype=torch.float64)
    meas, J, valid = camera.project_with_jacobian(P, K)
    assert valid.all()
    uv, _ = camera.project(P, K)
    assert torch.allclose(meas[:, :2], uv)
    assert torch.allclose(meas[:, 2], torch.log(P[:, 2]))
    eps = 1e-6
    for k in range(3):
        d = torch.zeros(3, dtype=torch.float64)
        d[k] = eps
        fd = (camera.project_with_jacobian(P + d, K)[0] - camera.project_with_jacobian(P - d, K)[0]) / (
            2 * eps
        )
        assert torch.allclose(J[..., k], fd, atol=1e-6)


def test_rays_and_distances():
    X = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    r, d = camera.rays_and_distances(X)
    assert torch.allclose(r[0], torch.tensor([0.6, 0.8, 0.0]))
    assert d[0, 0] == 5.0
    assert torch.equal(r[1], torch.zeros(3))


def test_resize_and_crop_intrinsics_consistent_with_pixel_geometry():
    # a 3D point seen at (u, v) at 640x480 is seen at ((u+0.5)*s-0.5, ...) after resizing by s
    P = torch.tensor([0.2, -0.1, 1.5], dtype=torch.float64)
    uv, _ = camera.project(P, K)
    K2 = camera.resize_intrinsics(K, (480, 640), (240, 320))
    uv2, _ = camera.project(P, K2)
    assert torch.allclose(uv2, (uv + 0.5) * 0.5 - 0.5)
    K3 = camera.crop_intrinsics(K, left=10, top=20)
    uv3, _ = camera.project(P, K3)
    assert torch.allclose(uv3, uv - torch.tensor([10.0, 20.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        camera.resize_intrinsics(K, (0, 640), (240, 320))
    with pytest.raises(ValueError, match="K must be"):
        camera.project(P, torch.eye(4))
