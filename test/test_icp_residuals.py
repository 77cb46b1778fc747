"""The ICP residual pieces of ``geometry/icp.py``: the shared model view, projective association, the
point-to-plane and photometric residuals (values against independent computations, Jacobians against
finite differences of the left perturbation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from online3r_ros.geometry.camera import backproject_depth
from online3r_ros.geometry.icp import (
    associate,
    grey_and_gradients,
    photometric,
    photometric_residuals,
    point_to_plane_residuals,
    projective_association,
    view_model,
)
from online3r_ros.geometry.lie import sim3_act, sim3_exp, sim3_inverse, sim3_retract

H, W = 48, 64
K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 54.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _scene(seed: int = 0):
    """A smooth, textured RGB-D frame (float64), keyframe points seen from a nearby pose ``T_CkCf``."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    depth = 1.5 + 0.3 * torch.sin(u / 11.0) + 0.2 * torch.cos(v / 7.0)
    X_f = backproject_depth(depth, K)
    grey = 0.5 + 0.25 * torch.sin(u / 5.0 + 0.3) * torch.cos(v / 4.0)
    image = grey.unsqueeze(-1).expand(H, W, 3).contiguous()
    T = sim3_exp(torch.tensor([0.02, -0.01, 0.015, 0.01, -0.02, 0.005, 0.0], dtype=torch.float64))
    pix = torch.randperm(H * W, generator=g)[:300]
    X_k = sim3_act(T, X_f.reshape(-1, 3)[pix]) + 0.003 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    n_k = F.normalize(torch.randn(300, 3, generator=g, dtype=torch.float64), dim=-1)
    I_k = torch.rand(300, generator=g, dtype=torch.float64)
    return X_f, image, T, X_k, n_k, I_k


def _bilinear(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """``img [H, W, C]`` at pixel coordinates ``uv [N, 2]`` by ``grid_sample`` (pixel centres at integers)."""
    grid = torch.stack([2 * uv[:, 0] / (W - 1) - 1, 2 * uv[:, 1] / (H - 1) - 1], -1).view(1, 1, -1, 2)
    out = F.grid_sample(img.permute(2, 0, 1)[None], grid.to(img.dtype), align_corners=True)
    return out[0, :, 0].T


def test_view_model_moves_and_projects_keyframe_points():
    _, _, T, X_k, _, _ = _scene()
    view = view_model(T, X_k, K)
    Q = sim3_act(sim3_inverse(T), X_k)
    torch.testing.assert_close(view.Q, Q)
    torch.testing.assert_close(view.uv[:, 0], K[0, 0] * Q[:, 0] / Q[:, 2] + K[0, 2])
    torch.testing.assert_close(view.uv[:, 1], K[1, 1] * Q[:, 1] / Q[:, 2] + K[1, 2])
    assert view.in_front.all()


def test_association_is_the_nearest_pixel_within_the_gate():
    X_f, _, T, X_k, _, _ = _scene()
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, :8] = False  # a strip without depth
    lin, ok = projective_association(T, X_k, X_f, valid, K, 0.05)
    view = view_model(T, X_k, K)
    u, v = view.uv[:, 0].round().long(), view.uv[:, 1].round().long()
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    assert torch.equal(lin[inside], (u + W * v)[inside])
    near = (X_f.reshape(-1, 3)[lin] - view.Q).norm(dim=-1) < 0.05
    expected = inside & valid.reshape(-1)[lin] & near
    assert torch.equal(ok, expected)
    assert 100 < int(ok.sum()) < 300  # some points fall in the strip or outside
    lin2, ok2 = associate(view, X_f, valid, 0.05)
    assert torch.equal(lin2, lin) and torch.equal(ok2, ok)


def test_photometric_residual_is_bilinear_and_its_jacobian_matches_finite_differences():
    _, image, T, X_k, _, I_k = _scene()
    grey_f = grey_and_gradients(image)
    r, J, ok = photometric_residuals(T, X_k, I_k, grey_f, K)
    view = view_model(T, X_k, K)
    assert ok.sum() > 250
    torch.testing.assert_close(r[ok, 0], I_k[ok] - _bilinear(grey_f[..., :1], view.uv)[ok, 0])
    r2, J2, ok2 = photometric(view, X_k, I_k, grey_f, K)
    assert torch.equal(r2, r) and torch.equal(J2, J) and torch.equal(ok2, ok)

    # Jacobian: a smooth image with its exact gradients in the gradient channels; the finite differences
    # are of that continuous image at the moved points' pixels (the chain rule the Jacobian implements)
    def grey(u, v):
        return 0.5 + 0.25 * torch.sin(u / 9.0 + 0.3) * torch.cos(v / 8.0)

    vv, uu = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    gu = 0.25 / 9.0 * torch.cos(uu / 9.0 + 0.3) * torch.cos(vv / 8.0)
    gv = -0.25 / 8.0 * torch.sin(uu / 9.0 + 0.3) * torch.sin(vv / 8.0)
    smooth = torch.stack([grey(uu, vv), gu, gv], -1)
    _, J, ok = photometric_residuals(T, X_k, I_k, smooth, K)
    eps = 1e-6
    for k in range(7):
        d = torch.zeros(7, dtype=torch.float64)
        d[k] = eps
        up, um = view_model(sim3_retract(T, d), X_k, K).uv, view_model(sim3_retract(T, -d), X_k, K).uv
        fd = -(grey(up[:, 0], up[:, 1]) - grey(um[:, 0], um[:, 1])) / (2 * eps)
        torch.testing.assert_close(J[ok, 0, k], fd[ok], atol=5e-3, rtol=1e-2)


def test_point_to_plane_jacobian_matches_finite_differences():
    X_f, _, T, X_k, n_k, _ = _scene()
    X_fp = X_f.reshape(-1, 3)[:300]
    r, J = point_to_plane_residuals(T, X_fp, X_k, n_k)
    torch.testing.assert_close(r[:, 0], (n_k * (X_k - sim3_act(T, X_fp))).sum(-1))
    eps = 1e-6
    for k in range(7):
        d = torch.zeros(7, dtype=torch.float64)
        d[k] = eps
        fd = (
            point_to_plane_residuals(sim3_retract(T, d), X_fp, X_k, n_k)[0]
            - point_to_plane_residuals(sim3_retract(T, -d), X_fp, X_k, n_k)[0]
        ) / (2 * eps)
        torch.testing.assert_close(fd[:, 0], J[:, 0, k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_behind_the_camera_are_invalid(dtype):
    X_f, image, T, X_k, _, I_k = _scene()
    X_k = X_k.to(dtype).clone()
    X_k[:10, 2] = -1.0  # behind the keyframe, hence behind the frame too at this small motion
    T = T.to(dtype)
    view = view_model(T, X_k, K.to(dtype))
    assert not view.in_front[:10].any()
    _, ok = associate(view, X_f.to(dtype), torch.ones(H, W, dtype=torch.bool), 1.0)
    _, _, ok_p = photometric(view, X_k, I_k.to(dtype), grey_and_gradients(image.to(dtype)), K.to(dtype))
    assert not ok[:10].any() and not ok_p[:10].any()
