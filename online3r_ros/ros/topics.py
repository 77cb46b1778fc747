"""The topic contract of the tracker, mapper and retrieval nodes: names, types, QoS, frames (one place).

Names are relative (they follow the nodes' namespace); ``~/`` names are private to the node. Input topic names
are parameters of the tracker (``image_topic``, ``camera_info_topic``, ``depth_topic``); everything else is
fixed here. Inputs follow their publishers' reliability (``auto``, :mod:`online3r_ros.ros.adaptive_qos`)
unless the ``image_qos`` parameter fixes it. QoS names refer to :mod:`online3r_ros.ros.qos` (``sensor_data``:
best effort, volatile, depth 5; ``reliable``: reliable, volatile; ``latched``: reliable, transient local).
``{map}``, ``{odom}``, ``{base}``, ``{camera}`` are the frame parameters (defaults ``map``, ``odom``,
``base_link``, ``camera_optical_frame``).

Node-to-node traffic uses standard messages only (see :mod:`online3r_ros.ros.nodes.msgs` for the packing):

- keyframes and observations are organised ``PointCloud2`` (working resolution ``H x W``) whose
  ``header.frame_id`` carries a documented ``key=value`` metadata string (session, keyframe id, pose, ...);
- optimised keyframe poses go back as ``std_msgs/Float64MultiArray`` ``[K, 8]`` (row = keyframe id, columns
  ``tx ty tz qx qy qz qw s``: the full Sim(3), scale included, in one atomic message). The same poses are
  published as ``geometry_msgs/PoseArray`` in ``{map}`` for users (rigid part; index = keyframe id; the scale
  is not representable in a ``Pose``, it is listed in the mapper status);
- the mapper announces its state (generation, session, number of keyframes) as latched JSON; the tracker
  re-sends keyframes the mapper lacks after a mapper restart;
- place recognition: each keyframe's local features go to the retrieval node as ``std_msgs/Float32MultiArray``
  and its verified loop candidates to the mapper as ``std_msgs/Float64MultiArray``
  (:mod:`online3r_ros.ros.nodes.retrieval_msgs`). Relocalisation needs no round trip: the tracker queries its
  own database of its keyframes, so a lost camera comes back even while the retrieval node is down.

:func:`topic_table_markdown` renders :data:`TOPICS` as the README table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TopicSpec",
    "TOPICS",
    "SERVICES",
    "DEFAULT_FRAMES",
    "KEYFRAMES",
    "OBSERVATIONS",
    "KEYFRAME_SIM3",
    "MAPPER_STATE",
    "KEYFRAME_FEATURES",
    "RETRIEVAL_STATE",
    "LOOP_CANDIDATES",
    "PROMPTS",
    "RETRIEVAL_STATUS",
    "ODOMETRY",
    "CAMERA_POSE",
    "TRACKER_STATUS",
    "KEYFRAME_POSES",
    "KEYFRAME_PATH",
    "PATH",
    "MAP",
    "MAP_UPDATES",
    "MARKERS",
    "MAPPER_STATUS",
    "DIAGNOSTICS",
    "qos_for",
    "topic_table_markdown",
]

#: Default frame ids (REP-105 / REP-103); every one is a node parameter.
DEFAULT_FRAMES = {
    "map_frame": "map",
    "odom_frame": "odom",
    "base_frame": "base_link",
    "camera_frame": "camera_optical_frame",
}


@dataclass(frozen=True)
class TopicSpec:
    """One topic: ``name`` (relative), ``msg_type`` (``pkg/msg/Type``), ``qos`` name, ``depth`` (history),
    ``frame_id`` (template), ``publisher`` and ``subscriber`` node names, ``description``."""

    name: str
    msg_type: str
    qos: str
    depth: int
    frame_id: str
    publisher: str
    subscriber: str
    description: str


KEYFRAMES = TopicSpec(
    "online3r/keyframes",
    "sensor_msgs/msg/PointCloud2",
    "reliable",
    100,
    "metadata string (msgs.py)",
    "tracker",
    "mapper",
    "new (or re-sent) keyframe: organised x,y,z (canonical pointmap, camera frame), rgb, confidence "
    "(accumulated); stamp = keyframe image stamp",
)
OBSERVATIONS = TopicSpec(
    "online3r/observations",
    "sensor_msgs/msg/PointCloud2",
    "reliable",
    100,
    "metadata string (msgs.py)",
    "tracker",
    "mapper",
    "per tracked frame: X_kk = T_CkCf·X_kf (keyframe frame) and C_kf for fusion, T_CkCf in the metadata; "
    "stamp = image stamp",
)
KEYFRAME_SIM3 = TopicSpec(
    "online3r/keyframe_sim3",
    "std_msgs/msg/Float64MultiArray",
    "latched",
    1,
    "-",
    "mapper",
    "tracker",
    "optimised keyframe poses [K, 8] (row = keyframe id; tx ty tz qx qy qz qw s, SLAM world; dim 0 label "
    "'keyframe;session=<id>'), after every keyframe",
)
MAPPER_STATE = TopicSpec(
    "online3r/mapper_state",
    "std_msgs/msg/String",
    "latched",
    1,
    "-",
    "mapper",
    "tracker",
    'JSON {"generation", "session", "num_keyframes", "reset", "request"}: the tracker re-sends what a '
    "(re)started mapper lacks, or a keyframe it asks for again (lost in transport)",
)
KEYFRAME_FEATURES = TopicSpec(
    "online3r/keyframe_features",
    "std_msgs/msg/Float32MultiArray",
    "reliable",
    100,
    "-",
    "tracker",
    "retrieval, mapper",
    "local features of each new keyframe [N, C] (x y, X Y Z, descriptor; dim 0 label "
    "'online3r/feat;session=..;id=..;kind=..;H=..;W=..;xy=..;points=..')",
)
RETRIEVAL_STATE = TopicSpec(
    "online3r/retrieval_state",
    "std_msgs/msg/String",
    "latched",
    1,
    "-",
    "retrieval",
    "tracker",
    "JSON as mapper_state (num_keyframes: the keyframes indexed without a gap): the tracker re-sends the "
    "features a (re)started or reset database lacks, or those it asks for again (lost in transport)",
)
LOOP_CANDIDATES = TopicSpec(
    "online3r/loop_candidates",
    "std_msgs/msg/Float64MultiArray",
    "reliable",
    100,
    "-",
    "retrieval",
    "mapper",
    "verified loop candidates of a keyframe [M, 11] (kf score has_pose tx ty tz qx qy qz qw s; dim 0 label "
    "'online3r/loops;session=..;kf=..')",
)
RETRIEVAL_STATUS = TopicSpec(
    "online3r/retrieval_status",
    "std_msgs/msg/String",
    "reliable",
    10,
    "-",
    "retrieval",
    "users",
    "JSON: keyframes indexed, queries, loop candidates found, query/add times, session",
)
ODOMETRY = TopicSpec(
    "online3r/odometry",
    "nav_msgs/msg/Odometry",
    "reliable",
    10,
    "{odom} -> {base}",
    "tracker",
    "users",
    "continuous odometry of the robot base for every processed frame; stamp = input image stamp",
)
CAMERA_POSE = TopicSpec(
    "online3r/camera_pose",
    "geometry_msgs/msg/PoseStamped",
    "reliable",
    10,
    "{map}",
    "tracker",
    "users",
    "camera (optical frame) pose in the map for every processed frame; stamp = input image stamp",
)
TRACKER_STATUS = TopicSpec(
    "online3r/tracker_status",
    "std_msgs/msg/String",
    "reliable",
    10,
    "-",
    "tracker",
    "users",
    "JSON: state (initialising/tracking/lost), frames received/processed/dropped/rejected, inputs lost in "
    "transport, stage times, latency, last error",
)
KEYFRAME_POSES = TopicSpec(
    "online3r/keyframe_poses",
    "geometry_msgs/msg/PoseArray",
    "latched",
    1,
    "{map}",
    "mapper",
    "users",
    "optimised keyframe camera poses (index = keyframe id; rigid part)",
)
KEYFRAME_PATH = TopicSpec(
    "online3r/keyframe_path",
    "nav_msgs/msg/Path",
    "latched",
    1,
    "{map}",
    "mapper",
    "users",
    "keyframe camera poses, re-published after every optimisation",
)
PATH = TopicSpec(
    "online3r/path",
    "nav_msgs/msg/Path",
    "latched",
    1,
    "{map}",
    "mapper",
    "users",
    "camera poses of all frames (re-anchored on the optimised keyframes), after every optimisation and at "
    "path_period",
)
MAP = TopicSpec(
    "online3r/map",
    "sensor_msgs/msg/PointCloud2",
    "latched",
    1,
    "{map}",
    "mapper",
    "users",
    "full dense map (x,y,z,rgb,confidence; confidence-filtered, at most map_max_points) at map_period when "
    "it changed, and on ~/publish_map",
)
MAP_UPDATES = TopicSpec(
    "online3r/map_updates",
    "sensor_msgs/msg/PointCloud2",
    "latched",
    50,
    "{map}",
    "mapper",
    "users",
    "incremental map: the points of each finished keyframe (when its successor arrives) at its pose then; "
    "stamp = that keyframe's stamp",
)
MARKERS = TopicSpec(
    "online3r/markers",
    "visualization_msgs/msg/MarkerArray",
    "latched",
    1,
    "{map}",
    "mapper",
    "users",
    "keyframe frusta (ns 'keyframes'), graph edges (ns 'edges') and loop-closure edges (ns 'loops'), after "
    "every optimisation",
)
MAPPER_STATUS = TopicSpec(
    "online3r/mapper_status",
    "std_msgs/msg/String",
    "reliable",
    10,
    "-",
    "mapper",
    "users",
    "JSON: keyframes, edges, points, optimisation report and times, keyframe scales, autosave",
)
PROMPTS = TopicSpec(
    "online3r/prompts",
    "std_msgs/msg/UInt8MultiArray",
    "latched",
    1,
    "-",
    "mapper",
    "tracker",
    "the tuned encoder prompts after every tuning step (online prompt tuning; ~1.5 MB for ViT-L): bfloat16 "
    "bytes [layers, tokens, dim] (dim 0 label 'online3r/prompts;version=..;kf=..'); the tracker swaps them "
    "between frames",
)
DIAGNOSTICS = TopicSpec(
    "/diagnostics",
    "diagnostic_msgs/msg/DiagnosticArray",
    "reliable",
    10,
    "-",
    "tracker, mapper, retrieval",
    "users",
    "one DiagnosticStatus per node at 1 Hz (OK / WARN lost or no input / ERROR bad input)",
)

TOPICS: tuple[TopicSpec, ...] = (
    KEYFRAMES,
    OBSERVATIONS,
    KEYFRAME_SIM3,
    MAPPER_STATE,
    KEYFRAME_FEATURES,
    RETRIEVAL_STATE,
    LOOP_CANDIDATES,
    PROMPTS,
    ODOMETRY,
    CAMERA_POSE,
    TRACKER_STATUS,
    KEYFRAME_POSES,
    KEYFRAME_PATH,
    PATH,
    MAP,
    MAP_UPDATES,
    MARKERS,
    MAPPER_STATUS,
    RETRIEVAL_STATUS,
    DIAGNOSTICS,
)

#: Services (std_srvs/srv/Trigger), ``~/`` = the node's name.
SERVICES: dict[str, str] = {
    "tracker/~/reset": "start a new session (tracker and, through the session id, the mapper)",
    "tracker/~/save_trajectory": "all frames' poses as TUM to the tracker's trajectory_path (atomic)",
    "tracker/~/load_map": "localise in the mapper map at the tracker's map_path (its session; relocalise)",
    "mapper/~/reset": "clear the map; the tracker follows with a new session",
    "mapper/~/save_map": "keyframes, poses, graph, frames to map_path (one file, atomic)",
    "mapper/~/load_map": "replace the map with map_path; the tracker re-sends what the loaded map lacks",
    "mapper/~/save_trajectory": "all frames + keyframes as TUM (trajectory_path, *_keyframes.txt; atomic)",
    "mapper/~/publish_map": "publish the full map now",
    "mapper/~/save_prompts": "the tuned prompts to prompts_path (atomic; to warm-start at this place later)",
    "mapper/~/load_prompts": "tune on from the prompts at prompts_path (also sent to the tracker)",
    "retrieval/~/reset": "forget every keyframe of the database",
    "retrieval/~/save_database": "the indexed keyframe features to database_path (atomic)",
}


def qos_for(spec: TopicSpec):
    """The rclpy QoS profile of a topic (imports rclpy)."""
    from online3r_ros.ros.qos import map_qos, reliable_qos, sensor_data_qos

    if spec.qos == "latched":
        return map_qos(spec.depth)
    if spec.qos == "reliable":
        return reliable_qos(spec.depth)
    if spec.qos == "sensor_data":
        return sensor_data_qos(spec.depth)
    raise ValueError(f"unknown QoS name {spec.qos!r} of topic {spec.name}")


def topic_table_markdown() -> str:
    """The README table of the topic contract (inputs first)."""
    rows = [
        "| topic | type | QoS | frame | from -> to | content |",
        "|---|---|---|---|---|---|",
        "| `image_topic` (param, `image`) | sensor_msgs/Image or CompressedImage | auto (image_qos) | "
        "camera | camera -> tracker | colour image, any encoding the conversion layer reads |",
        "| `camera_info_topic` (param, `camera_info`) | sensor_msgs/CameraInfo | auto (image_qos) | "
        "camera | camera -> tracker | optional: calibrated mode (required by the RGB-D source) |",
        "| `depth_topic` (param, `depth`; empty: none) | sensor_msgs/Image | auto (image_qos) | camera | "
        "camera -> tracker | aligned depth (16UC1 mm / 32FC1 m), same stamps as the images |",
    ]
    for t in TOPICS:
        qos = {"latched": "reliable + transient local", "reliable": "reliable"}.get(t.qos, t.qos)
        rows.append(
            f"| `{t.name}` | {t.msg_type.replace('/msg/', '/')} | {qos}, depth {t.depth} | {t.frame_id} | "
            f"{t.publisher} -> {t.subscriber} | {t.description} |"
        )
    rows.append(
        "| `/tf`, `/tf_static` | tf2_msgs/TFMessage | tf2 defaults | - | tracker -> users | "
        "{odom}->{base} (not with external_odometry), {map}->{odom} per frame (input stamps); "
        "static {base}->{camera} when given as a "
        "parameter (or defaulted: no parameter and nothing on /tf_static) |"
    )
    return "\n".join(rows)
