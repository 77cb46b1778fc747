"""Reference constructor strings and network-architecture detection for MASt3R checkpoints.

The constructor string stored in an official ``.pth`` (e.g. ``"AsymmetricMASt3R(enc_depth=24,
depth_mode=('exp', -inf, inf), ...)"``) is parsed with :mod:`ast` (literals, tuples, ``inf``); it is never
evaluated. :func:`kwargs_from_constructor` applies the reference ``load_model`` rewrites
(``ManyAR_PatchEmbed`` -> ``PatchEmbedDust3R``, ``landscape_only=False``); :func:`detect_architecture` names
the network family from state_dict keys; the private helpers reconcile ``two_confs`` with the weights and
infer constructor kwargs from tensor shapes when a file carries none. File reading lives in
:mod:`online3r_ros.model.checkpoint`, which re-exports these names.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoint_errors import ArchitectureMismatchError, CheckpointFormatError

__all__ = [
    "MAST3R_CLASS",
    "MAST3R_HEAD",
    "ConstructorCall",
    "Symbol",
    "constructor_string",
    "detect_architecture",
    "kwargs_from_constructor",
    "parse_constructor",
]

log = logging.getLogger(__name__)

MAST3R_CLASS = "AsymmetricMASt3R"
MAST3R_HEAD = "catmlp+dpt"
_KNOWN_CLASSES = {
    "AsymmetricMASt3R": "MASt3R",
    "AsymmetricCroCo3DStereo": "DUSt3R (AsymmetricCroCo3DStereo)",
    "CroCoNet": "CroCo pre-training network (CroCoNet)",
}


# --------------------------------------------------------------------------------- constructor strings
@dataclass(frozen=True)
class Symbol:
    """A bare (dotted) name in a constructor string, e.g. ``nn.LayerNorm`` (kept as text, never looked up)."""

    name: str


@dataclass(frozen=True)
class ConstructorCall:
    """A parsed call ``name(*args, **kwargs)``; values are literals, :class:`Symbol` or nested calls."""

    name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


_NAMED_CONSTANTS = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _literal(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, text) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        val = _literal(node.operand, text)
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return -val if isinstance(node.op, ast.USub) else val
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _call(node, text)
    name = _dotted(node)
    if name is not None:
        return Symbol(name)
    snippet = ast.get_source_segment(text, node) or type(node).__name__
    raise CheckpointFormatError(f"unsupported expression in the constructor string: {snippet!r}")


def _call(node: ast.Call, text: str) -> ConstructorCall:
    name = _dotted(node.func)
    if name is None:
        raise CheckpointFormatError(
            f"constructor string: cannot read callee of {ast.get_source_segment(text, node)!r}"
        )
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise CheckpointFormatError("constructor string: *args / **kwargs are not supported")
    return ConstructorCall(
        name=name,
        args=tuple(_literal(a, text) for a in node.args),
        kwargs={k.arg: _literal(k.value, text) for k in node.keywords},
    )


def parse_constructor(text: str) -> ConstructorCall:
    """Parse a reference constructor string such as ``"AsymmetricMASt3R(enc_depth=24, depth_mode=('exp',
    -inf, inf))"`` into a :class:`ConstructorCall` with :mod:`ast` (nothing is evaluated).

    Raises:
        CheckpointFormatError: not a single call expression, or a value that is not a literal/name/call.
    """
    if not isinstance(text, str):
        raise CheckpointFormatError(f"constructor must be a string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise CheckpointFormatError(
            f"constructor string is not valid Python syntax: {text!r} ({exc.msg})"
        ) from None
    if not isinstance(tree.body, ast.Call):
        raise CheckpointFormatError(f"constructor string is not a call expression: {text!r}")
    return _call(tree.body, text.strip())


def _check_plain(name: str, value: Any) -> None:
    if isinstance(value, (Symbol, ConstructorCall)):
        raise ArchitectureMismatchError(
            f"constructor argument {name}={value!r} is not a plain value; this variant is not supported"
        )
    if isinstance(value, (tuple, list)):
        for v in value:
            _check_plain(name, v)


def kwargs_from_constructor(constructor: str | ConstructorCall) -> dict[str, Any]:
    """Keyword arguments of ``build_mast3r`` from a reference constructor (string or parsed call).

    Applies the reference ``load_model`` rewrites (``ManyAR_PatchEmbed`` -> ``PatchEmbedDust3R``,
    ``landscape_only=False``) and checks that it is a MASt3R network with the ``catmlp+dpt`` head.

    Raises:
        ArchitectureMismatchError: another class (DUSt3R, CroCo, ...) or head/output.
        CheckpointFormatError: unparsable string or positional arguments.
    """
    call = parse_constructor(constructor) if isinstance(constructor, str) else constructor
    cls = call.name.rsplit(".", 1)[-1]
    if cls != MAST3R_CLASS:
        what = _KNOWN_CLASSES.get(cls, f"unknown class {cls!r}")
        raise ArchitectureMismatchError(
            f"checkpoint holds a {what} network, not MASt3R ({MAST3R_CLASS} with head_type='{MAST3R_HEAD}')"
        )
    if call.args:
        raise CheckpointFormatError(
            f"constructor string has positional arguments {call.args!r}; expected keywords"
        )
    kwargs = dict(call.kwargs)
    for k, v in kwargs.items():
        _check_plain(k, v)
    return _normalise_kwargs(kwargs)


def _normalise_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for key in ("img_size", "depth_mode", "conf_mode", "desc_conf_mode"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    if out.get("patch_embed_cls", "PatchEmbedDust3R") == "ManyAR_PatchEmbed":
        out["patch_embed_cls"] = "PatchEmbedDust3R"
    out["landscape_only"] = False
    head = out.get("head_type", "linear")
    mode = out.get("output_mode", "pts3d")
    if head != MAST3R_HEAD or not re.fullmatch(r"pts3d\+desc\d+", str(mode)):
        raise ArchitectureMismatchError(
            f"checkpoint head_type={head!r}, output_mode={mode!r}: not a MASt3R head "
            f"(need head_type='{MAST3R_HEAD}', output_mode='pts3d+desc24')"
        )
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, tuple):
        inner = ", ".join(_fmt_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return repr(v)


def constructor_string(kwargs: Mapping[str, Any], cls: str = MAST3R_CLASS) -> str:
    """Reference-style constructor string, e.g. ``AsymmetricMASt3R(enc_depth=2, two_confs=True)``."""
    return f"{cls}(" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in kwargs.items()) + ")"


# ------------------------------------------------------------------------------ architecture from keys
def detect_architecture(keys: set[str] | Mapping[str, Any]) -> str:
    """Name the network family from state_dict key names: ``'MASt3R'``, or raise.

    Raises:
        ArchitectureMismatchError: DUSt3R (DPT or linear head, no local-feature MLP), CroCo pre-training
            (no downstream heads) or not a CroCo-family state_dict at all.
    """
    ks = set(keys)
    if not any(k.startswith("enc_blocks.") for k in ks):
        raise ArchitectureMismatchError(
            "not a MASt3R state_dict: no 'enc_blocks.*' keys (not a CroCo-family ViT)"
        )
    if not any(k.startswith("downstream_head1.") for k in ks):
        raise ArchitectureMismatchError(
            "checkpoint is a CroCo pre-training network (no 'downstream_head1.*' keys), not MASt3R"
        )
    if "downstream_head1.head_local_features.fc1.weight" not in ks:
        if any(k.startswith("downstream_head1.dpt.") for k in ks):
            head = "DUSt3R with a DPT head (head_type='dpt', no local-feature MLP / descriptors)"
        elif "downstream_head1.proj.weight" in ks:
            head = "DUSt3R with a linear head (head_type='linear', no descriptors)"
        else:
            head = "an unknown head (no 'downstream_head1.head_local_features.*')"
        raise ArchitectureMismatchError(f"checkpoint is {head}, not MASt3R (head_type='{MAST3R_HEAD}')")
    return "MASt3R"


def _reconcile_two_confs(kwargs: dict[str, Any], sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    fc2 = sd.get("downstream_head1.head_local_features.fc2.weight")
    mode = str(kwargs.get("output_mode", "pts3d+desc24"))
    m = re.fullmatch(r"pts3d\+desc(\d+)", mode)
    pe = sd.get("patch_embed.proj.weight")
    if fc2 is None or m is None or pe is None or pe.dim() != 4:
        return kwargs
    n_out, patch2, desc_dim = int(fc2.shape[0]), int(pe.shape[2]) * int(pe.shape[3]), int(m.group(1))
    has_two = n_out == (desc_dim + 1) * patch2
    if (has_two or n_out == desc_dim * patch2) and bool(kwargs.get("two_confs", False)) != has_two:
        log.warning(
            "constructor says two_confs=%s but the weights say %s; using the weights",
            kwargs.get("two_confs"),
            has_two,
        )
        kwargs = dict(kwargs, two_confs=has_two)
        if has_two:
            kwargs.setdefault("desc_conf_mode", ("exp", 0, math.inf))
    return kwargs


def _infer_kwargs(sd: Mapping[str, torch.Tensor], head_dim: int = 64) -> dict[str, Any]:
    """Best-effort constructor kwargs from shapes alone (no ``args``/``config.json``); assumes 64-d heads."""
    detect_architecture(sd)

    def depth(prefix: str) -> int:
        idx = {int(k.split(".")[1]) for k in sd if k.startswith(prefix + ".")}
        return max(idx) + 1 if idx else 0

    enc_dim = int(sd["patch_embed.proj.weight"].shape[0])
    dec_dim = int(sd["decoder_embed.weight"].shape[0])
    patch2 = int(sd["patch_embed.proj.weight"].shape[2]) ** 2
    n_local = int(sd["downstream_head1.head_local_features.fc2.weight"].shape[0]) // patch2
    two_confs = n_local == 25
    kwargs: dict[str, Any] = dict(
        enc_depth=depth("enc_blocks"),
        dec_depth=depth("dec_blocks"),
        enc_embed_dim=enc_dim,
        dec_embed_dim=dec_dim,
        enc_num_heads=enc_dim // head_dim,
        dec_num_heads=dec_dim // head_dim,
        pos_embed="RoPE100",
        patch_embed_cls="PatchEmbedDust3R",
        img_size=(512, 512),
        head_type=MAST3R_HEAD,
        output_mode=f"pts3d+desc{n_local - 1 if two_confs else n_local}",
        depth_mode=("exp", -math.inf, math.inf),
        conf_mode=("exp", 1, math.inf),
        landscape_only=False,
        two_confs=two_confs,
    )
    if two_confs:
        kwargs["desc_conf_mode"] = ("exp", 0, math.inf)
    log.warning(
        "checkpoint has no constructor arguments; inferred %s (assuming %d-d attention heads)",
        kwargs,
        head_dim,
    )
    return kwargs
