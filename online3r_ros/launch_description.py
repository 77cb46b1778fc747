"""The one description of the online3r_ros ROS 2 system: nodes, executables, parameter files, remappings.

Both ``launch/online3r.launch.py`` (``ros2 launch online3r_ros online3r.launch.py``) and ``online3r launch``
(separate processes, no ROS distro needed) build their nodes from :func:`node_specs`, so the two cannot
disagree (``test/test_launch.py`` checks it). This module imports neither ``launch`` nor ``rclpy``.

Launch arguments (:data:`LAUNCH_ARGUMENTS`; ``name:=value`` on both command lines):

- ``image`` (``/camera/color/image_raw``), ``camera_info`` (``/camera/color/camera_info``; '' none),
  ``depth`` (``/camera/aligned_depth_to_color/image_raw``; '' none), ``image_transport`` (``raw`` or
  ``compressed``): the tracker's ``image_topic``, ``camera_info_topic``, ``depth_topic``, ``image_transport``.
  The RealSense-style defaults fit an RGB-D driver; point them at your camera.
- ``config`` (``<config dir>/online3r_ros.yaml``): the node parameter file (``/**/tracker:``,
  ``/**/mapper:``, ``/**/retrieval:``, so it applies in any ``namespace``).
- ``slam_config``, ``source`` (depth / mast3r), ``checkpoint``, ``device``, ``torch_threads``: both nodes'
  parameters of the same names; '' (the default) keeps the parameter file's value, so that file stays
  the one place for everything not overridden here. A ``checkpoint`` without ``source`` selects
  ``source: mast3r``.
- ``use_sim_time`` (``false``): every node's ``use_sim_time`` (bag replay with ``--clock``).
- ``namespace`` (''): ROS namespace of every node; ``log_level`` (``info``).
- ``rviz`` (``false``): ``true`` also starts rviz2 with ``rviz_config`` (``<config dir>/online3r.rviz``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGE",
    "LaunchArgument",
    "LaunchSpecError",
    "NodeSpec",
    "LAUNCH_ARGUMENTS",
    "config_dir",
    "default_arguments",
    "node_specs",
    "parse_bool",
    "parse_launch_arguments",
    "ros_arguments",
    "yaml_scalar",
]

PACKAGE = "online3r_ros"
NODE_PARAMS_FILE = "online3r_ros.yaml"
RVIZ_FILE = "online3r.rviz"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
MAPPER_RESPAWN_S = 2.0  # seconds between a mapper's (or the retrieval node's) exit and its restart


class LaunchSpecError(ValueError):
    """A bad launch argument (the message names it)."""


@dataclass(frozen=True)
class LaunchArgument:
    """A ``name:=value`` launch argument: ``default`` is a string (launch arguments are strings)."""

    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One process of the system.

    ``package``/``executable``: what ``launch_ros.actions.Node`` runs (``lib/<package>/<executable>``);
    ``module``: the Python module run by ``python -m`` without a distro (``None``: not a Python node, e.g.
    rviz2, started from ``PATH``); ``name``: node name (``__node``); ``namespace``: '' or ``/ns``;
    ``parameter_files``: YAML files in order; ``parameters``: overrides applied after the files;
    ``remappings``: ``(from, to)`` pairs; ``arguments``: plain command-line arguments (before ``--ros-args``);
    ``log_level``; ``required``: the whole system stops when this node exits; ``respawn``: a node that is not
    required is started again ``respawn_delay`` seconds after it exits (as ``launch_ros``'s ``respawn``).
    """

    name: str
    package: str
    executable: str
    module: str | None
    namespace: str = ""
    parameter_files: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    log_level: str = "info"
    required: bool = True
    respawn: bool = False
    respawn_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.required and self.respawn:
            raise LaunchSpecError(f"node {self.name}: a required node stops the system, it cannot respawn")
        if self.respawn_delay < 0:
            raise LaunchSpecError(f"node {self.name}: respawn_delay must be >= 0, got {self.respawn_delay}")


