"""Every configuration key reaches the code that uses it: changing it changes what the pipeline does.

The list of keys comes from the configuration schema itself (:data:`online3r_ros.slam.config._SECTIONS`), so
a new key without a probe here fails :func:`test_every_key_has_a_probe`. Each probe runs one part of the
pipeline (a whole small RGB-D run, one tracking step with the matching cost, a source, a dataset run, ...)
and returns a fingerprint; :func:`test_changing_the_key_changes_the_behaviour` checks that the fingerprint
with the changed value differs from the one with the base configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_mast3r import P1_KWARGS, damped_p1_model

from online3r_ros.geometry.lie import sim3_compose, sim3_inverse
from online3r_ros.slam import components
from online3r_ros.slam.config import _SECTIONS, load_config
from online3r_ros.slam.runner import MissingComponentError, build_source, build_system, run_dataset
from online3r_ros.slam.tracking import FrameTracker, TrackingKeyframe
from online3r_ros.sources.base import AsymmetricPrediction, Pointmap
from online3r_ros.sources.rgbd import RGBDSource
from online3r_ros.synthetic import make_loop_sequence, make_synthetic_sequence
from online3r_ros.synthetic.sequence import save_seven_scenes

PARITY = Path(__file__).resolve().parents[1] / ".." / "shared" / "parity" / "retrieval"
W, H = 64, 48
BASE = {"source": {"width": W, "height": H}, "tracking": {"match_frac_thresh": 0.75}}  # keyframes close by


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if torch.is_tensor(p):
            p = p.detach().cpu().numpy()
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- probes
@cache
def _frames() -> tuple:
    """18 synthetic RGB-D frames (fast motion: a keyframe every few frames), frames 9-11 garbage (lost)."""
    seq = list(make_synthetic_sequence(n_frames=160, width=W, height=H, seed=0, max_frames=18))
    rng = np.random.default_rng(0)
    for i in (9, 10, 11):
        seq[i] = replace(seq[i], depth=rng.uniform(0.3, 4.0, seq[i].depth.shape).astype(np.float32))
    return tuple(seq)


def probe_pipeline(cfg) -> str:
    """A whole in-process run: states, poses, keyframes, edges, the map (points, colours), residency."""
    system = build_system(cfg)
    outs = [system.process(f) for f in _frames()]
    traj = system.trajectory()
    dmap = system.dense_map()
    store = system.keyframes
    return _digest(
        [(o.state.value, o.reason[:12], o.session != outs[0].session) for o in outs],
        [o.match.get("model_keyframes") for o in outs],
        traj.poses,
        system.backend.edges(),
        system.num_keyframes,
        dmap.points,
        dmap.colors,
        [store.is_resident(i) for i in range(len(store))],
    )


class PoseFreeSource(RGBDSource):
    """A network-like source for the matching cost: predictions do not depend on the pose guess; the
    keyframe's points reach the frame through the true relative pose plus a smooth deformation (so the
    iterative projective matching has work to do)."""

    pose_dependent = False

    def __init__(self) -> None:
        super().__init__(width=W, height=H, descriptors=True)

    def predict_asymmetric(self, frame, keyframe, T_CkCf_guess=None):
        T = sim3_compose(sim3_inverse(frame.cache["T_WC"]), keyframe.cache["T_WC"])
        X = keyframe.cache["X"]
        warp = 1.0 + 0.02 * torch.sin(torch.linspace(0, 6.0, X.shape[1]))[None, :, None]
        own = Pointmap(frame.cache["X"], frame.cache["C"], frame.cache["D"], frame.cache["Q"])
        moved = Pointmap(
            torch.einsum("ij,hwj->hwi", _rot(T), X * warp) + T[:3],
            keyframe.cache["C"],
            keyframe.cache["D"],
            keyframe.cache["Q"],
        )
        return AsymmetricPrediction(own, moved)


def _rot(T: torch.Tensor) -> torch.Tensor:
    from online3r_ros.geometry.lie import quat_to_matrix

    return quat_to_matrix(T[3:7].double()).float() * T[7]


def probe_matching(cfg) -> str:
    """One frame tracked with the matching cost of a pose-free source (match, gates, solver)."""
    src = PoseFreeSource()
    seq = _frames()
    frames = []
    for f in (seq[0], seq[3]):
        sf = src.prepare(f.rgb, depth=f.depth, K=f.K, index=f.index, timestamp=f.timestamp)
        sf.cache["T_WC"] = _pose(f)
        frames.append(sf)
    kf = TrackingKeyframe(frames[0], _pose(seq[0]), frames[0].cache["X"], frames[0].cache["C"], kf_id=0)
    cfg = replace(cfg, system=replace(cfg.system, pose_group="sim3"))
    res = FrameTracker(src, cfg, "sim3").track(frames[1], kf, _pose(seq[1]))
    return _digest(res.state.value, res.T_CkCf, res.summary(), res.C_kf)


def _pose(frame) -> torch.Tensor:
    from online3r_ros.geometry.lie import sim3_from_matrix

    return sim3_from_matrix(torch.from_numpy(frame.pose_gt).float())


def probe_rgbd_source(cfg) -> str:
    """The RGB-D source's prepared frame (resolution, depth range and scale, confidence)."""
    f = _frames()[0]
    sf = build_source(cfg).prepare(f.rgb, depth=f.depth, K=f.K)
    return _digest(sf.image.shape, sf.depth, sf.cache["C"], sf.K)


