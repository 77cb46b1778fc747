"""The ROS launch file and ``online3r launch`` start the same nodes; the launcher forwards signals and reports
exits.

Agreement: ``launch/online3r.launch.py`` is executed with a tiny fake ``launch``/``launch_ros`` (injected in
``sys.modules``; the real packages need a ROS distro) and its Node actions are compared field by field with
the commands ``online3r launch --dry-run`` prints, parsed back from the command line (node name, namespace,
executable/module, parameter files, parameter values, remappings, plain arguments, log level).

Launcher: :class:`NodeGroup` on small child scripts (a node that dies, nodes that stop on SIGINT, a node that
ignores SIGINT). The last test starts the real tracker and mapper with ``online3r launch`` on an isolated DDS
domain and stops them with SIGINT (marked ``ros``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from online3r_ros.cli.launch import EXIT_NODE_DIED, NodeGroup
from online3r_ros.cli.main import main as cli_main
from online3r_ros.launch_description import (
    LAUNCH_ARGUMENTS,
    LaunchSpecError,
    NodeSpec,
    node_specs,
    parse_launch_arguments,
)

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "online3r.launch.py"


# ----------------------------------------------------------------------------------- fake launch packages
class _Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context) -> str:
        return context.launch_configurations[self.name]


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    actions = types.ModuleType("launch.actions")
    substitutions = types.ModuleType("launch.substitutions")
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")

    class LaunchDescription:
        def __init__(self, entities) -> None:
            self.entities = list(entities)

    class DeclareLaunchArgument(_Recorded):
        pass

    class OpaqueFunction:
        def __init__(self, function) -> None:
            self.function = function

    class Shutdown(_Recorded):
        pass

    class Node(_Recorded):
        pass

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    actions.OpaqueFunction = OpaqueFunction
    actions.Shutdown = Shutdown
    substitutions.LaunchConfiguration = _LaunchConfiguration
    launch.actions, launch.substitutions = actions, substitutions
    ros_actions.Node = Node
    launch_ros.actions = ros_actions
    return {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": substitutions,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }


def launch_file_nodes(monkeypatch, overrides: dict[str, str]) -> list[dict]:
    """Run the launch file as ``ros2 launch`` would (declare, resolve, OpaqueFunction) with the fakes."""
    fakes = _fake_launch_modules()
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("online3r_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [
        e for e in description.entities if isinstance(e, fakes["launch.actions"].DeclareLaunchArgument)
    ]
    opaque = [e for e in description.entities if isinstance(e, fakes["launch.actions"].OpaqueFunction)]
    assert len(opaque) == 1
    configurations = {d.args[0]: d.kwargs["default_value"] for d in declared}
    assert set(configurations) == {a.name for a in LAUNCH_ARGUMENTS}
    assert all(d.kwargs.get("description") for d in declared)
    configurations.update(overrides)
    context = types.SimpleNamespace(launch_configurations=configurations)
    nodes = opaque[0].function(context)
    out = []
    for node in nodes:
        kw = node.kwargs
        params = kw["parameters"]
        files = [p for p in params if isinstance(p, str)]
        values = {}
        for p in params:
            if isinstance(p, dict):
                values.update(p)
        ros_args = kw.get("ros_arguments") or []
        out.append(
            {
                "name": kw["name"],
                "package": kw["package"],
                "executable": kw["executable"],
                "namespace": kw.get("namespace") or "",
                "parameter_files": files,
                "parameters": values,
                "remappings": [tuple(r) for r in kw.get("remappings") or []],
                "arguments": list(kw.get("arguments") or []),
                "log_level": ros_args[ros_args.index("--log-level") + 1],
                "stops_system": kw.get("on_exit") is not None,
                "respawn": (bool(kw.get("respawn")), float(kw.get("respawn_delay") or 0.0)),
            }
        )
    return out


# --------------------------------------------------------------------------------------- launcher plan
def parse_command(name: str, argv: list[str]) -> dict:
    """Parse a dry-run command line back into the fields the launch file sets."""
    cut = argv.index("--ros-args")
    head, ros = argv[:cut], argv[cut + 1 :]
    if len(head) >= 3 and head[1] == "-m":
        module = head[2]
        package, executable = module.split(".")[0], module.rsplit(".", 1)[1]
        arguments = head[3:]
    else:
        package, executable, arguments = "rviz2", Path(head[0]).name, head[1:]
    node_name, namespace, files, params, remaps, level = None, "", [], {}, [], None
    i = 0
    while i < len(ros):
        flag, value = ros[i], ros[i + 1]
        i += 2
        if flag == "-r":
            src, _, dst = value.partition(":=")
            if src == "__node":
                node_name = dst
            elif src == "__ns":
                namespace = dst
            else:
                remaps.append((src, dst))
        elif flag == "--params-file":
            files.append(value)
        elif flag == "-p":
            key, _, text = value.partition(":=")
            params[key] = yaml.safe_load(text)
        elif flag == "--log-level":
            level = value
        else:
            raise AssertionError(f"unexpected ROS argument {flag!r} in {argv}")
    return {
        "name": node_name or name,
        "package": package,
        "executable": executable,
        "namespace": namespace,
        "parameter_files": files,
        "parameters": params,
        "remappings": remaps,
        "arguments": arguments,
        "log_level": level,
    }


def launcher_plan(overrides: dict[str, str]) -> list[dict]:
    """What ``online3r launch --dry-run name:=value ...`` would start, parsed from its output."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli_main(["launch", "--dry-run", *[f"{k}:={v}" for k, v in overrides.items()]])
    assert code == 0
    plan = []
    for line in buf.getvalue().splitlines():
        label, _, command = line.partition(": ")
        name = label.split()[0]
        node = parse_command(name, shlex.split(command))
        delay = re.search(r"\[respawn after ([\d.]+) s\]", label)
        node["respawn"] = (delay is not None, float(delay.group(1)) if delay else 0.0)
        plan.append(node)
    return plan


