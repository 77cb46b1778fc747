"""Dense optical-flow motion prior of the RGB-D tracker: a frame's pose relative to the last posed frame,
with no motion guess.

Projective ICP converges only from a guess inside its basin. The constant-velocity guess is good while the
camera moves smoothly and a few centimetres per frame; when it accelerates or moves far between frames (a
low frame rate, dropped frames, a shaken camera) ICP lands in a wrong minimum with as much overlap and as
low a cost as the right one. Measured on the 57 consecutive pairs of the public TUM fr3 cabinet keyframes
(7-22 cm, up to 17 deg apart): ICP from the previous frame's pose ends more than 10 cm off in 19 pairs; from
this prior, in none (all within 4 cm, median 0.9 cm).

The prior: DIS optical flow (OpenCV; coarse to fine, so displacements of a hundred pixels converge) from the
new grey image to the previous one at ``tracking.flow_max_side``, sampled every :data:`GRID_STEP` px where
both images have texture. Where the motion model's guess puts the samples within
``tracking.flow_agree_px`` of a fast flow started from the guess's own flow (smooth motion: most frames),
that guess stands. Started from zero, DIS locks onto the wrong period of a repeating texture: on a
synthetic wall of diagonal stripes 8 cm and 6 deg between frames, 19 px off everywhere, and RANSAC verified
that flow's pose 0.22 m off; started from a right guess it finds the true flow, while a wrong guess (the
cabinet's, or 10 cm off on synthetic views) still disagrees. Otherwise a second flow from zero, whose
samples the backward flow returns within :data:`MAX_FB_ERROR` px, is lifted to 3D by both depth images and
goes through the vectorised RANSAC and verification of
:func:`~online3r_ros.retrieval.relpose.fit_relative_pose` (enough inliers, inlier fraction, residual, pose
uncertainty, image coverage); ICP starts from that pose. Unverified, or farther than
``tracking.flow_max_correction`` from the motion model's guess, it is not used and that guess stands. Flat
or blank images give no prior. The distance limit: before the check started from the guess and the flow
images were blurred, a synthetic orbit at 12 deg and 14 cm per frame had both flows fail and RANSAC verify
wrong poses 0.45-0.78 m from a right guess, which ICP then followed; the cabinet's corrections are at most
0.15 m.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..geometry.lie import sim3_compose, sim3_inverse, sim3_to_matrix
from ..retrieval.relpose import RelPose, RelPoseConfig, fit_relative_pose
from ..retrieval.sift import backproject_keypoints, grey_image

Tensor = torch.Tensor

__all__ = [
    "FlowGuess",
    "FlowImage",
    "FlowPrior",
    "FlowSamples",
    "backward_consistent",
    "flow_correspondences",
    "flow_disagreement",
    "flow_image",
    "flow_relative_pose",
    "forward_flow",
]

#: the flow is sampled every this many pixels of the flow image (4: ~4,800 samples at 320x240)
GRID_STEP = 4
#: forward-backward consistency: a sample whose backward flow misses its start by more is dropped (flow px)
MAX_FB_ERROR = 1.0
#: a sample needs this grey-level gradient (levels per flow pixel, 0-255 images) in both images: where the
#: image is flat (a covered lens, a blank wall) the flow is not measured but filled in from elsewhere, and
#: zero flow over a flat image with another place's depth verified as a 43 cm pose on a synthetic room
MIN_GRADIENT = 0.5
#: Gaussian blur of the flow images (flow px): blocky images (an upsampled camera or render) made DIS follow
#: their block edges, and RANSAC verified wrong poses from that flow (the synthetic orbit upsampled 2x or 4x,
#: every 4th frame: 0.7 m off; blurred: within 9 mm). Cabinet 2.87 -> 2.89 cm, 7-Scenes 0.0280 -> 0.0278 m
BLUR_SIGMA = 1.0
#: RANSAC and verification of the prior: many correspondences, so more inliers are demanded than of
#: sparse features, and fewer hypotheses are needed (inlier fractions are high)
FLOW_RELPOSE = RelPoseConfig(iterations=256, min_inliers=100)


@dataclass
class FlowImage:
    """What the prior needs of one frame: ``grey [h, w]`` uint8 at flow resolution, ``depth [H, W]`` float32
    (m, 0 = invalid) and ``K [3, 3]`` at input resolution, ``scale`` = input pixels per flow pixel."""

    grey: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    scale: float


def flow_image(rgb: object, depth: object, K: object, max_side: int) -> FlowImage | None:
    """:class:`FlowImage` of an input frame (``rgb [H, W, 3]``, ``depth [H, W]`` m with 0 where invalid,
    ``K [3, 3]``; arrays or tensors on any device), its grey image blurred by :data:`BLUR_SIGMA`; ``None``
    without depth or intrinsics."""
    if depth is None or K is None:
        return None
    depth_np = torch.as_tensor(depth).detach().cpu().numpy().astype(np.float32, copy=False)
    K_np = torch.as_tensor(K).detach().cpu().numpy().astype(np.float64, copy=False)
    rgb_np = torch.as_tensor(rgb).detach().cpu().numpy() if torch.is_tensor(rgb) else np.asarray(rgb)
    grey, scale = grey_image(rgb_np, max_side)
    return FlowImage(cv2.GaussianBlur(grey, (0, 0), BLUR_SIGMA), depth_np, K_np, scale)


@dataclass
class FlowSamples:
    """The forward flow of a query image into a ref image, sampled every ``step`` px: ``xy_q``, ``xy_r``
    ``[N, 2]`` float32 flow pixels, ``usable [N]`` where the flow stays inside ``ref`` and both images have
    :data:`MIN_GRADIENT`."""

    xy_q: np.ndarray
    xy_r: np.ndarray
    usable: np.ndarray


def sample_grid(shape: tuple[int, int], step: int = GRID_STEP) -> np.ndarray:
    """Pixels ``[N, 2]`` float32 (x, y) of the flow samples of an ``[h, w]`` image, every ``step`` px from
    ``step // 2``, row-major.

    >>> sample_grid((8, 12), 4).tolist()
    [[2.0, 2.0], [6.0, 2.0], [10.0, 2.0], [2.0, 6.0], [6.0, 6.0], [10.0, 6.0]]
    """
    h, w = shape
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def forward_flow(
    query: np.ndarray,
    ref: np.ndarray,
    dis: cv2.DISOpticalFlow,
    step: int = GRID_STEP,
    init: np.ndarray | None = None,
) -> FlowSamples:
    """:class:`FlowSamples` of two grey images ``[h, w]`` uint8 of one size (one DIS flow, started from the
    flow ``init [h, w, 2]`` float32 where given, else from zero at DIS's coarsest level)."""
    fw = dis.calc(query, ref, None if init is None else init.copy())  # [h, w, 2]: query pixel -> ref pixel
    xy_q = sample_grid(query.shape, step)
    xs, ys = xy_q[:, 0].astype(np.int64), xy_q[:, 1].astype(np.int64)
    xy_r = xy_q + fw[ys, xs]
    h, w = query.shape
    inside = (xy_r[:, 0] >= 0) & (xy_r[:, 0] <= w - 1) & (xy_r[:, 1] >= 0) & (xy_r[:, 1] <= h - 1)
    textured = (_gradient(query)[ys, xs] >= MIN_GRADIENT) & (
        cv2.remap(_gradient(ref), xy_r[None, :, 0], xy_r[None, :, 1], cv2.INTER_LINEAR)[0] >= MIN_GRADIENT
    )
    return FlowSamples(xy_q, xy_r, inside & textured)


def backward_consistent(
    samples: FlowSamples, query: np.ndarray, ref: np.ndarray, dis: cv2.DISOpticalFlow
) -> np.ndarray:
    """``[N]`` bool: the backward flow (``ref`` to ``query``, a second DIS flow) returns each sample within
    :data:`MAX_FB_ERROR` px of where it started."""
    bw = dis.calc(ref, query, None)
    back = cv2.remap(bw, samples.xy_r[None, :, 0], samples.xy_r[None, :, 1], cv2.INTER_LINEAR)[0]
    return np.linalg.norm(samples.xy_r + back - samples.xy_q, axis=1) < MAX_FB_ERROR


def flow_correspondences(
    query: np.ndarray, ref: np.ndarray, dis: cv2.DISOpticalFlow, step: int = GRID_STEP
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel correspondences ``(xy_query [N, 2], xy_ref [N, 2])`` float32 of two grey images ``[h, w]`` uint8
    of one size: the usable :func:`forward_flow` samples that are :func:`backward_consistent`."""
    samples = forward_flow(query, ref, dis, step)
    keep = samples.usable & backward_consistent(samples, query, ref, dis)
    return samples.xy_q[keep], samples.xy_r[keep]


def _gradient(grey: np.ndarray) -> np.ndarray:
    """Grey-level gradient magnitude ``[h, w]`` float32 (levels per pixel, Sobel)."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 8.0


def _input_pixels(xy: np.ndarray, scale: float) -> np.ndarray:
    """Flow-image pixels ``[N, 2]`` -> input-image pixels (pixel centres map onto pixel centres)."""
    return (xy + 0.5) * scale - 0.5


def pose_samples(query: FlowImage, ref: FlowImage, T_ref_query: Tensor, step: int = GRID_STEP) -> np.ndarray:
    """Where a pose ``T_ref_query`` (Sim(3) ``[8]``) takes the :func:`sample_grid` pixels of ``query``'s flow
    image (query depth, then ref ``K``): ``[N, 2]`` float32 ref flow pixels, NaN where the query has no depth
    or the point lands behind the ref camera."""
    xy_q = sample_grid(query.grey.shape, step)
    P = backproject_keypoints(_input_pixels(xy_q, query.scale), query.depth, query.K).astype(np.float64)
    T = sim3_to_matrix(T_ref_query.detach().to("cpu", torch.float64)).numpy()
    X = P @ T[:3, :3].T + T[:3, 3]
    X[~(X[:, 2] > 1e-6)] = np.nan
    uv = X @ ref.K.T
    return ((uv[:, :2] / uv[:, 2:3] + 0.5) / ref.scale - 0.5).astype(np.float32)


def initial_flow(predicted: np.ndarray, shape: tuple[int, int], step: int = GRID_STEP) -> np.ndarray | None:
    """A dense flow ``[h, w, 2]`` float32 to start DIS from, resized from a pose's :func:`pose_samples`
    ``predicted [N, 2]`` (samples without a prediction take the median flow; DIS starts at its coarsest
    level, so the grid's sub-pixel offset does not matter); ``None`` with fewer than :data:`FLOW_RELPOSE`
    ``.min_inliers`` predictions."""
    h, w = shape
    valid = np.isfinite(predicted).all(axis=1)
    if int(valid.sum()) < FLOW_RELPOSE.min_inliers:
        return None
    flow = predicted - sample_grid(shape, step)
    flow[~valid] = np.median(flow[valid], axis=0)
    rows, cols = len(range(step // 2, h, step)), len(range(step // 2, w, step))
    return cv2.resize(flow.reshape(rows, cols, 2), (w, h), interpolation=cv2.INTER_LINEAR)


def flow_disagreement(samples: FlowSamples, predicted: np.ndarray) -> float:
    """Median distance (flow pixels) between where the flow takes the usable samples and where a pose puts
    them (``predicted [N, 2]``, :func:`pose_samples`); ``inf`` with fewer than :data:`FLOW_RELPOSE`
    ``.min_inliers`` usable samples with a prediction."""
    ok = samples.usable & np.isfinite(predicted).all(axis=1)
    if int(ok.sum()) < FLOW_RELPOSE.min_inliers:
        return math.inf
    return float(np.median(np.linalg.norm(predicted[ok] - samples.xy_r[ok], axis=1)))


def flow_relative_pose(
    query: FlowImage,
    ref: FlowImage,
    dis: cv2.DISOpticalFlow,
    max_points: int,
    cfg: RelPoseConfig = FLOW_RELPOSE,
) -> RelPose:
    """``T_ref_query`` (:class:`RelPose`, verified) from the dense flow between two frames' grey images of
    one size: at most ``max_points`` of their :func:`flow_correspondences` with depth in both images
    (evenly spaced) enter RANSAC.
    """
    xy_q, xy_r = flow_correspondences(query.grey, ref.grey, dis)
    xy_q = _input_pixels(xy_q, query.scale)
    xy_r = _input_pixels(xy_r, ref.scale)
    P = backproject_keypoints(xy_q, query.depth, query.K)
    Q = backproject_keypoints(xy_r, ref.depth, ref.K)
    ok = np.isfinite(P).all(axis=1) & np.isfinite(Q).all(axis=1)
    keep = np.flatnonzero(ok)
    if keep.size > max_points:
        keep = keep[np.linspace(0, keep.size - 1, max_points).round().astype(np.int64)]
    spread = [
        (torch.from_numpy(xy_q[keep]), min(query.depth.shape)),
        (torch.from_numpy(xy_r[keep]), min(ref.depth.shape)),
    ]
    return fit_relative_pose(torch.from_numpy(P[keep]), torch.from_numpy(Q[keep]), cfg, spread)


@dataclass
class FlowGuess:
    """A pose to start tracking from: ``T_last_frame`` (Sim(3) ``[8]`` float64) of the new frame in the last
    posed frame ``index``; ``source``: ``"motion"`` (the motion model's guess, which the flow confirmed) or
    ``"flow"`` (the flow's verified RANSAC pose)."""

    index: int
    T_last_frame: Tensor
    source: str


class FlowPrior:
    """The tracker's flow prior: remembers the last posed frame and poses a new one relative to it.

    Args:
        max_side: long side of the flow images (px; ``tracking.flow_max_side``).
        max_points: correspondences entering RANSAC (``tracking.flow_points``).
        agree_px: the motion model's guess stands where the forward flow agrees with it within this many
            flow-image pixels (``tracking.flow_agree_px``; 0: never).
        max_correction: the flow's pose is refused farther than this from the motion model's guess (m,
            translation of the difference; ``tracking.flow_max_correction``; 0: no limit).
        metres: the metric source's reading of a depth image (metres, 0 where invalid, its depth scale
            applied: :meth:`RGBDSource.metres <online3r_ros.sources.rgbd.RGBDSource.metres>`).

    Not thread-safe (two OpenCV DIS instances); deterministic.
    """

    def __init__(
        self,
        max_side: int,
        max_points: int,
        metres: Callable[[object], torch.Tensor],
        agree_px: float = 3.0,
        max_correction: float = 0.0,
    ) -> None:
        self.max_side, self.max_points, self.metres = int(max_side), int(max_points), metres
        self.agree_px, self.max_correction = float(agree_px), float(max_correction)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._check = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)  # the guess check only
        self._last: tuple[int, FlowImage] | None = None
        self.n_agreed = self.n_used = self.n_rejected = 0  # motion guess confirmed / flow pose / neither
        self.n_implausible = 0  # of the rejected: verified, but farther than max_correction from the guess
        self.seconds = 0.0

    def reset(self) -> None:
        """Forget the last posed frame (a new session)."""
        self._last = None

    def image(self, rgb: object, depth: object, K: object) -> FlowImage | None:
        """The :class:`FlowImage` of an input frame (``None`` without depth or intrinsics)."""
        if depth is None or K is None:
            return None
        return flow_image(rgb, self.metres(depth), K, self.max_side)

    def remember(self, index: int, image: FlowImage | None) -> None:
        """Frame ``index`` got a pose: the next frame is posed relative to it (``None``: no prior then)."""
        self._last = None if image is None else (int(index), image)

    @property
    def last_index(self) -> int | None:
        """Index of the last posed frame (``None``: none remembered)."""
        return None if self._last is None else self._last[0]

    def guess(self, image: FlowImage | None, T_motion: Tensor | None = None) -> FlowGuess | None:
        """Where to start tracking ``image``: the motion model's guess ``T_motion`` (Sim(3) ``[8]``, the new
        frame in the last posed frame) when a fast forward flow started from its flow agrees with it within
        ``agree_px`` (DIS's FAST preset, ~2 ms at 320x240), else the flow's verified pose (forward and
        backward flows from zero at the MEDIUM preset, RANSAC) within ``max_correction`` of ``T_motion``;
        ``None``: no image to compare, another image size, the flow did not verify, or its pose is that
        implausible."""
        if image is None or self._last is None or self._last[1].grey.shape != image.grey.shape:
            return None
        index, last = self._last
        t0 = time.perf_counter()
        try:
            if self.agree_px > 0 and T_motion is not None:
                predicted = pose_samples(image, last, T_motion)
                init = initial_flow(predicted, image.grey.shape)
                check = forward_flow(image.grey, last.grey, self._check, init=init)
                if flow_disagreement(check, predicted) <= self.agree_px:
                    self.n_agreed += 1
                    return FlowGuess(index, T_motion.detach().to("cpu", torch.float64), "motion")
            rp = flow_relative_pose(image, last, self._dis, self.max_points)
        finally:
            self.seconds += time.perf_counter() - t0
        if not rp.ok or self._implausible(rp.T_ref_query, T_motion):
            self.n_rejected += 1
            return None
        self.n_used += 1
        return FlowGuess(index, rp.T_ref_query.to(torch.float64), "flow")

    def _implausible(self, T_flow: Tensor, T_motion: Tensor | None) -> bool:
        """The flow's pose is more than ``max_correction`` from the motion model's guess (counted)."""
        if self.max_correction <= 0 or T_motion is None:
            return False
        gap = sim3_compose(sim3_inverse(T_motion.detach().to("cpu", torch.float64)), T_flow.to(torch.float64))
        far = float(gap[:3].norm()) > self.max_correction
        self.n_implausible += far
        return far

    def state_dict(self) -> dict | None:
        """The last posed frame's index and flow image (CPU tensors; ``None``: none), so that a saved session
        resumes identically."""
        if self._last is None:
            return None
        index, img = self._last
        arrays = {k: torch.from_numpy(getattr(img, k).copy()) for k in ("grey", "depth", "K")}
        return {"index": index, "scale": img.scale, **arrays}

    def load_state_dict(self, state: dict | None) -> None:
        self._last = None
        if state is not None:
            grey, depth, K = (torch.as_tensor(state[k]).numpy() for k in ("grey", "depth", "K"))
            img = FlowImage(
                grey.astype(np.uint8), depth.astype(np.float32), K.astype(np.float64), float(state["scale"])
            )
            self._last = (int(state["index"]), img)

    def stats(self) -> dict:
        n = self.n_agreed + self.n_used + self.n_rejected
        return {
            "motion_confirmed": self.n_agreed,
            "used": self.n_used,
            "rejected": self.n_rejected,
            "rejected_implausible": self.n_implausible,
            "mean_ms": round(1000.0 * self.seconds / n, 2) if n else None,
        }