@cache
def _checkpoint(tmp: str) -> str:
    from online3r_ros.model.checkpoint import save_checkpoint

    path = f"{tmp}/tiny.pth"
    save_checkpoint(path, damped_p1_model().state_dict(), P1_KWARGS, layout="pth")
    return path


def probe_mast3r_source(cfg) -> str:
    """The MASt3R source built from the config: its network input, engine precision and cache size."""
    try:
        src = build_source(cfg)
    except (MissingComponentError, ValueError) as exc:
        return f"{type(exc).__name__}"
    f = _frames()[0]
    sf = src.prepare(f.rgb, K=f.K)
    engine = src.engine
    return _digest(
        type(src).__name__,
        sf.image.shape,
        src.calibrated,
        engine.precision,
        engine.cache_size,
        engine.cuda_graphs,
    )


def probe_tuning(cfg) -> str:
    """Prompt tuning built from the config: two keyframes tuned in line (prompts, losses, the network's
    checkpointing switch), then a stopped background tuner offered three keyframes (its backlog)."""
    from types import SimpleNamespace

    from online3r_ros.model.inference import NetImage
    from online3r_ros.tuning import make_online_tuning

    src = build_source(cfg)
    hook = make_online_tuning(cfg, src, background=False)
    if hook is None:
        return "off"
    g = torch.Generator().manual_seed(0)
    nets = [
        NetImage(i, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.tensor([[32, 32]])) for i in range(4)
    ]
    fused = [(torch.rand(32, 32, 3, generator=g), 1 + torch.rand(32, 32, generator=g)) for _ in nets]
    backend = SimpleNamespace(
        source=SimpleNamespace(net_image=lambda frame: frame),
        kf_frames=nets,
        keyframes=SimpleNamespace(get=lambda i, device=None: SimpleNamespace(X=fused[i][0], C=fused[i][1])),
    )
    for kf in (1, 2, 3):
        hook(backend, SimpleNamespace(kf_id=kf))
    queued = make_online_tuning(cfg, src, background=True)
    queued.close()
    for kf in (1, 2, 3):
        queued(backend, SimpleNamespace(kf_id=kf))
    history = [{k: v for k, v in u.items() if k != "time_ms"} for u in hook.stats.history]
    return _digest(hook.tuner.prompts, history, src.engine.model.grad_checkpointing, queued.stats.dropped)


def probe_source_kind(cfg) -> str:
    try:
        return type(build_source(cfg)).__name__ + str(build_source(cfg).device)
    except (MissingComponentError, ValueError, OSError) as exc:
        return type(exc).__name__


