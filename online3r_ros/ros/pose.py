"""Poses: 4x4 matrices / ``[t, q_xyzw(, s)]`` vectors <-> ``geometry_msgs``, ``nav_msgs/Odometry`` (numpy).

Conventions:

* Quaternions are ``[qx, qy, qz, qw]`` (ROS and lietorch order), unit norm. Inputs whose norm differs from 1
  by more than ``QUAT_TOLERANCE`` or that hold NaN/inf raise :class:`PoseError`; within tolerance they are
  renormalised.
* A pose ``T_AB`` maps coordinates in frame B to frame A; in a message with ``header.frame_id = A`` and
  ``child_frame_id = B`` the translation is B's origin in A.
* REP-103: bodies (``base_link``, ``camera_link``) are x forward, y left, z up; camera optical frames
  (``*_optical_frame``, the frame of MASt3R pointmaps and SLAM poses ``T_WC``) are z forward, x right, y down.
  :data:`T_LINK_OPTICAL` is the fixed rotation between them.

Sim(3) scale (``T X = s R X + t``): ROS poses are rigid, so this module never drops a scale silently.
Converters take "pose-like" input (4x4 matrix, ``[7] = t, q`` or ``[8] = t, q, s``) and raise
:class:`ScaleError` when ``s`` differs from 1. Call :func:`split_sim3` first: it returns the rigid part
``(R, t)`` and ``s`` separately. ``t`` is already in world units (it is the camera centre in the world), so
the rigid part is the camera's true pose in the world; ``s`` is the factor from the camera's pointmap units
to world units and must be applied to camera-frame points (``X_world = R (s X_cam) + t``), e.g. before
publishing a cloud, or reported on its own (status topic / log).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from online3r_ros.ros._common import make_header
from online3r_ros.ros.errors import PoseError, ScaleError

__all__ = [
    "QUAT_TOLERANCE",
    "Q_LINK_OPTICAL",
    "T_LINK_OPTICAL",
    "as_matrix",
    "base_pose_from_camera_pose",
    "check_quaternion",
    "invert",
    "matrix_to_pose",
    "matrix_to_quat",
    "matrix_to_tqs",
    "matrices_to_tqs",
    "matrix_to_transform",
    "odometry",
    "pose_stamped",
    "pose_to_matrix",
    "pose_to_tq",
    "quat_to_matrix",
    "require_unit_scale",
    "rigid_matrix",
    "slam_points_to_map",
    "slam_pose_to_map",
    "split_sim3",
    "tqs_to_matrix",
    "transform_points",
    "transform_stamped",
]

QUAT_TOLERANCE = 1e-3
_SCALE_TOLERANCE = 1e-5
_ORTHO_TOLERANCE = 1e-4

#: Rotation taking camera *optical* coordinates to *camera_link* coordinates (4x4): optical z (forward) ->
#: link x, optical x (right) -> link -y, optical y (down) -> link -z. It is the ``camera_link ->
#: camera_optical_frame`` static transform.
T_LINK_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
#: The same rotation as a quaternion ``[qx, qy, qz, qw]``.
Q_LINK_OPTICAL = np.array([-0.5, 0.5, -0.5, 0.5])


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor on any device
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def check_quaternion(q: Any, field: str = "orientation", tol: float = QUAT_TOLERANCE) -> np.ndarray:
    """Validated, renormalised ``[..., 4]`` xyzw quaternion (float64).

    Raises:
        PoseError: wrong shape, NaN/inf, or ``| |q| - 1 | > tol`` (the message names ``field`` and values).
    """
    q = _as_numpy(q)
    if q.shape[-1:] != (4,):
        raise PoseError("quaternion must have 4 components [qx, qy, qz, qw]", **{field: q.tolist()})
    if not np.all(np.isfinite(q)):
        raise PoseError("quaternion holds NaN/inf", **{field: q.tolist()})
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(np.abs(norm - 1.0) > tol):
        raise PoseError(
            f"quaternion is not unit length (tolerance {tol})",
            **{field: q.tolist(), f"{field}_norm": norm[..., 0].tolist()},
        )
    return q / norm


def quat_to_matrix(q: Any) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` from unit xyzw quaternions ``[..., 4]`` (validated)."""
    q = check_quaternion(q, "quaternion")
    x, y, z, w = np.moveaxis(q, -1, 0)
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - z * w)
    R[..., 0, 2] = 2 * (x * z + y * w)
    R[..., 1, 0] = 2 * (x * y + z * w)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - x * w)
    R[..., 2, 0] = 2 * (x * z - y * w)
    R[..., 2, 1] = 2 * (y * z + x * w)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def matrix_to_quat(R: Any) -> np.ndarray:
    """Unit xyzw quaternions ``[..., 4]`` (``qw >= 0``) from rotation matrices ``[..., 3, 3]``.

    Uses the numerically stable branch per matrix (largest of w, x, y, z), vectorised over the batch.
    """
    R = _as_numpy(R)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    candidates = np.stack(
        [
            np.stack(
                [
                    R[..., 2, 1] - R[..., 1, 2],
                    R[..., 0, 2] - R[..., 2, 0],
                    R[..., 1, 0] - R[..., 0, 1],
                    1 + m00 + m11 + m22,
                ],
                -1,
            ),
            np.stack(
                [
                    1 + m00 - m11 - m22,
                    R[..., 0, 1] + R[..., 1, 0],
                    R[..., 0, 2] + R[..., 2, 0],
                    R[..., 2, 1] - R[..., 1, 2],
                ],
                -1,
            ),
            np.stack(
                [
                    R[..., 0, 1] + R[..., 1, 0],
                    1 - m00 + m11 - m22,
                    R[..., 1, 2] + R[..., 2, 1],
                    R[..., 0, 2] - R[..., 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    R[..., 0, 2] + R[..., 2, 0],
                    R[..., 1, 2] + R[..., 2, 1],
                    1 - m00 - m11 + m22,
                    R[..., 1, 0] - R[..., 0, 1],
                ],
                -1,
            ),
        ],
        axis=-2,
    )  # [..., 4 branches, 4]; branch k has its largest entry at the component it is built around
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def tqs_to_matrix(t: Any, q: Any, scale: Any = 1.0) -> np.ndarray:
    """``[..., 4, 4]`` matrix ``[[s R, t], [0, 1]]`` from translation, xyzw quaternion and scale."""
    t = _as_numpy(t)
    s = _as_numpy(scale)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))):
        raise PoseError("translation/scale hold NaN/inf", translation=t.tolist(), scale=s.tolist())
    if np.any(s <= 0):
        raise PoseError("Sim(3) scale must be positive", scale=s.tolist())
    R = quat_to_matrix(q)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R * s[..., None, None]
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def matrices_to_tqs(T: Any, field: str = "pose") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t [N, 3], q_xyzw [N, 4], s [N])`` of SE(3)/Sim(3) matrices ``[N, 4, 4]``, validated in one
    vectorised pass (``field`` names the input in the errors).

    Raises:
        PoseError: wrong shape, NaN/inf, bottom row not ``[0 0 0 1]``, non-positive determinant or a top-left
            block that is not ``s`` times a rotation.
    """
    T = _as_numpy(T)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise PoseError("pose matrices must be [N, 4, 4]", **{f"{field}.shape": T.shape})
    if not np.all(np.isfinite(T)):
        raise PoseError("pose matrix holds NaN/inf", **{field: T.tolist() if len(T) == 1 else len(T)})
    if not np.allclose(T[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        bottom = T[:, 3].tolist()
        raise PoseError("pose matrix bottom row must be [0, 0, 0, 1]", **{f"{field}[3]": bottom})
    A = T[:, :3, :3]
    det = np.linalg.det(A)
    if len(T) and (det <= 0).any():
        raise PoseError(
            "rotation block has non-positive determinant (reflection or degenerate)", det=float(det.min())
        )
    s = np.cbrt(det)
    R = A / s[:, None, None]
    err = float(np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max()) if len(T) else 0.0
    if err > _ORTHO_TOLERANCE:
        raise PoseError(
            "top-left block is not a scaled rotation",
            orthogonality_error=err,
            **{field: T.tolist() if len(T) == 1 else len(T)},
        )
    return T[:, :3, 3].copy(), matrix_to_quat(R), s


def matrix_to_tqs(T: Any, field: str = "pose") -> tuple[np.ndarray, np.ndarray, float]:
    """``(t[3], q_xyzw[4], s)`` of a single SE(3)/Sim(3) 4x4 matrix (validated as :func:`matrices_to_tqs`)."""
    T = _as_numpy(T)
    if T.shape != (4, 4):
        raise PoseError("pose matrix must be 4x4", **{f"{field}.shape": T.shape})
    t, q, s = matrices_to_tqs(T[None], field)
    return t[0], q[0], float(s[0])


def as_matrix(pose: Any, field: str = "pose") -> np.ndarray:
    """4x4 matrix from pose-like input: ``[4, 4]``, ``[7] = (t, q)`` or ``[8] = (t, q, s)`` (numpy/torch)."""
    P = _as_numpy(pose)
    if P.shape == (4, 4):
        matrix_to_tqs(P, field)  # validation only
        return P.copy()
    if P.shape == (7,):
        return tqs_to_matrix(P[:3], check_quaternion(P[3:7], f"{field}.q"))
    if P.shape == (8,):
        return tqs_to_matrix(P[:3], check_quaternion(P[3:7], f"{field}.q"), P[7])
    raise PoseError(
        "pose must be a 4x4 matrix, [tx ty tz qx qy qz qw] or [..., s]", **{f"{field}.shape": P.shape}
    )


def split_sim3(pose: Any) -> tuple[np.ndarray, float]:
    """``(T_rigid[4, 4], s)`` of a Sim(3) pose-like input: ``[[s R, t], [0, 1]] -> [[R, t], [0, 1]], s``."""
    T = as_matrix(pose)
    t, q, s = matrix_to_tqs(T)
    return tqs_to_matrix(t, q), float(s)


def rigid_matrix(pose: Any, field: str = "pose") -> np.ndarray:
    """4x4 rigid matrix of pose-like input; raises :class:`ScaleError` if it carries a scale != 1."""
    T = as_matrix(pose, field)
    t, q, s = matrix_to_tqs(T, field)
    require_unit_scale(np.array([s]))
    return tqs_to_matrix(t, q)


def require_unit_scale(scale: np.ndarray) -> None:
    """:class:`ScaleError` naming the worst of the scales ``[N]`` when one is not 1 (within tolerance)."""
    if len(scale) and np.abs(scale - 1.0).max() > _SCALE_TOLERANCE:
        worst = float(scale[int(np.abs(scale - 1.0).argmax())])
        raise ScaleError(
            "Sim(3) pose with scale != 1 cannot be a ROS pose; call split_sim3() and handle the scale",
            scale=worst,
        )


def invert(T: Any) -> np.ndarray:
    """Inverse of 4x4 SE(3)/Sim(3) matrices ``[..., 4, 4]`` (closed form)."""
    T = _as_numpy(T)
    A = T[..., :3, :3]
    s2 = np.sum(A[..., :, 0] ** 2, axis=-1)  # s^2 from the first column
    A_inv = np.swapaxes(A, -1, -2) / s2[..., None, None]
    out = np.zeros_like(T)
    out[..., :3, :3] = A_inv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", A_inv, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: Any, points: Any) -> np.ndarray:
    """Apply a 4x4 SE(3)/Sim(3) ``T`` to points ``[..., 3]`` (``s R X + t``), keeping their float dtype."""
    T = _as_numpy(T)
    X = np.asarray(points)
    dtype = X.dtype if X.dtype.kind == "f" else np.float64
    return (X @ T[:3, :3].T.astype(dtype) + T[:3, 3].astype(dtype)).astype(dtype, copy=False)


# --- REP-103/105 frame chain -------------------------------------------------------------------------------


def base_pose_from_camera_pose(T_map_camera: Any, T_base_camera: Any = T_LINK_OPTICAL) -> np.ndarray:
    """``T_map_base = T_map_camera @ inv(T_base_camera)``: the robot pose from a camera (optical) pose."""
    return rigid_matrix(T_map_camera, "T_map_camera") @ invert(rigid_matrix(T_base_camera, "T_base_camera"))


def slam_pose_to_map(
    T_world_camera: Any, T_base_camera: Any = T_LINK_OPTICAL, T_map_base0: Any = None
) -> np.ndarray:
    """``T_map_base`` from a SLAM pose ``T_WC`` (rigid; split Sim(3) first).

    The SLAM world W is the optical frame of the camera at the first frame, so ``T_map_W = T_map_base0 @
    T_base_camera`` where ``T_map_base0`` (default identity: the map starts at the robot's first pose) is
    where the robot was then. Result: ``T_map_base = T_map_W @ T_WC @ inv(T_base_camera)``.
    """
    T_bc = rigid_matrix(T_base_camera, "T_base_camera")
    T_mb0 = np.eye(4) if T_map_base0 is None else rigid_matrix(T_map_base0, "T_map_base0")
    return T_mb0 @ T_bc @ rigid_matrix(T_world_camera, "T_world_camera") @ invert(T_bc)


def slam_points_to_map(
    points_world: Any, T_base_camera: Any = T_LINK_OPTICAL, T_map_base0: Any = None
) -> np.ndarray:
    """Points ``[..., 3]`` in the SLAM world (first optical frame) expressed in ``map``.

    See :func:`slam_pose_to_map` for the frame definitions.
    """
    T_bc = rigid_matrix(T_base_camera, "T_base_camera")
    T_mb0 = np.eye(4) if T_map_base0 is None else rigid_matrix(T_map_base0, "T_map_base0")
    return transform_points(T_mb0 @ T_bc, points_world)


# --- messages ----------------------------------------------------------------------------------------------


def matrix_to_pose(pose: Any) -> Any:
    """``geometry_msgs/Pose`` from a rigid pose-like input (:class:`ScaleError` on Sim(3) scale != 1)."""
    return matrices_to_poses(as_matrix(pose)[None])[0]


def matrices_to_poses(poses: Any) -> list:
    """``geometry_msgs/Pose`` of each rigid ``[N, 4, 4]`` matrix, converted in one vectorised pass (a path of
    thousands of frames; :func:`matrix_to_pose` per matrix took ~0.1 ms each). Raises :class:`PoseError` for
    an invalid matrix (:func:`matrices_to_tqs`), :class:`ScaleError` when it carries a scale."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    t, q, scale = matrices_to_tqs(_as_numpy(poses).reshape(-1, 4, 4))
    require_unit_scale(scale)
    return [
        Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
        for (x, y, z), (qx, qy, qz, qw) in zip(t.tolist(), q.tolist(), strict=True)
    ]


def matrix_to_transform(pose: Any) -> Any:
    """``geometry_msgs/Transform`` from a rigid pose-like input."""
    from geometry_msgs.msg import Quaternion, Transform, Vector3

    t, q, _ = matrix_to_tqs(rigid_matrix(pose))
    return Transform(
        translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def pose_stamped(pose: Any, frame_id: str, stamp: Any = None, header: Any = None) -> Any:
    """``geometry_msgs/PoseStamped`` of ``T_frame_body``."""
    from geometry_msgs.msg import PoseStamped

    return PoseStamped(header=make_header(frame_id, stamp, header), pose=matrix_to_pose(pose))


def transform_stamped(
    pose: Any, parent_frame: str, child_frame: str, stamp: Any = None, header: Any = None
) -> Any:
    """``geometry_msgs/TransformStamped`` of ``T_parent_child`` (header.frame_id = parent)."""
    from geometry_msgs.msg import TransformStamped

    if not child_frame:
        raise PoseError("TransformStamped needs a child frame id", child_frame=child_frame)
    return TransformStamped(
        header=make_header(parent_frame, stamp, header),
        child_frame_id=str(child_frame),
        transform=matrix_to_transform(pose),
    )


def _covariance(values: Any, field: str) -> list[float]:
    if values is None:
        return [0.0] * 36
    cov = _as_numpy(values).reshape(-1)
    if cov.size != 36 or not np.all(np.isfinite(cov)):
        raise PoseError(
            "covariance must be 36 finite values (6x6 row-major)", **{f"{field}.size": int(cov.size)}
        )
    return [float(v) for v in cov]


def odometry(
    pose: Any,
    frame_id: str,
    child_frame_id: str,
    stamp: Any = None,
    *,
    header: Any = None,
    linear_velocity: Any = None,
    angular_velocity: Any = None,
    pose_covariance: Any = None,
    twist_covariance: Any = None,
) -> Any:
    """``nav_msgs/Odometry``: pose ``T_frame_child`` in ``frame_id``; optional velocities in the child."""
    from geometry_msgs.msg import Vector3
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header = make_header(frame_id, stamp, header)
    msg.child_frame_id = str(child_frame_id)
    msg.pose.pose = matrix_to_pose(pose)
    msg.pose.covariance = _covariance(pose_covariance, "pose_covariance")
    for value, target, name in (
        (linear_velocity, "linear", "linear_velocity"),
        (angular_velocity, "angular", "angular_velocity"),
    ):
        if value is not None:
            v = _as_numpy(value).reshape(-1)
            if v.size != 3 or not np.all(np.isfinite(v)):
                raise PoseError("velocity must be 3 finite values", **{name: v.tolist()})
            setattr(msg.twist.twist, target, Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2])))
    msg.twist.covariance = _covariance(twist_covariance, "twist_covariance")
    return msg


