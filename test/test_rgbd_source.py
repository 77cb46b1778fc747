"""RGB-D pointmap source: back-projection, working resolution, confidence, invalid depth, predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from online3r_ros.geometry import camera, lie
from online3r_ros.sources import base
from online3r_ros.sources.rgbd import RGBDSource, depth_confidence, depth_noise_sigma, patch_descriptors

H0, W0 = 24, 32
K0 = np.array([[30.0, 0.0, 15.5], [0.0, 30.0, 11.5], [0.0, 0.0, 1.0]])


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(H0, W0, 3), dtype=np.uint8)
    v, u = np.mgrid[0:H0, 0:W0]
    depth = (1.0 + 0.02 * u + 0.03 * v).astype(np.float32)
    return rgb, depth


def test_full_resolution_pointmap_matches_analytic_backprojection():
    rgb, depth = _inputs()
    src = RGBDSource(scale=1.0)
    f = src.prepare(rgb, depth=depth, K=K0, index=3, timestamp=0.5)
    assert (f.height, f.width) == (H0, W0) and f.index == 3 and f.timestamp == 0.5
    X = src.predict_mono(f).X
    v, u = 7, 11
    z = depth[v, u]
    expected = [(u - K0[0, 2]) / K0[0, 0] * z, (v - K0[1, 2]) / K0[1, 1] * z, z]
    assert np.allclose(X[v, u].numpy(), expected, atol=1e-6)
    assert torch.allclose(f.image, torch.as_tensor(rgb).float() / 255.0)
    assert src.metric and src.calibrated and src.pose_dependent and not src.has_descriptors


def test_half_resolution_scales_intrinsics_consistently():
    rgb, depth = _inputs()
    src = RGBDSource(scale=0.5)
    f = src.prepare(rgb, depth=depth, K=K0)
    assert (f.height, f.width) == (H0 // 2, W0 // 2)
    X = src.predict_mono(f).X
    # every valid point re-projects onto its own pixel with the working-resolution K
    uv, ok = camera.project(X.reshape(-1, 3), f.K)
    assert ok.all()
    assert torch.allclose(uv, camera.pixel_grid(f.height, f.width).reshape(-1, 2), atol=1e-4)
    assert torch.allclose(f.K[0, 0], torch.tensor(15.0))
    src_s = RGBDSource(scale=0.5, depth_scale=2.0, depth_trunc=10.0)
    X2 = src_s.predict_mono(src_s.prepare(rgb, depth=depth, K=K0)).X
    assert torch.allclose(X2, 2 * X)
    with pytest.raises(base.SourceError, match="depth_scale"):
        RGBDSource(depth_scale=0.0)
    assert RGBDSource(max_width=16).working_size(480, 640) == (12, 16)
    assert RGBDSource().working_size(H0, W0) == (H0, W0)  # small inputs stay at full resolution
    src2 = RGBDSource(width=8, height=6)
    assert (src2.prepare(rgb, depth=depth, K=K0).height, src2.working_size(H0, W0)[1]) == (6, 8)


def test_invalid_depth_gives_zero_confidence_and_zero_points():
    rgb, depth = _inputs()
    depth[0, 0] = 0.0
    depth[1, 1] = math.nan
    depth[2, 2] = math.inf
    depth[3, 3] = 0.05  # below depth_min
    depth[4, 4] = 9.0  # beyond depth_trunc
    src = RGBDSource(scale=1.0, depth_min=0.1, depth_trunc=4.0, descriptors=True)
    pm = src.predict_mono(src.prepare(rgb, depth=depth, K=K0))
    for i in range(5):
        assert pm.C[i, i] == 0 and pm.Q[i, i] == 0
        assert torch.equal(pm.X[i, i], torch.zeros(3))
    assert torch.isfinite(pm.X).all() and torch.isfinite(pm.D).all()
    assert (pm.C[5:, 5:] > 1).all()
    empty = src.predict_mono(src.prepare(rgb, depth=np.zeros_like(depth), K=K0))
    assert (empty.C == 0).all()


def test_confidence_follows_noise_model():
    z = torch.tensor([0.5, 1.0, 2.0, 3.5])
    s = depth_noise_sigma(z)
    assert torch.allclose(s, 0.0012 + 0.0019 * (z - 0.4) ** 2)
    C = depth_confidence(z, torch.ones(4, dtype=torch.bool))
    assert (C[:-1] > C[1:]).all() and (C > 1).all()
    assert torch.allclose(C[2], 1 + (0.1 / s[2]) ** 2)
    # the default reference keeps C ~ 1 / variance over the whole range: the floor of 1 is < 10% at 3.5 m
    assert ((C - 1) / C > 0.9).all()
    assert torch.allclose((C[0] - 1) / (C[3] - 1), (s[3] / s[0]) ** 2)
    C1 = depth_confidence(z, torch.ones(4, dtype=torch.bool), sigma_ref=0.01)
    assert torch.allclose(C1[2], 1 + (0.01 / s[2]) ** 2)
    assert float(depth_confidence(z, torch.tensor([True, False, True, True]))[1]) == 0.0


def test_patch_descriptors_are_unit_and_invariant_to_brightness_offset():
    img = torch.rand(10, 12, 3, generator=torch.Generator().manual_seed(0))
    D, std = patch_descriptors(img, patch_size=3)
    assert D.shape == (10, 12, 9)
    assert torch.allclose(D.norm(dim=-1), torch.ones(10, 12), atol=1e-2)
    D2, _ = patch_descriptors((img * 0.5 + 0.2).clamp(0, 1), patch_size=3)
    assert torch.allclose(D, D2, atol=5e-3)
    assert (std >= 0).all()


def test_asymmetric_prediction_moves_keyframe_points_into_frame():
    rgb, depth = _inputs()
    src = RGBDSource(scale=1.0)
    f = src.prepare(rgb, depth=depth, K=K0)
    pred = src.predict_asymmetric(f, f, lie.sim3_identity())
    assert isinstance(pred, base.AsymmetricPrediction)
    ok = pred.keyframe.C > 0
    assert ok.float().mean() > 0.99
    assert torch.allclose(pred.keyframe.X[ok], pred.frame.X[ok])
    # a pose guess that moves everything out of view leaves nothing valid
    far = lie.sim3_exp(torch.tensor([5.0, 0, 0, 0, 0, 0, 0]))
    assert (src.predict_asymmetric(f, f, far).keyframe.C == 0).all()
    sym = src.predict_symmetric([(f, f)], [lie.sim3_identity()])
    assert len(sym) == 1 and torch.allclose(sym[0].ji.X[ok], sym[0].ii.X[ok])
    with pytest.raises(base.SourceError, match="pose guesses"):
        src.predict_symmetric([(f, f)], [])


def test_bad_inputs_raise_source_error():
    rgb, depth = _inputs()
    src = RGBDSource()
    with pytest.raises(base.SourceError, match="depth is required"):
        src.prepare(rgb, K=K0)
    with pytest.raises(base.SourceError, match="K are required"):
        src.prepare(rgb, depth=depth)
    with pytest.raises(base.SourceError, match="differs from depth size"):
        src.prepare(rgb[:-1], depth=depth, K=K0)
    with pytest.raises(base.SourceError, match="positive focal"):
        src.prepare(rgb, depth=depth, K=np.zeros((3, 3)))
    with pytest.raises(base.SourceError, match="image must be"):
        src.prepare(rgb[..., 0], depth=depth, K=K0)
    with pytest.raises(base.SourceError, match="Pointmap.C"):
        base.Pointmap(torch.zeros(2, 2, 3), torch.zeros(3, 3))


def test_downsampled_depth_lies_on_the_rays_of_the_scaled_intrinsics():
    """A tilted plane rendered at 640x480 and prepared at 160x120: every point back-projected with the scaled
    K lies on the plane (the depth sample comes from the input pixel nearest to the output pixel's centre;
    the pixel at the block's corner put points up to 3.2 mm off this plane)."""
    K0 = torch.tensor([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
    v, u = torch.meshgrid(torch.arange(480.0), torch.arange(640.0), indexing="ij")
    x, y = (u - 320.0) / 585.0, (v - 240.0) / 585.0
    n, d0 = torch.tensor([0.45, 0.3, -1.0]), -1.2  # plane n . X = d0  (z = 1.2 + 0.45 x + 0.3 y)
    depth = d0 / (n[0] * x + n[1] * y + n[2])
    src = RGBDSource()
    f = src.prepare(torch.zeros(480, 640, 3), depth=depth, K=K0)
    assert f.depth.shape == (120, 160)
    X = f.cache["X"][f.cache["valid"]]
    dist = ((X @ n) - d0).abs() / n.norm()
    assert float(dist.max()) < 1.5e-3, float(dist.max())  # 1.07 mm: half an input pixel remains
