"""Projective point-to-plane ICP tracking of RGB-D frames (the default cost of metric, calibrated,
pose-dependent sources; ``tracking.rgbd_cost: icp``).

The model is the current keyframe's canonical (fused) pointmap plus its ``neighbours``' (other keyframes at
their optimised poses, :func:`~online3r_ros.slam.neighbours.tracking_keyframe`), up to
``source.points_per_frame`` valid pixels with normals each. The frame's own pointmap is associated with the
model by projection at every Gauss-Newton evaluation (``tracking.icp_dist`` gate); residuals are whitened by
the model points' depth noise (``sqrt(C) / tracking.icp_sigma``), with a photometric term on every frame
(``tracking.icp_photo_sigma``, the default) or, with that 0, only on frames whose geometry leaves a pose
direction nearly unconstrained (a flat wall, a corridor: ``tracking.icp_degenerate_ratio``). Overlap, match
fractions and the keyframe decision count the keyframe's own points only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from online3r_ros.geometry.icp import (
    associate,
    grey_and_gradients,
    photometric,
    point_to_plane_information,
    point_to_plane_residuals,
    pointmap_normals,
    projective_association,
    view_model,
)
from online3r_ros.geometry.lie import quat_to_matrix, sim3_act, sim3_compose, sim3_inverse
from online3r_ros.slam.config import TrackingConfig
from online3r_ros.slam.pose_solver import PoseSolveResult, information_ratios, optimize_pose
from online3r_ros.sources.base import SourceFrame

Tensor = torch.Tensor

__all__ = ["IcpModel", "IcpTracker", "select_query", "count_distinct"]


def count_distinct(lin: Tensor, ok: Tensor, n_pixels: int) -> Tensor:
    """Number (0-d int64) of distinct values among ``lin[ok]`` (``lin[N]`` in ``[0, n_pixels)``), with fixed
    shapes and no host sync (``torch.unique`` of a masked selection syncs twice)."""
    hit = torch.zeros(n_pixels + 1, dtype=torch.bool, device=lin.device)
    hit[torch.where(ok, lin, n_pixels)] = True  # every write stores True: duplicates are harmless
    return hit[:n_pixels].sum()


def select_query(valid: Tensor, n: int) -> Tensor:
    """Deterministic, spatially uniform subset (linear indices ``[<= n]``) of the pixels with ``valid``
    (``[H, W]`` bool); all of them when ``n <= 0``."""
    cand = valid.reshape(-1).nonzero().squeeze(-1)
    if n <= 0 or cand.numel() <= n:
        return cand
    pick = torch.linspace(0, cand.numel() - 1, n, device=cand.device).round().long()
    return cand[pick]


def frame_grey(frame: SourceFrame) -> Tensor:
    """``[H, W, 3]`` grey level and gradients of a frame's image, computed once per frame (cached)."""
    g = frame.cache.get("grey_grad")
    if g is None:
        g = frame.cache["grey_grad"] = grey_and_gradients(frame.image)
    return g


@dataclass
class IcpModel:
    """The ICP model in the keyframe's frame: points ``X [N, 3]``, normals ``n [N, 3]``, confidences
    ``C [N]``, grey levels ``grey [N]`` (or ``None``), the keyframe's own points first (``n_own``)."""

    X: Tensor
    n: Tensor
    C: Tensor
    grey: Tensor | None
    n_own: int


