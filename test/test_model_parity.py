"""MASt3R network exactness against the reference parity fixtures (../shared/parity) and the full key list."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from online3r_ros.model import MAST3R_VITL_KWARGS, build_mast3r

PARITY_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "parity"
FIXTURES = ("P1", "P2")

pytestmark = pytest.mark.skipif(
    not (PARITY_DIR / "mast3r_parity.py").is_file(),
    reason=f"MASt3R parity fixtures not found at {PARITY_DIR} (../shared/parity relative to the repo root)",
)


def _load_recipe():
    spec = importlib.util.spec_from_file_location("mast3r_parity", PARITY_DIR / "mast3r_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mp():
    return _load_recipe()


@pytest.fixture(scope="module", params=FIXTURES)
def parity_case(request, mp):
    """(fixture dict, model with the recipe weights loaded strictly, in eval mode)."""
    path = PARITY_DIR / f"mast3r_parity_{request.param}.pt"
    if not path.is_file():
        pytest.skip(f"parity fixture {path} not found")
    fx = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # skip the random init: every tensor is overwritten by the recipe
        model = build_mast3r(**fx["constructor_kwargs"])
    model = model.to_empty(device="cpu")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = mp.recipe_state_dict(shapes, fx["recipe_seed"])
    model.load_state_dict(weights, strict=True)
    return fx, model.eval()


def test_state_dict_keys_and_recipe_checksums(parity_case, mp):
    fx, model = parity_case
    shapes = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    assert shapes == [(k, tuple(s)) for k, s in fx["state_dict_shapes"]]
    sd = model.state_dict()
    # checksums of the transformer tensors (the big DPT/MLP heads are covered by the output comparisons)
    sums = mp.state_dict_checksums({k: v for k, v in sd.items() if not k.startswith("downstream_head")})
    bad = [k for k, c in sums.items() if fx["recipe_checksums"].get(k) != c]
    assert not bad, f"recipe weights differ for {bad[:5]}"
    # the DPT alias names share storage, like the reference
    for head in ("downstream_head1", "downstream_head2"):
        for i in range(4):
            a = sd[f"{head}.dpt.scratch.layer_rn.{i}.weight"]
            b = sd[f"{head}.dpt.scratch.layer{i + 1}_rn.weight"]
            assert a.data_ptr() == b.data_ptr()


@pytest.mark.parametrize("impl", ["fast", "exact", "naive"])
def test_forward_matches_reference(parity_case, mp, impl):
    fx, model = parity_case
    model.set_impl(impl)
    try:
        with torch.no_grad():
            res1, res2 = model(fx["view1"], fx["view2"])
    finally:
        model.set_impl("fast")
    assert set(res2) == {"pts3d_in_other_view", "conf", "desc", "desc_conf"}
    mism = mp.compare({"res1": res1, "res2": res2}, {"res1": fx["res1"], "res2": fx["res2"]})
    assert not mism, "\n".join(mism)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_matches_reference_on_cuda(parity_case, mp, monkeypatch):
    """float32 on CUDA with TF32 off (PyTorch enables TF32 convolutions by default) is exact too."""
    import copy

    fx, model = parity_case
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    net = copy.deepcopy(model).cuda()
    views = [{k: v.cuda() if torch.is_tensor(v) else v for k, v in fx[n].items()} for n in ("view1", "view2")]
    with torch.no_grad():
        res1, res2 = net(*views)
    assert set(res2) == {"pts3d_in_other_view", "conf", "desc", "desc_conf"}
    mism = mp.compare({"res1": res1, "res2": res2}, {"res1": fx["res1"], "res2": fx["res2"]})
    assert not mism, "\n".join(mism)


def test_autograd_path_matches_reference(parity_case, mp):
    """With gradients required (prompt tuning) the fast kernels (oneDNN linear, Winograd) are bypassed; the
    autograd-capable path must match the reference too."""
    fx, model = parity_case
    img1 = fx["view1"]["img"].clone().requires_grad_(True)
    res1, res2 = model({"img": img1}, fx["view2"])
    mism = mp.compare({"res1": res1, "res2": res2}, {"res1": fx["res1"], "res2": fx["res2"]})
    assert not mism, "\n".join(mism)
    res1["pts3d"].sum().backward()
    assert img1.grad is not None and bool(torch.isfinite(img1.grad).all())
    model.zero_grad(set_to_none=True)


def test_encoder_and_decoder_taps_match_reference(parity_case, mp):
    fx, model = parity_case
    v1, v2 = fx["view1"], fx["view2"]
    with torch.no_grad():
        f1, p1 = model.encode(v1["img"], v1["true_shape"])
        f2, p2 = model.encode(v2["img"], v2["true_shape"])
        dec1, dec2 = model.decode(f1, p1, f2, p2)
        res1, res2 = model.heads(dec1, dec2, tuple(v1["true_shape"][0]), tuple(v2["true_shape"][0]))
    assert p1.dtype == torch.int64 and p1.shape == (*f1.shape[:2], 2)
    depth = fx["constructor_kwargs"]["dec_depth"]
    assert len(dec1) == len(dec2) == depth + 1
    assert dec1[0] is f1 and dec2[0] is f2
    ours = {
        "enc1": f1,
        "enc2": f2,
        "dec1": {k: dec1[k] for k in fx["dec1"]},
        "dec2": {k: dec2[k] for k in fx["dec2"]},
    }
    ref = {k: fx[k] for k in ours}
    mism = mp.compare(ours, ref)
    assert not mism, "\n".join(mism)
    # heads called directly keep the key 'pts3d' for view 2 (only forward renames it)
    ref2 = dict(fx["res2"])
    ref2["pts3d"] = ref2.pop("pts3d_in_other_view")
    mism = mp.compare({"res1": res1, "res2": res2}, {"res1": fx["res1"], "res2": ref2})
    assert not mism, "\n".join(mism)


def test_batched_equals_one_at_a_time(parity_case, mp):
    """Two pairs batched == each pair alone (P2 stores B=2; P1 is batched with a flipped copy)."""
    fx, model = parity_case
    v1, v2 = fx["view1"], fx["view2"]
    if v1["img"].shape[0] == 1:  # make a 2-batch from P1: the pair and its swapped / flipped version
        v1 = {"img": torch.cat([v1["img"], v2["img"].flip(-1)])}
        v2 = {"img": torch.cat([fx["view2"]["img"], fx["view1"]["img"].flip(-1)])}
    with torch.no_grad():
        batched = model(v1, v2)
        for i in range(v1["img"].shape[0]):
            single = model({"img": v1["img"][i : i + 1]}, {"img": v2["img"][i : i + 1]})
            part = tuple({k: t[i : i + 1] for k, t in r.items()} for r in batched)
            mism = mp.compare(list(single), list(part))
            assert not mism, "\n".join(mism)


def test_full_size_keys_and_shapes_on_meta():
    spec = json.loads((PARITY_DIR / "mast3r_full_keys.json").read_text())
    with torch.device("meta"):
        model = build_mast3r(**MAST3R_VITL_KWARGS)
    sd = model.state_dict()
    assert sorted((k, list(v.shape)) for k, v in sd.items()) == [(k, list(s)) for k, s in spec["keys"]]
    assert sum(p.numel() for p in model.parameters()) == spec["n_parameters"] == 688_638_856
    assert len(sd) == spec["n_state_dict_keys"]
    assert sum(v.numel() for v in sd.values()) == spec["n_state_dict_elements"]
    assert len(list(model.buffers())) == spec["n_buffers"] == 0
