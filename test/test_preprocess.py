"""Tests for online3r_ros.model.preprocess (reference MASt3R resize/crop/normalise + intrinsics mapping)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from online3r_ros.model.preprocess import (
    compute_transform,
    preprocess_image,
    scale_intrinsics,
    to_pil_rgb,
)


def _random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _reference_like(img_u8: np.ndarray, size: int = 512, square_ok: bool = False) -> tuple:
    """Independent transcription of dust3r.utils.image.load_images' steps (mast3r_architecture.md §3), using
    the float half-widths and PIL's own crop rounding as the reference does."""
    img = PIL.Image.fromarray(img_u8)
    w1, h1 = img.size
    long_edge = round(size * max(w1 / h1, h1 / w1)) if size == 224 else size
    s = max(img.size)
    interp = PIL.Image.LANCZOS if s > long_edge else PIL.Image.BICUBIC
    img = img.resize(tuple(int(round(x * long_edge / s)) for x in img.size), interp)
    w, h = img.size
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    else:
        halfw, halfh = ((2 * cx) // 16) * 16 / 2, ((2 * cy) // 16) * 16 / 2
        if not square_ok and w == h:
            halfh = 3 * halfw / 4
        img = img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
    t = (t - 0.5) / 0.5
    return t[None], img.size[::-1]


@pytest.mark.parametrize(
    ("w", "h", "out_w", "out_h"),
    [
        (640, 480, 512, 384),
        (1280, 720, 512, 288),
        (752, 480, 512, 320),
        (1920, 1080, 512, 288),
        (480, 640, 384, 512),  # portrait stays portrait (landscape_only=False)
        (512, 512, 512, 384),  # square -> 4:3 unless square_ok
        (1000, 1000, 512, 384),
        (320, 240, 512, 384),  # upscaling (BICUBIC)
    ],
)
def test_output_sizes_and_reference_equality(w: int, h: int, out_w: int, out_h: int) -> None:
    img = _random_image(h, w, seed=w + h)
    prep = preprocess_image(img)
    assert prep.img.shape == (1, 3, out_h, out_w)
    assert prep.img.dtype == torch.float32
    assert prep.true_shape.dtype == torch.int32
    assert prep.true_shape.tolist() == [[out_h, out_w]]
    assert prep.uimg.shape == (out_h, out_w, 3)
    assert prep.transform.out_shape == (out_h, out_w)
    assert out_h % 16 == 0 and out_w % 16 == 0
    ref, ref_shape = _reference_like(img)
    assert tuple(ref_shape) == (out_h, out_w)
    assert torch.equal(prep.img, ref)  # bit-identical to the reference recipe
    assert torch.allclose(prep.uimg, prep.img[0].permute(1, 2, 0) * 0.5 + 0.5, rtol=0, atol=1e-6)
    assert float(prep.img.min()) >= -1.0 and float(prep.img.max()) <= 1.0


def test_square_ok_keeps_square() -> None:
    img = _random_image(600, 600, seed=3)
    prep = preprocess_image(img, square_ok=True)
    assert prep.true_shape.tolist() == [[512, 512]]
    ref, _ = _reference_like(img, square_ok=True)
    assert torch.equal(prep.img, ref)


@pytest.mark.parametrize(("w", "h"), [(640, 480), (480, 640), (1280, 720), (200, 200)])
def test_size_224(w: int, h: int) -> None:
    img = _random_image(h, w, seed=7)
    prep = preprocess_image(img, size=224)
    assert prep.true_shape.tolist() == [[224, 224]]
    ref, _ = _reference_like(img, size=224)
    assert torch.equal(prep.img, ref)


def test_odd_resized_side_crop_offset() -> None:
    tf = compute_transform(752, 480)
    assert tf.resized_size == (512, 327)
    assert tf.crop_box == (0, 3, 512, 323)
    assert tf.crop_offset == (0, 3)
    assert tf.reference_half_crop == (0.0, 3.5)


def test_pil_input_and_grey_and_float_inputs() -> None:
    img = _random_image(480, 640, seed=5)
    a = preprocess_image(img)
    b = preprocess_image(PIL.Image.fromarray(img))
    assert torch.equal(a.img, b.img)
    grey = img[..., 0]
    g = preprocess_image(grey)
    assert torch.equal(g.img[0, 0], g.img[0, 1]) and torch.equal(g.img[0, 1], g.img[0, 2])
    # float [0,1] input goes through MASt3R-SLAM's truncating np.uint8(img * 255)
    f = img.astype(np.float32) / 255.0
    expected = np.uint8(f * 255)
    assert np.array_equal(np.asarray(to_pil_rgb(f)), expected)


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (np.zeros((10, 10, 4), np.uint8), ValueError),
        (np.zeros((10, 10, 3), np.int32), TypeError),
        (np.full((10, 10, 3), 2.0, np.float32), ValueError),
        ([[1, 2, 3]], TypeError),
    ],
)
def test_bad_inputs_raise(bad, exc) -> None:
    with pytest.raises(exc):
        preprocess_image(bad)