def _pose_parts(msg: Any, prefix: str = "") -> tuple[Any, Any, str, str]:
    """(position-like, rotation-like, field path prefix, rotation field name) of Pose, PoseStamped,
    PoseWithCovariance(Stamped), Transform, TransformStamped or Odometry."""
    if hasattr(msg, "position"):
        return msg.position, msg.orientation, prefix, "orientation"
    if hasattr(msg, "translation"):
        return msg.translation, msg.rotation, prefix, "rotation"
    if hasattr(msg, "transform"):
        return _pose_parts(msg.transform, prefix + "transform.")
    if hasattr(msg, "pose"):
        return _pose_parts(msg.pose, prefix + "pose.")
    raise PoseError("message carries no pose", type=type(msg).__name__)


def pose_to_tq(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(t[3], q_xyzw[4])`` of any pose-carrying message (quaternion validated and renormalised)."""
    position, orientation, prefix, rot_name = _pose_parts(msg)
    t = np.array([position.x, position.y, position.z], dtype=np.float64)
    if not np.all(np.isfinite(t)):
        name = "translation" if rot_name == "rotation" else "position"
        raise PoseError(f"{name} holds NaN/inf", **{f"{prefix}{name}": t.tolist()})
    q = check_quaternion([orientation.x, orientation.y, orientation.z, orientation.w], f"{prefix}{rot_name}")
    return t, q


def pose_to_matrix(msg: Any, scale: float = 1.0) -> np.ndarray:
    """4x4 matrix of any pose-carrying message; ``scale`` re-attaches a Sim(3) scale kept separately."""
    t, q = pose_to_tq(msg)
    return tqs_to_matrix(t, q, scale)