def probe_determinism(cfg) -> str:
    """What ``system.deterministic`` switches on a CUDA device (a process-global flag, restored)."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        components.apply_determinism(cfg.system.seed, cfg.system.deterministic, "cuda")
        return str(torch.are_deterministic_algorithms_enabled())
    finally:
        torch.use_deterministic_algorithms(before)


def probe_mapper_host(cfg) -> str:
    """The thread each keyframe was integrated in (the caller's, or the mapper thread)."""
    import threading

    from online3r_ros.slam.backend import BackendHooks
    from online3r_ros.slam.system import SlamSystem

    names: list[str] = []
    hooks = BackendHooks(on_keyframe=lambda backend, update: names.append(threading.current_thread().name))
    system = SlamSystem(cfg, build_source(cfg), hooks)
    for f in _frames():
        system.process(f)
    system.close()
    return _digest(sorted(set(names)), len(names))


@cache
def _dataset(tmp: str) -> str:
    seq = make_synthetic_sequence(n_frames=160, width=W, height=H, seed=0, max_frames=8)
    return str(save_seven_scenes(seq, f"{tmp}/seq"))


def probe_dataset(cfg, tmp: str) -> str:
    result = run_dataset(_dataset(tmp), cfg)
    return _digest(result.n_input, result.system.trajectory().timestamps)


@cache
def _place_frames() -> tuple:
    """Six 320x240 views of the loop sequence: five along the path, the last near the first (a revisit)."""
    seq = make_loop_sequence(n_frames=120, width=320, height=240, seed=0)
    return tuple(seq[i] for i in (0, 5, 10, 15, 20, 2))


@cache
def _codebook_file(tmp: str) -> str:
    from online3r_ros.retrieval.codebook import train_codebook

    desc = torch.nn.functional.normalize(
        torch.randn(2000, 128, generator=torch.Generator().manual_seed(0)), dim=1
    )
    path = f"{tmp}/other_codebook.npz"
    train_codebook(desc.numpy(), 64, seed=0, kind="sift").save(path)
    return path


def _places(cfg):
    from online3r_ros.slam.places import make_describer, make_place_recognizer

    try:
        source = build_source(cfg)
        return make_describer(cfg, source), make_place_recognizer(cfg), source
    except (MissingComponentError, ValueError, OSError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:60]}", None, None


def probe_places(cfg) -> str:
    """Features of six views, the loop candidates as they join the database, and the last view's
    candidates with their RANSAC reports."""
    describe, places, source = _places(cfg)
    if places is None or describe is None:
        return str(describe)
    frames = _place_frames()
    sfs = [source.prepare(f.rgb, K=f.K) if describe.kind == "mast3r" else None for f in frames]
    feats = [describe(sf, f.rgb, f.depth, f.K) for sf, f in zip(sfs, frames, strict=True)]
    loops = [places.loop_candidates(i, f, cfg.retrieval.exclude_recent) for i, f in enumerate(feats[:-1])]
    cands = places.candidates(feats[-1], verified=False)
    return _digest(
        [(f.desc, f.points) for f in feats],
        [[(c.kf_id, round(c.score, 6)) for c in found] for found in loops],
        [(c.kf_id, round(c.score, 6), c.pose and (c.pose.n_inliers, c.pose.ok)) for c in cands],
    )


def probe_reuse(cfg) -> str:
    """The tracker on two laps of an orbit (it revisits every place): its keyframes, reuses and poses."""
    from online3r_ros.slam.frontend import TrackerFrontend

    frontend = TrackerFrontend(cfg, build_source(cfg))
    lap = make_synthetic_sequence(n_frames=240, width=W, height=H, seed=0, laps=2.0, stride=4)
    steps = [frontend.process(f.rgb, f.depth, f.K, f.timestamp) for f in lap]
    return _digest(frontend.num_keyframes, frontend.n_reused, [s.T_WC for s in steps])


def probe_loop_hook(cfg) -> str:
    """Whether the in-process system closes loops (its backend's loop-candidate hook)."""
    system = build_system(cfg)
    return type(system.backend.hooks.loop_candidates).__name__


def probe_flow(cfg) -> str:
    """Six synthetic frames at 160x120 through the whole system: poses and the flow prior's use."""
    system = build_system(cfg)
    for f in make_synthetic_sequence(n_frames=160, width=160, height=120, seed=0, max_frames=6):
        system.process(f)
    flow = system.frontend.flow
    return _digest(system.trajectory().poses, None if flow is None else (flow.n_used, flow.n_rejected))