class IcpTracker:
    """Builds ICP models (caching each keyframe's normals and query pixels until its pointmap changes) and
    solves one frame's pose against a model. ``sync_every``: host-check period of the Gauss-Newton loop
    (:func:`~online3r_ros.slam.pose_solver.optimize_pose`; ``None``: by device)."""

    def __init__(
        self, tracking: TrackingConfig, points_per_frame: int, dof: int, sync_every: int | None = None
    ) -> None:
        self.tc = tracking
        self.points_per_frame = int(points_per_frame)
        self.dof = int(dof)
        self.sync_every = sync_every
        self._normals: dict = {}  # kf_id -> (pointmap key, normals, query pixels)

    def _keyframe_normals(self, keyframe, cache: dict) -> tuple[Tensor, Tensor]:
        """Normals of a keyframe's canonical pointmap and its query pixels (valid, with a normal), recomputed
        only when the pointmap changed (fusion updates it in place, which bumps its version)."""
        key = (keyframe.X.data_ptr(), keyframe.X._version, self.points_per_frame)
        hit = self._normals.get(keyframe.kf_id)
        if hit is None or hit[0] != key:
            n, ok = pointmap_normals(keyframe.X, keyframe.C > 0)
            q = select_query(ok & torch.isfinite(keyframe.X).all(-1), self.points_per_frame)
            hit = (key, n, q)
        cache[keyframe.kf_id] = hit
        return hit[1], hit[2]

    def model(self, keyframe, with_grey: bool) -> IcpModel:
        """The model of ``keyframe`` (a :class:`~online3r_ros.slam.tracking.TrackingKeyframe`) and its
        neighbours, moved into the keyframe's frame by ``T_WCk^-1 · T_WCj``; only these keyframes' normals
        stay cached."""
        Xs, Ns, Cs, Is = [], [], [], []
        T_kW = sim3_inverse(keyframe.T_WC.to(torch.float32))
        cache: dict = {}
        for j, kf in enumerate([keyframe, *keyframe.neighbours]):
            normals, q = self._keyframe_normals(kf, cache)
            X, n = kf.X.reshape(-1, 3)[q], normals.reshape(-1, 3)[q]
            if j > 0:
                T = sim3_compose(T_kW, kf.T_WC.to(torch.float32))
                X, n = sim3_act(T, X), (quat_to_matrix(T[3:7]) @ n.T).T
            Xs.append(X)
            Ns.append(n)
            Cs.append(kf.C.reshape(-1)[q])
            if with_grey:
                Is.append(frame_grey(kf.frame)[..., 0].reshape(-1)[q])
        self._normals = cache
        grey = torch.cat(Is) if with_grey else None
        return IcpModel(torch.cat(Xs), torch.cat(Ns), torch.cat(Cs), grey, int(Xs[0].shape[0]))

    def solve(self, frame: SourceFrame, model: IcpModel, T_CkCf: Tensor) -> tuple[PoseSolveResult, int]:
        """IRLS Gauss-Newton of ``T_CkCf`` against ``model``, re-associating at every evaluation, with a
        photometric term on every frame (``tracking.icp_photo_sigma`` > 0) or only where the geometry is
        degenerate (:meth:`degenerate_directions`). Returns the solution and the number of degenerate
        directions."""
        tc = self.tc
        K, X_ff = frame.K, frame.cache["X"]
        valid_f = frame.cache["C"] > 0
        sqrt_w = (model.C.clamp_min(0).sqrt() / tc.icp_sigma).unsqueeze(-1)
        grey_f = frame_grey(frame) if model.grey is not None else None

        def residual_fn(T: Tensor, photo: bool):
            view = view_model(T, model.X, K)  # shared by the two terms
            lin, ok = associate(view, X_ff, valid_f, tc.icp_dist)
            r, J = point_to_plane_residuals(T, X_ff.reshape(-1, 3).index_select(0, lin), model.X, model.n)
            if not photo:
                return r, J, ok
            r2, J2, ok2 = photometric(view, model.X, model.grey, grey_f, K)
            valid = torch.stack([ok, ok & ok2], dim=-1)
            return torch.cat([r, r2], dim=-1), torch.cat([J, J2], dim=-2), valid

        sigma, n_weak = tc.icp_photo_sigma, 0
        if sigma == 0 and model.grey is not None:
            n_weak = self.degenerate_directions(frame, model, T_CkCf, sqrt_w)
            sigma = tc.icp_degenerate_photo_sigma if n_weak else 0.0
        if sigma > 0:
            sqrt_w = torch.cat([sqrt_w, torch.full_like(sqrt_w, 1.0 / sigma)], dim=-1)
        args = (self.dof, tc.max_iters, tc.icp_rel_error, tc.icp_delta_norm, tc.huber)
        sol = optimize_pose(
            lambda T: residual_fn(T, sigma > 0), T_CkCf, sqrt_w, *args, sync_every=self.sync_every
        )
        return sol, n_weak

    def degenerate_directions(
        self, frame: SourceFrame, model: IcpModel, T_CkCf: Tensor, sqrt_w: Tensor
    ) -> int:
        """How many pose directions point-to-plane ICP barely constrains at ``T_CkCf``: eigenvalues of
        :func:`point_to_plane_information` (every 8th model point; normals from the frame's smoothed
        pointmap, since raw normals' noise fakes information along a wall) below ``icp_degenerate_ratio`` of
        the largest (:func:`information_ratios`): a flat wall has 3 (its in-plane translations and the
        rotation about its normal), a corridor 1."""
        sub = slice(None, None, 8)
        H, length = point_to_plane_information(
            T_CkCf,
            model.X[sub],
            sqrt_w[sub, 0].square(),
            frame.cache["X"],
            frame.cache["C"] > 0,
            frame.K,
            self.tc.icp_dist,
            self.dof,
        )
        # eigvalsh on the host (a 6x6 matrix): H and length come back in one copy
        both = torch.cat([H.reshape(-1), length.to(H.dtype).reshape(1)]).cpu()
        ratios = information_ratios(both[:-1].reshape(H.shape), both[-1])
        return int((ratios < self.tc.icp_degenerate_ratio).sum())

    def overlap(self, frame: SourceFrame, model: IcpModel, T_CkCf: Tensor) -> tuple[float, float, int]:
        """``(match fraction, unique fraction, matches)`` of the keyframe's own model points under
        ``T_CkCf``: associated / distinct frame pixels hit, per own point (one host sync)."""
        X_f = frame.cache["X"]
        lin, ok = projective_association(
            T_CkCf, model.X[: model.n_own], X_f, frame.cache["C"] > 0, frame.K, self.tc.icp_dist
        )
        n_unique = count_distinct(lin, ok, X_f.shape[0] * X_f.shape[1])
        frac, n_u, n_ok = torch.stack([ok.float().mean(), n_unique.float(), ok.sum().float()]).tolist()
        return frac, int(n_u) / model.n_own, int(n_ok)
