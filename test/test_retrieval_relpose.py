"""Prior-free relative pose (retrieval/relpose.py): matching, vectorised RANSAC and the verification that
must reject wrong poses. Synthetic tests always run; the real-data ones (7-Scenes redkitchen, TUM fr3 cabinet)
are skipped when ../shared/data is absent. Features come from a test-local OpenCV SIFT helper (RootSIFT,
depth back-projected at the keypoints), independent of the project's SIFT extractor."""

from __future__ import annotations

import math
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from online3r_ros.geometry.lie import matrix_to_quat, quat_to_matrix, sim3_act, sim3_from_matrix, so3_log
from online3r_ros.retrieval.features import LocalFeatures
from online3r_ros.retrieval.relpose import RelPoseConfig, estimate_relative_pose, match_features

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SCENES = DATA / "7scenes_redkitchen_0000_0499"
CABINET = DATA / "tum_fr3_cabinet_keyframes"
K_7S = (585.0, 585.0, 320.0, 240.0)
K_TUM = (535.4, 539.2, 320.1, 247.6)
# 7-Scenes colour and depth come from different Kinect sensors and are NOT registered (the data README treats
# them as aligned): the colour camera's focal length is ~525 px against the depth camera's 585, so a colour
# keypoint sits at depth pixel ~1.12 * (xy - c) + c, plus a few pixels of baseline shift. Without this the
# 3D points of off-centre keypoints are wrong by 5-10 cm and pairs 60+ frames apart disagree with the ground
# truth; (1.12, 5, 5) is a coarse grid fit against ground truth on 7 pairs (k in 1.08-1.14, shifts +-10 px).
REG_7S = (1.12, 5.0, 5.0)

needs_7s = pytest.mark.skipif(not SCENES.is_dir(), reason=f"real data folder {SCENES} not present")
needs_tum = pytest.mark.skipif(not CABINET.is_dir(), reason=f"real data folder {CABINET} not present")