ARGUMENT_SETS = [
    {},
    {
        "image": "/robot/cam/image_raw",
        "depth": "",
        "camera_info": "/robot/cam/info",
        "checkpoint": "/models/mast3r.pth",
        "use_sim_time": "true",
        "namespace": "robot1",
        "log_level": "debug",
        "torch_threads": "2",
    },
    {
        "rviz": "True",
        "source": "depth",
        "device": "cuda:0",
        "image_transport": "compressed",
        "config": "/x.yaml",
    },
]


@pytest.mark.parametrize("overrides", ARGUMENT_SETS, ids=["defaults", "mast3r_ns_simtime", "rviz_compressed"])
def test_launch_file_and_launcher_start_the_same_nodes(monkeypatch, overrides):
    from_launch = launch_file_nodes(monkeypatch, overrides)
    from_launcher = launcher_plan(overrides)
    assert [n["name"] for n in from_launch] == [n["name"] for n in from_launcher]
    for node, planned in zip(from_launch, from_launcher, strict=True):
        for key in ("package", "executable", "namespace", "parameter_files", "remappings", "arguments"):
            assert node[key] == planned[key], (node["name"], key)
        assert node["parameters"] == planned["parameters"], node["name"]
        assert node["log_level"] == planned["log_level"]
        assert node["stops_system"] == (node["name"] == "tracker")  # mapper and retrieval respawn instead
        assert (
            node["respawn"]
            == planned["respawn"]
            == ((True, 2.0) if node["name"] in ("mapper", "retrieval") else (False, 0.0))
        )


def test_arguments_reach_the_nodes(monkeypatch):
    nodes = {n["name"]: n for n in launch_file_nodes(monkeypatch, ARGUMENT_SETS[1])}
    assert set(nodes) == {"tracker", "mapper", "retrieval"}
    tracker, mapper = nodes["tracker"]["parameters"], nodes["mapper"]["parameters"]
    assert nodes["retrieval"]["parameters"] == mapper
    assert tracker["image_topic"] == "/robot/cam/image_raw"
    assert tracker["camera_info_topic"] == "/robot/cam/info"
    assert tracker["depth_topic"] == ""
    for params in (tracker, mapper):
        assert params["use_sim_time"] is True
        assert params["checkpoint"] == "/models/mast3r.pth"
        assert params["source"] == "mast3r"  # a checkpoint selects the MASt3R source
        assert params["torch_threads"] == 2
    assert "image_topic" not in mapper
    assert nodes["tracker"]["namespace"] == "/robot1"
    defaults = {n["name"]: n for n in launch_file_nodes(monkeypatch, {})}
    assert "checkpoint" not in defaults["tracker"]["parameters"]  # '' keeps the parameter file's value
    assert defaults["tracker"]["parameter_files"] == [str(REPO / "config" / "online3r_ros.yaml")]
    rviz = {n["name"]: n for n in launch_file_nodes(monkeypatch, {"rviz": "true"})}["rviz2"]
    assert rviz["arguments"] == ["-d", str(REPO / "config" / "online3r.rviz")]