def config_dir() -> Path:
    """The folder holding ``online3r_ros.yaml`` and ``online3r.rviz``: the repository's ``config/`` for a
    source checkout (pip -e, colcon --symlink-install), else ``share/online3r_ros/config`` from the ament
    index (colcon install)."""
    repo = Path(__file__).resolve().parents[1] / "config"
    if (repo / NODE_PARAMS_FILE).is_file() or (repo / RVIZ_FILE).is_file():
        return repo
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config"
    except Exception:  # noqa: BLE001 - no ament index (plain pip install): the package layout is all we know
        return repo


def _arguments() -> tuple[LaunchArgument, ...]:
    cfg = config_dir()
    return (
        LaunchArgument("image", "/camera/color/image_raw", "colour image topic (Image or CompressedImage)"),
        LaunchArgument("camera_info", "/camera/color/camera_info", "CameraInfo topic; '' for none"),
        LaunchArgument(
            "depth", "/camera/aligned_depth_to_color/image_raw", "aligned depth image topic; '' for none"
        ),
        LaunchArgument("image_transport", "raw", "raw (sensor_msgs/Image) or compressed (CompressedImage)"),
        LaunchArgument(
            "config", str(cfg / NODE_PARAMS_FILE), "node parameter file (/**/tracker:, /**/mapper:)"
        ),
        LaunchArgument("slam_config", "", "pipeline YAML (config/online3r.yaml format); '' keeps the file's"),
        LaunchArgument("source", "", "pointmap source: depth or mast3r; '' keeps the file's"),
        LaunchArgument("checkpoint", "", "MASt3R checkpoint (selects source mast3r); '' keeps the file's"),
        LaunchArgument("device", "", "torch device: cpu, cuda or cuda:N; '' keeps the file's"),
        LaunchArgument(
            "torch_threads",
            "",
            "torch CPU threads per node ('' keeps the file's, whose 0 means auto: half the usable cores "
            "per node, at least 1, as the two nodes share the CPU)",
        ),
        LaunchArgument("use_sim_time", "false", "use /clock (bag replay with --clock)"),
        LaunchArgument("namespace", "", "ROS namespace of the nodes; '' for none"),
        LaunchArgument("log_level", "info", f"node log level: one of {', '.join(LOG_LEVELS)}"),
        LaunchArgument("rviz", "false", "true: also start rviz2 with rviz_config"),
        LaunchArgument("rviz_config", str(cfg / RVIZ_FILE), "rviz2 configuration file"),
    )


#: The launch arguments with their defaults (computed at import; see :func:`config_dir`).
LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = _arguments()


def default_arguments() -> dict[str, str]:
    """``{name: default}`` of :data:`LAUNCH_ARGUMENTS`."""
    return {a.name: a.default for a in LAUNCH_ARGUMENTS}


