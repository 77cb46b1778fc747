"""Keyframe reuse (``tracking.reuse_keyframes``): a camera that keeps revisiting a place keeps its map.

A camera orbiting the synthetic scene three times (RGB-D source, tracker and mapper in one process): where a
new keyframe is due on the second and third lap, the tracker reuses a keyframe of the first lap whose pose
the map already has right, so the map keeps the first lap's keyframes only (as a robot that stays in one
room must not grow its memory forever). The gate: where the map is not consistent with the frame (here a
tolerance no map meets), a new keyframe is made as without reuse.
"""

from __future__ import annotations

import pytest

from online3r_ros.eval.ate import compute_ate
from online3r_ros.slam.config import load_config
from online3r_ros.slam.runner import build_system, run_frames
from online3r_ros.synthetic import make_synthetic_sequence

LAP = 240  # frames per lap (1.5 deg and 1.8 cm per frame), every 4th processed


def _orbit(laps: int, **tracking) -> tuple:
    seq = make_synthetic_sequence(n_frames=LAP * laps, width=96, height=72, laps=float(laps), stride=4)
    system = build_system(load_config(overrides={"tracking": tracking}))
    run_frames(system, iter(seq))
    traj = system.trajectory()
    ate = compute_ate(traj.timestamps, traj.T_WC, *seq.gt_trajectory(), "se3")
    lap_of_keyframes = [int(round(t * seq.fps)) // LAP for t in system.backend.kf_stamps]
    return system, traj, ate, lap_of_keyframes, len(seq)


@pytest.mark.slow
def test_a_camera_orbiting_three_times_keeps_the_keyframes_of_its_first_lap() -> None:
    """Measured when written: 15 keyframes, all of lap 1, 31 frames reused one, ATE 2.3 mm; without reuse 46
    keyframes (16 in lap 1) and 4x the time."""
    system, traj, ate, laps, n = _orbit(3)
    assert len(traj) == n  # every frame posed
    assert set(laps) == {0}, laps  # no keyframe after the first lap
    assert system.frontend.n_reused >= 20  # laps 2 and 3: ~15 keyframe decisions each
    assert ate.rmse <= 0.01, ate.rmse
    assert system.backend.num_keyframes == system.frontend.num_keyframes


@pytest.mark.slow
def test_no_keyframe_is_reused_where_the_map_disagrees_with_the_frame() -> None:
    """With a tolerance no map meets, every due keyframe is made: the second lap adds keyframes, none
    reused."""
    system, traj, ate, laps, n = _orbit(2, reuse_tolerance=1e-9)
    assert len(traj) == n
    assert system.frontend.n_reused == 0
    assert laps.count(1) >= 10, laps
    assert ate.rmse <= 0.01, ate.rmse
