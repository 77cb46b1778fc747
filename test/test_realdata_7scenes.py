"""Real-data regressions: the pipeline with the RGB-D source on the first 60 frames of 7-Scenes redkitchen
(../shared/data), and on all 500 frames against the issue's ATE target. Skipped when the data folder is
absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from online3r_ros.cli.main import main
from online3r_ros.eval import read_tum

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"
N_FRAMES = 60
# Measured 2026-11 (default config: 160x120, 3000 ICP points): 0.005 m on these 60 frames; the bound
# leaves room for platform differences but catches a broken tracker or backend (Open3D: ~0.008 m here).
ATE_BOUND_M = 0.012

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} not present"),
]


def test_redkitchen_60_frames_ate_bound(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(DATA), "--out", str(out), "--max-frames", str(N_FRAMES), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_with_pose"] == N_FRAMES and metrics["frames_without_pose"] == 0
    ate = metrics["ate"]["frames"]
    assert ate["se3"]["n_matched"] == N_FRAMES
    assert ate["se3"]["rmse"] < ATE_BOUND_M, ate["se3"]
    assert ate["sim3"]["rmse"] <= ate["se3"]["rmse"] + 1e-9
    t, _ = read_tum(out / "frames.tum")
    assert len(t) == N_FRAMES
    kt, _ = read_tum(out / "keyframes.tum")
    assert len(kt) >= 1
    assert json.loads((out / "timing.json").read_text())["n_frames"] == N_FRAMES


# The target on all 500 frames (RGB-D source, default config). Measured 2026-12 on the project's
# 2-core machine: 0.0289 m SE(3), 0.0283 m Sim(3), 10 keyframes; ~35 s. The pipeline is deterministic, so a
# change here means the tracking or the backend changed.
ATE_TARGET_500_M = 0.030


def test_redkitchen_500_frames_meets_the_ate_target(tmp_path):
    out = tmp_path / "out500"
    assert main(["run", str(DATA), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_frames"] == 500 and metrics["frames_with_pose"] == 500
    assert metrics["states"] == {"tracking": 500}
    ate = metrics["ate"]["frames"]
    assert ate["se3"]["n_matched"] == 500
    assert ate["se3"]["rmse"] <= ATE_TARGET_500_M, ate["se3"]
    assert ate["sim3"]["rmse"] <= ate["se3"]["rmse"] + 1e-9
    # the trajectory's shape agrees with the ground truth's: the Sim(3) alignment barely rescales it
    assert abs(ate["sim3"]["scale"] - 1.0) < 0.03, ate["sim3"]
