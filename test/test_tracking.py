"""Frame-to-keyframe tracking: known Sim(3)/SE(3) motions (uncalibrated, calibrated, RGB-D ICP), loss
detection, solver failure handling, keyframe selection, motion model, short real-data run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from online3r_ros.geometry import camera, lie
from online3r_ros.geometry.residuals import calib_residuals, ray_dist, ray_dist_residuals
from online3r_ros.slam.config import load_config
from online3r_ros.slam.motion import MotionModel
from online3r_ros.slam.pose_solver import optimize_pose, solve_damped
from online3r_ros.slam.tracking import FrameTracker, TrackingKeyframe, TrackingState
from online3r_ros.sources.base import AsymmetricPrediction, Pointmap, PointmapSource, SourceFrame
from online3r_ros.sources.rgbd import RGBDSource

H, W = 48, 64
K = torch.tensor([[32.0, 0.0, 31.5], [0.0, 32.0, 23.5], [0.0, 0.0, 1.0]])
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"


def _tracker(src: PointmapSource, pose_group: str = "sim3", **sections: dict) -> FrameTracker:
    """A tracker with the configuration of ``src``'s kind (RGB-D: ``depth``, else the reference values of
    ``mast3r``) and ``sections`` overriding keys (``tracking={...}``, ``system={...}``)."""
    kind = "depth" if isinstance(src, RGBDSource) else "mast3r"
    cfg = load_config(overrides={**sections, "source": {"kind": kind, **sections.get("source", {})}})
    return FrameTracker(src, cfg, pose_group)


def room_depth(T_WC: torch.Tensor) -> torch.Tensor:
    """Depth image of the inside of the box [-2,2]x[-1.5,1.5]x[-1,4] seen from camera pose T_WC."""
    uv = camera.pixel_grid(H, W)
    d_cam = torch.stack(
        [(uv[..., 0] - K[0, 2]) / K[0, 0], (uv[..., 1] - K[1, 2]) / K[1, 1], torch.ones(H, W)], -1
    )
    d_w = d_cam @ lie.quat_to_matrix(T_WC[3:7]).T
    o = T_WC[:3]
    t_hi = (torch.tensor([2.0, 1.5, 4.0]) - o) / d_w
    t_lo = (torch.tensor([-2.0, -1.5, -1.0]) - o) / d_w
    t = torch.where(t_hi > 0, t_hi, t_lo).masked_fill(~torch.isfinite(t_hi), float("inf")).min(-1).values
    return t  # z = t because d_cam has unit z


def room_image(T_WC: torch.Tensor) -> torch.Tensor:
    X = camera.backproject_depth(room_depth(T_WC), K)
    Xw = lie.sim3_act(T_WC, X)
    g = (
        0.5
        + 0.25 * torch.sin(4 * Xw[..., 0] + 2 * Xw[..., 2])
        + 0.25 * torch.cos(5 * Xw[..., 1] - 3 * Xw[..., 2])
    )
    return g.unsqueeze(-1).expand(H, W, 3).contiguous()


class OracleSource(PointmapSource):
    """Network-like source: returns the exact keyframe points in the frame's coordinates (true pose)."""

    def __init__(self, scale_f: float = 1.0, garbage: bool = False, nan: bool = False):
        super().__init__("cpu")
        self.scale_f, self.garbage, self.nan = scale_f, garbage, nan

    def prepare(self, image, *, index=0, timestamp=0.0, depth=None, K=None):
        raise NotImplementedError

    def make_frame(self, T_WC: torch.Tensor, index: int, scale: float = 1.0) -> SourceFrame:
        X = camera.backproject_depth(room_depth(T_WC), K) / scale
        return SourceFrame(
            index, float(index), room_image(T_WC), None, K.clone(), {"X": X, "T_WC": T_WC, "s": scale}
        )

    def predict_mono(self, frame):
        return Pointmap(frame.cache["X"], torch.full((H, W), 2.0))

    def predict_asymmetric(self, frame, keyframe, T_CkCf_guess=None):
        Xf = frame.cache["X"]
        # keyframe pixels in the frame's (scaled) coordinates
        T_fk = lie.sim3_compose(lie.sim3_inverse(frame.cache["T_WC"]), keyframe.cache["T_WC"])
        Xkf = lie.sim3_act(T_fk, keyframe.cache["X"] * keyframe.cache["s"]) / frame.cache["s"]
        if self.garbage:
            g = torch.Generator().manual_seed(frame.index)
            Xf = torch.randn(H, W, 3, generator=g)
            Xkf = torch.randn(H, W, 3, generator=g)
        if self.nan:
            Xf = torch.full_like(Xf, float("nan"))
        C = torch.full((H, W), 2.0)
        return AsymmetricPrediction(Pointmap(Xf, C, None, C), Pointmap(Xkf, C, None, C))

    def predict_symmetric(self, pairs, T_CiCj_guesses=None):
        raise NotImplementedError


