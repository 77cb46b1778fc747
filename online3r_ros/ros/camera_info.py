"""``sensor_msgs/CameraInfo`` <-> :class:`Intrinsics`, and undistortion/rectification maps.

Distortion models: ``plumb_bob`` (k1 k2 p1 p2 k3; 4, 5, 8, 12 or 14 OpenCV coefficients accepted),
``rational_polynomial`` (8 coefficients; 12/14 accepted), ``equidistant`` (fisheye k1..k4) and
``""``/``"none"`` (no distortion, D must be empty or all zero). Anything else raises :class:`CameraInfoError`.

Binning and ROI: :func:`camera_info_to_intrinsics` returns the intrinsics of the image actually published
(``K`` is expressed at full sensor resolution in the message; with ``binning_x/y > 1`` or a non-empty ROI the
principal point is shifted by the ROI offset and K is divided by the binning, as image_geometry does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online3r_ros.ros._common import make_header
from online3r_ros.ros.errors import CameraInfoError

__all__ = [
    "DISTORTION_MODELS",
    "Intrinsics",
    "RectifyMaps",
    "camera_info_to_intrinsics",
    "check_image_size",
    "intrinsics_to_camera_info",
    "rectify_image",
    "rectify_maps",
]

#: Accepted coefficient counts per distortion model.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5, 8, 12, 14),
    "rational_polynomial": (8, 12, 14),
    "equidistant": (4,),
    "": (0,),
    "none": (0,),
}


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics + distortion of one camera (OpenCV conventions, pixel centres at integers).

    Attributes:
        width, height: image size in pixels.
        K: ``[3, 3]`` float64 camera matrix.
        distortion_model: one of :data:`DISTORTION_MODELS`.
        D: ``[n]`` float64 distortion coefficients.
        R: ``[3, 3]`` rectification rotation (identity for monocular cameras).
        P: ``[3, 4]`` projection matrix of the rectified image (``[K | 0]`` when not given).
        frame_id: the optical frame the intrinsics belong to.
    """

    width: int
    height: int
    K: np.ndarray
    distortion_model: str = "plumb_bob"
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        P = (
            np.hstack([K, np.zeros((3, 1))])
            if self.P is None
            else np.asarray(self.P, np.float64).reshape(3, 4)
        )
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "P", P)
        _validate(self)

    @classmethod
    def from_pinhole(
        cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int, frame_id: str = ""
    ) -> Intrinsics:
        """Undistorted pinhole camera (``plumb_bob`` with zero coefficients)."""
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(width=width, height=height, K=K, frame_id=frame_id)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.D != 0.0))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same camera resized to ``width x height`` (pixel-centre convention:
        ``c' = (c + 0.5) * s - 0.5``). Distortion coefficients are unit-free and kept."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        P = self.P.copy()
        P[0, :] *= sx
        P[1, :] *= sy
        P[0, 2] = (self.P[0, 2] + 0.5) * sx - 0.5
        P[1, 2] = (self.P[1, 2] + 0.5) * sy - 0.5
        return Intrinsics(width, height, K, self.distortion_model, self.D, self.R, P, self.frame_id)


def _validate(intr: Intrinsics) -> None:
    if intr.width <= 0 or intr.height <= 0:
        raise CameraInfoError(
            "CameraInfo width and height must be positive", width=intr.width, height=intr.height
        )
    K = intr.K
    if not np.all(np.isfinite(K)):
        raise CameraInfoError("K holds NaN/inf", K=K.reshape(-1).tolist())
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise CameraInfoError(
            "focal lengths must be positive (an all-zero K means an uncalibrated camera)",
            fx=float(K[0, 0]),
            fy=float(K[1, 1]),
        )
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        raise CameraInfoError("K must be upper triangular with K[2][2] == 1", K=K.reshape(-1).tolist())
    model = intr.distortion_model
    if model not in DISTORTION_MODELS:
        raise CameraInfoError(
            f"unknown distortion model; supported: {sorted(DISTORTION_MODELS)}", distortion_model=model
        )
    if intr.D.size not in DISTORTION_MODELS[model] and not (model in ("", "none") and not np.any(intr.D)):
        raise CameraInfoError(
            f"wrong number of distortion coefficients for the model (allowed {DISTORTION_MODELS[model]})",
            distortion_model=model,
            D_length=int(intr.D.size),
        )
    if not np.all(np.isfinite(intr.D)):
        raise CameraInfoError("D holds NaN/inf", D=intr.D.tolist())
    if not (np.all(np.isfinite(intr.R)) and np.all(np.isfinite(intr.P))):
        raise CameraInfoError(
            "R or P holds NaN/inf", R=intr.R.reshape(-1).tolist(), P=intr.P.reshape(-1).tolist()
        )


def camera_info_to_intrinsics(msg: Any, *, image_size: tuple[int, int] | None = None) -> Intrinsics:
    """Validated :class:`Intrinsics` from a ``CameraInfo`` (duck-typed: rclpy or rosbags messages).

    Args:
        msg: the CameraInfo.
        image_size: optional ``(width, height)`` of the image this CameraInfo accompanies; a mismatch raises.

    Raises:
        CameraInfoError: fx/fy <= 0 or non-finite, unknown model, wrong D length, bad binning, size mismatch.
    """
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    R = np.asarray(msg.r, dtype=np.float64).reshape(3, 3)
    P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    if not np.any(R):
        R = np.eye(3)  # unset rectification: monocular camera
    if not np.any(P):
        P = None
    width, height = int(msg.width), int(msg.height)
    binning_x, binning_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    roi = msg.roi
    if int(roi.width) or int(roi.height) or int(roi.x_offset) or int(roi.y_offset):
        if width and (
            int(roi.x_offset) + int(roi.width) > width or int(roi.y_offset) + int(roi.height) > height
        ):
            raise CameraInfoError(
                "ROI exceeds the sensor size",
                roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
                width=width,
                height=height,
            )
        off_x, off_y = float(roi.x_offset), float(roi.y_offset)
        width, height = int(roi.width) or width, int(roi.height) or height
    else:
        off_x = off_y = 0.0
    if binning_x > 1 or binning_y > 1 or off_x or off_y:
        scale = np.diag([1.0 / binning_x, 1.0 / binning_y, 1.0])
        shift = np.array([[1.0, 0.0, -off_x], [0.0, 1.0, -off_y], [0.0, 0.0, 1.0]])
        K = scale @ shift @ K
        P = None if P is None else scale @ shift @ P
        width, height = width // binning_x, height // binning_y
    intr = Intrinsics(
        width=width,
        height=height,
        K=K,
        distortion_model=str(msg.distortion_model),
        D=D,
        R=R,
        P=P,
        frame_id=str(msg.header.frame_id),
    )
    if image_size is not None:
        check_image_size(intr, *image_size)
    return intr


def check_image_size(intr: Intrinsics, width: int, height: int) -> None:
    """Raise :class:`CameraInfoError` when an image's size disagrees with the intrinsics."""
    if (int(width), int(height)) != (intr.width, intr.height):
        raise CameraInfoError(
            "image size disagrees with CameraInfo",
            image_width=int(width),
            image_height=int(height),
            camera_info_width=intr.width,
            camera_info_height=intr.height,
        )


def intrinsics_to_camera_info(
    intr: Intrinsics, *, frame_id: str | None = None, stamp: Any = None, header: Any = None
) -> Any:
    """``sensor_msgs/CameraInfo`` for publishing (no binning, empty ROI)."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header = make_header(intr.frame_id if frame_id is None else frame_id, stamp, header)
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = intr.distortion_model
    msg.d = [float(v) for v in intr.D]
    msg.k = [float(v) for v in intr.K.reshape(-1)]
    msg.r = [float(v) for v in intr.R.reshape(-1)]
    msg.p = [float(v) for v in intr.P.reshape(-1)]
    return msg


@dataclass(frozen=True)
class RectifyMaps:
    """``cv2.remap`` maps (float32 ``[H, W]`` each) and the camera matrix of the rectified image."""

    map_x: np.ndarray
    map_y: np.ndarray
    new_K: np.ndarray


def rectify_maps(
    intr: Intrinsics, *, new_K: np.ndarray | None = None, size: tuple[int, int] | None = None
) -> RectifyMaps:
    """Undistortion/rectification maps for ``plumb_bob``/``rational_polynomial``
    (``cv2.initUndistortRectifyMap``) and ``equidistant`` (``cv2.fisheye.initUndistortRectifyMap``).

    Args:
        intr: the camera.
        new_K: camera matrix of the output image; default ``P[:, :3]`` from CameraInfo (which is ``K`` when P
            was not set).
        size: output ``(width, height)``; default the input size.
    """
    import cv2

    out_K = intr.P[:, :3].copy() if new_K is None else np.asarray(new_K, dtype=np.float64).reshape(3, 3)
    out_size = (intr.width, intr.height) if size is None else (int(size[0]), int(size[1]))
    if intr.distortion_model == "equidistant":
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(
            intr.K, intr.D, intr.R, out_K, out_size, cv2.CV_32FC1
        )
    else:
        D = intr.D if intr.D.size else np.zeros(5)
        map_x, map_y = cv2.initUndistortRectifyMap(intr.K, D, intr.R, out_K, out_size, cv2.CV_32FC1)
    return RectifyMaps(map_x=map_x, map_y=map_y, new_K=out_K)


def rectify_image(image: np.ndarray, maps: RectifyMaps, *, interpolation: int | None = None) -> np.ndarray:
    """Apply :func:`rectify_maps` output with ``cv2.remap`` (bilinear by default; use nearest for depth)."""
    import cv2

    flag = cv2.INTER_LINEAR if interpolation is None else interpolation
    return cv2.remap(image, maps.map_x, maps.map_y, flag, borderMode=cv2.BORDER_CONSTANT)
