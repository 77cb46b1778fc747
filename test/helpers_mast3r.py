"""Small MASt3R configurations and random-weight networks shared by the model/checkpoint/source tests.

Imported by the test modules as ``from helpers_mast3r import ...`` (pytest puts ``test/`` on ``sys.path``).
"""

from __future__ import annotations

from typing import Any

import torch

from online3r_ros.model import MAST3R_VITL_KWARGS, build_mast3r


def small_mast3r_kwargs(enc_dim: int, dec_dim: int, heads: int, *, depths: tuple[int, int] = (2, 10)) -> dict:
    """The released checkpoint's kwargs (``MAST3R_VITL_KWARGS``: catmlp+dpt head, two_confs) at a small size.

    ``depths`` = (encoder, decoder) blocks; the DPT head taps decoder layers up to 9, hence 10 by default.
    """
    return {
        **MAST3R_VITL_KWARGS,
        "enc_depth": depths[0],
        "dec_depth": depths[1],
        "enc_embed_dim": enc_dim,
        "dec_embed_dim": dec_dim,
        "enc_num_heads": heads,
        "dec_num_heads": heads,
    }


# The P1 parity fixture's configuration (small: 45M parameters, dominated by the fixed-width DPT heads).
P1_KWARGS: dict[str, Any] = small_mast3r_kwargs(64, 48, 4)


def damped_p1_model(seed: int = 0) -> torch.nn.Module:
    """P1-sized random network in eval mode with the DPT heads' last conv scaled by 0.3, which keeps the
    exp/expm1 outputs moderate (as in the parity fixtures)."""
    torch.manual_seed(seed)
    m = build_mast3r(**P1_KWARGS).eval()
    with torch.no_grad():
        m.downstream_head1.dpt.head[4].weight.mul_(0.3)
        m.downstream_head2.dpt.head[4].weight.mul_(0.3)
    return m


def random_views(batch: int, h: int, w: int, seed: int = 0, *, true_shape: bool = False) -> tuple[dict, dict]:
    """Two ``{'img': [batch,3,h,w]}`` views with values uniform in [-1, 1) (seeded); with ``true_shape``
    each also carries ``'true_shape'`` = ``[[h, w]] * batch`` (int32)."""
    g = torch.Generator().manual_seed(seed)
    img1 = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    img2 = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    if not true_shape:
        return {"img": img1}, {"img": img2}
    shape = torch.tensor([[h, w]] * batch, dtype=torch.int32)
    return {"img": img1, "true_shape": shape}, {"img": img2, "true_shape": shape}