# ------------------------------------------------------------------------------------------------ helpers
def sift_features(
    rgb_path: Path, depth_path: Path, K, depth_scale: float, n=1000, contrast=0.04, reg=(1.0, 0.0, 0.0)
) -> LocalFeatures:
    """RootSIFT (L2-normalised) at up to ``n`` keypoints; 3D points from depth (intrinsics ``K``) at the
    nearest depth pixel, NaN where its 5x5 neighbourhood has a hole or a depth jump (> 3 % of z: keypoints
    love occlusion edges). ``reg = (k, dx, dy)`` maps a colour pixel to the depth pixel
    ``k * (xy - c) + c + (dx, dy)`` for unregistered colour and depth."""
    cv2 = pytest.importorskip("cv2")
    gray = cv2.imread(str(rgb_path), cv2.IMREAD_GRAYSCALE)
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED).astype(np.float32) / depth_scale
    box = np.ones((5, 5), np.uint8)
    dmax, dmin = cv2.dilate(depth, box), cv2.erode(depth, box)
    depth[(dmin <= 0) | (dmax - dmin > 0.03 * depth)] = 0
    kps, desc = cv2.SIFT_create(nfeatures=n, contrastThreshold=contrast).detectAndCompute(gray, None)
    desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-12))
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
    h, w = gray.shape
    fx, fy, cx, cy = K
    dxy = reg[0] * (xy - np.array([cx, cy], np.float32)) + np.array([cx + reg[1], cy + reg[2]], np.float32)
    u = np.clip(np.round(dxy[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(dxy[:, 1]).astype(int), 0, h - 1)
    z = depth[v, u]
    pts = np.stack([(dxy[:, 0] - cx) * z / fx, (dxy[:, 1] - cy) * z / fy, z], 1).astype(np.float32)
    pts[z <= 0] = np.nan
    return LocalFeatures("sift", torch.from_numpy(desc), torch.from_numpy(xy), torch.from_numpy(pts), (h, w))


@cache
def scenes(i: int) -> tuple[LocalFeatures, np.ndarray]:
    """7-Scenes frame ``i``: features and the 4x4 camera-to-world pose."""
    f = SCENES / f"frame-{i:06d}"
    feats = sift_features(Path(f"{f}.color.jpg"), Path(f"{f}.depth.png"), K_7S, 1000.0, reg=REG_7S)
    return feats, np.loadtxt(f"{f}.pose.txt")


@cache
def cabinet_poses() -> np.ndarray:
    rows = np.loadtxt(CABINET / "truth_cam_poses.txt")
    q = torch.from_numpy(rows[:, 4:8])
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :3] = quat_to_matrix(q / q.norm(dim=1, keepdim=True)).numpy()
    T[:, :3, 3] = rows[:, 1:4]
    return T


@cache
def cabinet(i: int) -> tuple[LocalFeatures, np.ndarray]:
    rgb = CABINET / "raw_imgs" / f"{i:04d}_rgb_raw.jpg"
    dep = CABINET / "depth_imgs" / f"{i:04d}_depth_raw.png"
    return sift_features(rgb, dep, K_TUM, 5000.0, contrast=0.005), cabinet_poses()[i]  # weak texture


def pose_error(T_ref_query: torch.Tensor, T_w_ref: np.ndarray, T_w_query: np.ndarray) -> tuple[float, float]:
    """Translation (m) and rotation (deg) error of an estimate of ``T_ref_query`` against ground truth."""
    gt = np.linalg.inv(T_w_ref) @ T_w_query
    est = np.eye(4)
    est[:3, :3] = quat_to_matrix(T_ref_query[3:7]).numpy() * float(T_ref_query[7])
    est[:3, 3] = T_ref_query[:3].numpy()
    d = torch.from_numpy(gt[:3, :3].T @ est[:3, :3] / float(T_ref_query[7]))
    ang = math.degrees(float(so3_log(matrix_to_quat(d)).norm()))
    return float(np.linalg.norm(est[:3, 3] - gt[:3, 3])), ang


def gt_overlap(i: int, j: int, step: int = 8) -> float:
    """Fraction of frame ``i``'s depth pixels (every ``step``-th) that 7-Scenes ground truth puts inside
    frame ``j`` at a consistent depth (within 5 cm + 3 %)."""
    cv2 = pytest.importorskip("cv2")
    fx, fy, cx, cy = K_7S
    d = [cv2.imread(str(SCENES / f"frame-{k:06d}.depth.png"), cv2.IMREAD_UNCHANGED) / 1000.0 for k in (i, j)]
    v, u = np.mgrid[0:480:step, 0:640:step]
    z = d[0][v, u]
    m = z > 0
    X = np.stack([(u[m] - cx) * z[m] / fx, (v[m] - cy) * z[m] / fy, z[m], np.ones(m.sum())])
    Y = (np.linalg.inv(scenes(j)[1]) @ scenes(i)[1] @ X)[:3]
    uj, vj = np.round(fx * Y[0] / Y[2] + cx).astype(int), np.round(fy * Y[1] / Y[2] + cy).astype(int)
    inside = (Y[2] > 0.1) & (uj >= 0) & (uj < 640) & (vj >= 0) & (vj < 480)
    zj = d[1][vj[inside], uj[inside]]
    return float((np.abs(zj - Y[2][inside]) < 0.05 + 0.03 * zj).sum() / max(m.sum(), 1))


def synthetic(n=400, outlier_frac=0.5, noise=0.003, scale=1.0, seed=0):
    """Query/ref features with perfect descriptor matches; ``outlier_frac`` of the ref points scrambled."""
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 3.0]) - torch.tensor(
        [1.5, 1.0, -1.0]
    )
    xi = torch.tensor([0.3, -0.1, 0.2, 0.2, -0.4, 0.3], dtype=torch.float64)
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = (
        torch.linalg.matrix_exp(
            torch.tensor([[0, -xi[5], xi[4]], [xi[5], 0, -xi[3]], [-xi[4], xi[3], 0]], dtype=torch.float64)
        )
        * scale
    )
    M[:3, 3] = xi[:3]
    T = sim3_from_matrix(M)
    Q = sim3_act(T, P) + noise * torch.randn(n, 3, generator=g, dtype=torch.float64)
    out = torch.rand(n, generator=g) < outlier_frac
    k = int(out.sum())
    Q[out] = Q[out][torch.randperm(k, generator=g)] + 0.5 * torch.rand(k, 3, generator=g, dtype=torch.float64)
    desc = torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=1)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([640.0, 480.0])
    perm = torch.randperm(n, generator=g)
    q = LocalFeatures("sift", desc, xy, P.float(), (480, 640))
    r = LocalFeatures("sift", desc[perm], xy[perm], Q[perm].float(), (480, 640))
    return q, r, T, ~out


