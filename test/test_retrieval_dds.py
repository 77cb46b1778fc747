"""The three nodes over DDS (tracker, mapper, retrieval as separate processes): a synthetic camera flies a
loop, the retrieval node finds the revisit and the mapper adds the loop edges; the retrieval node killed and
restarted mid-run: tracking never stops, the restarted node reloads its database, gets the features of the
keyframes made while it was down, and loops resume."""

from __future__ import annotations

import signal
import time

import pytest
from test_nodes_dds import Harness, NodeProcs, _stamp_ns, _status, _stream, dds_domain, session  # noqa: F401

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _loop_frames():
    from online3r_ros.synthetic import make_loop_sequence

    return list(make_loop_sequence(n_frames=150, width=320, height=240, seed=0))


def test_three_nodes_close_a_loop_and_survive_a_retrieval_restart(session) -> None:  # noqa: F811
    # keyframe reuse off: the revisit must make new keyframes, where the retrieval node finds loops (with
    # reuse the tracker may take the start's keyframes when its drift is small, and no loop is needed)
    procs, h = session(slam={"tracking": {"reuse_keyframes": 0}})
    for name in ("mapper", "retrieval", "tracker"):
        procs.start(name)
    frames = _loop_frames()
    h.wait_subscribers(timeout=60, procs=procs)
    h.wait_for(lambda: _status(h, "retrieval_status"), 60, "the retrieval node's status", procs)
    t0 = time.time_ns()
    _stream(h, frames[:50], t0, period=0.25)
    h.wait_for(
        lambda: _status(h, "retrieval_status").get("keyframes_indexed", 0) >= 2,
        60,
        "indexed keyframes",
        procs,
    )
    assert (procs.tmp / "retrieval.pt").is_file()
    procs.stop("retrieval", signal.SIGKILL)
    # what the dead node indexed may be up to an autosave period old: whatever it lacks comes again
    h.clear("odom")
    during = _stream(h, frames[50:75], t0, period=0.25)
    h.wait_for(lambda: len(h.messages("odom")) >= 10, 60, "odometry while the retrieval node is down", procs)
    assert {_stamp_ns(m) for m in h.messages("odom")} <= set(during)
    procs.start("retrieval")
    h.wait_for(lambda: "recovered" in procs.log("retrieval"), 60, "the retrieval node to reload", procs)
    _stream(h, frames[75:], t0, period=0.25)
    h.wait_for(
        lambda: _status(h, "mapper_status").get("loop_edges", 0) >= 1, 90, "a loop edge in the mapper", procs
    )

    def accounted() -> bool:  # the last status counts every frame (its 1 Hz message may be a frame behind)
        st = _status(h, "tracker_status")
        done = st.get("processed", 0) + st.get("dropped", 0) + st.get("rejected", 0)
        return st.get("received", 0) >= len(frames) - 5 and st.get("received") == done

    h.wait_for(accounted, 20, "the tracker's status to count every frame", procs)
    # nothing lost to the restart: the keyframes made while the node was down were re-sent on its announcement
    h.wait_for(
        lambda: (
            _status(h, "retrieval_status").get("keyframes", 0) == _status(h, "tracker_status")["keyframes"]
        ),
        30,
        "every keyframe of the tracker in the retrieval database",
        procs,
    )
    tracker = _status(h, "tracker_status")
    assert tracker.get("features_resent", 0) >= 1, tracker
    # a real-time tracker keeps the newest image when busy: a loaded machine may drop a few, never many
    assert tracker["processed"] >= 0.9 * tracker["received"] and tracker["state"] == "tracking", tracker
    retrieval = _status(h, "retrieval_status")
    assert retrieval["loop_candidates"] >= 1 and retrieval.get("rejected", 0) == 0, retrieval

    def loop_markers() -> bool:  # published after the paths, so a moment after the status counts the edge
        msgs = h.messages("markers")
        return bool(msgs) and any(m.ns == "loops" and len(m.points) >= 2 for m in msgs[-1].markers)

    h.wait_for(loop_markers, 30, "the loop edge's markers", procs)
    for name in ("tracker", "mapper", "retrieval"):
        assert "Traceback" not in procs.log(name), procs.log(name)[-3000:]


def test_a_tracker_started_in_a_saved_map_localises_in_it(session) -> None:  # noqa: F811
    """The kidnapped robot over DDS: tracker and mapper map part of the loop and stop; both restart in the
    autosaved map (mapper ``load_on_start``, tracker ``map_path``), the camera is somewhere in that map: the
    tracker relocalises in it and continues the map's session, the mapper keeps its keyframes."""
    procs, h = session()
    frames = _loop_frames()
    for name in ("mapper", "tracker"):
        procs.start(name)
    h.wait_subscribers(timeout=60, procs=procs)
    t0 = time.time_ns()
    _stream(h, frames[:40], t0, period=0.25)
    h.wait_for(
        lambda: _status(h, "mapper_status").get("autosaved_keyframes", 0) >= 3, 60, "an autosave", procs
    )
    session_id = _status(h, "tracker_status")["session"]
    n_saved = _status(h, "mapper_status")["autosaved_keyframes"]
    for name in ("tracker", "mapper"):
        procs.stop(name)
    procs.params["tracker"]["map_path"] = str(procs.tmp / "map.pt")
    procs._write_params()
    h.clear("tracker_status")
    h.clear("mapper_status")
    h.clear("pose")
    for name in ("mapper", "tracker"):
        procs.start(name)
    h.wait_for(lambda: "localising in" in procs.log("tracker"), 60, "the tracker to load the map", procs)
    h.wait_subscribers(timeout=60, procs=procs)
    h.wait_for(lambda: h.pub_info.get_subscription_count() > 0, 60, "the tracker's camera_info reader", procs)
    # a reader can match a moment after its writer sees it, and a volatile message published before is lost:
    # offer the first frame (newer stamps each time) until the restarted tracker has processed one
    t1 = t0 + 100_000_000_000
    stamps = []
    deadline = time.monotonic() + 60
    while _status(h, "tracker_status").get("processed", 0) < 1 and time.monotonic() < deadline:
        stamps += _stream(h, frames[10:11], t1 + 10_000_000 * len(stamps), period=0.5)
    stamps += _stream(h, frames[11:25], t1 + 10_000_000 * len(stamps), period=0.25)
    h.wait_for(lambda: len(h.messages("pose")) >= 10, 60, "poses in the loaded map", procs)
    assert {_stamp_ns(m) for m in h.messages("pose")} <= set(stamps)
    tracker, mapper = _status(h, "tracker_status"), _status(h, "mapper_status")
    assert tracker["session"] == session_id and tracker["state"] == "tracking", tracker
    assert tracker.get("relocalised", 0) >= 1, tracker  # its first pose came from a relocalisation
    assert mapper.get("session") in (None, session_id) and mapper.get("keyframes", n_saved) >= n_saved, mapper
    assert "starting a new map" not in procs.log("mapper")