def test_shipped_files_exist_and_rviz_config_is_valid():
    assert (REPO / "config" / "online3r_ros.yaml").is_file()
    rviz = yaml.safe_load((REPO / "config" / "online3r.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Class"]: d for d in manager["Displays"]}
    for cls in ("TF", "Odometry", "Path", "PointCloud2", "MarkerArray"):
        assert f"rviz_default_plugins/{cls}" in displays
    topics = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    from online3r_ros.ros import topics as T  # ROS-free module

    for spec in (T.ODOMETRY, T.PATH, T.KEYFRAME_PATH, T.MAP, T.MARKERS):
        assert "/" + spec.name in topics
    cloud = next(d for d in manager["Displays"] if d.get("Topic", {}).get("Value") == "/" + T.MAP.name)
    assert cloud["Color Transformer"] == "RGB8"
    assert cloud["Topic"]["Durability Policy"] == "Transient Local"


@pytest.mark.parametrize(
    "bad",
    [
        ["nonsense:=1"],
        ["image=/x"],
        ["use_sim_time:=maybe"],
        ["log_level:=loud"],
        ["namespace:=1bad"],
        ["torch_threads:=many"],
    ],
)
def test_bad_launch_arguments_are_usage_errors(bad, capsys):
    assert cli_main(["launch", "--dry-run", *bad]) == 2
    assert "error" in capsys.readouterr().err


def test_description_rejects_unknown_names():
    with pytest.raises(LaunchSpecError, match="unknown launch argument 'imgae'"):
        node_specs({"imgae": "/x"})
    with pytest.raises(LaunchSpecError, match="unknown node"):
        node_specs({}, extra_parameters={"retriever": {"a": 1}})
    assert parse_launch_arguments(["depth:="]) == {"depth": ""}


