"""The library half of an evaluation (what ``bag evaluate`` calls): a :class:`RunOutputs` with latencies,
memory samples, keyframes and loop closures -> metrics.json and report.md with every plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from online3r_ros.eval.scoring import RunOutputs, load_estimate, score_run, write_evaluation


def _circle(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A camera on a 2 m circle at 0.5 m/s, 10 Hz, with small rotations."""
    rng = np.random.default_rng(seed)
    t = 100.0 + np.arange(n) * 0.1
    a = 0.25 * (t - t[0])
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, 3] = np.stack([2 * np.cos(a), 0.1 * np.sin(3 * a), 2 * np.sin(a)], 1)
    T[:, :3, :3] = Rotation.from_rotvec(
        np.outer(a, [0, 1, 0]) + 0.01 * rng.standard_normal((n, 3))
    ).as_matrix()
    return t, T


def test_score_and_report_with_latency_memory_and_loops(tmp_path):
    t, T = _circle()
    est = T.copy()
    est[:, :3, 3] += 0.02 * np.random.default_rng(1).standard_normal((len(t), 3))
    kf = np.arange(0, len(t), 30)
    rng = np.random.default_rng(2)
    run = RunOutputs(
        frames=(t, est),
        keyframes=(t[kf], est[kf]),
        loop_edges=[(0, 9), (1, 8)],
        posed=len(t),
        lost=4,
        relocalised=2,
        drops=5,
        latency_ms=rng.gamma(4.0, 10.0, len(t)),
        memory={"tracker": (t, 500 + 0.1 * np.arange(len(t))), "mapper": (t[::10], np.full(30, 800.0))},
        source="synthetic",
    )
    ev = score_run(run, (t, T), fail_above={"ate": 0.1, "latency_p90": 1e4, "drops": 4})
    m = ev.metrics
    assert not ev.passed and [v.name for v in ev.verdicts if v.failed] == ["drops"]
    assert m["n_loop_closures"] == 2 and m["frames_dropped"] == 5 and m["frames_relocalised"] == 2
    assert m["latency_ms"]["p50"] == pytest.approx(np.percentile(run.latency_ms, 50))
    assert m["memory_rss_mb"]["tracker"]["max"] == pytest.approx(529.9)
    assert np.allclose(ev.loop_times, [t[kf[9]], t[kf[8]]])
    assert ev.error is not None and ev.error[1].shape == (len(t),)
    assert np.sqrt(np.mean(ev.error[1] ** 2)) == pytest.approx(m["ate"]["frames"]["se3"]["rmse"], rel=1e-9)
    paths = write_evaluation(tmp_path, ev, title="synthetic")
    assert set(paths) == {"metrics", "trajectory", "error", "latency", "memory", "report"}
    report = (tmp_path / "report.md").read_text()
    for needle in (
        "![latency histogram](latency.png)",
        "![memory per node](memory.png)",
        "loop closures | 2",
    ):
        assert needle in report
    assert "Overall: **FAIL**" in report and "| `drops` |" in report
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["passed"] is False and data["thresholds"]["fail_above"]["drops"] == 4
    assert data["verdicts"][0]["line"].startswith("ate: ")


def test_load_estimate_reads_trajectory_files(tmp_path):
    from online3r_ros.eval import write_tum
    from online3r_ros.eval.scoring import RunFolderError

    t, T = _circle(20)
    write_tum(tmp_path / "x.tum", t, T)
    run = load_estimate(tmp_path / "x.tum")
    assert run.posed == 20 and run.keyframes is None and np.allclose(run.frames[0], t)
    with pytest.raises(RunFolderError, match="does not exist"):
        load_estimate(tmp_path / "nope.tum")
