"""Tests for online3r_ros.slam.fusion: every filtering mode's rule."""

import math

import pytest
import torch

from online3r_ros.slam.fusion import (
    FILTERING_MODES,
    average_confidence,
    cartesian_to_spherical,
    fuse_pointmap,
    init_fusion_state,
    pointmap_score,
    spherical_to_cartesian,
)


def _pm(seed: int, shape=(4, 5)):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    X[..., 2] = X[..., 2].abs() + 1.0
    C = torch.rand(*shape, generator=g, dtype=torch.float64) * 3 + 1
    return X, C


def test_init_copies_and_counts():
    X, C = _pm(0)
    s = fuse_pointmap(None, X, C)
    assert torch.equal(s.X, X) and torch.equal(s.C, C)
    assert s.X.data_ptr() != X.data_ptr()
    assert int(s.N) == 1 and int(s.N_updates) == 1


def test_weighted_pointmap_rule_and_average_confidence():
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    X3, C3 = _pm(3)
    s = fuse_pointmap(None, X1, C1)
    s = fuse_pointmap(s, X2, C2)
    s = fuse_pointmap(s, X3, C3)
    Csum = C1 + C2 + C3
    expect = (C1[..., None] * X1 + C2[..., None] * X2 + C3[..., None] * X3) / Csum[..., None]
    torch.testing.assert_close(s.X, expect)
    torch.testing.assert_close(s.C, Csum)
    assert int(s.N) == 3 and int(s.N_updates) == 3
    torch.testing.assert_close(s.average_confidence(), Csum / 3)


def test_weighted_pointmap_zero_confidence_keeps_old_and_no_nan():
    X1, _ = _pm(1)
    X2, _ = _pm(2)
    zeros = torch.zeros(X1.shape[:-1], dtype=X1.dtype)
    s = fuse_pointmap(fuse_pointmap(None, X1, zeros), X2, zeros)
    assert torch.isfinite(s.X).all()
    torch.testing.assert_close(s.X, X1)


def test_first_mode_replaces_only_while_n_updates_is_one():
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    X3, C3 = _pm(3)
    s = fuse_pointmap(None, X1, C1, mode="first")
    s = fuse_pointmap(s, X2, C2, mode="first")  # N_updates == 1 -> replaced (reference rule)
    torch.testing.assert_close(s.X, X2)
    s = fuse_pointmap(s, X3, C3, mode="first")  # now kept
    torch.testing.assert_close(s.X, X2)
    torch.testing.assert_close(s.C, C2)
    assert int(s.N) == 1 and int(s.N_updates) == 3


def test_recent_mode_always_replaces():
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    s = fuse_pointmap(fuse_pointmap(None, X1, C1, mode="recent"), X2, C2, mode="recent")
    torch.testing.assert_close(s.X, X2)
    torch.testing.assert_close(s.C, C2)
    assert int(s.N) == 1 and int(s.N_updates) == 2


@pytest.mark.parametrize("kind", ["median", "mean"])
def test_best_score_replaces_only_on_higher_score(kind):
    X1, C1 = _pm(1)
    X2, _ = _pm(2)
    X3, _ = _pm(3)
    s = fuse_pointmap(None, X1, C1, mode="best_score", score_kind=kind)
    torch.testing.assert_close(s.score, pointmap_score(C1, kind))
    s = fuse_pointmap(s, X2, C1 * 0.5, mode="best_score", score_kind=kind)  # lower -> kept
    torch.testing.assert_close(s.X, X1)
    s = fuse_pointmap(s, X3, C1 * 2.0, mode="best_score", score_kind=kind)  # higher -> replaced
    torch.testing.assert_close(s.X, X3)
    torch.testing.assert_close(s.score, pointmap_score(C1 * 2.0, kind))


def test_best_score_median_vs_mean_differ():
    C = torch.tensor([[1.0, 1.0, 1.0, 100.0]])
    assert float(pointmap_score(C, "median")) == 1.0
    assert float(pointmap_score(C, "mean")) == pytest.approx(25.75)