# ---------------------------------------------------------------------------------- process management
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    mode, mark = sys.argv[1], sys.argv[2]
    def on_int(signum, frame):
        open(mark, "w").write(signal.Signals(signum).name)
        sys.exit(0)
    if mode == "ignore_int":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, on_int)
    print(f"child {mode} up", flush=True)
    if mode == "die":
        time.sleep(0.5)
        sys.exit(3)
    time.sleep(60)
    """
)


def _child_specs(tmp_path: Path, modes: dict[str, str], required: bool = True) -> list[NodeSpec]:
    (tmp_path / "fake_node.py").write_text(CHILD)
    return [
        NodeSpec(
            name=name,
            package="test",
            executable=name,
            module="fake_node",
            arguments=(mode, str(tmp_path / f"{name}.signal")),
            required=required,
        )
        for name, mode in modes.items()
    ]


def _group(tmp_path: Path, specs: list[NodeSpec], echo) -> NodeGroup:
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return NodeGroup(specs, env=env, log_dir=tmp_path / "logs", echo=echo)


def test_a_dying_node_is_reported_and_stops_the_others(tmp_path):
    echo = io.StringIO()
    group = _group(tmp_path, _child_specs(tmp_path, {"tracker": "die", "mapper": "wait"}), echo)
    group.start()
    try:
        t0 = time.monotonic()
        code = group.wait()
        assert time.monotonic() - t0 < 30
    finally:
        codes = group.stop(grace=2.0)
    assert code == EXIT_NODE_DIED
    assert codes["tracker"] == 3
    assert codes["mapper"] == 0  # stopped by the forwarded SIGINT, exited cleanly
    assert (tmp_path / "mapper.signal").read_text() == "SIGINT"
    text = echo.getvalue()
    assert "tracker (pid" in text and "exited with code 3" in text
    assert "ended unexpectedly" in text
    assert "child die up" in (tmp_path / "logs" / "tracker.log").read_text()
    assert "[mapper] child wait up" in text


def test_sigint_to_the_launcher_is_forwarded_to_every_node(tmp_path):
    group = _group(tmp_path, _child_specs(tmp_path, {"tracker": "wait", "mapper": "wait"}), io.StringIO())
    group.start()
    marks = [tmp_path / "tracker.signal", tmp_path / "mapper.signal"]
    # interrupt this process (as Ctrl-C would) once both children are up
    logs = [tmp_path / "logs" / "tracker.log", tmp_path / "logs" / "mapper.log"]

    def interrupt() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(p.exists() and p.read_text() for p in logs):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    try:
        code = group.wait()
    finally:
        codes = group.stop(grace=2.0)
        thread.join(timeout=5)
    assert code == 0
    assert codes == {"tracker": 0, "mapper": 0}
    assert [m.read_text() for m in marks] == ["SIGINT", "SIGINT"]


def test_a_node_ignoring_sigint_is_terminated(tmp_path):
    group = _group(tmp_path, _child_specs(tmp_path, {"stubborn": "ignore_int"}), None)
    group.start()
    log = tmp_path / "logs" / "stubborn.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    t0 = time.monotonic()
    codes = group.stop(grace=1.0)
    assert codes["stubborn"] == -signal.SIGTERM
    assert time.monotonic() - t0 < 10
    assert group.running() == []


def test_a_respawning_node_is_started_again_and_the_others_keep_running(tmp_path):
    specs = _child_specs(tmp_path, {"tracker": "wait"})
    specs += [
        dataclasses.replace(s, required=False, respawn=True, respawn_delay=0.2)
        for s in _child_specs(tmp_path, {"mapper": "die"})
    ]
    echo = io.StringIO()
    group = _group(tmp_path, specs, echo)
    group.start()

    def interrupt() -> None:  # Ctrl-C once the mapper died and came back twice
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and echo.getvalue().count("[mapper] child die up") < 3:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    try:
        code = group.wait(poll_period=0.02)
    finally:
        codes = group.stop(grace=2.0)
        thread.join(timeout=5)
    text = echo.getvalue()
    assert code == 0 and group.respawns["mapper"] >= 2
    assert "respawning mapper in 0.2 s" in text and "ended unexpectedly" not in text
    assert codes["tracker"] == 0 and (tmp_path / "tracker.signal").read_text() == "SIGINT"
    assert (tmp_path / "logs" / "mapper.log").read_text().count("child die up") >= 3  # one log, appended
    with pytest.raises(LaunchSpecError, match="cannot respawn"):
        dataclasses.replace(specs[0], respawn=True)


def test_missing_non_python_executable_is_skipped(tmp_path):
    spec = NodeSpec(
        name="viewer", package="none", executable="no-such-viewer-xyz", module=None, required=False
    )
    group = NodeGroup([spec], echo=None)
    group.start()
    assert group.processes == []
    assert group.skipped and group.skipped[0][0] == "viewer"
    assert group.wait(poll_period=0.01) == 0


# ------------------------------------------------------------------------------------ real nodes (DDS)
@pytest.mark.ros
@pytest.mark.slow
def test_online3r_launch_starts_and_stops_the_real_nodes(tmp_path, dds_domain):
    pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(dds_domain),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "online3r_ros.cli.main",
        "launch",
        "--log-dir",
        str(tmp_path),
        "--grace",
        "15",
    ]
    cmd += ["image:=launch_test/image", "depth:=launch_test/depth", "camera_info:=launch_test/info"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        logs = [tmp_path / "tracker.log", tmp_path / "mapper.log"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if all(p.exists() and "ready" in p.read_text() for p in logs):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        assert all("ready" in p.read_text() for p in logs), [
            p.read_text()[-2000:] for p in logs if p.exists()
        ]
        assert "image=launch_test/image" in logs[0].read_text()
        # kill -9 the mapper: the launcher starts it again, the tracker keeps running
        mapper = [pid for pid in _children(proc.pid) if "online3r_ros.ros.nodes.mapper" in _cmdline(pid)]
        assert len(mapper) == 1
        os.kill(mapper[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and logs[1].read_text().count("ready") < 2:
            time.sleep(0.2)
        assert logs[1].read_text().count("ready") == 2, logs[1].read_text()[-2000:]
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        _stop_launcher(proc)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "SIGINT received" in text
    assert "tracker (pid" in text and "mapper (pid" in text and "stopped with code" in text
    assert "respawning mapper in 2 s" in text and "ended unexpectedly" not in text


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_launch_executables_are_console_scripts_of_the_same_modules():
    """``ros2 launch`` runs ``lib/online3r_ros/<executable>``: the module ``online3r launch`` runs."""
    import re

    setup_text = (REPO / "setup.py").read_text()
    scripts = dict(re.findall(r'"\s*([\w-]+)\s*=\s*([\w.]+):main\s*"', setup_text))
    for spec in node_specs({}):
        if spec.module is not None:
            assert scripts.get(spec.executable) == spec.module, (spec.executable, scripts)
    assert 'glob("launch/*.py")' in setup_text and 'glob("config/*.rviz")' in setup_text


def _stop_launcher(launcher: subprocess.Popen) -> None:
    """A failed test's launcher: SIGINT (it stops its nodes), then SIGKILL for it and any node left (each
    node runs in its own process group, so killing the launcher's group alone would orphan them)."""
    if launcher.poll() is not None:
        return
    nodes = _children(launcher.pid)
    os.killpg(launcher.pid, signal.SIGINT)
    try:
        launcher.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
    for pid in nodes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