def parse_bool(name: str, value: Any) -> bool:
    """Launch-style boolean (``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise LaunchSpecError(f"launch argument '{name}': expected true or false, got {value!r}")


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """``["image:=/cam", ...]`` -> ``{"image": "/cam"}``; unknown names and missing ``:=`` raise."""
    known = {a.name for a in LAUNCH_ARGUMENTS}
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise LaunchSpecError(f"launch argument {item!r}: expected name:=value")
        if name not in known:
            raise LaunchSpecError(f"unknown launch argument '{name}' (known: {', '.join(sorted(known))})")
        out[name] = value
    return out


def _namespace(value: str) -> str:
    ns = value.strip().strip("/")
    if not ns:
        return ""
    if any(not part or not (part[0].isalpha() or part[0] == "_") for part in ns.split("/")):
        raise LaunchSpecError(f"launch argument 'namespace': {value!r} is not a valid ROS namespace")
    return "/" + ns


def node_specs(
    arguments: Mapping[str, str] | None = None,
    extra_parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[NodeSpec]:
    """The processes to start for ``arguments`` (launch argument strings; missing ones take their defaults).

    ``extra_parameters``: ``{node name: {parameter: value}}`` applied after everything else (used by
    ``online3r demo`` to point the nodes at its own topics and output folder).

    Raises:
        LaunchSpecError: unknown argument name, bad boolean, bad log level or namespace.
    """
    values = default_arguments()
    known = set(values)
    for name, value in (arguments or {}).items():
        if name not in known:
            raise LaunchSpecError(f"unknown launch argument '{name}' (known: {', '.join(sorted(known))})")
        values[name] = str(value)
    use_sim_time = parse_bool("use_sim_time", values["use_sim_time"])
    rviz = parse_bool("rviz", values["rviz"])
    log_level = values["log_level"].strip().lower()
    if log_level not in LOG_LEVELS:
        raise LaunchSpecError(f"launch argument 'log_level': {values['log_level']!r} not in {LOG_LEVELS}")
    if values["image_transport"] not in ("raw", "compressed"):
        raise LaunchSpecError(f"launch argument 'image_transport': {values['image_transport']!r}")
    if values["source"] not in ("", "depth", "mast3r"):
        raise LaunchSpecError(f"launch argument 'source': {values['source']!r} is not depth or mast3r")
    namespace = _namespace(values["namespace"])

    common: dict[str, Any] = {"use_sim_time": use_sim_time}
    for key in ("slam_config", "source", "checkpoint", "device"):
        if values[key]:
            common[key] = values[key]
    if values["torch_threads"].strip():
        try:
            common["torch_threads"] = int(values["torch_threads"])
        except ValueError as exc:
            raise LaunchSpecError(
                f"launch argument 'torch_threads': expected an integer, got {values['torch_threads']!r}"
            ) from exc
    if values["checkpoint"] and not values["source"]:
        common["source"] = "mast3r"
    tracker_params = dict(common)
    tracker_params.update(
        image_topic=values["image"],
        camera_info_topic=values["camera_info"],
        depth_topic=values["depth"],
        image_transport=values["image_transport"],
    )
    per_node = {"tracker": tracker_params, "mapper": dict(common), "retrieval": dict(common)}
    for node, params in (extra_parameters or {}).items():
        if node not in per_node:
            known_nodes = ", ".join(per_node)
            raise LaunchSpecError(f"extra parameters for unknown node {node!r} (known: {known_nodes})")
        per_node[node].update(params)

    files = (values["config"],) if values["config"] else ()
    # the tracker is required (no odometry without it); a mapper that dies is started again: it reloads its
    # autosaved map and the tracker re-sends what it lacks, while odometry keeps flowing; so is the retrieval
    # node (it reloads its database; relocalisation never needed it)
    respawn = {"required": False, "respawn": True, "respawn_delay": MAPPER_RESPAWN_S}
    lifecycle = {"tracker": {}, "mapper": respawn, "retrieval": respawn}
    specs = [
        NodeSpec(
            name=name,
            package=PACKAGE,
            executable=name,
            module=f"{PACKAGE}.ros.nodes.{name}",
            namespace=namespace,
            parameter_files=files,
            parameters=per_node[name],
            log_level=log_level,
            **lifecycle[name],
        )
        for name in ("tracker", "mapper", "retrieval")
    ]
    if rviz:
        specs.append(
            NodeSpec(
                name="rviz2",
                package="rviz2",
                executable="rviz2",
                module=None,
                namespace=namespace,
                parameters={"use_sim_time": use_sim_time},
                arguments=("-d", values["rviz_config"]),
                log_level=log_level,
                required=False,
            )
        )
    return specs


def yaml_scalar(value: Any) -> str:
    """A parameter value as the YAML text ``-p name:=value`` expects (strings always quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value))


def ros_arguments(spec: NodeSpec) -> list[str]:
    """The ``--ros-args ...`` part of a node's command line (what ``launch_ros`` passes, spelled out):
    node name, namespace, parameter files in order, parameter overrides, remappings, log level."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:={spec.namespace}"]
    for path in spec.parameter_files:
        args += ["--params-file", str(path)]
    for key, value in spec.parameters.items():
        args += ["-p", f"{key}:={yaml_scalar(value)}"]
    for src, dst in spec.remappings:
        args += ["-r", f"{src}:={dst}"]
    args += ["--log-level", spec.log_level]
    return args
