"""``online3r run`` end to end on tiny generated datasets, and its handling of bad input (exit codes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from online3r_ros.cli.main import (
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_NO_TRAJECTORY,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    main,
)
from online3r_ros.eval import read_ply, read_tum
from online3r_ros.synthetic import make_synthetic_sequence, save_seven_scenes, save_tum

W, H = 96, 72
N = 16


@pytest.fixture(scope="module")
def seven_scenes(tmp_path_factory) -> Path:
    seq = make_synthetic_sequence(width=W, height=H, seed=1, max_frames=N)
    return save_seven_scenes(seq, tmp_path_factory.mktemp("data") / "seq-01")


@pytest.fixture()
def dataset(seven_scenes, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(seven_scenes, tmp_path / "seq"))


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "small.yaml"
    p.write_text(f"source:\n  width: {W}\n  height: {H}\ntracking:\n  match_frac_thresh: 0.85\n")
    return p


def _run(*args) -> int:
    return main(["run", *map(str, args), "--quiet"])


def test_run_writes_all_outputs(seven_scenes, small_config, tmp_path):
    out = tmp_path / "out"
    assert _run(seven_scenes, "--out", out, "--config", small_config) == EXIT_OK
    for name in ("frames.tum", "keyframes.tum", "map.ply", "metrics.json", "timing.json"):
        assert (out / name).is_file(), name
    t, T = read_tum(out / "frames.tum")
    assert len(t) == N and np.all(np.diff(t) > 0)
    kt, _ = read_tum(out / "keyframes.tum")
    assert 1 <= len(kt) <= N and set(np.round(kt, 6)) <= set(np.round(t, 6))
    first = (out / "frames.tum").read_text().splitlines()[0]
    assert first.startswith("#") and "camera-to-world" in first
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_with_pose"] == N and metrics["frames_without_pose"] == 0
    for what in ("frames", "keyframes"):
        for al in ("se3", "sim3"):
            assert metrics["ate"][what][al]["rmse"] < 0.01, (what, al)
    assert metrics["ate"]["frames"]["se3"]["n_matched"] == N
    timing = json.loads((out / "timing.json").read_text())
    assert timing["n_frames"] == N and timing["fps"] > 0
    assert {"prepare", "track", "total"} <= set(timing["stages"])
    assert timing["peak_memory"]["cpu_max_rss_mb"] > 0
    ply = read_ply(out / "map.ply")
    assert len(ply["points"]) > 100 and ply["colors"].dtype == np.uint8
    assert len(ply["points"]) == metrics["map_points"]
    assert (out / "config.yaml").is_file()


def test_mapper_thread_run(seven_scenes, small_config, tmp_path):
    out = tmp_path / "out"
    assert _run(seven_scenes, "--out", out, "--config", small_config, "--mapper-thread") == EXIT_OK
    assert "mapper_thread: true" in (out / "config.yaml").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_with_pose"] == N and metrics["ate"]["frames"]["se3"]["rmse"] < 0.01
    kt, _ = read_tum(out / "keyframes.tum")
    assert len(kt) == metrics["n_keyframes"] >= 1  # the mapper's last keyframes are in the outputs


def test_stride_and_max_frames(seven_scenes, small_config, tmp_path):
    out = tmp_path / "out"
    assert _run(seven_scenes, "--out", out, "--config", small_config, "--stride", 2, "--max-frames", 5) == 0
    t, _ = read_tum(out / "frames.tum")
    assert len(t) == 5 and np.allclose(np.diff(t), 2 / 30.0)


def test_tum_layout_and_intrinsics_override(tmp_path, small_config):
    seq = make_synthetic_sequence(width=W, height=H, seed=1, max_frames=8)
    folder = save_tum(seq, tmp_path / "tum")
    K = seq.K
    out = tmp_path / "out"
    intr = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    assert _run(folder, "--out", out, "--config", small_config, "--intrinsics", intr) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layout"] == "tum" and metrics["ate"]["frames"]["se3"]["rmse"] < 0.01


def test_missing_dataset_and_bad_options(tmp_path, small_config, capsys):
    assert _run(tmp_path / "nope", "--out", tmp_path / "o") == EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--stride", "0"])
    assert exc.value.code == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_config_errors_exit_4(seven_scenes, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracking:\n  max_iters: -3\n")
    assert _run(seven_scenes, "--out", tmp_path / "o", "--config", bad) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "tracking.max_iters" in err and "-3" in err
    assert _run(seven_scenes, "--out", tmp_path / "o", "--config", tmp_path / "missing.yaml") == EXIT_CONFIG
    assert _run(seven_scenes, "--out", tmp_path / "o", "--source", "mast3r") == EXIT_CONFIG
    assert "--checkpoint" in capsys.readouterr().err
    ckpt = tmp_path / "missing.pth"
    assert (
        _run(seven_scenes, "--out", tmp_path / "o", "--source", "mast3r", "--checkpoint", ckpt) == EXIT_INPUT
    )


def test_wrong_intrinsics_are_rejected(seven_scenes, tmp_path, capsys):
    # intrinsics for a 640x480 image on 64x48 images: principal point outside the image
    assert _run(seven_scenes, "--out", tmp_path / "o", "--intrinsics", "585,585,320,240") == EXIT_INPUT
    assert "principal point" in capsys.readouterr().err
    assert _run(seven_scenes, "--out", tmp_path / "o", "--intrinsics", "585,-1,32,24") == EXIT_INPUT
    assert not (tmp_path / "o" / "frames.tum").exists()


def test_damaged_frames_are_skipped_and_reported(dataset, small_config, tmp_path, capsys):
    # unreadable colour image, all-invalid depth, missing depth file
    (dataset / "frame-000005.color.png").write_bytes(b"not a png")
    cv2.imwrite(str(dataset / "frame-000007.depth.png"), np.zeros((H, W), np.uint16))
    (dataset / "frame-000009.depth.png").unlink()
    out = tmp_path / "out"
    code = main(["run", str(dataset), "--out", str(out), "--config", str(small_config)])
    assert code == EXIT_OK
    err = capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    skipped = {Path(s["path"]).name.split(".")[0] for s in metrics["skipped"]}
    assert {"frame-000005", "frame-000007", "frame-000009"} <= skipped
    assert metrics["frames_skipped_by_reader"] >= 3 and "skipped" in err
    t, _ = read_tum(out / "frames.tum")
    assert len(t) == N - 3
    assert not np.any(np.isclose(t[:, None], np.array([5, 7, 9]) / 30.0).any(axis=1))
    assert metrics["ate"]["frames"]["se3"]["rmse"] < 0.01


def test_all_invalid_depth_is_an_input_error(dataset, tmp_path, capsys):
    for p in dataset.glob("*.depth.png"):
        cv2.imwrite(str(p), np.zeros((H, W), np.uint16))
    assert _run(dataset, "--out", tmp_path / "o") == EXIT_INPUT
    assert "no usable frames" in capsys.readouterr().err
    assert not (tmp_path / "o" / "frames.tum").exists()


def test_nan_depth_frames_never_get_a_wrong_pose(dataset, small_config, tmp_path):
    """A frame whose depth is all NaN (as a float TIFF/EXR or a driver would deliver) never gets a pose."""
    from online3r_ros.datasets import open_dataset
    from online3r_ros.slam.config import load_config
    from online3r_ros.slam.runner import build_system, run_frames, write_outputs

    frames = list(open_dataset(dataset))
    frames[6] = type(frames[6])(**{**frames[6].__dict__, "depth": np.full((H, W), np.nan, np.float32)})
    system = build_system(load_config(small_config))
    result = run_frames(system, frames)
    unposed = system.unposed_frames()
    assert [i for i, _, _ in unposed] == [6]
    paths = write_outputs(result, tmp_path / "out")
    t, _ = read_tum(paths["frames"])
    assert len(t) == N - 1 and not np.any(np.isclose(t, frames[6].timestamp))


def test_non_monotonic_timestamps_are_skipped(tmp_path, small_config):
    seq = make_synthetic_sequence(width=W, height=H, seed=1, max_frames=8)
    folder = save_tum(seq, tmp_path / "tum")
    lines = (folder / "rgb.txt").read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    body[4], body[5] = body[5], body[4]  # frame 5 listed before frame 4
    (folder / "rgb.txt").write_text("\n".join([ln for ln in lines if ln.startswith("#")] + body) + "\n")
    out = tmp_path / "out"
    assert _run(folder, "--out", out, "--config", small_config) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("monotonic" in s["reason"] for s in metrics["skipped"])
    t, _ = read_tum(out / "frames.tum")
    assert np.all(np.diff(t) > 0)


def test_parser_has_run_subcommand():
    parser = build_parser()
    args = parser.parse_args(["run", "x", "--out", "y", "--source", "depth", "--device", "cpu"])
    assert args.command == "run" and callable(args.func)


def test_unposed_run_exits_1(seven_scenes, tmp_path, monkeypatch):
    """If no frame can be posed the trajectories stay empty and the exit code says so."""
    from online3r_ros.slam import frontend

    def never(self, inp, watch):
        return self._no_pose(inp.sf, frontend.SlamState.INIT, "test: initialisation refused", {})

    monkeypatch.setattr(frontend.TrackerFrontend, "_initialise", never)
    out = tmp_path / "out"
    assert _run(seven_scenes, "--out", out) == EXIT_NO_TRAJECTORY
    t, _ = read_tum(out / "frames.tum")
    assert len(t) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_without_pose"] == N and metrics["unposed"][0]["reason"].startswith("test:")
