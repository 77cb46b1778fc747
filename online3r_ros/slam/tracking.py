"""Frame-to-keyframe tracking (MASt3R-SLAM §4) for any :class:`~online3r_ros.sources.base.PointmapSource`.

Per frame: predict (frame, keyframe) pointmaps, match keyframe pixels to frame pixels, optimise the
relative pose ``T_CkCf`` (Sim(3), or SE(3) for metric sources) by IRLS Gauss-Newton with Huber weights on
the ray + distance cost (uncalibrated) or the pixel + log-depth cost (calibrated), decide on a new keyframe
from the match fractions, and hand back what the caller fuses into the keyframe
(``X_kk = T_CkCf·X_kf``, ``C_kf``). Metric, calibrated, pose-dependent sources (RGB-D) are tracked by
projective point-to-plane ICP instead (:mod:`~online3r_ros.slam.icp_tracking`, ``tracking.rgbd_cost``).

Every option is read from the :class:`~online3r_ros.slam.config.SlamConfig` (sections ``tracking``,
``matching``, ``source.points_per_frame``/``rematch_iters``, ``system.use_calib``): there is no second
declaration of them here.

Differences from the reference (notes §15): the 7x7 (6x6) solve (:mod:`~online3r_ros.slam.pose_solver`)
never silently returns a zero update (damping, then least squares, failures counted); tracking loss is a
:class:`TrackingState` (never an exception); the caller's initial guess comes from a constant-velocity
motion model (:mod:`~online3r_ros.slam.motion`; the reference used constant position); pose-dependent
sources can re-predict and re-match after a pose update (``source.rematch_iters``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from online3r_ros.geometry.camera import intrinsics_params
from online3r_ros.geometry.lie import sim3_act, sim3_compose, sim3_inverse
from online3r_ros.geometry.residuals import calib_residuals, ray_dist, ray_dist_residuals
from online3r_ros.slam.config import SlamConfig, TrackingConfig
from online3r_ros.slam.icp_tracking import IcpTracker, count_distinct, select_query
from online3r_ros.slam.matching import match, match_by_projection
from online3r_ros.slam.pose_solver import PoseSolveResult, optimize_pose
from online3r_ros.sources.base import AsymmetricPrediction, PointmapSource, SourceFrame

Tensor = torch.Tensor

__all__ = ["TrackingState", "TrackingKeyframe", "TrackResult", "FrameTracker"]


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

    def summary(self) -> dict[str, Any]:
        """The numbers of this result (match fractions, matches, iterations, cost, ...) as a flat dict."""
        return {
            "match_frac": self.match_frac,
            "match_frac_k": self.match_frac_k,
            "unique_frac_f": self.unique_frac_f,
            "n_matches": self.n_matches,
            "iterations": self.iterations,
            "cost": self.cost,
            "solver_failures": self.solver_failures,
            "new_keyframe": self.new_keyframe,
            **{k: v for k, v in self.stats.items() if isinstance(v, (bool, int, float, str))},
        }


def _lost(T_CkCf: Tensor, reason: str, **kw: Any) -> TrackResult:
    return TrackResult(TrackingState.LOST, T_WC=T_CkCf, T_CkCf=T_CkCf, reason=reason, **kw)


def _too_far(T_CkCf: Tensor, tc: TrackingConfig) -> bool:
    """The frame is more than ``tc.keyframe_max_dist`` (m; 0: no limit) from its keyframe."""
    return tc.keyframe_max_dist > 0 and float(T_CkCf[:3].norm()) > tc.keyframe_max_dist


def _tracked(sol: PoseSolveResult, new_keyframe: bool, prediction: AsymmetricPrediction, **kw: Any):
    """A TRACKING result from a successful solve (``kw``: match statistics and ``stats``)."""
    return TrackResult(
        TrackingState.TRACKING,
        T_WC=sol.T,
        T_CkCf=sol.T,
        new_keyframe=new_keyframe,
        iterations=sol.iterations,
        cost=sol.cost,
        solver_failures=sol.solver_failures,
        prediction=prediction,
        **kw,
    )


def _solve_failed(sol: PoseSolveResult, T_CkCf: Tensor, **stats: Any) -> TrackResult:
    return _lost(
        T_CkCf,
        f"pose solve failed: {sol.reason}",
        iterations=sol.iterations,
        solver_failures=sol.solver_failures,
        **stats,
    )


class FrameTracker:
    """Frame-to-keyframe tracker: ``FrameTracker(source, config, pose_group).track(frame, keyframe, guess)``.

    Stateful only for caches: the matching warm start (:meth:`reset` forgets it) and the ICP model normals.
    ``pose_group``: ``"se3"`` (6 DoF) or ``"sim3"`` (7 DoF), already resolved for the source.
    ``sync_every``: how often the Gauss-Newton loops read their stop state on the host
    (:func:`~online3r_ros.slam.pose_solver.optimize_pose`; ``None``: every iteration on the CPU,
    :data:`~online3r_ros.slam.pose_solver.CUDA_SYNC_EVERY` on CUDA; 0: never). It does not change results.
    """

    def __init__(
        self, source: PointmapSource, config: SlamConfig, pose_group: str, sync_every: int | None = None
    ) -> None:
        if pose_group not in ("sim3", "se3"):
            raise ValueError(f"pose_group must be 'sim3' or 'se3', got {pose_group!r}")
        self.source = source
        self.tc = config.tracking
        self.mc = config.matching
        self.points_per_frame = config.source.points_per_frame
        self.rematch_iters = config.source.rematch_iters
        self.use_calib = config.system.use_calib
        self.dof = 6 if pose_group == "se3" else 7
        self._warm: tuple[int, Tensor, Tensor] | None = None  # (kf_id, query, idx)
        self._icp = IcpTracker(self.tc, self.points_per_frame, self.dof) if self.uses_icp_model else None
        self.sync_every = sync_every

    @property
    def sync_every(self) -> int | None:
        """Host-check period of the Gauss-Newton loops (see the class docstring)."""
        return self._sync_every

    @sync_every.setter
    def sync_every(self, value: int | None) -> None:
        self._sync_every = value
        if self._icp is not None:
            self._icp.sync_every = value

    @property
    def uses_icp_model(self) -> bool:
        """True when frames are tracked by projective ICP (metric, calibrated, pose-dependent sources with
        ``tracking.rgbd_cost`` icp), the cost whose model uses :attr:`TrackingKeyframe.neighbours`."""
        src = self.source
        return self.tc.rgbd_cost == "icp" and bool(src.pose_dependent and src.metric and src.calibrated)

    def reset(self) -> None:
        """Forget the matching warm start (after a relocalisation)."""
        self._warm = None

    def track(
        self, frame: SourceFrame, keyframe: TrackingKeyframe, T_WC_guess: Tensor | None = None
    ) -> TrackResult:
        """Track ``frame`` against ``keyframe`` from ``T_WC_guess`` (default: the keyframe's pose); never
        raises on bad data (returns ``LOST`` with a reason)."""
        T_WCk = keyframe.T_WC.to(torch.float32)
        guess = T_WCk.clone() if T_WC_guess is None else T_WC_guess.to(T_WCk)
        T_CkCf0 = sim3_compose(sim3_inverse(T_WCk), guess)
        T_CkCf = T_CkCf0
        passes = 1 + (self.rematch_iters if self.source.pose_dependent else 0)
        total_iters = failures = 0
        for _ in range(passes):
            res = self._track_once(frame, keyframe, T_CkCf)
            total_iters += res.iterations
            failures += res.solver_failures
            if res.lost:
                break
            T_CkCf = res.T_CkCf
        res.iterations, res.solver_failures = total_iters, failures
        if res.lost:
            res.T_CkCf, res.T_WC = T_CkCf0, guess.clone()
            return res
        res.T_WC = sim3_compose(T_WCk, res.T_CkCf)
        res.X_kk = sim3_act(res.T_CkCf, res.prediction.keyframe.X)
        res.C_kf = res.prediction.keyframe.C
        return res

    def _track_once(self, frame: SourceFrame, keyframe: TrackingKeyframe, T_CkCf: Tensor) -> TrackResult:
        if self._icp is not None and frame.K is not None and "X" in frame.cache:
            return self._track_icp(frame, keyframe, T_CkCf)
        return self._track_matching(frame, keyframe, T_CkCf)

    # ------------------------------------------------------------------------------------------ ICP cost
    def _track_icp(self, frame: SourceFrame, keyframe: TrackingKeyframe, T_CkCf: Tensor) -> TrackResult:
        tc = self.tc
        model = self._icp.model(keyframe, with_grey=tc.icp_photo_sigma > 0 or tc.icp_degenerate_ratio > 0)
        if model.n_own < 3:
            return _lost(T_CkCf, "no valid keyframe points with normals")
        frac0 = self._icp.overlap(frame, model, T_CkCf)[0]
        if frac0 < tc.min_match_frac:
            return _lost(T_CkCf, f"match fraction {frac0:.3f} < min_match_frac {tc.min_match_frac}")
        sol, n_degenerate = self._icp.solve(frame, model, T_CkCf)
        if not sol.ok:
            return _solve_failed(sol, T_CkCf)
        match_frac, unique_frac, n_matches = self._icp.overlap(frame, model, sol.T)
        if match_frac < tc.min_match_frac:
            return _lost(sol.T, f"match fraction {match_frac:.3f} < min_match_frac {tc.min_match_frac}")
        return _tracked(
            sol,
            new_keyframe=min(match_frac, unique_frac) < tc.match_frac_thresh or _too_far(sol.T, tc),
            prediction=self.source.predict_asymmetric(frame, keyframe.frame, sol.T),
            match_frac=match_frac,
            match_frac_k=match_frac,
            unique_frac_f=unique_frac,
            n_matches=n_matches,
            stats={
                "converged": sol.converged,
                "model_keyframes": len(keyframe.neighbours),
                "model_points": int(model.X.shape[0]),
                "degenerate_directions": n_degenerate,
            },
        )

    # ------------------------------------------------------------------------------------- matching cost
    def _match(self, pred: AsymmetricPrediction, frame: SourceFrame, kf_id: int, query: Tensor):
        """Frame pixel matched to each ``query`` keyframe pixel: by projection for pose-dependent calibrated
        sources, else the reference's iterative projective search (warm-started on the same keyframe)."""
        mc = self.mc
        Pf, Pk = pred.frame, pred.keyframe
        X_ff, X_kf = torch.nan_to_num(Pf.X), torch.nan_to_num(Pk.X)
        use_desc = self.source.has_descriptors and Pf.D is not None and Pk.D is not None
        D_ff, D_kf = (Pf.D, Pk.D) if use_desc else (None, None)
        mkw = dict(dist_thresh=mc.dist_thresh, radius=mc.radius, dilation_max=mc.dilation_max)
        if self.source.pose_dependent and frame.K is not None:
            return match_by_projection(
                X_ff, X_kf, frame.K, D_ff, D_kf, query=query, depth_eps=self.tc.depth_eps, **mkw
            )
        idx_init = None
        H, W = X_ff.shape[:2]
        if (H, W) != tuple(X_kf.shape[:2]):
            idx_init = query.clamp(max=H * W - 1)
        warm = self._warm
        if warm is not None and warm[0] == kf_id and warm[1].shape == query.shape:
            # the previous matches when the query pixels are the same ones (decided on the device: no sync)
            same = (warm[1] == query).all()
            idx_init = torch.where(same, warm[2], query if idx_init is None else idx_init)
        m = match(
            X_ff,
            X_kf,
            D_ff,
            D_kf,
            idx_init=idx_init,
            query=query,
            max_iter=mc.max_iter,
            lambda_init=mc.lambda_init,
            convergence_thresh=mc.convergence_thresh,
            **mkw,
        )
        self._warm = (kf_id, query, m.idx)
        return m

    def _residuals(self, frame: SourceFrame, kf_hw: tuple[int, int], idx: Tensor, query: Tensor, X_f, X_k, q):
        """``(residual_fn, sqrt_w)`` of matched points ``X_f``/``X_k [M, 3]`` (frame pixels ``idx``, keyframe
        pixels ``query``, match confidences ``q``): calibrated pixel + log-depth with ``system.use_calib`` and
        ``K`` (frame points on their pixel rays), else ray + distance."""
        tc, K = self.tc, frame.K
        sq = q.sqrt()
        if not (self.use_calib and K is not None):
            target = ray_dist(X_k)
            sqrt_w = torch.cat(
                [(sq / tc.sigma_ray).unsqueeze(-1).expand(-1, 3), (sq / tc.sigma_dist)[:, None]], -1
            )
            return (lambda T: (*ray_dist_residuals(T, X_f, target), None)), sqrt_w
        Hk, Wk = kf_hw
        W = frame.width
        fx, fy, cx, cy = intrinsics_params(K.to(X_f.dtype))
        uf, vf, zf = (idx % W).to(X_f.dtype), (idx // W).to(X_f.dtype), X_f[:, 2]
        X_f = torch.stack([(uf - cx) / fx * zf, (vf - cy) / fy * zf, zf], dim=-1)
        uk, vk, zk = (query % Wk).to(X_f.dtype), (query // Wk).to(X_f.dtype), X_k[:, 2]
        target = torch.stack([uk, vk, torch.log(zk.clamp_min(tc.depth_eps))], dim=-1)
        sqrt_w = torch.stack([sq / tc.sigma_pixel, sq / tc.sigma_pixel, sq / tc.sigma_depth], dim=-1)
        sqrt_w = sqrt_w * (zk > tc.depth_eps).unsqueeze(-1).to(sqrt_w.dtype)
        b, Kc = tc.pixel_border, K.to(X_f.dtype)

        def residual_fn(T: Tensor):
            r, J, v = calib_residuals(T, X_f, target, Kc, tc.depth_eps)
            u_, v_ = target[:, 0] - r[:, 0], target[:, 1] - r[:, 1]
            return r, J, v & (u_ > b) & (u_ < Wk - 1 - b) & (v_ > b) & (v_ < Hk - 1 - b)

        return residual_fn, sqrt_w

    def _track_matching(self, frame: SourceFrame, keyframe: TrackingKeyframe, T_CkCf: Tensor) -> TrackResult:
        tc = self.tc
        try:
            pred = self.source.predict_asymmetric(frame, keyframe.frame, T_CkCf)
        except (ValueError, RuntimeError) as exc:
            return _lost(T_CkCf, f"prediction failed: {exc}")
        Pf, Pk = pred.frame, pred.keyframe
        Hk, Wk = Pk.X.shape[:2]
        X_k_canon, C_k_canon = keyframe.X.reshape(-1, 3), keyframe.C.reshape(-1)
        if X_k_canon.shape[0] != Hk * Wk:
            return _lost(T_CkCf, f"keyframe pointmap has {X_k_canon.shape[0]} points, prediction {Hk * Wk}")
        valid_k = (
            torch.isfinite(Pk.X).all(-1) & torch.isfinite(keyframe.X).all(-1) & (Pk.C > 0) & (keyframe.C > 0)
        )
        query = select_query(valid_k, self.points_per_frame)
        n_query = int(query.numel())
        if n_query == 0:
            return _lost(T_CkCf, "no valid keyframe points", prediction=pred)
        m = self._match(pred, frame, keyframe.kf_id, query)
        idx = m.idx
        if Pf.Q is not None and Pk.Q is not None:  # descriptor confidences; missing Q: always passes
            q = torch.sqrt(Pf.Q.reshape(-1)[idx].clamp_min(0) * Pk.Q.reshape(-1)[query].clamp_min(0))
            q_ok = q > tc.Q_conf
        else:
            q = torch.ones(n_query, dtype=Pf.X.dtype, device=Pf.X.device)
            q_ok = torch.ones(n_query, dtype=torch.bool, device=Pf.X.device)
        valid_opt = m.valid & (Pf.C.reshape(-1)[idx] > tc.C_conf) & (C_k_canon[query] > tc.C_conf) & q_ok
        n_unique = count_distinct(idx, m.valid, Pf.X.shape[0] * Pf.X.shape[1])
        # the match statistics in one host sync
        frac, frac_k, n_u, n_ok = torch.stack(
            [
                valid_opt.float().mean(),
                (m.valid & q_ok).float().mean(),
                n_unique.float(),
                valid_opt.sum().float(),
            ]
        ).tolist()
        stats = dict(
            match_frac=frac, match_frac_k=frac_k, unique_frac_f=int(n_u) / n_query, n_matches=int(n_ok)
        )
        if stats["match_frac"] < tc.min_match_frac:
            reason = f"match fraction {stats['match_frac']:.3f} < min_match_frac {tc.min_match_frac}"
            return _lost(T_CkCf, reason, prediction=pred, **stats)
        sel = valid_opt.nonzero().squeeze(-1)
        X_f = torch.nan_to_num(Pf.X).reshape(-1, 3)[idx[sel]]
        residual_fn, sqrt_w = self._residuals(
            frame, (Hk, Wk), idx[sel], query[sel], X_f, X_k_canon[query[sel]], q[sel]
        )
        args = (self.dof, tc.max_iters, tc.rel_error, tc.delta_norm, tc.huber)
        sol = optimize_pose(residual_fn, T_CkCf, sqrt_w, *args, sync_every=self.sync_every)
        if not sol.ok:
            return _solve_failed(sol, T_CkCf, prediction=pred, **stats)
        new_kf = min(stats["match_frac_k"], stats["unique_frac_f"]) < tc.match_frac_thresh
        return _tracked(sol, new_kf, pred, stats={"converged": sol.converged}, **stats)