def _keyframe(src: OracleSource, T_WC: torch.Tensor) -> TrackingKeyframe:
    f = src.make_frame(T_WC, 0)
    return TrackingKeyframe(f, lie.sim3_identity(), f.cache["X"], torch.full((H, W), 2.0), kf_id=0)


def _pose_err(T_est: torch.Tensor, T_true: torch.Tensor) -> tuple[float, float, float]:
    d = lie.sim3_log(lie.sim3_compose(T_est, lie.sim3_inverse(T_true)))
    return float(d[:3].norm()), float(d[3:6].norm()), float(d[6].abs())


T_KF = lie.sim3_exp(torch.tensor([0.1, 0.0, -0.2, 0.0, 0.05, 0.0, 0.0]))
MOTION = lie.sim3_exp(torch.tensor([0.04, -0.02, 0.03, 0.01, -0.02, 0.015, 0.0]))
BIG_MOTION = lie.sim3_exp(torch.tensor([0.25, -0.1, 0.3, 0.05, -0.1, 0.08, 0.0]))


@pytest.mark.parametrize("cost", ["ray_dist", "calib"])
@pytest.mark.parametrize("dof", [7, 6])
def test_optimize_pose_exact_correspondences(cost, dof):
    g = torch.Generator().manual_seed(3)
    lo = torch.tensor([-1.0, -0.75, 1.5], dtype=torch.float64)
    X_f = torch.rand(500, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.5, 2.0]).double() + lo
    xi = [0.05, -0.03, 0.04, 0.02, -0.03, 0.01, 0.2 if dof == 7 else 0.0]
    T_true = lie.sim3_exp(torch.tensor(xi, dtype=torch.float64))
    X_k = lie.sim3_act(T_true, X_f)
    Kd = K.double()
    if cost == "ray_dist":
        target = ray_dist(X_k)
        sqrt_w = torch.tensor([1 / 0.003] * 3 + [1 / 0.1], dtype=torch.float64).expand(500, 4)

        def fn(T):
            r, J = ray_dist_residuals(T, X_f, target)
            return r, J, None

    else:
        meas, _, _ = camera.project_with_jacobian(X_k, Kd)
        sqrt_w = torch.tensor([1.0, 1.0, 1 / 0.05], dtype=torch.float64).expand(500, 3)

        def fn(T):
            return calib_residuals(T, X_f, meas, Kd)

    sol = optimize_pose(fn, lie.sim3_identity(dtype=torch.float64), sqrt_w, dof, 50, 1e-12, 1e-10)
    assert sol.ok and sol.converged
    et, er, es = _pose_err(sol.T, T_true)
    assert et < 1e-6 and er < 1e-6 and es < 1e-6, (et, er, es)


