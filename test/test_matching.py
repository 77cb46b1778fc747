"""Pointmap matching: pixel shift, rigid motion, descriptor refinement, validity after refinement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from online3r_ros.geometry import camera, lie
from online3r_ros.slam import matching

H, W = 48, 64
K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])


def room_pointmap(T_WC: torch.Tensor) -> torch.Tensor:
    """Analytic ray casting of the inside of the box [-2,2]x[-1.5,1.5]x[-1,4] (camera frame pointmap)."""
    uv = camera.pixel_grid(H, W)
    d_cam = torch.stack(
        [(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1], torch.ones(H, W)], -1
    )
    R = lie.quat_to_matrix(T_WC[3:7])
    d_w = d_cam @ R.T
    o = T_WC[:3]
    lo = torch.tensor([-2.0, -1.5, -1.0])
    hi = torch.tensor([2.0, 1.5, 4.0])
    with torch.no_grad():
        t_hi = (hi - o) / d_w
        t_lo = (lo - o) / d_w
        t = torch.where(t_hi > 0, t_hi, t_lo).clamp_min(0).masked_fill(~torch.isfinite(t_hi), float("inf"))
        t = t.min(-1).values
    return d_cam * t.unsqueeze(-1)


def pos_descriptors(X_world: torch.Tensor) -> torch.Tensor:
    """Smooth, locally unique descriptors of world points (multi-frequency positional code), L2-normalised."""
    freqs = torch.tensor([3.0, 5.0, 7.0])
    ang = X_world.unsqueeze(-1) * freqs  # [..., 3, F]
    D = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)
    return F.normalize(D, dim=-1)


def test_ray_image_gradients_match_finite_differences():
    X = room_pointmap(lie.sim3_identity())
    img = matching.ray_image(X[None])[0]
    r = img[..., :3]
    assert torch.allclose(r.norm(dim=-1), torch.ones(H, W), atol=1e-5)
    fd_u = 0.5 * (r[:, 2:] - r[:, :-2])
    assert torch.allclose(img[:, 1:-1, 3:6], fd_u, atol=2e-3)
    fd_v = 0.5 * (r[2:] - r[:-2])
    assert torch.allclose(img[1:-1, :, 6:9], fd_v, atol=2e-3)


def test_match_recovers_known_pixel_shift():
    X11 = room_pointmap(lie.sim3_identity())
    du, dv = 3, -2
    # image 2 pixel (u, v) sees image 1's point at (u + du, v + dv)
    X21 = torch.roll(X11, shifts=(-dv, -du), dims=(0, 1))
    res = matching.match(X11, X21, dist_thresh=1e-3)
    uv = camera.pixel_grid(H, W).long()
    exp = (uv[..., 0] + du) + W * (uv[..., 1] + dv)
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[4:-4, 4:-4] = True
    assert res.idx.shape == (H * W,)
    assert torch.equal(res.idx.reshape(H, W)[inner], exp[inner])
    assert res.valid.reshape(H, W)[inner].all()


def test_match_recovers_known_rigid_motion_and_flags_invisible_points():
    T1 = lie.sim3_identity()
    T2 = lie.sim3_exp(torch.tensor([0.10, -0.05, 0.08, 0.02, -0.04, 0.03, 0.0]))
    X11, X22 = room_pointmap(T1), room_pointmap(T2)
    T12 = lie.sim3_compose(lie.sim3_inverse(T1), T2)
    X21 = lie.sim3_act(T12, X22)
    uv, ok = camera.project(X21.reshape(-1, 3), K)
    inside = ok & (uv[:, 0] > 1.5) & (uv[:, 0] < W - 2.5) & (uv[:, 1] > 1.5) & (uv[:, 1] < H - 2.5)
    for res in (matching.match(X11, X21), matching.match_by_projection(X11, X21, K)):
        pix = torch.stack([res.idx % W, res.idx // W], -1).float()
        err = (pix - uv).abs().max(-1).values
        good = inside & res.valid
        assert good.float().sum() > 0.9 * inside.float().sum()
        assert err[good].max() <= 0.55  # rounding (not truncation) of a converged sub-pixel position
        assert err[good].mean() < 0.4
        # points projecting far outside image 1 are never valid
        far = ~ok | (uv[:, 0] < -3) | (uv[:, 0] > W + 2) | (uv[:, 1] < -3) | (uv[:, 1] > H + 2)
        assert not (res.valid & far).any()


def test_descriptor_refinement_recovers_true_pixel():
    g = torch.Generator().manual_seed(0)
    uv = camera.pixel_grid(H, W)
    D11 = pos_descriptors(torch.cat([uv / 10.0, torch.zeros(H, W, 1)], -1))
    true = torch.stack(
        [torch.randint(10, W - 10, (200,), generator=g), torch.randint(10, H - 10, (200,), generator=g)], -1
    )
    q = D11[true[:, 1], true[:, 0]]
    start = true + torch.randint(-6, 7, (200, 2), generator=g)
    out = matching.refine_matches_with_descriptors(
        D11[None], q[None], start[None].float(), radius=3, dilation_max=3
    )
    assert torch.equal(out[0].long(), true)
    # the chunking (per device by default) bounds memory only
    for chunk_elems in (1, 7 * 49 * 3, 1 << 30):
        out_c = matching.refine_matches_with_descriptors(
            D11[None], q[None], start[None].float(), radius=3, dilation_max=3, chunk_elems=chunk_elems
        )
        assert torch.equal(out_c, out)


def test_validity_rechecked_after_refinement():
    # flat wall at z=2 with a near box (z=1) in columns >= 40; the descriptor of a wall pixel is copied onto
    # the near box so that refinement jumps onto it: the 3D check must then reject the match.
    X11 = camera.backproject_depth(torch.full((H, W), 2.0), K)
    near = torch.zeros(H, W, dtype=torch.bool)
    near[:, 40:] = True
    X11 = torch.where(near[..., None], X11 * 0.5, X11)
    D = F.normalize(torch.randn(H, W, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    v0, u0 = 20, 38
    D11 = D.clone()
    D11[v0, u0 + 2] = D[v0, u0]  # best descriptor for pixel (u0, v0) of image 2 sits on the near box
    D11[v0, u0] = -D[v0, u0]
    X21 = X11.clone()
    X21[near] = X21[near] * 2.0  # image 2 sees the wall everywhere
    q = torch.tensor([u0 + W * v0])
    plain = matching.match(X11, X21, query=q, radius=0)
    assert plain.valid.all() and int(plain.idx) == u0 + W * v0
    refined = matching.match(X11, X21, D11, D, query=q, radius=3, dilation_max=1)
    assert int(refined.idx) == u0 + 2 + W * v0
    assert not refined.valid.any()


def test_batched_query_and_errors():
    X = room_pointmap(lie.sim3_identity())
    Xb = torch.stack([X, X])
    q = torch.tensor([0, 5, 100, H * W - 1])
    res = matching.match(Xb, Xb, query=q)
    assert res.idx.shape == (2, 4) and res.valid.shape == (2, 4)
    inner = torch.tensor([False, False, True, False])
    assert torch.equal(res.idx[:, inner], q[inner].expand(2, -1))
    with pytest.raises(ValueError, match="query"):
        matching.match(X, X, query=torch.tensor([H * W]))
    with pytest.raises(ValueError, match="X11"):
        matching.match(torch.zeros(5, 3), X)
    with pytest.raises(ValueError, match="batch"):
        matching.match(Xb, X)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_match_cuda_equals_cpu():
    T2 = lie.sim3_exp(torch.tensor([0.05, 0.0, 0.03, 0.0, 0.02, 0.0, 0.0]))
    X11, X21 = room_pointmap(lie.sim3_identity()), lie.sim3_act(T2, room_pointmap(T2))
    a = matching.match(X11, X21)
    b = matching.match(X11.cuda(), X21.cuda())
    assert (a.idx == b.idx.cpu()).float().mean() > 0.99