def test_bad_size_and_degenerate_shapes() -> None:
    with pytest.raises(ValueError, match="size must be one of"):
        preprocess_image(_random_image(48, 64), size=384)
    with pytest.raises(ValueError, match="too elongated"):
        compute_transform(2000, 10)


def _blob_image(w: int, h: int, u: float, v: float, sigma: float) -> np.ndarray:
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    g = np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2))
    img = np.round(g * 255.0).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def _centroid(uimg: torch.Tensor) -> tuple[float, float]:
    m = uimg[..., 0].double().numpy()
    m = np.where(m > 0.02, m, 0.0)
    vv, uu = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
    return float((m * uu).sum() / m.sum()), float((m * vv).sum() / m.sum())


@pytest.mark.parametrize(
    ("w", "h", "size"), [(640, 480, 512), (752, 480, 512), (320, 240, 512), (640, 480, 224)]
)
def test_intrinsics_mapping_projects_to_same_place(w: int, h: int, size: int) -> None:
    """A 3D point projected with K in the original image lands, after pre-processing, where K' projects it."""
    K = np.array([[0.9 * w, 0.0, 0.52 * w], [0.0, 0.9 * w, 0.47 * h], [0.0, 0.0, 1.0]])
    P = np.array([0.13, -0.07, 1.0])  # camera frame
    uv = K @ P
    u, v = uv[0] / uv[2], uv[1] / uv[2]
    img = _blob_image(w, h, u, v, sigma=8.0)
    prep = preprocess_image(img, size=size)
    cu, cv = _centroid(prep.uimg)
    K2 = scale_intrinsics(K, prep.transform)
    uv2 = K2 @ P
    u2, v2 = uv2[0] / uv2[2], uv2[1] / uv2[2]
    assert abs(cu - u2) < 0.03 and abs(cv - v2) < 0.03, (cu, cv, u2, v2)
    # the reference convention differs by the half-pixel term (+ 0.5 px for odd resized sides)
    K3 = scale_intrinsics(K, prep.transform, convention="reference")
    sw, sh = prep.transform.scale
    left, top = prep.transform.crop_offset
    hx, hy = prep.transform.reference_half_crop
    assert np.isclose(K2[0, 2] - K3[0, 2], 0.5 / sw - 0.5 - left + hx)
    assert np.isclose(K2[1, 2] - K3[1, 2], 0.5 / sh - 0.5 - top + hy)
    assert np.isclose(K2[0, 0], K[0, 0] / sw) and np.isclose(K3[1, 1], K[1, 1] / sh)


def test_reference_convention_matches_mast3r_slam_formula() -> None:
    tf = compute_transform(752, 480)
    K = np.array([[458.654, 0.0, 367.215], [0.0, 457.296, 248.375], [0.0, 0.0, 1.0]])
    K3 = scale_intrinsics(K, tf, convention="reference")
    sw, sh = 752 / 512, 480 / 327
    expected = np.array(
        [[458.654 / sw, 0.0, 367.215 / sw - 0.0], [0.0, 457.296 / sh, 248.375 / sh - 3.5], [0.0, 0.0, 1.0]]
    )
    np.testing.assert_allclose(K3, expected, rtol=0, atol=1e-12)


def test_scale_intrinsics_torch_batched() -> None:
    tf = compute_transform(640, 480)
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]).expand(4, 3, 3)
    K2 = scale_intrinsics(K, tf)
    assert isinstance(K2, torch.Tensor) and K2.shape == (4, 3, 3)
    assert torch.allclose(K2[:, 0, 0], torch.full((4,), 400.0))
    assert torch.allclose(K2[:, 0, 2], torch.full((4,), (320.5 / 1.25) - 0.5))
    with pytest.raises(ValueError, match="convention"):
        scale_intrinsics(K, tf, convention="bogus")
    with pytest.raises(ValueError, match="shape"):
        scale_intrinsics(torch.eye(4), tf)