def probe_place_tracking(cfg) -> str:
    """The guard on a wrong pose and relocalisation, with a tracker that always fails (its calls counted)."""
    from online3r_ros.geometry.lie import sim3_identity
    from online3r_ros.slam.place_tracking import FrameInput, PlaceTracking
    from online3r_ros.slam.tracking import TrackingState, TrackResult

    describe, places, _ = _places(cfg)
    frames = _place_frames()
    pt = PlaceTracking(cfg, describe, places)
    for i, f in enumerate(frames[:-1]):
        pt.add_keyframe(i, FrameInput(None, f.rgb, f.depth, f.K))
    calls: list[int] = []

    def track(sf, kf_id, guess):
        calls.append(kf_id)
        return TrackResult(TrackingState.LOST, guess, guess, reason="test")

    last = frames[-1]
    wrong = sim3_identity(dtype=torch.float64)
    wrong[0] = 0.5
    res = TrackResult(TrackingState.TRACKING, wrong, wrong, match_frac=0.5)
    out = pt.guard(
        FrameInput(None, last.rgb, last.depth, last.K),
        0,
        res,
        track,
        lambda k: sim3_identity(dtype=torch.float64),
    )
    found = pt.relocalise(
        FrameInput(None, last.rgb, last.depth, last.K), track, lambda k: sim3_identity(dtype=torch.float64)
    )
    return _digest(out.state.value, found, calls)