def sim3_error(Te: torch.Tensor, Tg: torch.Tensor) -> tuple[float, float, float]:
    Re, Rg = quat_to_matrix(Te[3:7]), quat_to_matrix(Tg[3:7])
    ang = math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(Rg.T @ Re)) - 1) / 2))))
    return float((Te[:3] - Tg[:3]).norm()), ang, float(Te[7] / Tg[7])


# -------------------------------------------------------------------------------------------------- tests
def test_match_features_mutual_and_ratio():
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    b = torch.nn.functional.normalize(a + 0.05 * torch.randn(50, 16, generator=g), dim=1)
    b[10] = b[11] = torch.nn.functional.normalize(a[10] + a[11], dim=0)  # ambiguous: fails the ratio test
    ia, ib, s = match_features(LocalFeatures("x", a), LocalFeatures("x", b))
    assert (ia == ib).all() and 10 not in ia.tolist() and 11 not in ia.tolist() and len(ia) == 48
    assert (s > 0.9).all()
    e = LocalFeatures("x", torch.zeros(0, 16))
    assert match_features(e, LocalFeatures("x", a))[0].numel() == 0


@pytest.mark.parametrize("with_scale,scale", [(False, 1.0), (True, 1.7)])
def test_synthetic_recovers_pose_with_half_outliers(with_scale, scale):
    q, r, Tg, _ = synthetic(scale=scale)
    res = estimate_relative_pose(q, r, RelPoseConfig(with_scale=with_scale))
    assert res.ok, res.reason
    assert res.T_ref_query.dtype == torch.float64 and res.T_ref_query.shape == (8,)
    dt, dr, ds = sim3_error(res.T_ref_query, Tg)
    assert dt < 0.005 and dr < 0.2 and abs(ds - 1) < 0.005, (dt, dr, ds)
    assert 0.4 < res.inlier_frac < 0.6 and res.rmse_m < 0.01


