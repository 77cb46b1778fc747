"""Config loading/validation and the frame-relative pose bookkeeping (no pipeline run needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from online3r_ros.geometry.lie import sim3_compose, sim3_exp, sim3_identity
from online3r_ros.slam.config import (
    ConfigError,
    SlamConfig,
    config_from_dict,
    config_to_dict,
    documented_yaml,
    load_config,
)
from online3r_ros.slam.frame_store import FrameStore

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_match_mast3r_slam_base_yaml():
    cfg = SlamConfig()
    # a few reference defaults from config/base.yaml (notes §8)
    assert cfg.matching.max_iter == 10 and cfg.matching.lambda_init == 1e-8
    assert cfg.matching.dist_thresh == 0.1 and cfg.matching.radius == 3 and cfg.matching.dilation_max == 5
    assert cfg.tracking.min_match_frac == 0.05 and cfg.tracking.max_iters == 50
    assert cfg.tracking.Q_conf == 1.5 and cfg.tracking.huber == 1.345
    assert cfg.tracking.match_frac_thresh == 0.333 and cfg.tracking.sigma_ray == 0.003
    assert cfg.tracking.sigma_dist == 10.0 and cfg.tracking.pixel_border == -10.0
    assert cfg.tracking.filtering_mode == "weighted_pointmap" and cfg.tracking.filtering_score == "median"
    assert cfg.local_opt.pin == 1 and cfg.local_opt.max_iters == 10 and cfg.local_opt.delta_norm == 1e-8
    assert cfg.local_opt.min_match_frac == 0.1
    assert cfg.reloc.min_match_frac == 0.3 and cfg.dataset.subsample == 1
    # the network source keeps every reference value (and switches Online3R's prompt tuning on); the RGB-D
    # source resolves its own once, at load
    assert load_config(overrides={"source": {"kind": "mast3r"}}) == SlamConfig().replace(
        source={"kind": "mast3r"}, tuning={"enabled": True}
    )


def test_source_dependent_keys_are_resolved_once_and_explicit_values_obeyed(tmp_path):
    rgbd = load_config()
    assert rgbd.tracking.match_frac_thresh == 0.5 and rgbd.source.points_per_frame == 3000
    assert rgbd.system.use_calib is True and rgbd.matching.radius == 2 and rgbd.matching.dilation_max == 1
    assert rgbd.tracking.sigma_depth == rgbd.local_opt.sigma_depth == 0.02
    assert rgbd.local_opt.sigma_pixel == 3.0 and rgbd.tracking.sigma_pixel == 1.0
    # a value equal to the reference default is obeyed, not replaced by the source's (the old rule did)
    p = tmp_path / "explicit.yaml"
    p.write_text("tracking:\n  match_frac_thresh: 0.333\nsystem:\n  use_calib: false\nsource:\n  radius: 3\n")
    with pytest.raises(ConfigError, match="source.radius"):
        load_config(p)
    p.write_text(
        "tracking:\n  match_frac_thresh: 0.333\nsystem:\n  use_calib: false\nmatching:\n  radius: auto\n"
    )
    cfg = load_config(p)
    assert (
        cfg.tracking.match_frac_thresh == 0.333 and cfg.system.use_calib is False and cfg.matching.radius == 2
    )
    # the resolved values are what a dump shows, and a dump loads back to the same configuration
    assert "  match_frac_thresh: 0.333\n" in documented_yaml(cfg) and "radius: auto" not in documented_yaml(
        cfg
    )
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="tracking.huber"):
        load_config(overrides={"tracking": {"huber": "auto"}})  # only source-dependent keys know auto


def test_shipped_yaml_is_the_documented_defaults():
    path = ROOT / "config" / "online3r.yaml"
    assert load_config(path) == load_config()
    assert path.read_text() == documented_yaml()
    assert load_config(path, overrides={"source": {"kind": "mast3r"}}).tracking.match_frac_thresh == 0.333


def test_yaml_overrides_and_scientific_notation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("tracking:\n  max_iters: 7\n  rel_error: 1e-4\nsource:\n  width: 160\n  height: 120\n")
    cfg = load_config(p)
    assert cfg.tracking.max_iters == 7 and cfg.tracking.rel_error == pytest.approx(1e-4)
    assert (cfg.source.width, cfg.source.height) == (160, 120)
    assert cfg.matching == load_config().matching  # untouched sections keep defaults


@pytest.mark.parametrize(
    "data, key, value",
    [
        ({"tracking": {"max_itres": 3}}, "tracking.max_itres", "3"),
        ({"trackin": {"max_iters": 3}}, "trackin", ""),
        ({"tracking": {"max_iters": 0}}, "tracking.max_iters", "0"),
        ({"tracking": {"match_frac_thresh": 1.5}}, "tracking.match_frac_thresh", "1.5"),
        ({"tracking": {"filtering_mode": "avg"}}, "tracking.filtering_mode", "avg"),
        ({"tracking": {"max_iters": 2.5}}, "tracking.max_iters", "2.5"),
        ({"reloc": {"strict": "yes"}}, "reloc.strict", "yes"),
        ({"tracking": {"sigma_ray": float("nan")}}, "tracking.sigma_ray", "nan"),
        ({"system": {"device": "gpu"}}, "system.device", "gpu"),
        ({"source": {"width": 100}}, "source.width", "100"),
    ],
)
def test_bad_keys_and_values_name_key_and_value(data, key, value):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    msg = str(exc.value)
    assert key in msg and value in msg


def test_load_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracking: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(notmap)


def test_replace_and_round_trip():
    cfg = SlamConfig().replace(tracking={"max_iters": 5}, system={"pose_group": "se3"})
    assert cfg.tracking.max_iters == 5 and cfg.system.pose_group == "se3"
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError):
        SlamConfig().replace(tracking={"huber": -1.0})


def _rand_sim3(g: torch.Generator, scale: float = 0.3) -> torch.Tensor:
    return sim3_exp(torch.randn(7, generator=g, dtype=torch.float64) * scale)


def test_frame_store_reanchors_with_keyframe_poses():
    g = torch.Generator().manual_seed(1)
    store = FrameStore(capacity=2)
    rel = [_rand_sim3(g) for _ in range(6)]
    anchors = [0, 0, 1, -1, 1, 2]
    for i, (k, r) in enumerate(zip(anchors, rel, strict=True)):
        store.append(0.1 * i, k, r if k >= 0 else None, reason="lost" if k < 0 else "")
    kf = torch.stack([sim3_identity(dtype=torch.float64), _rand_sim3(g), _rand_sim3(g)])
    idx, T = store.world_poses(kf)
    assert idx.tolist() == [0, 1, 2, 4, 5]
    for row, i in enumerate(idx.tolist()):
        torch.testing.assert_close(T[row], sim3_compose(kf[anchors[i]], rel[i]))
    # moving keyframes moves their frames, and only them
    kf2 = kf.clone()
    kf2[1] = _rand_sim3(g)
    _, T2 = store.world_poses(kf2)
    torch.testing.assert_close(T2[:2], T[:2])
    torch.testing.assert_close(T2[2], sim3_compose(kf2[1], rel[2]))
    assert store.unposed() == [(3, pytest.approx(0.3), "lost")]
    restored = FrameStore.from_state_dict(store.state_dict())
    torch.testing.assert_close(restored.world_poses(kf)[1], T)


def test_frame_store_rejects_bad_poses():
    store = FrameStore()
    with pytest.raises(ValueError):
        store.append(0.0, 0, torch.full((8,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError):
        store.append(0.0, 0, None)
    store.append(0.0, 2, sim3_identity(dtype=torch.float64))
    with pytest.raises(ValueError, match="keyframe 2"):
        store.world_poses(sim3_identity(2, dtype=torch.float64))