# ---------------------------------------------------------------------------------------------- the table
# key -> (changed value, probe, base overrides of the probe's configuration)
_TUNING = {
    "source": {"kind": "mast3r", "checkpoint": "CHECKPOINT", "img_size": 224},
    "tuning": {"enabled": True},
}
PROBES: dict[str, tuple] = {
    "dataset.subsample": (2, "dataset", {}),
    "matching.max_iter": (1, "matching", {}),
    "matching.lambda_init": (1000.0, "matching", {}),
    "matching.convergence_thresh": (0.5, "matching", {}),
    "matching.dist_thresh": (0.001, "pipeline", {}),
    "matching.radius": (0, "matching", {"source": {"kind": "mast3r"}}),
    "matching.dilation_max": (3, "matching", {"source": {"kind": "mast3r"}}),
    "tracking.C_conf": (1000.0, "matching", {}),
    "tracking.Q_conf": (1000.0, "matching", {}),
    "tracking.sigma_ray": (0.03, "matching", {"system": {"use_calib": False}}),
    "tracking.sigma_dist": (0.1, "matching", {"system": {"use_calib": False}}),
    "tracking.sigma_pixel": (5.0, "matching", {}),
    "tracking.sigma_depth": (0.5, "matching", {}),
    "tracking.pixel_border": (20.0, "matching", {}),
    "tracking.depth_eps": (1.5, "matching", {}),
    "tracking.min_match_frac": (0.99, "pipeline", {}),
    "tracking.max_iters": (1, "pipeline", {}),
    "tracking.rel_error": (0.5, "matching", {}),
    "tracking.delta_norm": (0.5, "matching", {}),
    "tracking.huber": (0.01, "pipeline", {}),
    "tracking.match_frac_thresh": (0.5, "pipeline", {}),
    "tracking.filtering_mode": ("first", "pipeline", {}),
    "tracking.filtering_score": ("mean", "pipeline", {"tracking": {"filtering_mode": "best_score"}}),
    "tracking.rgbd_cost": ("matching", "pipeline", {}),
    "tracking.icp_dist": (0.005, "pipeline", {}),
    "tracking.icp_sigma": (0.001, "pipeline", {}),
    "tracking.icp_photo_sigma": (0.2, "pipeline", {}),
    "tracking.icp_degenerate_ratio": (
        0.0,
        "pipeline",
        {"tracking": {"icp_photo_sigma": 0.0, "icp_degenerate_ratio": 0.5}},
    ),
    "tracking.icp_degenerate_photo_sigma": (
        0.5,
        "pipeline",
        {"tracking": {"icp_photo_sigma": 0.0, "icp_degenerate_ratio": 0.5}},
    ),
    "tracking.icp_rel_error": (0.5, "pipeline", {}),
    "tracking.icp_delta_norm": (0.5, "pipeline", {}),
    "tracking.flow_prior": (False, "flow", {}),
    "tracking.flow_max_side": (64, "flow", {}),
    "tracking.flow_points": (100, "flow", {}),
    "tracking.flow_agree_px": (0.0, "flow", {}),
    "tracking.flow_max_correction": (0.001, "flow", {"tracking": {"flow_agree_px": 0.0}}),
    "tracking.keyframe_max_dist": (0.01, "pipeline", {}),
    "tracking.model_keyframes": (0, "pipeline", {}),
    "tracking.model_max_dist": (0.01, "pipeline", {"tracking": {"model_keyframes": 6}}),
    "tracking.model_max_angle": (0.1, "pipeline", {"tracking": {"model_keyframes": 6}}),
    "tracking.reuse_keyframes": (0, "reuse", {}),
    "tracking.reuse_tolerance": (1e-9, "reuse", {}),
    "local_opt.C_conf": (1000.0, "pipeline", {}),
    "local_opt.Q_conf": (1000.0, "pipeline", {}),
    "local_opt.sigma_ray": (0.03, "pipeline", {"system": {"use_calib": False}}),
    "local_opt.sigma_dist": (0.1, "pipeline", {"system": {"use_calib": False}}),
    "local_opt.sigma_pixel": (0.3, "pipeline", {}),
    "local_opt.sigma_depth": (0.5, "pipeline", {}),
    "local_opt.pixel_border": (20.0, "pipeline", {}),
    "local_opt.depth_eps": (1.5, "pipeline", {}),
    "local_opt.pin": (2, "pipeline", {}),
    "local_opt.min_match_frac": (0.99, "pipeline", {"system": {"proximity_edges": 3}}),
    "local_opt.max_iters": (1, "pipeline", {}),
    "local_opt.window": (1, "pipeline", {}),
    "local_opt.delta_norm": (10.0, "pipeline", {}),
    "local_opt.max_points_per_edge": (50, "pipeline", {}),
    "local_opt.icp_sigma": (0.01, "pipeline", {}),
    "local_opt.icp_stride": (5, "pipeline", {"local_opt": {"icp_sigma": 0.01}}),
    "local_opt.icp_dist_thresh": (0.005, "pipeline", {"local_opt": {"icp_sigma": 0.01}}),
    "local_opt.icp_normal_step": (10.0, "pipeline", {"local_opt": {"icp_sigma": 0.01}}),
    "reloc.min_match_frac": (0.99, "pipeline", {}),
    "retrieval.enabled": (False, "places", {}),
    "retrieval.features": ("mast3r", "places", {}),
    "retrieval.loop_closure": (False, "loop_hook", {}),
    "retrieval.checkpoint": (
        "RETRIEVAL",
        "places",
        {"retrieval": {"features": "mast3r"}, "source": {"kind": "mast3r", "checkpoint": "CHECKPOINT"}},
    ),
    "retrieval.codebook": ("CODEBOOK", "places", {}),
    "retrieval.max_features": (100, "places", {}),
    "retrieval.sift_contrast": (0.04, "places", {}),
    "retrieval.sift_max_side": (160, "places", {}),
    "retrieval.k": (1, "places", {}),
    "retrieval.min_score": (0.9, "places", {}),
    "retrieval.exclude_recent": (1, "places", {}),
    "retrieval.reloc_candidates": (1, "place_tracking", {}),
    "retrieval.min_inliers": (500, "places", {}),
    "retrieval.inlier_dist": (0.0001, "places", {}),
    "retrieval.guard_match_frac": (0.0, "place_tracking", {}),
    "source.kind": ("mast3r", "source_kind", {}),
    "source.checkpoint": (
        "CHECKPOINT",
        "mast3r_source",
        {"source": {"kind": "mast3r", "checkpoint": "missing.pth"}},
    ),
    "source.img_size": (224, "mast3r_source", {"source": {"kind": "mast3r", "checkpoint": "CHECKPOINT"}}),
    "source.precision": (
        "bfloat16",
        "mast3r_source",
        {"source": {"kind": "mast3r", "checkpoint": "CHECKPOINT"}},
    ),
    "source.cache_size": (3, "mast3r_source", {"source": {"kind": "mast3r", "checkpoint": "CHECKPOINT"}}),
    "source.cuda_graphs": (
        False,
        "mast3r_source",
        {"source": {"kind": "mast3r", "checkpoint": "CHECKPOINT"}},
    ),
    "source.width": (32, "rgbd_source", {"source": {"height": 24}}),
    "source.height": (32, "rgbd_source", {"source": {"width": 64}}),
    "source.points_per_frame": (200, "pipeline", {}),
    "source.rematch_iters": (2, "pipeline", {"tracking": {"rgbd_cost": "matching"}}),
    "source.depth_trunc": (2.0, "rgbd_source", {}),
    "source.depth_min": (1.5, "rgbd_source", {}),
    "source.depth_scale": (1.1, "rgbd_source", {}),
    "source.depth_sigma_ref": (0.01, "rgbd_source", {}),
    "system.pose_group": ("sim3", "pipeline", {}),
    "system.use_calib": (False, "matching", {}),
    "system.device": ("cuda" if not torch.cuda.is_available() else "cpu", "source_kind", {}),
    "system.seed": (7, "pipeline", {"local_opt": {"max_points_per_edge": 50}}),
    "system.deterministic": (False, "determinism", {}),
    "tuning.enabled": (False, "tuning", _TUNING),
    "tuning.num_tokens": (4, "tuning", _TUNING),
    "tuning.lr": (1e-2, "tuning", _TUNING),
    "tuning.weight_decay": (0.5, "tuning", _TUNING),
    "tuning.iters_per_keyframe": (2, "tuning", _TUNING),
    "tuning.local_weight": (1.0, "tuning", _TUNING),
    "tuning.conf_weighted": (True, "tuning", _TUNING),
    "tuning.grad_checkpointing": (False, "tuning", _TUNING),
    "tuning.max_backlog": (2, "tuning", _TUNING),
    "system.mapper_thread": (True, "mapper_host", {}),
    "system.reloc_keyframes": (0, "pipeline", {}),
    "system.max_lost_frames": (2, "pipeline", {}),
    "system.proximity_edges": (0, "pipeline", {}),
    "system.proximity_max_dist": (0.001, "pipeline", {}),
    "system.proximity_max_angle": (0.01, "pipeline", {}),
    "system.motion_model": ("constant_position", "pipeline", {}),
    "keyframes.offload_after": (1, "pipeline", {}),
    "keyframes.store_images": (False, "pipeline", {}),
    "map.conf_threshold": (1e6, "pipeline", {}),
    "map.max_points": (100, "pipeline", {}),
}


