"""Online prompt tuning (issue 13): only the prompts learn, the losses teach what a teacher knows, and the
pipeline tunes once per keyframe, hands versions to the tracker between frames and keeps them with the map.

No MASt3R weights exist here, so the mechanism is proven on small random networks (see each test)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_mast3r import P1_KWARGS, damped_p1_model

from online3r_ros.model import build_mast3r
from online3r_ros.model.inference import MASt3REngine, NetImage
from online3r_ros.slam.config import ConfigError, SlamConfig, TuningConfig, load_config
from online3r_ros.slam.packets import PromptUpdate
from online3r_ros.tuning import (
    OnlineTuning,
    PromptFileError,
    PromptTuner,
    TuningJob,
    check_frozen,
    load_prompts,
    save_prompts,
)

H, W = 48, 64


def _images(n: int, seed: int = 5) -> list[NetImage]:
    """Smooth random images (low-resolution noise, upsampled) as network inputs."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 6, 8, generator=g) * 2 - 1
    imgs = torch.nn.functional.interpolate(base, size=(H, W), mode="bilinear", align_corners=False)
    return [NetImage(i, imgs[i : i + 1], torch.tensor([[H, W]])) for i in range(n)]


def _student_model() -> torch.nn.Module:
    """The P1-sized random network with its decoders' cross-attention damped (x0.05): like a trained
    MASt3R, a view's own pointmap then hardly depends on its partner, so the global loss is consistent with
    the teacher (with fully random cross-attention no prompt set makes the two predictions agree)."""
    model = damped_p1_model(0)
    with torch.no_grad():
        for blk in [*model.dec_blocks, *model.dec_blocks2]:
            blk.cross_attn.proj.weight.mul_(0.05)
    return model


@pytest.fixture(scope="module")
def engine() -> MASt3REngine:
    torch.set_num_threads(1)  # small tensors: one thread is faster than two
    return MASt3REngine(_student_model(), "cpu")


