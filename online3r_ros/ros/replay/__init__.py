"""Stream RGB-D frames over DDS like a camera driver, and record what the tracker and mapper publish.

- :mod:`.streaming`: :class:`FrameStreamer` (colour ``Image`` ``rgb8``, depth ``Image`` ``32FC1`` metres and
  ``CameraInfo``, one stamp per frame), :func:`stream_frames` (fixed rate or lock-step), :class:`SpinThread`,
  :func:`call_trigger`, :func:`wait_until`.
- :mod:`.recorder`: :class:`OutputRecorder` (odometry, camera pose, paths, map, markers, statuses, ``/tf``).
- :mod:`.session`: :func:`run_session` (stream, record, wait for the final results) ->
  :class:`SessionResult`.
- :mod:`.domain`: :func:`reserve_domain_id` (a DDS domain id no cooperating process on this machine uses).

Used by ``online3r demo`` and ``benchmarks/bench_ros_vs_offline.py``. Everything is re-exported here.
"""

from online3r_ros.ros.replay.domain import DomainLease, reserve_domain_id
from online3r_ros.ros.replay.recorder import OutputRecorder, RecordedPose, _Cloud
from online3r_ros.ros.replay.session import SessionResult, run_session, settle_outputs
from online3r_ros.ros.replay.streaming import (
    FrameStreamer,
    SentFrame,
    SpinThread,
    call_trigger,
    stream_frames,
    wait_until,
)

__all__ = [
    "DomainLease",
    "FrameStreamer",
    "OutputRecorder",
    "RecordedPose",
    "SentFrame",
    "SessionResult",
    "SpinThread",
    "call_trigger",
    "reserve_domain_id",
    "run_session",
    "settle_outputs",
    "stream_frames",
    "wait_until",
    "_Cloud",
]
