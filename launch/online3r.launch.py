"""``ros2 launch online3r_ros online3r.launch.py [image:=...] [depth:=...] [checkpoint:=...] [rviz:=true]``

Starts the tracker, mapper and retrieval nodes (and rviz2 with ``rviz:=true``). Every node, executable,
parameter file, parameter override and remapping comes from :mod:`online3r_ros.launch_description`, the
description that ``online3r launch`` (no ROS distro needed) also starts from; see that module for the
arguments and defaults.
``ros2 launch online3r_ros online3r.launch.py --show-args`` lists them.

``launch``/``launch_ros`` are imported inside the functions so the file can be imported (and tested) without a
ROS distro.
"""

from online3r_ros.launch_description import LAUNCH_ARGUMENTS, node_specs


def _node_actions(context, *args, **kwargs):
    """Resolve the launch arguments to strings, then build one ``launch_ros`` Node per described node."""
    import launch_ros.actions

    import launch

    values = {
        a.name: launch.substitutions.LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS
    }
    actions = []
    for spec in node_specs(values):
        actions.append(
            launch_ros.actions.Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace or None,
                parameters=[*spec.parameter_files, dict(spec.parameters)],
                remappings=list(spec.remappings),
                arguments=list(spec.arguments),
                ros_arguments=["--log-level", spec.log_level],
                output="screen",
                emulate_tty=True,
                # as `online3r launch`: a required node exiting stops the whole system, a respawning one is
                # started again
                on_exit=launch.actions.Shutdown(reason=f"{spec.name} exited") if spec.required else None,
                respawn=spec.respawn,
                respawn_delay=spec.respawn_delay,
            )
        )
    return actions


def generate_launch_description():
    import launch

    declared = [
        launch.actions.DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
        for a in LAUNCH_ARGUMENTS
    ]
    return launch.LaunchDescription([*declared, launch.actions.OpaqueFunction(function=_node_actions)])
