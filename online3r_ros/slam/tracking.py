"""Frame-to-keyframe tracking (MASt3R-SLAM §4) for any :class:`~online3r_ros.sources.base.PointmapSource`.

Per frame: predict (frame, keyframe) pointmaps, match keyframe pixels to frame pixels, optimise the
relative pose ``T_CkCf`` (Sim(3), or SE(3) for metric sources) by IRLS Gauss-Newton with Huber weights on
the ray + distance cost (uncalibrated) or the pixel + log-depth cost (calibrated), decide on a new keyframe
from the match fractions, and hand back what the caller fuses into the keyframe
(``X_kk = T_CkCf·X_kf``, ``C_kf``).

Differences from the reference (notes §15): the 7x7 (6x6) solve (:mod:`~online3r_ros.slam.pose_solver`)
never silently returns a zero update — on a failed Cholesky it adds damping, then falls back to least
squares, and counts the failures; tracking loss is
a :class:`TrackingState` (never an exception); the initial guess comes from a constant-velocity motion
model (the reference used constant position); pose-dependent sources (RGB-D) can re-predict and re-match
after a pose update (``rematch_iters``, projective-ICP style).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from online3r_ros.geometry.camera import intrinsics_params
from online3r_ros.geometry.icp import (
    grey_and_gradients,
    photometric_residuals,
    point_to_plane_residuals,
    pointmap_normals,
    projective_association,
)
from online3r_ros.geometry.lie import (
    quat_to_matrix,
    sim3_act,
    sim3_compose,
    sim3_identity,
    sim3_inverse,
)
from online3r_ros.geometry.residuals import calib_residuals, ray_dist, ray_dist_residuals
from online3r_ros.slam.matching import match, match_by_projection
from online3r_ros.slam.pose_solver import PoseSolveResult, optimize_pose, solve_damped
from online3r_ros.sources.base import AsymmetricPrediction, PointmapSource, SourceFrame

Tensor = torch.Tensor

__all__ = [
    "TrackingState",
    "TrackingKeyframe",
    "TrackResult",
    "PoseSolveResult",
    "TrackerOptions",
    "solve_damped",
    "optimize_pose",
    "constant_velocity_guess",
    "FrameTracker",
]


class TrackingState(str, enum.Enum):
    """Outcome of tracking one frame."""

    TRACKING = "tracking"
    LOST = "lost"


@dataclass
class TrackingKeyframe:
    """What the tracker needs of the current keyframe.

    ``frame``: its prepared :class:`SourceFrame`; ``T_WC [8]`` Sim(3) world pose; ``X [H, W, 3]``
    canonical (fused) pointmap in its own frame; ``C [H, W]`` average confidence; ``kf_id`` identifies it
    (the match warm start is reset when it changes). ``neighbours``: other keyframes (same fields, their
    own ``T_WC``) whose points join this keyframe's in the RGB-D ICP model; the matching cost ignores them.
    """

    frame: SourceFrame
    T_WC: Tensor
    X: Tensor
    C: Tensor
    kf_id: int = 0
    neighbours: list[TrackingKeyframe] = field(default_factory=list)


@dataclass
class TrackResult:
    """Result of :meth:`FrameTracker.track`.

    ``T_WC``/``T_CkCf`` are Sim(3) ``[8]`` (on LOST: the initial guess). ``X_kk [H, W, 3]`` / ``C_kf [H, W]``
    are the keyframe-pixel prediction moved into the keyframe frame with the estimated pose, for fusion
    (``None`` on LOST). ``prediction`` is the source's output (``prediction.frame`` is the frame's own
    pointmap, used when the frame becomes a keyframe).
    """

    state: TrackingState
    T_WC: Tensor
    T_CkCf: Tensor
    new_keyframe: bool = False
    match_frac: float = 0.0
    match_frac_k: float = 0.0
    unique_frac_f: float = 0.0
    n_matches: int = 0
    iterations: int = 0
    cost: float = math.nan
    solver_failures: int = 0
    reason: str = ""
    X_kk: Tensor | None = None
    C_kf: Tensor | None = None
    prediction: AsymmetricPrediction | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> bool:
        return self.state is TrackingState.LOST


@dataclass
class TrackerOptions:
    """Tracking options (defaults = MASt3R-SLAM ``tracking`` + ``matching`` sections).

    ``pose_group``: ``"sim3"`` (7 DoF), ``"se3"`` (6 DoF) or ``"auto"`` (se3 for metric sources).
    ``use_calib``: pixel + log-depth cost with the frame's ``K``. ``points_per_frame``: use at most this many
    keyframe pixels (0: all). ``rematch_iters``: extra predict/match/solve passes for pose-dependent sources.

    Pose-dependent metric sources with intrinsics (RGB-D) use ``rgbd_cost="icp"`` by default: projective
    point-to-plane ICP against the keyframe's canonical pointmap (and its model neighbours'), re-associated
    at every evaluation (``icp_dist`` m association gate, ``icp_sigma`` m residual scale at confidence 1,
    Huber, LM safeguard, convergence ``icp_rel_error`` / ``icp_delta_norm``), plus an optional photometric
    term (``icp_photo_sigma`` > 0, grey levels 0..1). ``rgbd_cost="matching"`` runs the reference
    matching + calibrated cost instead.
    """

    # tracking
    min_match_frac: float = 0.05
    max_iters: int = 50
    C_conf: float = 0.0
    Q_conf: float = 1.5
    rel_error: float = 1e-3
    delta_norm: float = 1e-3
    huber: float = 1.345
    match_frac_thresh: float = 0.333
    sigma_ray: float = 0.003
    sigma_dist: float = 10.0
    sigma_pixel: float = 1.0
    sigma_depth: float = 10.0
    pixel_border: float = -10.0
    depth_eps: float = 1e-6
    # matching
    max_iter: int = 10
    lambda_init: float = 1e-8
    convergence_thresh: float = 1e-6
    dist_thresh: float = 0.1
    radius: int = 3
    dilation_max: int = 5
    # this project
    pose_group: str = "sim3"
    use_calib: bool = False
    points_per_frame: int = 0
    rematch_iters: int = 0
    motion_model: str = "constant_velocity"
    # pose-dependent metric sources (RGB-D): projective point-to-plane ICP instead of matching
    rgbd_cost: str = "icp"
    icp_dist: float = 0.1
    icp_sigma: float = 0.1
    icp_rel_error: float = 1e-4
    icp_photo_sigma: float = 0.0
    icp_delta_norm: float = 1e-4

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> TrackerOptions:
        """From a :class:`online3r_ros.slam.config.SlamConfig` (``tracking``/``matching`` sections), then
        keyword overrides."""
        kw: dict[str, Any] = {}
        names = {f for f in cls.__dataclass_fields__}
        for section in ("tracking", "matching"):
            sec = getattr(cfg, section, None)
            if sec is None:
                continue
            for k in names:
                if hasattr(sec, k):
                    kw[k] = getattr(sec, k)
        system = getattr(cfg, "system", None)
        if system is not None:
            kw["use_calib"] = bool(getattr(system, "use_calib", False))
            kw["pose_group"] = getattr(system, "pose_group", "auto")
            kw["motion_model"] = getattr(system, "motion_model", "constant_velocity")
        source = getattr(cfg, "source", None)
        if source is not None:
            kw["points_per_frame"] = int(getattr(source, "points_per_frame", 0))
            kw["rematch_iters"] = int(getattr(source, "rematch_iters", 0))
        kw.update(overrides)
        opts = cls(**kw)
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.pose_group not in ("sim3", "se3", "auto"):
            raise ValueError(f"pose_group must be 'sim3', 'se3' or 'auto', got {self.pose_group!r}")
        if self.rgbd_cost not in ("icp", "matching"):
            raise ValueError(f"rgbd_cost must be 'icp' or 'matching', got {self.rgbd_cost!r}")
        if self.motion_model not in ("constant_position", "constant_velocity"):
            raise ValueError(
                f"motion_model must be constant_position/constant_velocity, got {self.motion_model!r}"
            )
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {self.max_iters}")
        if self.points_per_frame < 0 or self.rematch_iters < 0:
            raise ValueError("points_per_frame and rematch_iters must be >= 0")


def constant_velocity_guess(T_prev: Tensor | None, T_last: Tensor | None, model: str) -> Tensor | None:
    """Motion-model prediction of the next world pose: ``T_last·(T_prev^-1·T_last)`` (constant velocity in
    the body frame) or ``T_last`` (constant position); ``None`` if there is no history."""
    if T_last is None:
        return None
    if model == "constant_position" or T_prev is None:
        return T_last.clone()
    return sim3_compose(T_last, sim3_compose(sim3_inverse(T_prev), T_last))


# ---------------------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------------------


def _select_query(valid_k: Tensor, n: int) -> Tensor:
    """Deterministic, spatially uniform subset of at most ``n`` of the keyframe pixels with ``valid_k``."""
    cand = valid_k.reshape(-1).nonzero().squeeze(-1)
    if n <= 0 or cand.numel() <= n:
        return cand
    pick = torch.linspace(0, cand.numel() - 1, n, device=cand.device).round().long()
    return cand[pick]


class FrameTracker:
    """Frame-to-keyframe tracker (stateful only for the motion model and the matching warm start).

    ``FrameTracker(source, options).track(frame, keyframe, T_WC_guess=None) -> TrackResult``.
    """

    def __init__(self, source: PointmapSource, options: TrackerOptions | None = None) -> None:
        self.source = source
        self.opts = dataclasses.replace(options) if options is not None else TrackerOptions()
        self.opts.validate()
        if self.opts.pose_group == "auto":
            self.opts.pose_group = "se3" if source.metric else "sim3"
        # source-recommended settings replace only options still at their defaults
        overrides = getattr(source, "tracking_overrides", None) or {}
        defaults = TrackerOptions()
        for k, v in overrides.items():
            if hasattr(self.opts, k) and getattr(self.opts, k) == getattr(defaults, k):
                setattr(self.opts, k, v)
        self._T_prev: Tensor | None = None
        self._T_last: Tensor | None = None
        self._warm: tuple[int, Tensor, Tensor] | None = None  # (kf_id, query, idx)
        self._normals: dict | None = None  # kf_id -> (pointmap key, normals, ICP query pixels)

    @property
    def uses_icp_model(self) -> bool:
        """True when frames are tracked by projective ICP (pose-dependent metric sources, ``rgbd_cost``
        icp), the cost whose model takes :attr:`TrackingKeyframe.neighbours` into account."""
        return self.opts.rgbd_cost == "icp" and bool(self.source.pose_dependent) and bool(self.source.metric)

    # -- motion model -------------------------------------------------------------------------------------
    def predict_pose(self) -> Tensor | None:
        """World pose guess for the next frame from the motion model (``None`` before the first frame)."""
        return constant_velocity_guess(self._T_prev, self._T_last, self.opts.motion_model)

    def observe_pose(self, T_WC: Tensor) -> None:
        """Feed an externally known pose (e.g. after relocalisation or re-anchoring) into the motion model."""
        self._T_prev, self._T_last = self._T_last, T_WC.detach().clone()

    def reset(self, T_WC: Tensor | None = None) -> None:
        """Forget the motion history (and the matching warm start); optionally seed with ``T_WC``."""
        self._T_prev = None
        self._T_last = None if T_WC is None else T_WC.detach().clone()
        self._warm = None

    # -- one frame ------------------------------------------------------------------------------------
    def track(
        self, frame: SourceFrame, keyframe: TrackingKeyframe, T_WC_guess: Tensor | None = None
    ) -> TrackResult:
        """Track ``frame`` against ``keyframe``; never raises on bad data (returns ``LOST`` with a reason)."""
        o = self.opts
        T_WCk = keyframe.T_WC.to(torch.float32)
        if T_WC_guess is None:
            T_WC_guess = self.predict_pose()
        if T_WC_guess is None:
            T_WC_guess = T_WCk.clone()
        T_CkCf = sim3_compose(sim3_inverse(T_WCk), T_WC_guess.to(T_WCk))
        if o.pose_group == "se3":
            T_CkCf = T_CkCf.clone()
        passes = 1 + (o.rematch_iters if self.source.pose_dependent else 0)
        res: TrackResult | None = None
        total_iters = 0
        failures = 0
        for _ in range(passes):
            res = self._track_once(frame, keyframe, T_CkCf)
            total_iters += res.iterations
            failures += res.solver_failures
            if res.lost:
                break
            T_CkCf = res.T_CkCf
        assert res is not None
        res.iterations = total_iters
        res.solver_failures = failures
        if res.lost:
            res.T_CkCf = sim3_compose(sim3_inverse(T_WCk), T_WC_guess.to(T_WCk))
            res.T_WC = T_WC_guess.to(T_WCk).clone()
            return res
        res.T_WC = sim3_compose(T_WCk, res.T_CkCf)
        pred = res.prediction
        assert pred is not None
        res.X_kk = sim3_act(res.T_CkCf, pred.keyframe.X)
        res.C_kf = pred.keyframe.C
        self.observe_pose(res.T_WC)
        return res

    def _lost(self, T_CkCf: Tensor, reason: str, **kw: Any) -> TrackResult:
        return TrackResult(TrackingState.LOST, T_CkCf, T_CkCf, reason=reason, **kw)

    def _track_once(self, frame: SourceFrame, keyframe: TrackingKeyframe, T_CkCf: Tensor) -> TrackResult:
        o = self.opts
        if (
            o.rgbd_cost == "icp"
            and self.source.pose_dependent
            and self.source.metric
            and frame.K is not None
            and "X" in frame.cache
        ):
            return self._track_icp(frame, keyframe, T_CkCf)
        try:
            pred = self.source.predict_asymmetric(frame, keyframe.frame, T_CkCf)
        except (ValueError, RuntimeError) as exc:
            return self._lost(T_CkCf, f"prediction failed: {exc}")
        Pf, Pk = pred.frame, pred.keyframe
        H, W = Pf.X.shape[:2]
        Hk, Wk = Pk.X.shape[:2]
        X_k_canon = keyframe.X.reshape(-1, 3)
        C_k_canon = keyframe.C.reshape(-1)
        if X_k_canon.shape[0] != Hk * Wk:
            return self._lost(
                T_CkCf, f"keyframe pointmap has {X_k_canon.shape[0]} points, prediction {Hk * Wk}"
            )
        finite_k = torch.isfinite(Pk.X).all(-1) & torch.isfinite(keyframe.X).all(-1)
        valid_k = finite_k & (Pk.C > 0) & (keyframe.C > 0)
        query = _select_query(valid_k, o.points_per_frame)
        n_query = int(query.numel())
        if n_query == 0:
            return self._lost(T_CkCf, "no valid keyframe points", prediction=pred)
        X_ff = torch.nan_to_num(Pf.X)
        X_kf = torch.nan_to_num(Pk.X)
        use_desc = self.source.has_descriptors and Pf.D is not None and Pk.D is not None
        D_ff = Pf.D if use_desc else None
        D_kf = Pk.D if use_desc else None
        K = frame.K
        mkw = dict(dist_thresh=o.dist_thresh, radius=o.radius, dilation_max=o.dilation_max)
        if self.source.pose_dependent and K is not None:
            m = match_by_projection(X_ff, X_kf, K, D_ff, D_kf, query=query, depth_eps=o.depth_eps, **mkw)
        else:
            idx_init = None
            if (
                self._warm is not None
                and self._warm[0] == keyframe.kf_id
                and torch.equal(self._warm[1], query)
            ):
                idx_init = self._warm[2]
            elif (H, W) != (Hk, Wk):
                idx_init = query.clamp(max=H * W - 1)
            m = match(
                X_ff,
                X_kf,
                D_ff,
                D_kf,
                idx_init=idx_init,
                query=query,
                max_iter=o.max_iter,
                lambda_init=o.lambda_init,
                convergence_thresh=o.convergence_thresh,
                **mkw,
            )
            self._warm = (keyframe.kf_id, query, m.idx)
        idx = m.idx
        valid_match = m.valid
        # descriptor confidences: missing Q counts as "always passes" with unit weight
        if Pf.Q is not None and Pk.Q is not None:
            Q = torch.sqrt(Pf.Q.reshape(-1)[idx].clamp_min(0) * Pk.Q.reshape(-1)[query].clamp_min(0))
            q_ok = Q > o.Q_conf
        else:
            Q = torch.ones(n_query, dtype=X_ff.dtype, device=X_ff.device)
            q_ok = torch.ones(n_query, dtype=torch.bool, device=X_ff.device)
        C_f = Pf.C.reshape(-1)[idx]
        C_k = C_k_canon[query]
        valid_opt = valid_match & (C_f > o.C_conf) & (C_k > o.C_conf) & q_ok
        valid_kf = valid_match & q_ok
        match_frac = float(valid_opt.float().mean())
        match_frac_k = float(valid_kf.float().mean())
        n_unique = int(torch.unique(idx[valid_match]).numel()) if bool(valid_match.any()) else 0
        unique_frac_f = n_unique / n_query
        stats = dict(
            match_frac=match_frac,
            match_frac_k=match_frac_k,
            unique_frac_f=unique_frac_f,
            n_matches=int(valid_opt.sum()),
            prediction=pred,
        )
        if match_frac < o.min_match_frac:
            return self._lost(
                T_CkCf, f"match fraction {match_frac:.3f} < min_match_frac {o.min_match_frac}", **stats
            )
        sel = valid_opt.nonzero().squeeze(-1)
        idx_s, q_s, Qs = idx[sel], query[sel], Q[sel]
        X_f = X_ff.reshape(-1, 3)[idx_s]
        X_k = X_k_canon[q_s]
        dof = 6 if o.pose_group == "se3" else 7
        sq = Qs.sqrt()
        if o.use_calib and K is not None:
            fx, fy, cx, cy = intrinsics_params(K.to(X_f.dtype))
            uf = (idx_s % W).to(X_f.dtype)
            vf = (idx_s // W).to(X_f.dtype)
            uk = (q_s % Wk).to(X_f.dtype)
            vk = (q_s // Wk).to(X_f.dtype)
            zf, zk = X_f[:, 2], X_k[:, 2]
            X_f = torch.stack([(uf - cx) / fx * zf, (vf - cy) / fy * zf, zf], dim=-1)
            ok_k = zk > o.depth_eps
            target = torch.stack([uk, vk, torch.log(zk.clamp_min(o.depth_eps))], dim=-1)
            sqrt_w = torch.stack([sq / o.sigma_pixel, sq / o.sigma_pixel, sq / o.sigma_depth], dim=-1)
            sqrt_w = sqrt_w * ok_k.unsqueeze(-1).to(sqrt_w.dtype)
            b = o.pixel_border
            Kc = K.to(X_f.dtype)

            def residual_fn(T: Tensor):
                r, J, v = calib_residuals(T, X_f, target, Kc, o.depth_eps)
                u_, v_ = target[:, 0] - r[:, 0], target[:, 1] - r[:, 1]
                inside = (u_ > b) & (u_ < Wk - 1 - b) & (v_ > b) & (v_ < Hk - 1 - b)
                return r, J, v & inside

        else:
            target = ray_dist(X_k)
            sqrt_w = torch.cat(
                [(sq / o.sigma_ray).unsqueeze(-1).expand(-1, 3), (sq / o.sigma_dist)[:, None]], -1
            )

            def residual_fn(T: Tensor):
                r, J = ray_dist_residuals(T, X_f, target)
                return r, J, None

        sol = optimize_pose(
            residual_fn, T_CkCf, sqrt_w, dof, o.max_iters, o.icp_rel_error, o.icp_delta_norm, o.huber
        )
        if not sol.ok:
            return self._lost(
                T_CkCf,
                f"pose solve failed: {sol.reason}",
                iterations=sol.iterations,
                solver_failures=sol.solver_failures,
                **stats,
            )
        new_kf = min(match_frac_k, unique_frac_f) < o.match_frac_thresh
        stats.pop("prediction")
        return TrackResult(
            TrackingState.TRACKING,
            T_WC=sol.T,
            T_CkCf=sol.T,
            new_keyframe=new_kf,
            iterations=sol.iterations,
            cost=sol.cost,
            solver_failures=sol.solver_failures,
            prediction=pred,
            stats={"converged": sol.converged},
            **stats,
        )

    def _keyframe_normals(self, keyframe: TrackingKeyframe, cache: dict) -> tuple[Tensor, Tensor]:
        """Normals of a keyframe's canonical pointmap and the ICP query pixels (up to ``points_per_frame``
        with a valid normal), recomputed only when the pointmap changed (fusion updates it in place, which
        bumps its version)."""
        key = (keyframe.X.data_ptr(), keyframe.X._version, self.opts.points_per_frame)
        hit = (self._normals or {}).get(keyframe.kf_id)
        if hit is None or hit[0] != key:
            n, ok = pointmap_normals(keyframe.X, keyframe.C > 0)
            q = _select_query(ok & torch.isfinite(keyframe.X).all(-1), self.opts.points_per_frame)
            hit = (key, n, q)
        cache[keyframe.kf_id] = hit
        return hit[1], hit[2]

    def _model_points(
        self, keyframe: TrackingKeyframe, with_grey: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int]:
        """The ICP model in the keyframe's frame: points ``[N, 3]``, normals ``[N, 3]``, confidences
        ``[N]`` and (``with_grey``) grey levels ``[N]`` of up to ``points_per_frame`` valid pixels of the
        keyframe and of each neighbour (moved by ``T_WCk^-1·T_WCj``); the keyframe's own ``n_own`` points
        come first. Only these keyframes' normals and query pixels stay cached."""
        Xs, Ns, Cs, Is = [], [], [], []
        T_kW = sim3_inverse(keyframe.T_WC.to(torch.float32))
        n_own = 0
        cache: dict = {}
        for j, kf in enumerate([keyframe, *keyframe.neighbours]):
            n_k, q = self._keyframe_normals(kf, cache)
            X = kf.X.reshape(-1, 3)[q]
            nn = n_k.reshape(-1, 3)[q]
            C = kf.C.reshape(-1)[q]
            if with_grey:
                g = kf.frame.cache.get("grey_grad")
                if g is None:
                    g = kf.frame.cache["grey_grad"] = grey_and_gradients(kf.frame.image)
                Is.append(g[..., 0].reshape(-1)[q])
            if j == 0:
                n_own = int(q.numel())
            else:
                T = sim3_compose(T_kW, kf.T_WC.to(torch.float32))
                X = sim3_act(T, X)
                nn = (quat_to_matrix(T[3:7]) @ nn.T).T
            Xs.append(X)
            Ns.append(nn)
            Cs.append(C)
        self._normals = cache
        grey = torch.cat(Is) if with_grey else None
        return torch.cat(Xs), torch.cat(Ns), torch.cat(Cs), grey, n_own

    def _track_icp(self, frame: SourceFrame, keyframe: TrackingKeyframe, T_CkCf: Tensor) -> TrackResult:
        """Projective point-to-plane ICP of the frame's pointmap against the model (the keyframe's canonical
        pointmap plus its ``neighbours``', :meth:`_model_points`), re-associated at every Gauss-Newton
        evaluation. Overlap, match fractions and the keyframe decision count the keyframe's own points."""
        o = self.opts
        K = frame.K
        X_ff = frame.cache["X"]
        valid_f = frame.cache["C"] > 0
        use_photo = o.icp_photo_sigma > 0
        X_kq, n_kq, C_kq, I_kq, n_query = self._model_points(keyframe, use_photo)
        if n_query < 3:
            return self._lost(T_CkCf, "no valid keyframe points with normals")
        sqrt_w = (C_kq.clamp_min(0).sqrt() / o.icp_sigma).unsqueeze(-1)
        dof = 6 if o.pose_group == "se3" else 7
        if use_photo:
            grey_f = frame.cache.get("grey_grad")
            if grey_f is None:
                grey_f = frame.cache["grey_grad"] = grey_and_gradients(frame.image)
            sqrt_w = torch.cat([sqrt_w, torch.full_like(sqrt_w, 1.0 / o.icp_photo_sigma)], dim=-1)

        def residual_fn(T: Tensor):
            lin, ok = projective_association(T, X_kq, X_ff, valid_f, K, o.icp_dist)
            r, J = point_to_plane_residuals(T, X_ff.reshape(-1, 3)[lin], X_kq, n_kq)
            if not use_photo:
                return r, J, ok
            r2, J2, ok2 = photometric_residuals(T, X_kq, I_kq, grey_f, K)
            valid = torch.stack([ok, ok & ok2], dim=-1)
            return torch.cat([r, r2], dim=-1), torch.cat([J, J2], dim=-2), valid

        lin0, ok0 = projective_association(T_CkCf, X_kq[:n_query], X_ff, valid_f, K, o.icp_dist)
        frac0 = float(ok0.float().mean())
        if frac0 < o.min_match_frac:
            return self._lost(T_CkCf, f"match fraction {frac0:.3f} < min_match_frac {o.min_match_frac}")
        sol = optimize_pose(
            residual_fn, T_CkCf, sqrt_w, dof, o.max_iters, o.icp_rel_error, o.icp_delta_norm, o.huber
        )
        if not sol.ok:
            return self._lost(
                T_CkCf,
                f"pose solve failed: {sol.reason}",
                iterations=sol.iterations,
                solver_failures=sol.solver_failures,
            )
        lin, ok = projective_association(sol.T, X_kq[:n_query], X_ff, valid_f, K, o.icp_dist)
        match_frac = float(ok.float().mean())
        n_unique = int(torch.unique(lin[ok]).numel()) if bool(ok.any()) else 0
        unique_frac_f = n_unique / n_query
        if match_frac < o.min_match_frac:
            return self._lost(sol.T, f"match fraction {match_frac:.3f} < min_match_frac {o.min_match_frac}")
        pred = self.source.predict_asymmetric(frame, keyframe.frame, sol.T)
        return TrackResult(
            TrackingState.TRACKING,
            T_WC=sol.T,
            T_CkCf=sol.T,
            new_keyframe=min(match_frac, unique_frac_f) < o.match_frac_thresh,
            match_frac=match_frac,
            match_frac_k=match_frac,
            unique_frac_f=unique_frac_f,
            n_matches=int(ok.sum()),
            iterations=sol.iterations,
            cost=sol.cost,
            solver_failures=sol.solver_failures,
            prediction=pred,
            stats={
                "converged": sol.converged,
                "model_keyframes": len(keyframe.neighbours),
                "model_points": int(X_kq.shape[0]),
            },
        )


def identity_pose(device=None) -> Tensor:
    """Identity Sim(3) ``[8]`` (float32)."""
    return sim3_identity(device=device)
