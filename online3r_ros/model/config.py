"""Constructor settings of MASt3R (the reference ``AsymmetricMASt3R(**kwargs)`` keyword arguments).

:func:`parse_mast3r_kwargs` takes the reference keyword arguments (as stored in checkpoint constructor
strings and in the parity fixtures' ``constructor_kwargs``; tuples may hold ``float('inf')``), validates
them and returns a :class:`MASt3RConfig`. Defaults are the reference constructor defaults, except
``landscape_only`` which defaults to ``False`` (the value ``mast3r.model.load_model`` forces) and is the only
value supported. Unsupported values raise ``ValueError`` naming the argument; unknown names raise
``TypeError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .postprocess import CONF_MODES, DEPTH_MODES, check_mode

INF = math.inf

# The released checkpoint MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric after load_model's rewrites.
MAST3R_VITL_KWARGS: dict[str, Any] = {
    "enc_depth": 24,
    "dec_depth": 12,
    "enc_embed_dim": 1024,
    "dec_embed_dim": 768,
    "enc_num_heads": 16,
    "dec_num_heads": 12,
    "pos_embed": "RoPE100",
    "patch_embed_cls": "PatchEmbedDust3R",
    "img_size": (512, 512),
    "head_type": "catmlp+dpt",
    "output_mode": "pts3d+desc24",
    "depth_mode": ("exp", -INF, INF),
    "conf_mode": ("exp", 1, INF),
    "landscape_only": False,
    "two_confs": True,
    "desc_conf_mode": ("exp", 0, INF),
}

FREEZE_MODES = ("none", "mask", "encoder")


@dataclass(frozen=True)
class MASt3RConfig:
    """Validated MASt3R architecture settings (see the reference constructor for their meaning)."""

    enc_embed_dim: int = 768
    enc_depth: int = 12
    enc_num_heads: int = 12
    dec_embed_dim: int = 512
    dec_depth: int = 8
    dec_num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    rope_base: float = 100.0
    norm_im2_in_dec: bool = True
    img_size: tuple[int, int] = (224, 224)
    desc_dim: int = 24
    two_confs: bool = False
    depth_mode: tuple = ("exp", -INF, INF)
    conf_mode: tuple = ("exp", 1.0, INF)
    desc_conf_mode: tuple = ("exp", 1.0, INF)
    freeze: str = "none"
    extra: dict = field(default_factory=dict)  # accepted but unused reference settings (e.g. mask_ratio)

    @property
    def enc_head_dim(self) -> int:
        return self.enc_embed_dim // self.enc_num_heads

    @property
    def dec_head_dim(self) -> int:
        return self.dec_embed_dim // self.dec_num_heads


_DEFAULTS: dict[str, Any] = {
    "img_size": 224,
    "patch_size": 16,
    "mask_ratio": 0.9,
    "enc_embed_dim": 768,
    "enc_depth": 12,
    "enc_num_heads": 12,
    "dec_embed_dim": 512,
    "dec_depth": 8,
    "dec_num_heads": 16,
    "mlp_ratio": 4,
    "norm_im2_in_dec": True,
    "pos_embed": "cosine",
    "output_mode": "pts3d",
    "head_type": "linear",
    "depth_mode": ("exp", -INF, INF),
    "conf_mode": ("exp", 1, INF),
    "freeze": "none",
    "landscape_only": False,
    "patch_embed_cls": "PatchEmbedDust3R",
    "desc_mode": "norm",
    "two_confs": False,
    "desc_conf_mode": None,
}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def parse_mast3r_kwargs(**kwargs: Any) -> MASt3RConfig:
    """Validate reference ``AsymmetricMASt3R`` keyword arguments and return a :class:`MASt3RConfig`."""
    unknown = sorted(set(kwargs) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown MASt3R constructor argument(s): {', '.join(unknown)}")
    a = {**_DEFAULTS, **kwargs}

    dims = {k: _positive_int(k, a[k]) for k in ("enc_embed_dim", "enc_depth", "enc_num_heads")}
    dims |= {k: _positive_int(k, a[k]) for k in ("dec_embed_dim", "dec_depth", "dec_num_heads", "patch_size")}
    for part in ("enc", "dec"):
        dim, heads = dims[f"{part}_embed_dim"], dims[f"{part}_num_heads"]
        if dim % heads or (dim // heads) % 4:
            raise ValueError(
                f"{part}_embed_dim={dim} / {part}_num_heads={heads} must give an integer head dim "
                "divisible by 4 (2-D RoPE)"
            )
    if a["head_type"] != "catmlp+dpt":
        raise ValueError(f"head_type={a['head_type']!r} is not supported (only 'catmlp+dpt')")
    m = re.fullmatch(r"pts3d\+desc(\d+)", str(a["output_mode"]))
    if not m or int(m[1]) <= 0:
        raise ValueError(f"output_mode={a['output_mode']!r} is not supported (expected 'pts3d+desc<N>')")
    if dims["dec_depth"] <= 9:
        raise ValueError(
            f"dec_depth={dims['dec_depth']} must be > 9 for the catmlp+dpt head (reference assert)"
        )
    m_rope = re.fullmatch(r"RoPE(\d+(?:\.\d+)?)", str(a["pos_embed"]))
    if not m_rope:
        raise ValueError(f"pos_embed={a['pos_embed']!r} is not supported (only 'RoPE<base>', e.g. 'RoPE100')")
    if a["patch_embed_cls"] != "PatchEmbedDust3R":
        hint = (
            " (mast3r.model.load_model rewrites 'ManyAR_PatchEmbed' to it)"
            if "ManyAR" in str(a["patch_embed_cls"])
            else ""
        )
        raise ValueError(
            f"patch_embed_cls={a['patch_embed_cls']!r} is not supported: use 'PatchEmbedDust3R'{hint}"
        )
    if a["landscape_only"] is not False:
        raise ValueError(
            f"landscape_only={a['landscape_only']!r} is not supported (only False, as load_model forces)"
        )
    if not isinstance(a["desc_mode"], str) or "norm" not in a["desc_mode"]:
        raise ValueError(f"desc_mode={a['desc_mode']!r} is not supported (only 'norm')")
    if not isinstance(a["two_confs"], bool):
        raise ValueError(f"two_confs must be a bool, got {a['two_confs']!r}")
    if not isinstance(a["norm_im2_in_dec"], bool):
        raise ValueError(f"norm_im2_in_dec must be a bool, got {a['norm_im2_in_dec']!r}")
    if a["freeze"] not in FREEZE_MODES:
        raise ValueError(f"freeze={a['freeze']!r} is not supported (supported: {', '.join(FREEZE_MODES)})")
    mlp_ratio = a["mlp_ratio"]
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    img_size = a["img_size"]
    img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(img_size) != 2:
        raise ValueError(f"img_size must be an int or an (H, W) pair, got {a['img_size']!r}")

    depth_mode = check_mode("depth_mode", a["depth_mode"], DEPTH_MODES, unbounded=True)
    conf_mode = check_mode("conf_mode", a["conf_mode"], CONF_MODES)
    desc_conf_raw = a["desc_conf_mode"] if a["desc_conf_mode"] is not None else a["conf_mode"]
    desc_conf_mode = check_mode("desc_conf_mode", desc_conf_raw, CONF_MODES)

    return MASt3RConfig(
        **dims,
        mlp_ratio=float(mlp_ratio),
        rope_base=float(m_rope[1]),
        norm_im2_in_dec=a["norm_im2_in_dec"],
        img_size=img_size,
        desc_dim=int(m[1]),
        two_confs=a["two_confs"],
        depth_mode=depth_mode,
        conf_mode=conf_mode,
        desc_conf_mode=desc_conf_mode,
        freeze=a["freeze"],
        extra={"mask_ratio": a["mask_ratio"]},
    )