def test_indep_conf_takes_per_pixel_higher_confidence():
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    s = fuse_pointmap(fuse_pointmap(None, X1, C1, mode="indep_conf"), X2, C2, mode="indep_conf")
    better = C2 > C1
    assert better.any() and (~better).any()
    torch.testing.assert_close(s.X, torch.where(better[..., None], X2, X1))
    torch.testing.assert_close(s.C, torch.maximum(C1, C2))


def test_spherical_roundtrip():
    X, _ = _pm(5, (50,))
    torch.testing.assert_close(spherical_to_cartesian(cartesian_to_spherical(X)), X)


def test_weighted_spherical_matches_spherical_average():
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    s = fuse_pointmap(
        fuse_pointmap(None, X1, C1, mode="weighted_spherical"), X2, C2, mode="weighted_spherical"
    )
    S1, S2 = cartesian_to_spherical(X1), cartesian_to_spherical(X2)
    w = (C2 / (C1 + C2))[..., None]
    dphi = torch.remainder(S2[..., 1] - S1[..., 1] + math.pi, 2 * math.pi) - math.pi
    S = S1 + w * (S2 - S1)
    S[..., 1] = S1[..., 1] + w[..., 0] * dphi
    torch.testing.assert_close(s.X, spherical_to_cartesian(S))
    torch.testing.assert_close(s.C, C1 + C2)
    # the radius is the weighted mean of radii (unlike the Cartesian average)
    torch.testing.assert_close(s.X.norm(dim=-1), (C1 * X1.norm(dim=-1) + C2 * X2.norm(dim=-1)) / (C1 + C2))


def test_weighted_spherical_azimuth_wraps():
    # two points either side of the ±pi cut: the mean direction must stay near -x, not flip to +x
    a = torch.tensor([[-1.0, 1e-3, 0.0]], dtype=torch.float64)
    b = torch.tensor([[-1.0, -1e-3, 0.0]], dtype=torch.float64)
    c = torch.ones(1, dtype=torch.float64)
    s = fuse_pointmap(fuse_pointmap(None, a, c, mode="weighted_spherical"), b, c, mode="weighted_spherical")
    r = math.sqrt(1.0 + 1e-6)
    torch.testing.assert_close(s.X, torch.tensor([[-r, 0.0, 0.0]], dtype=torch.float64))


def test_batched_keyframes_are_independent():
    X1, C1 = _pm(1, (2, 6))
    X2, _ = _pm(2, (2, 6))
    C2 = C1.clone()
    C2[0] *= 2.0  # higher score for keyframe 0 only
    C2[1] *= 0.5
    s = init_fusion_state(X1, C1, mode="best_score", batch_ndim=1)
    s = fuse_pointmap(s, X2, C2, mode="best_score")
    torch.testing.assert_close(s.X[0], X2[0])
    torch.testing.assert_close(s.X[1], X1[1])
    assert s.N.shape == (2,) and s.N_updates.tolist() == [2, 2]
    sw = fuse_pointmap(init_fusion_state(X1, C1, batch_ndim=1), X2, C2)
    torch.testing.assert_close(average_confidence(sw.C, sw.N), (C1 + C2) / 2)


@pytest.mark.parametrize("mode", FILTERING_MODES)
def test_every_mode_keeps_shapes_and_does_not_mutate_input(mode):
    X1, C1 = _pm(1)
    X2, C2 = _pm(2)
    s0 = fuse_pointmap(None, X1, C1, mode=mode)
    X_before = s0.X.clone()
    s1 = fuse_pointmap(s0, X2, C2, mode=mode)
    assert s1.X.shape == X1.shape and s1.C.shape == C1.shape
    torch.testing.assert_close(s0.X, X_before)
    assert int(s1.N_updates) == 2


def test_bad_inputs_raise_clear_errors():
    X, C = _pm(1)
    with pytest.raises(ValueError, match="filtering_mode"):
        fuse_pointmap(None, X, C, mode="nope")
    with pytest.raises(ValueError, match="C must have shape"):
        fuse_pointmap(None, X, C[:, :2])
    s = fuse_pointmap(None, X, C)
    with pytest.raises(ValueError, match="differs"):
        fuse_pointmap(s, X[:2], C[:2])
