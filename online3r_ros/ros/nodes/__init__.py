"""ROS 2 nodes of online3r_ros: ``tracker`` and ``mapper`` (separate processes).

Run (console scripts, or ``python -m online3r_ros.ros.nodes.tracker``; never run the files directly: the
package's ``ros/time.py`` would shadow the standard library's ``time``)::

    tracker --ros-args --params-file config/online3r_ros.yaml
    mapper  --ros-args --params-file config/online3r_ros.yaml

- :mod:`.tracker`: images (+ depth, CameraInfo) -> odometry, camera pose, TF, keyframes and observations.
- :mod:`.mapper`: keyframes + observations -> optimised poses, paths, dense map (full + incremental),
  markers; autosave and recovery.
- :mod:`.params`: typed, declared parameters (descriptions, ranges, validation), ``config/online3r_ros.yaml``.
- :mod:`.inputs`: pairing and decoding of the tracker's inputs; :mod:`.markers`: rviz markers.
- :mod:`.msgs`: node-to-node packing with standard messages; :mod:`.diagnostics`: counters -> /diagnostics.
- The topic contract: :mod:`online3r_ros.ros.topics`. The ROS-free logic: the pipeline's two halves
  :mod:`online3r_ros.slam.frontend` and :mod:`online3r_ros.slam.backend`, the re-send protocol
  :mod:`online3r_ros.slam.session`, and the REP-105 algebra :mod:`online3r_ros.ros.frames`.
"""
