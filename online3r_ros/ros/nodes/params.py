"""Declared parameters of the tracker and mapper nodes: names, defaults, descriptions, ranges, validation.

Every parameter is declared read-only with its description and range (``ros2 param describe`` shows them);
values come from ``--ros-args --params-file config/online3r_ros.yaml`` (sections ``/**/tracker:`` /
``/**/mapper:`` -> ``ros__parameters``: the ``/**/`` wildcard makes them apply in any namespace, e.g.
``namespace:=robot1``; a bare ``tracker:`` key only matches ``/tracker``). :func:`validate` checks ranges,
choices and the cross-field rules and raises :class:`ParameterError` naming the parameter, so a node with a
bad value refuses to start with a clear line.

The SLAM algorithm settings are NOT node parameters: ``slam_config`` points to the pipeline's YAML file
(``config/online3r.yaml`` format; empty = built-in defaults) and ``source``/``checkpoint``/``device`` override
its most common keys. Relative paths are resolved against the current directory, then the package's
``config/`` folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "NodeParams",
    "TrackerParams",
    "MapperParams",
    "param_specs",
    "ParamSpec",
    "ParameterError",
    "TRACKER_PARAMS",
    "MAPPER_PARAMS",
    "RetrievalParams",
    "RETRIEVAL_PARAMS",
    "validate",
    "declare_and_read",
    "resolve_path",
    "defaults",
    "documented_yaml",
    "NODE_KEY_PREFIX",
    "resolve_torch_threads",
]


class ParameterError(ValueError):
    """An invalid node parameter (the message starts with the parameter's name)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"parameter '{name}': {reason}")


@dataclass(frozen=True)
class ParamSpec:
    """``name``, ``default`` (its Python type is the parameter type; ``tuple`` = double array),
    ``description``, numeric ``low``/``high`` bounds (inclusive) or string ``choices``."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None


def param(
    default: Any,
    description: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A node parameter: a dataclass field with its description and range in the metadata."""
    meta = {"description": description, "low": low, "high": high, "choices": choices}
    return field(default=default, metadata=meta)


#: Prefix of the node keys in the parameter file: ``/**/`` matches the node in any namespace.
NODE_KEY_PREFIX = "/**/"

_QOS = ("auto", "sensor_data", "best_effort", "reliable", "system_default")


@dataclass(frozen=True)
class NodeParams:
    """Parameters of both nodes."""

    slam_config: str = param("", "SLAM configuration YAML (config/online3r.yaml format); empty: defaults")
    source: str = param("", "override source.kind of the SLAM config", choices=("", "depth", "mast3r"))
    checkpoint: str = param("", "override source.checkpoint (MASt3R checkpoint file)")
    device: str = param("", "override system.device (cpu, cuda, cuda:N); empty: from the SLAM config")
    torch_threads: int = param(
        0,
        "torch CPU threads of this node (0: auto = max(1, usable cores // 2): tracker and mapper share the "
        "CPU, and two nodes with all cores each were ~15x slower on 2 cores)",
        0,
        256,
    )
    map_frame: str = param("map", "REP-105 map frame")
    camera_frame: str = param("camera_optical_frame", "camera optical frame (z forward, x right, y down)")
    diagnostics_period: float = param(1.0, "period of /diagnostics and the status topic (s)", 0.05, 60.0)


@dataclass(frozen=True)
class TrackerParams(NodeParams):
    """Parameters of the tracker node."""

    image_topic: str = param("image", "input image topic (sensor_msgs/Image or CompressedImage)")
    image_transport: str = param(
        "raw", "raw: sensor_msgs/Image; compressed: CompressedImage", choices=("raw", "compressed")
    )
    camera_info_topic: str = param("camera_info", "CameraInfo topic (calibrated mode); empty: none")
    depth_topic: str = param("depth", "aligned depth image topic (16UC1 mm / 32FC1 m); empty: none")
    image_qos: str = param(
        "auto",
        "QoS of the input subscriptions; auto: reliable while every publisher is, best effort when one is "
        "(best-effort large images are mostly lost on one machine)",
        choices=_QOS,
    )
    input_queue: int = param(
        10,
        "keep-last depth of the image, depth and camera_info readers: the frames DDS holds for the tracker "
        "while a step keeps its callbacks waiting (one more is lost in transport, uncounted; each held "
        "frame costs its message size)",
        1,
        1000,
    )
    odom_frame: str = param("odom", "REP-105 odometry frame")
    base_frame: str = param("base_link", "robot base frame")
    publish_tf: bool = param(True, "publish TF at all (master switch)")
    publish_odom_tf: bool = param(
        True, "publish odom -> base_frame (false when another node provides odometry)"
    )
    publish_map_tf: bool = param(True, "publish map -> odom (the SLAM correction)")
    external_odometry: bool = param(
        False,
        "another node publishes odom_frame -> base_frame on /tf: the tracker does not, and computes "
        "map -> odom against it at each image stamp",
    )
    odom_tolerance: float = param(
        0.1, "external odometry: nearest-sample tolerance outside its range (s)", 0.0, 10.0
    )
    odom_wait: float = param(
        0.2,
        "external odometry: how long an image's map -> odom waits for an odom -> base sample at or after its "
        "stamp before falling back to the nearest sample (s); the pose and odometry are published first",
        0.0,
        10.0,
    )
    base_to_camera: tuple[float, ...] = param(
        (),
        "static base_frame -> camera_frame transform [x, y, z, qx, qy, qz, qw]; empty: read /tf_static, "
        "else the REP-103 optical rotation at the base origin",
    )
    tf_static_wait: float = param(
        1.0, "how long to wait for /tf_static before the first frame (s)", 0.0, 60.0
    )
    sync_tolerance: float = param(
        0.002,
        "max |image stamp - depth stamp| of a pair, and of an image and its own camera_info (s)",
        0.0,
        1.0,
    )
    sync_wait: float = param(
        0.5, "how long the newest image waits for its depth / camera_info (s)", 0.0, 10.0
    )
    input_timeout: float = param(
        2.0, "WARN in diagnostics when no image arrived for this long (s)", 0.1, 3600.0
    )
    error_hold: float = param(5.0, "an input error keeps diagnostics at ERROR this long (s)", 0.0, 3600.0)
    reset_on_time_jump: bool = param(True, "a jump back in time (bag loop) resets the session")
    time_jump_threshold: float = param(
        0.1,
        "a step back in time larger than this (s) is a jump (reset); smaller ones are rejected",
        0.0,
        3600.0,
    )
    trajectory_path: str = param("online3r_tracker_trajectory.txt", "~/save_trajectory output (TUM)")
    map_path: str = param(
        "",
        "a mapper map file (its map_path) to localise in: loaded at start when set, and by ~/load_map; the "
        "tracker continues in that map's session and relocalises in the whole map (empty: start a new map)",
    )
    warmup_frames: int = param(
        3,
        "synthetic frames run through a throw-away tracker at start (first-call costs would otherwise "
        "drop the frames after the first one; RGB-D source only)",
        0,
        100,
    )


@dataclass(frozen=True)
class MapperParams(NodeParams):
    """Parameters of the mapper node."""

    map_path: str = param(
        "online3r_map.pt",
        "~/save_map, ~/load_map and autosave file; a map of an earlier session found there is first renamed "
        "to <stem>.session-<id>.pt (never replaced)",
    )
    autosave: bool = param(True, "save the map to map_path (atomically) after optimisations and at shutdown")
    autosave_period: float = param(
        5.0, "autosave at most this often (s; 0: after every keyframe)", 0.0, 3600.0
    )
    load_on_start: bool = param(True, "start from map_path when it exists (recovery after a restart)")
    trajectory_path: str = param("online3r_trajectory.txt", "~/save_trajectory output (TUM; + _keyframes)")
    map_period: float = param(
        5.0, "full map re-publication period when it changed (s; 0: on request only)", 0.0, 3600.0
    )
    path_period: float = param(
        1.0, "all-frames path re-publication period (s; 0: after optimisations only)", 0.0, 3600.0
    )
    map_max_points: int = param(500000, "full map: at most this many points (strided; 0: all)", 0, 100000000)
    keyframe_wait: float = param(
        1.0, "a keyframe waits this long for the previous keyframe's observations (s)", 0.0, 60.0
    )
    keyframe_gap_wait: float = param(
        3.0,
        "a keyframe that has not arrived while packets of later ones wait (lost in transport) is asked for "
        "again after this long, and then every this long (s)",
        0.1,
        600.0,
    )
    frustum_scale: float = param(0.1, "size of the keyframe frustum markers (m)", 0.001, 100.0)
    prompts_path: str = param(
        "online3r_prompts.pt", "~/save_prompts / ~/load_prompts file of the tuned prompts (MASt3R source)"
    )


@dataclass(frozen=True)
class RetrievalParams(NodeParams):
    """Parameters of the retrieval node (the features and thresholds are in the SLAM config's
    ``retrieval`` section)."""

    database_path: str = param(
        "online3r_retrieval.pt", "autosave / ~/save_database file of the indexed keyframe features"
    )
    autosave_period: float = param(
        5.0, "save the database at most this often when it changed (s; 0: after every keyframe)", 0.0, 3600.0
    )
    load_on_start: bool = param(True, "start from database_path when it exists (recovery after a restart)")
    gap_wait: float = param(
        2.0,
        "features of a keyframe older than the newest indexed one that have not arrived (lost in transport), "
        "or features of another tracker session, make the node ask the tracker to send them again after "
        "this long, and then every this long (s)",
        0.1,
        60.0,
    )


def param_specs(cls: type) -> tuple[ParamSpec, ...]:
    """The :class:`ParamSpec` of every field of a parameter dataclass, in declaration order."""
    return tuple(ParamSpec(f.name, f.default, **f.metadata) for f in fields(cls))


TRACKER_PARAMS: tuple[ParamSpec, ...] = param_specs(TrackerParams)
MAPPER_PARAMS: tuple[ParamSpec, ...] = param_specs(MapperParams)
RETRIEVAL_PARAMS: tuple[ParamSpec, ...] = param_specs(RetrievalParams)


def defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def _check_type(spec: ParamSpec, value: Any) -> Any:
    d = spec.default
    if isinstance(d, bool):
        if not isinstance(value, bool):
            raise ParameterError(spec.name, f"must be a boolean, got {value!r}")
        return value
    if isinstance(d, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(spec.name, f"must be an integer, got {value!r}")
        return value
    if isinstance(d, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ParameterError(spec.name, f"must be a finite number, got {value!r}")
        return float(value)
    if isinstance(d, tuple):
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ParameterError(spec.name, f"must be a list of numbers, got {value!r}") from exc
    if not isinstance(value, str):
        raise ParameterError(spec.name, f"must be a string, got {value!r}")
    return value


def _cross_checks(out: dict[str, Any]) -> None:
    frames = [out[k] for k in ("map_frame", "odom_frame", "base_frame", "camera_frame") if k in out]
    for key in ("map_frame", "odom_frame", "base_frame", "camera_frame", "image_topic"):
        if key in out and not str(out[key]).strip():
            raise ParameterError(key, "must not be empty")
    if len(set(frames)) != len(frames):
        bad = next(
            k for k in ("odom_frame", "base_frame", "camera_frame") if k in out and frames.count(out[k]) > 1
        )
        raise ParameterError(bad, f"frame ids must be distinct, got {frames}")
    b2c = out.get("base_to_camera")
    if b2c:
        if len(b2c) != 7:
            raise ParameterError(
                "base_to_camera", f"needs 7 values [x, y, z, qx, qy, qz, qw], got {len(b2c)}"
            )
        norm = math.sqrt(sum(v * v for v in b2c[3:]))
        if not all(math.isfinite(v) for v in b2c) or abs(norm - 1.0) > 1e-3:
            raise ParameterError(
                "base_to_camera", f"needs finite values and a unit quaternion, got {list(b2c)}"
            )
    if out.get("source") == "mast3r" and not out.get("checkpoint") and not out.get("slam_config"):
        raise ParameterError("checkpoint", "source 'mast3r' needs a checkpoint file")


P = TypeVar("P", bound=NodeParams)


def validate(values: dict[str, Any], cls: type[P]) -> P:
    """Typed, checked parameters from ``values`` (missing keys: defaults); :class:`ParameterError`
    (naming the parameter) otherwise."""
    specs = param_specs(cls)
    known = {s.name for s in specs}
    for name in values:
        if name not in known and name != "use_sim_time":
            raise ParameterError(name, f"unknown parameter (known: {sorted(known)})")
    out: dict[str, Any] = {}
    for spec in specs:
        value = _check_type(spec, values.get(spec.name, spec.default))
        if spec.low is not None and value < spec.low:
            raise ParameterError(spec.name, f"{value!r} is below the minimum {spec.low}")
        if spec.high is not None and value > spec.high:
            raise ParameterError(spec.name, f"{value!r} is above the maximum {spec.high}")
        if spec.choices is not None and value not in spec.choices:
            raise ParameterError(spec.name, f"{value!r} is not one of {list(spec.choices)}")
        out[spec.name] = value
    _cross_checks(out)
    return cls(**out)


def resolve_path(name: str, what: str) -> Path | None:
    """Existing file for ``name`` (absolute, relative to the cwd, or in the package's ``config/``);
    ``None`` for an empty name; :class:`ParameterError` when it does not exist."""
    if not name:
        return None
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, _config_dir() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ParameterError(what, f"file not found: {name} (looked in {[str(c) for c in candidates]})")


def resolve_torch_threads(requested: int, cores: int | None = None) -> int:
    """Threads for ``torch.set_num_threads``: ``requested`` when > 0, else (auto) half the usable cores, at
    least 1 (tracker and mapper run side by side; ``cores`` default: the CPUs this process may run on)."""
    if requested > 0:
        return int(requested)
    if cores is None:
        import os

        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 2
    return max(1, int(cores) // 2)


def _config_dir() -> Path:
    repo = Path(__file__).resolve().parents[3] / "config"
    if repo.is_dir():
        return repo
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("online3r_ros")) / "config"
    except Exception:  # noqa: BLE001 - no ament index: only the repository layout is known
        return repo


def declare_and_read(node: Any, cls: type[P]) -> P:
    """Declare every parameter of ``cls`` on an rclpy ``node`` (read-only, described, ranged) and return the
    validated values. Raises :class:`ParameterError` (also for values rclpy itself rejects)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    values: dict[str, Any] = {}
    for spec in param_specs(cls):
        desc = ParameterDescriptor(description=spec.description, read_only=True)
        if spec.choices is not None:
            desc.additional_constraints = f"one of {list(spec.choices)}"
        if spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            desc.dynamic_typing = True  # `period: 5` in YAML is an integer: accepted, validate() casts
        if spec.low is not None and isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
        default = Parameter.Type.DOUBLE_ARRAY if isinstance(spec.default, tuple) else spec.default
        try:
            declared = node.declare_parameter(spec.name, default, desc)
        except ParameterException as exc:
            raise ParameterError(spec.name, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - rclpy raises several types (range, type); name the parameter
            raise ParameterError(spec.name, f"{type(exc).__name__}: {exc}") from exc
        value = declared.value
        if isinstance(spec.default, tuple):
            value = () if value is None else tuple(value)
        values[spec.name] = value
    return validate(values, cls)


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(repr(float(x)) for x in v) + "]"
    return repr(v)


def documented_yaml() -> str:
    """``config/online3r_ros.yaml``: both nodes' parameters with defaults, descriptions and ranges."""
    lines = [
        "# online3r_ros node parameters (tracker, mapper, retrieval). Start the nodes with",
        "#   tracker --ros-args --params-file config/online3r_ros.yaml   (same for mapper)",
        "# The SLAM algorithm settings live in the file named by slam_config (config/online3r.yaml format).",
        "# Regenerate: python -c 'from online3r_ros.ros.nodes.params import documented_yaml as d; "
        'print(d(), end="")\'',
        "# '/**/tracker' matches a node named tracker in any namespace (launch argument namespace:=robot1);",
        "# a bare 'tracker:' key would only match /tracker.",
    ]
    for node, cls in (("tracker", TrackerParams), ("mapper", MapperParams), ("retrieval", RetrievalParams)):
        lines += [f"{NODE_KEY_PREFIX}{node}:", "  ros__parameters:"]
        for s in param_specs(cls):
            rng = ""
            if s.low is not None:
                rng = f" [{s.low} .. {s.high}]"
            elif s.choices is not None:
                rng = f" [one of {', '.join(repr(c) for c in s.choices)}]"
            lines.append(f"    # {s.description}{rng}")
            if isinstance(s.default, tuple) and not s.default:  # YAML cannot type an empty list: leave it out
                lines.append(f"    # {s.name}: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]")
            else:
                lines.append(f"    {s.name}: {_yaml_value(s.default)}")
    return "\n".join(lines) + "\n"