def _predict(engine: MASt3REngine, a: NetImage, b: NetImage, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """View 1's points and confidence in the pair ``(a, b)`` with ``prompts`` (no gradient)."""
    with torch.no_grad():
        feat, pos = engine.encode_grad(
            torch.cat([a.img, b.img]), torch.cat([a.true_shape, b.true_shape]), prompts
        )
        p1, _ = engine.decode_grad(feat[:1], pos[:1], a.shape, feat[1:], pos[1:], b.shape)
    return p1.X[0], p1.C[0]


def _job(kf_id, new, prev, fused, conf, partners=None) -> TuningJob:
    return TuningJob(kf_id, new, prev, fused, conf, partners)


# ------------------------------------------------------------------------------------------------ gradients
def test_a_step_changes_the_prompts_and_nothing_else(engine) -> None:
    nets = _images(4)
    reference = {k: v.clone() for k, v in engine.model.state_dict().items()}
    tuner = PromptTuner(engine, TuningConfig(iters_per_keyframe=2, lr=1e-3, grad_checkpointing=True), seed=0)
    assert torch.count_nonzero(tuner.prompts) == 0 and tuner.prompts.shape == (2, 32, 64)  # zero-initialised
    fused, conf = _predict(engine, nets[0], nets[1], None)
    job = _job(2, nets[1], nets[0], fused + 0.01, conf, (nets[2], nets[3]))
    update = tuner.step(job)
    check_frozen(engine.model, reference)  # every network parameter bit-identical, none requires grad
    assert tuner.prompts.grad is not None and torch.isfinite(tuner.prompts.grad).all()
    assert torch.count_nonzero(update.prompts) > 0 and update.version == 1 and update.iters == 2
    assert all(
        np.isfinite([update.loss_before, update.loss_after, update.local_before, update.global_before])
    )
    assert update.loss_after < update.loss_before
    tuner.prompts.data.add_(1.0)  # the update is a copy: the tuner's tensor never leaves it
    assert not torch.equal(update.prompts, tuner.prompts.detach())
    assert engine.model.grad_checkpointing


def test_checkpointed_gradients_equal_the_plain_ones(engine) -> None:
    nets = _images(4)
    fused, conf = _predict(engine, nets[0], nets[1], None)
    grads = []
    for checkpointing in (False, True):
        tuner = PromptTuner(engine, TuningConfig(grad_checkpointing=checkpointing), seed=0)
        with torch.no_grad():
            tuner.prompts.normal_(generator=torch.Generator().manual_seed(0))
        tuner.losses(_job(2, nets[1], nets[0], fused, conf, (nets[2], nets[3])))["loss"].backward()
        grads.append(tuner.prompts.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    engine.model.grad_checkpointing = False


def test_loss_terms_follow_the_config(engine) -> None:
    nets = _images(4)
    fused, conf = _predict(engine, nets[0], nets[1], None)
    job = _job(2, nets[1], nets[0], fused + 0.05, conf * 0 + 1, (nets[2], nets[3]))
    terms = PromptTuner(engine, TuningConfig(local_weight=0.25), seed=0).losses(job)
    torch.testing.assert_close(terms["loss"], 0.25 * terms["local"] + 0.75 * terms["global"])
    assert abs(float(terms["local"]) - 0.15) < 0.02  # |0.05| in x, y, z, prompts (zero) aside
    no_partners = PromptTuner(engine, TuningConfig(), seed=0).losses(_job(1, nets[1], nets[0], fused, conf))
    assert torch.isnan(no_partners["global"]) and torch.equal(no_partners["loss"], no_partners["local"])


def test_partners_are_two_different_older_keyframes_from_the_seed(engine) -> None:
    a = PromptTuner(engine, TuningConfig(), seed=3)
    b = PromptTuner(engine, TuningConfig(), seed=3)
    picks = [a.choose_partners(n) for n in range(1, 30)]
    assert picks[0] is None and picks == [b.choose_partners(n) for n in range(1, 30)]
    assert all(p[0] != p[1] and max(p) < n for n, p in zip(range(2, 30), picks[1:], strict=True))


# ------------------------------------------------------------------------------------------ teacher-student
def _teacher_student(engine: MASt3REngine, mode: str) -> tuple[float, float]:
    """Tune a zero-prompt student online on 12 keyframes whose fused pseudo ground truth is the teacher's
    prediction (hidden random prompts); ``(error before, error after)`` of held-out pairs vs the teacher.
    ``mode``: ``full`` (λ = 0.5), ``global`` (λ = 0) or ``shuffled`` (pseudo ground truth of other pairs)."""
    nets = _images(24)
    shape = engine.model.new_prompts(32).shape
    teacher = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    held_out = [(16, 17), (19, 21), (22, 23), (20, 18)]

    def error(prompts) -> float:
        return float(
            np.mean(
                [
                    (
                        _predict(engine, nets[a], nets[b], prompts)[0]
                        - _predict(engine, nets[a], nets[b], teacher)[0]
                    )
                    .abs()
                    .sum(-1)
                    .mean()
                    for a, b in held_out
                ]
            )
        )

    cfg = TuningConfig(iters_per_keyframe=4, lr=5e-5, local_weight=0.0 if mode == "global" else 0.5)
    tuner = PromptTuner(engine, cfg, seed=0)
    before = error(tuner.prompts.detach())
    shuffled = torch.randperm(12, generator=torch.Generator().manual_seed(3)).tolist()
    for kf in range(1, 12):
        prev, new = nets[kf - 1], nets[kf]
        pair = (prev, new) if mode != "shuffled" else (nets[shuffled[kf]], nets[shuffled[kf - 1]])
        fused, conf = _predict(engine, *pair, teacher)
        partners = tuner.choose_partners(kf)
        tuner.step(
            _job(kf, new, prev, fused, conf, None if partners is None else tuple(nets[i] for i in partners))
        )
    return before, error(tuner.prompts.detach())


@pytest.mark.slow
def test_online_tuning_learns_what_the_teacher_knows(engine) -> None:
    before, after = _teacher_student(engine, "full")
    assert after < 0.6 * before, (before, after)  # measured: 0.00544 -> 0.0024 on 23 keyframes


def test_the_global_loss_is_zero_for_partner_independent_predictions_and_then_moves_nothing() -> None:
    """The global term asks a keyframe's pointmap not to depend on its partner. For a network whose view 1
    ignores view 2 (cross-attention off) it is exactly zero, and tuning by it alone (λ = 0) leaves the prompts
    and the predictions unchanged; with cross-attention it is not.

    (Measured with the damped network of the teacher-student tests, 23 keyframes, the default 1 step at
    lr 1e-4: the global term alone raises the held-out error vs the teacher from 0.0054 to 0.0131, while the
    full loss lowers it to 0.0046 and the local one alone further: a random network's partner dependence says
    nothing about the teacher, and AdamW moves the prompts at the rate lr whatever the size of the loss.)"""
    nets = _images(4)
    model = _student_model()
    with torch.no_grad():
        for blk in [*model.dec_blocks, *model.dec_blocks2]:
            blk.cross_attn.proj.weight.zero_()
            blk.cross_attn.proj.bias.zero_()
    engine = MASt3REngine(model, "cpu")
    tuner = PromptTuner(engine, TuningConfig(local_weight=0.0, iters_per_keyframe=3), seed=0)
    fused, conf = _predict(engine, nets[0], nets[1], None)
    job = _job(2, nets[1], nets[0], fused + 0.05, conf, (nets[2], nets[3]))
    update = tuner.step(job)
    assert update.global_before == 0.0 and update.loss_before == 0.0 and update.local_before > 0.1
    assert torch.count_nonzero(update.prompts) == 0
    damped = PromptTuner(MASt3REngine(_student_model(), "cpu"), TuningConfig(local_weight=0.0), seed=0)
    assert float(damped.losses(job)["global"]) > 0.0


@pytest.mark.slow
def test_a_shuffled_pseudo_ground_truth_does_not_teach(engine) -> None:
    before, after = _teacher_student(engine, "shuffled")
    assert after > 0.8 * before, (before, after)


# ------------------------------------------------------------------------------------------ the online hook
class _Backend:
    """What the hook reads of a backend: keyframes (fused X, C), their frames, the source."""

    def __init__(self, engine: MASt3REngine, nets: list[NetImage]) -> None:
        from types import SimpleNamespace

        self.source = SimpleNamespace(net_image=lambda frame: frame)
        self.kf_frames = nets
        fused = [_predict(engine, nets[i], nets[i + 1], None) for i in range(len(nets) - 1)]
        self.keyframes = SimpleNamespace(
            get=lambda i, device=None: SimpleNamespace(X=fused[i][0], C=fused[i][1])
        )


def test_background_tuning_never_blocks_and_drops_old_keyframes(engine) -> None:
    from types import SimpleNamespace

    nets = _images(6)
    tuner = PromptTuner(engine, TuningConfig(), seed=0)
    started, release = threading.Event(), threading.Event()
    step = tuner.step

    def slow_step(job):
        started.set()
        release.wait(30)
        return step(job)

    tuner.step = slow_step
    hook = OnlineTuning(tuner, background=True, max_backlog=1)
    backend = _Backend(engine, nets)
    hook(backend, SimpleNamespace(kf_id=0))  # keyframe 0: nothing to tune
    hook(backend, SimpleNamespace(kf_id=1))
    assert started.wait(30)  # the step runs in the hook's thread while the caller goes on
    for kf in (2, 3, 4):
        hook(backend, SimpleNamespace(kf_id=kf))
    assert hook.stats.dropped == 2 and hook.updates() == []
    release.set()
    assert hook.flush(60)
    versions = [(u.kf_id, u.version) for u in hook.updates()]
    assert versions == [(1, 1), (4, 2)] and hook.stats.steps == 2
    hook.close()


# ----------------------------------------------------------------------------------------- config and files
def test_tuning_is_refused_for_the_rgbd_source_and_on_by_default_for_mast3r() -> None:
    assert not load_config().tuning.enabled and not SlamConfig().tuning.enabled
    assert load_config(overrides={"source": {"kind": "mast3r"}}).tuning.enabled
    with pytest.raises(ConfigError, match="tuning.enabled.*MASt3R source"):
        load_config(overrides={"tuning": {"enabled": True}})


def test_prompt_files_round_trip_and_bad_files_are_one_line(tmp_path) -> None:
    prompts = torch.randn(2, 8, 64)
    path = save_prompts(tmp_path / "p.pt", PromptUpdate(7, prompts))
    back = load_prompts(path, (2, 64))
    assert back.version == 7 and torch.equal(back.prompts, prompts)
    with pytest.raises(PromptFileError, match="do not fit this network"):
        load_prompts(path, (24, 1024))
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PromptFileError, match="unreadable"):
        load_prompts(tmp_path / "junk.pt")
    torch.save({"weights": prompts}, tmp_path / "other.pt")
    with pytest.raises(PromptFileError, match="not an online3r_ros prompt file"):
        load_prompts(tmp_path / "other.pt")


def test_no_tuning_leaves_the_plain_network_bit_exact() -> None:
    """``tuning.enabled: false``: the source never gets prompts, so its predictions are the network's."""
    from online3r_ros.slam.system import SlamSystem
    from online3r_ros.sources.mast3r import MASt3RSource

    torch.manual_seed(0)
    model = build_mast3r(**P1_KWARGS).eval()
    src = MASt3RSource(model, img_size=224)
    cfg = SlamConfig().replace(source={"kind": "mast3r"}, tuning={"enabled": False})
    system = SlamSystem(cfg, src)
    assert system.tuning is None and src.engine.prompts is None and src.prompt_version == 0
    rgb = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    a, b = src.prepare(rgb, index=0), src.prepare(rgb[::-1].copy(), index=1)
    ours = src.predict_asymmetric(a, b)
    with torch.no_grad():
        ref1, ref2 = model({"img": src.net_image(a).img}, {"img": src.net_image(b).img})
    assert torch.equal(ours.frame.X, ref1["pts3d"][0]) and torch.equal(
        ours.keyframe.X, ref2["pts3d_in_other_view"][0]
    )


# ------------------------------------------------------------------------------------------- the pipeline
def _symmetric_twin_source():
    """A MASt3R source on a random P1 network whose view-2 decoder/head are view 1's (as in
    test_mast3r_source: a static camera then tracks exactly)."""
    from online3r_ros.sources.mast3r import MASt3RSource

    torch.manual_seed(0)
    model = build_mast3r(**P1_KWARGS).eval()
    with torch.no_grad():
        model.dec_blocks2.load_state_dict(model.dec_blocks.state_dict())
        model.downstream_head2.load_state_dict(model.downstream_head1.state_dict())
    return MASt3RSource(model, img_size=224)


@pytest.mark.slow
def test_the_pipeline_tunes_once_per_keyframe_and_the_map_keeps_the_prompts(tmp_path) -> None:
    """SlamSystem with the MASt3R source and tuning on (a keyframe per frame): one update per keyframe
    after the first, each used by the tracker from the next frame on; saved with the system and reloaded, the
    next frame gives bit-identical outputs; a prompt file warm-starts another system."""
    from online3r_ros.slam.system import SlamSystem
    from online3r_ros.synthetic.sequence import make_synthetic_sequence
    from online3r_ros.synthetic.trajectory import orbit_trajectory

    torch.set_num_threads(1)
    cfg = SlamConfig().replace(
        source={"kind": "mast3r"},
        tuning={"enabled": True},
        tracking={"Q_conf": 0.0, "match_frac_thresh": 1.0},  # random descriptors; every frame a keyframe
        local_opt={"Q_conf": 0.0},
    )
    poses = np.repeat(orbit_trajectory(40)[:1], 5, axis=0)
    frames = list(make_synthetic_sequence(width=64, height=48, seed=0, poses=poses))
    source = _symmetric_twin_source()
    system = SlamSystem(cfg, source)
    versions = []
    for f in frames[:3]:
        system.process(f)
        versions.append(system.frontend.prompt_version)  # the tracker's: swapped at the next frame
    assert system.num_keyframes == 3 and system.tuning.stats.steps == 2
    assert [u["kf_id"] for u in system.tuning.stats.history] == [1, 2]
    assert versions == [0, 0, 1] and system.backend.prompts.version == 2
    system.save(tmp_path / "sys")
    loaded = SlamSystem.load(tmp_path / "sys", _symmetric_twin_source())
    assert torch.equal(loaded.backend.prompts.prompts, system.backend.prompts.prompts)
    a, b = system.process(frames[3]), loaded.process(frames[3])
    assert system.frontend.prompt_version == loaded.frontend.prompt_version == 2
    assert torch.equal(a.T_WC, b.T_WC) and a.match == b.match
    assert torch.equal(system.backend.prompts.prompts, loaded.backend.prompts.prompts)  # same next update
    path = system.save_prompts(tmp_path / "prompts.pt")
    warm = SlamSystem(cfg, _symmetric_twin_source())
    assert warm.load_prompts(path).version == system.backend.prompts.version
    warm.process(frames[0])
    assert warm.frontend.prompt_version == system.backend.prompts.version
    assert torch.equal(warm.source.engine.prompts.cpu(), system.backend.prompts.prompts)
    for s in (system, loaded, warm):
        s.close()


SEVEN_SCENES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"


@pytest.mark.slow
@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason=f"{SEVEN_SCENES} (public 7-Scenes frames) is absent")
def test_online3r_run_tunes_per_keyframe_writes_the_prompts_and_warm_starts(tmp_path, capsys) -> None:
    """``online3r run --source mast3r`` on real frames (a keyframe per frame): one update per keyframe after
    the first in metrics.json and timing.json, prompts.pt beside the map; ``--prompts`` continues from it;
    a bad prompt file is one error line and exit code 3."""
    import json

    from online3r_ros.cli.main import EXIT_INPUT, EXIT_OK, main
    from online3r_ros.model.checkpoint import save_checkpoint

    source = _symmetric_twin_source()
    ckpt = tmp_path / "twin.pth"
    save_checkpoint(ckpt, source.engine.model.state_dict(), P1_KWARGS, layout="pth")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "tracking: {Q_conf: 0.0, match_frac_thresh: 1.0}\nlocal_opt: {Q_conf: 0.0}\n"
        "retrieval: {enabled: false}\nsource: {img_size: 224}\n"
    )
    common = ["--source", "mast3r", "--checkpoint", str(ckpt), "--config", str(cfg), "--quiet"]
    first = tmp_path / "a"
    assert main(["run", str(SEVEN_SCENES), "--out", str(first), "--max-frames", "3", *common]) == EXIT_OK
    metrics = json.loads((first / "metrics.json").read_text())
    updates = metrics["prompt_tuning"]["updates"]
    assert metrics["n_keyframes"] == 3 and [(u["kf_id"], u["version"]) for u in updates] == [(1, 1), (2, 2)]
    assert json.loads((first / "timing.json").read_text())["prompt_tuning"]["steps"] == 2
    saved = load_prompts(first / "prompts.pt", (2, 64))
    assert saved.version == 2 and torch.count_nonzero(saved.prompts) > 0
    out = tmp_path / "b"
    args = [
        "run",
        str(SEVEN_SCENES),
        "--out",
        str(out),
        "--max-frames",
        "2",
        "--prompts",
        str(tmp_path / "a" / "prompts.pt"),
    ]
    assert main([*args, *common]) == EXIT_OK
    updates = json.loads((out / "metrics.json").read_text())["prompt_tuning"]["updates"]
    assert [u["version"] for u in updates] == [3]  # tuned on from version 2
    (tmp_path / "bad.pt").write_bytes(b"junk")
    capsys.readouterr()
    args[-1] = str(tmp_path / "bad.pt")
    assert main([*args, *common]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable" in err[0], err