def _keys() -> list[str]:
    return [f"{name}.{f.name}" for name, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def test_every_key_has_a_probe() -> None:
    assert set(_keys()) == set(PROBES), "add a probe for each new key (or remove the key)"


def _config(base: dict, tmp: str, key: str | None = None, value=None):
    over = {s: dict(v) for s, v in BASE.items()}
    for section, values in base.items():
        over.setdefault(section, {}).update(values)
    if key is not None:
        section, name = key.split(".")
        over.setdefault(section, {})[name] = value
    for v in over.get("source", {}).items():
        if v[1] == "CHECKPOINT":
            over["source"][v[0]] = _checkpoint(tmp)
    files = {
        "RETRIEVAL": lambda: str(PARITY / "P3_retrieval_trainingfree.pth"),
        "CODEBOOK": lambda: _codebook_file(tmp),
    }
    for name, v in list(over.get("retrieval", {}).items()):
        if v in files:
            over["retrieval"][name] = files[v]()
    return load_config(overrides=over)


@pytest.mark.parametrize("key", sorted(PROBES))
def test_changing_the_key_changes_the_behaviour(key: str, tmp_path_factory) -> None:
    torch.set_num_threads(1)
    tmp = str(tmp_path_factory.getbasetemp())
    value, probe, base = PROBES[key]
    if value == "RETRIEVAL" and not PARITY.is_dir():
        pytest.skip(f"{PARITY} (the retrieval parity fixture) is absent")
    run = globals()[f"probe_{probe}"]
    args = (tmp,) if probe == "dataset" else ()
    baseline = _baseline(probe, repr(sorted(base.items())), tmp, base, run, args)
    changed = _config(base, tmp, key, _checkpoint(tmp) if value == "CHECKPOINT" else value)
    assert getattr(getattr(changed, key.split(".")[0]), key.split(".")[1]) != getattr(
        getattr(_config(base, tmp), key.split(".")[0]), key.split(".")[1]
    ), f"{key}: the changed value {value!r} is the base value"
    assert run(changed, *args) != baseline, f"{key} = {value!r} changed nothing that {probe} observes"


_BASELINES: dict = {}


def _baseline(probe: str, base_key: str, tmp: str, base: dict, run, args) -> str:
    if (probe, base_key) not in _BASELINES:
        _BASELINES[probe, base_key] = run(_config(base, tmp), *args)
    return _BASELINES[probe, base_key]