@pytest.mark.parametrize("use_calib", [False, True])
def test_recovers_known_sim3_motion(use_calib):
    src = OracleSource()
    kf = _keyframe(src, T_KF)
    T_WCf_true = lie.sim3_compose(T_KF, BIG_MOTION)
    s_f = 1.3  # the frame's prediction has another scale: T_CkCf = (R, t, s_f)
    frame = src.make_frame(T_WCf_true, 1, scale=s_f)
    T_CkCf_true = lie.sim3_compose(BIG_MOTION, torch.tensor([0, 0, 0, 0, 0, 0, 1.0, s_f]))
    tracking = {
        "max_iters": 50,
        "rel_error": 1e-9,
        "delta_norm": 1e-9,
        "sigma_depth": 0.05 if use_calib else 10.0,
    }
    tr = _tracker(src, tracking=tracking, system={"use_calib": use_calib})
    res = tr.track(frame, kf, T_WC_guess=lie.sim3_identity())
    assert res.state is TrackingState.TRACKING, res.reason
    # integer-pixel matches on a 64x48 image limit the accuracy (a pixel is ~9 cm at 3 m)
    et, er, es = _pose_err(res.T_CkCf, T_CkCf_true)
    assert et < 0.05 and er < 0.01 and es < 0.01, (et, er, es)
    assert res.X_kk is not None and res.C_kf is not None
    # X_kk is the keyframe prediction moved into the keyframe frame: equals the keyframe's own points
    ok = res.C_kf > 0
    assert torch.allclose(res.X_kk[ok], kf.X[ok], atol=2e-2)
    assert res.match_frac > 0.5 and res.iterations >= 1


def test_recovers_known_se3_motion_with_scale_fixed():
    src = OracleSource()
    kf = _keyframe(src, T_KF)
    frame = src.make_frame(lie.sim3_compose(T_KF, BIG_MOTION), 1)
    tr = _tracker(src, "se3", tracking={"rel_error": 1e-9, "delta_norm": 1e-9})
    res = tr.track(frame, kf, T_WC_guess=lie.sim3_identity())
    assert res.state is TrackingState.TRACKING
    et, er, _ = _pose_err(res.T_CkCf, BIG_MOTION)
    assert et < 0.05 and er < 0.01, (et, er)
    assert res.T_CkCf[7] == 1.0


def test_rgbd_icp_recovers_known_se3_motion():
    src = RGBDSource(scale=1.0, descriptors=False, depth_trunc=10.0)
    T_kf = T_KF
    T_f = lie.sim3_compose(T_KF, MOTION)
    fk = src.prepare(room_image(T_kf), depth=room_depth(T_kf), K=K, index=0)
    ff = src.prepare(room_image(T_f), depth=room_depth(T_f), K=K, index=1)
    kf = TrackingKeyframe(fk, T_kf, fk.cache["X"], fk.cache["C"], 0)
    for photo in (0.0, 0.05):
        tr = _tracker(src, "se3", tracking={"icp_photo_sigma": photo})
        res = tr.track(ff, kf, T_WC_guess=T_kf)
        assert res.state is TrackingState.TRACKING, res.reason
        et, er, _ = _pose_err(res.T_CkCf, MOTION)
        assert et < 3e-3 and er < 2e-3, (photo, et, er)
        assert torch.allclose(res.T_WC, lie.sim3_compose(T_kf, res.T_CkCf))
        assert res.X_kk is not None and not res.new_keyframe


@pytest.mark.parametrize("kind", ["garbage", "nan"])
def test_loss_detected_as_state(kind):
    src = OracleSource(garbage=kind == "garbage", nan=kind == "nan")
    kf = _keyframe(src, T_KF)
    frame = src.make_frame(lie.sim3_compose(T_KF, MOTION), 1)
    guess = lie.sim3_exp(torch.tensor([0.5, 0, 0, 0, 0, 0, 0.0]))
    res = _tracker(src).track(frame, kf, T_WC_guess=guess)
    assert res.state is TrackingState.LOST and res.lost
    assert res.reason
    assert torch.equal(res.T_WC, guess)
    assert res.X_kk is None


def test_rgbd_all_invalid_depth_is_lost():
    src = RGBDSource(scale=1.0)
    fk = src.prepare(room_image(T_KF), depth=room_depth(T_KF), K=K)
    bad = src.prepare(room_image(T_KF), depth=torch.zeros(H, W), K=K, index=1)
    kf = TrackingKeyframe(fk, T_KF, fk.cache["X"], fk.cache["C"], 0)
    res = _tracker(src, "se3").track(bad, kf)
    assert res.state is TrackingState.LOST