def test_synthetic_is_deterministic_and_seeded():
    q, r, _, _ = synthetic(seed=3)
    a, b = (estimate_relative_pose(q, r, RelPoseConfig(seed=7)) for _ in range(2))
    assert a.ok and torch.equal(a.T_ref_query, b.T_ref_query) and torch.equal(a.inlier_mask, b.inlier_mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_synthetic_on_cuda_matches_cpu():
    q, r, _, _ = synthetic()
    cpu = estimate_relative_pose(q, r)
    mv = [LocalFeatures(f.kind, f.desc.cuda(), f.xy.cuda(), f.points.cuda(), f.image_size) for f in (q, r)]
    gpu = estimate_relative_pose(*mv)
    assert gpu.ok and torch.allclose(gpu.T_ref_query.cpu(), cpu.T_ref_query, atol=1e-4)


def test_degenerate_inputs_are_rejected_not_raised():
    q, r, _, _ = synthetic(outlier_frac=0.0)
    line = q.points.clone()
    line[:, 1:] = 0.5 * line[:, :1]  # all points on one 3D line
    res = estimate_relative_pose(LocalFeatures("sift", q.desc, q.xy, line, q.image_size), r)
    assert not res.ok and res.T_ref_query is None and "degenerate" in res.reason
    few = q.points.clone()
    few[2:] = float("nan")  # only 2 matches with depth
    res = estimate_relative_pose(LocalFeatures("sift", q.desc, q.xy, few, q.image_size), r)
    assert not res.ok and "too few matches with depth" in res.reason and res.n_valid == 2
    res = estimate_relative_pose(LocalFeatures("sift", q.desc, q.xy, None), r)
    assert not res.ok and "no depth" in res.reason
    e = LocalFeatures("sift", torch.zeros(0, 32), torch.zeros(0, 2), torch.zeros(0, 3))
    assert not estimate_relative_pose(e, r).ok
    q2, r2, _, _ = synthetic(outlier_frac=1.0)
    assert not estimate_relative_pose(q2, r2).ok  # pure outliers
    with pytest.raises(ValueError):
        estimate_relative_pose(LocalFeatures("mast3r", q.desc), r)


def _check_pairs(load, pairs, max_t, max_r, label):
    errs = []
    for qi, ri in pairs:
        (q, Tq), (r, Tr) = load(qi), load(ri)
        res = estimate_relative_pose(q, r)
        e = pose_error(res.T_ref_query, Tr, Tq) if res.ok else (float("nan"), float("nan"))
        errs.append((qi, ri, res.ok, res.n_inliers, *e))
        msg = f"ok={res.ok} ({res.reason}) inliers={res.n_inliers} err={e[0]:.4f} m {e[1]:.2f} deg"
        print(f"{label} {qi}->{ri}: {msg}")
    for qi, ri, ok, _, dt, dr in errs:
        assert ok and dt <= max_t and dr <= max_r, (label, qi, ri, dt, dr)
    return errs


@needs_7s
@pytest.mark.realdata
def test_7scenes_gaps_within_3cm_2deg():
    pairs = [(10, 0), (30, 0), (60, 0), (110, 100), (210, 200), (230, 200), (260, 200)]
    pairs += [(310, 300), (330, 300), (360, 300), (410, 400), (430, 400)]
    _check_pairs(scenes, pairs, 0.03, 2.0, "7scenes gap")


# Revisits: frames 200-300 apart that ground truth says see the same place (>= 35 % overlap). Measured errors
# 2-5 cm / 0.5-1.9 deg: the estimate's inliers agree with the ground truth's on most matches; what is left
# is the approximate colour-depth registration above and the KinectFusion pseudo ground truth.
REVISITS = [(225, 0), (250, 0), (220, 20), (245, 20), (295, 20), (320, 20), (265, 40), (495, 220), (485, 260)]


@needs_7s
@pytest.mark.realdata
def test_7scenes_revisits_recovered():
    assert all(gt_overlap(q, r) > 0.3 for q, r in REVISITS)
    _check_pairs(scenes, REVISITS, 0.06, 2.5, "7scenes revisit")


@needs_7s
@pytest.mark.realdata
def test_7scenes_non_overlapping_pairs_rejected():
    pairs = [(405, 80), (400, 100), (415, 140), (430, 180), (410, 60), (345, 120)]
    for qi, ri in pairs:
        assert gt_overlap(qi, ri) < 0.02
        res = estimate_relative_pose(scenes(qi)[0], scenes(ri)[0])
        assert not res.ok and res.T_ref_query is None and res.reason, (qi, ri)


@needs_tum
@pytest.mark.realdata
def test_tum_cabinet_consecutive_keyframes():
    n, good, wrong = len(cabinet_poses()), 0, []
    for i in range(n - 1):
        (q, Tq), (r, Tr) = cabinet(i + 1), cabinet(i)
        res = estimate_relative_pose(q, r)
        if res.ok:
            dt, dr = pose_error(res.T_ref_query, Tr, Tq)
            good += dt <= 0.05 and dr <= 3.0
            if dt > 0.05 or dr > 3.0:
                wrong.append((i, dt, dr))
    print(f"TUM cabinet consecutive keyframes: {good}/{n - 1} recovered within 5 cm / 3 deg, wrong: {wrong}")
    # weakly textured cabinet: SIFT gives 20-60 matches with depth; measured 19/57, none wrong
    assert not wrong and good >= 15


@needs_7s
@needs_tum
@pytest.mark.realdata
def test_different_places_rejected():
    for i in range(0, 500, 100):
        for j in range(0, 58, 12):
            for a, b in ((scenes(i)[0], cabinet(j)[0]), (cabinet(j)[0], scenes(i)[0])):
                res = estimate_relative_pose(a, b)
                assert not res.ok and res.T_ref_query is None, (i, j, res)


@needs_7s
@pytest.mark.realdata
def test_timing_1000_features():
    (q, _), (r, _) = scenes(30), scenes(0)
    assert 950 <= len(q) <= 1050 and 950 <= len(r) <= 1050
    estimate_relative_pose(q, r)
    ts = []
    for _ in range(10):
        t0 = time.perf_counter()
        estimate_relative_pose(q, r)
        ts.append(time.perf_counter() - t0)
    med = 1e3 * float(np.median(ts))
    print(f"estimate_relative_pose, ~1000 SIFT features each, 1 thread: median {med:.1f} ms")
    assert med < 60.0  # aim < 20 ms; loose bound for a shared 2-core machine