def test_new_keyframe_on_small_overlap_only():
    src = OracleSource()
    kf = _keyframe(src, T_KF)
    tr = _tracker(src)
    near = src.make_frame(lie.sim3_compose(T_KF, lie.sim3_exp(torch.tensor([0.01, 0, 0, 0, 0, 0, 0.0]))), 1)
    assert not tr.track(near, kf, T_WC_guess=lie.sim3_identity()).new_keyframe
    far_pose = lie.sim3_compose(T_KF, lie.sim3_exp(torch.tensor([0.0, 0, 0, 0, 1.2, 0, 0.0])))
    res = tr.track(src.make_frame(far_pose, 2), kf, T_WC_guess=lie.sim3_identity())
    assert res.state is TrackingState.TRACKING and res.new_keyframe
    assert min(res.match_frac_k, res.unique_frac_f) < 0.333


def test_solve_damped_handles_singular_systems():
    H6 = torch.diag(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    g = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    x, failures, ok = solve_damped(H6, g)
    assert ok and failures >= 1
    assert torch.allclose(x[:3], torch.ones(3, dtype=torch.float64), atol=1e-3)
    x, failures, ok = solve_damped(
        torch.zeros(6, 6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    )
    assert not ok


def test_motion_model_guesses_from_the_current_poses_of_the_last_two_frames():
    step = lie.sim3_exp(torch.tensor([0.1, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0], dtype=torch.float64))
    poses = {3: lie.sim3_identity(dtype=torch.float64), 5: step}
    model = MotionModel("constant_velocity")
    model.observe(3, 1.0)
    assert torch.equal(model.guess(2.0, poses.__getitem__), poses[3])  # one posed frame: its pose
    model.observe(5, 2.0)
    torch.testing.assert_close(model.guess(3.0, poses.__getitem__), lie.sim3_compose(step, step))
    guesses = model.reloc_guesses(3.0, poses.__getitem__)
    assert len(guesses) == 2 and torch.equal(guesses[1], step)  # velocity first, then the last pose
    still = MotionModel("constant_position")
    still.observe(3, 1.0)
    still.observe(5, 2.0)
    assert torch.equal(still.guess(3.0, poses.__getitem__), step)
    assert len(still.reloc_guesses(3.0, poses.__getitem__)) == 1
    with pytest.raises(ValueError, match="pose_group"):
        _tracker(OracleSource(), "affine")
    with pytest.raises(ValueError, match="motion model"):
        MotionModel("constant_acceleration")


def test_motion_model_keeps_the_velocity_across_a_jump_for_one_frame():
    """A reused keyframe moves the frame's pose by the map's drift: the next guess carries the velocity from
    before the jump (not the jump itself), and the frame after it measures the velocity again."""
    step = lie.sim3_exp(torch.tensor([0.1, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0], dtype=torch.float64))
    jump = lie.sim3_exp(torch.tensor([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    poses = {3: lie.sim3_identity(dtype=torch.float64), 5: step}
    poses[6] = lie.sim3_compose(jump, lie.sim3_compose(step, step))  # jumped by 0.5 m in the world
    model = MotionModel("constant_velocity")
    model.observe(3, 1.0)
    model.observe(5, 2.0)
    model.observe(6, 3.0, poses.__getitem__, keep_velocity=True)
    torch.testing.assert_close(model.guess(4.0, poses.__getitem__), lie.sim3_compose(poses[6], step))
    state = model.state_dict()
    model.reset()
    assert model.reloc_guesses(4.0, poses.__getitem__) == []
    model.load_state_dict(state)
    torch.testing.assert_close(model.guess(4.0, poses.__getitem__), lie.sim3_compose(poses[6], step))
    poses[7] = lie.sim3_compose(poses[6], lie.sim3_compose(step, step))
    model.observe(7, 4.0, poses.__getitem__)  # posed normally: velocity from frames 6 -> 7 again
    expected = lie.sim3_compose(poses[7], lie.sim3_compose(step, step))
    torch.testing.assert_close(model.guess(5.0, poses.__getitem__), expected)


def _read_7scenes(i: int):
    cv2 = pytest.importorskip("cv2")
    rgb = cv2.cvtColor(cv2.imread(str(DATA / f"frame-{i:06d}.color.jpg")), cv2.COLOR_BGR2RGB)
    d = cv2.imread(str(DATA / f"frame-{i:06d}.depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
    d[d >= 65535] = 0
    return rgb, d / 1000.0, np.loadtxt(DATA / f"frame-{i:06d}.pose.txt")


@pytest.mark.realdata
@pytest.mark.skipif(not DATA.is_dir(), reason=f"7-Scenes data not found at {DATA}")
def test_real_7scenes_30_frames_drift_bound():
    src = RGBDSource(scale=0.25)
    tr = _tracker(src, "se3", source={"points_per_frame": 3000}, tracking={"match_frac_thresh": 0.7})
    Kin = np.array([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]])
    kf = None
    est, gt = [], []
    motion, poses = MotionModel("constant_velocity"), {}
    for i in range(0, 60, 2):
        rgb, d, G = _read_7scenes(i)
        f = src.prepare(rgb, depth=d, K=Kin, index=i)
        if kf is None:
            kf = TrackingKeyframe(f, lie.sim3_identity(), f.cache["X"], f.cache["C"], 0)
            T = kf.T_WC
        else:
            r = tr.track(f, kf, motion.guess(float(i), poses.__getitem__))
            assert r.state is TrackingState.TRACKING, r.reason
            T = r.T_WC
            if r.new_keyframe:
                kf = TrackingKeyframe(f, T, f.cache["X"], f.cache["C"], i)
        poses[i] = T.double()
        motion.observe(i, float(i))
        est.append(lie.sim3_to_matrix(T.double()).numpy())
        gt.append(G)
    # relative pose of the last frame w.r.t. the first vs ground truth
    rel_est = np.linalg.inv(est[0]) @ est[-1]
    rel_gt = np.linalg.inv(gt[0]) @ gt[-1]
    assert np.linalg.norm(rel_gt[:3, 3]) > 0.05  # the camera really moved
    assert np.linalg.norm(rel_est[:3, 3] - rel_gt[:3, 3]) < 0.03


def test_rgbd_icp_model_neighbours_constrain_what_the_keyframe_cannot():
    """The keyframe sees only the far wall (a plane: point-to-plane ICP cannot observe sliding along it);
    a neighbour keyframe at another pose sees the whole room. Only with the neighbour's points, moved into
    the keyframe's frame by the two world poses, is the frame's in-plane motion recovered (geometry alone:
    no photometric term, which would see the motion too)."""
    geometry_only = {"icp_photo_sigma": 0.0, "icp_degenerate_ratio": 0.0}
    src = RGBDSource(scale=1.0, descriptors=False, depth_trunc=10.0)
    depth_k = room_depth(T_KF)
    wall = lie.sim3_act(T_KF, camera.backproject_depth(depth_k, K))[..., 2] > 3.99
    fk = src.prepare(room_image(T_KF), depth=torch.where(wall, depth_k, torch.zeros_like(depth_k)), K=K)
    T_n = lie.sim3_compose(T_KF, lie.sim3_exp(torch.tensor([-0.15, 0.05, -0.1, 0.0, -0.08, 0.02, 0.0])))
    fn = src.prepare(room_image(T_n), depth=room_depth(T_n), K=K, index=1)
    motion = lie.sim3_exp(torch.tensor([0.06, -0.04, 0.0, 0.0, 0.0, 0.0, 0.0]))  # in the wall's plane
    T_f = lie.sim3_compose(T_KF, motion)
    ff = src.prepare(room_image(T_f), depth=room_depth(T_f), K=K, index=2)
    neighbour = TrackingKeyframe(fn, T_n, fn.cache["X"], fn.cache["C"], kf_id=1)
    errors = {}
    for with_neighbour in (False, True):
        kf = TrackingKeyframe(fk, T_KF, fk.cache["X"], fk.cache["C"], kf_id=0)
        if with_neighbour:
            kf.neighbours = [neighbour]
        res = _tracker(src, "se3", tracking=geometry_only).track(ff, kf, T_WC_guess=T_KF)
        assert res.state is TrackingState.TRACKING, res.reason
        errors[with_neighbour] = _pose_err(res.T_CkCf, motion)[0]
        assert res.stats["model_keyframes"] == int(with_neighbour)
        own = int(wall[1:-1, 1:-1].sum())
        assert (res.stats["model_points"] > own + 100) == with_neighbour
        # the keyframe decision and match fractions count the keyframe's own points only
        assert res.match_frac <= 1.0 and res.n_matches <= own
    assert errors[True] < 3e-3, errors
    assert errors[False] > 10 * errors[True], errors
