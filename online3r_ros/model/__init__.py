"""MASt3R network (checkpoint-compatible re-implementation of ``AsymmetricMASt3R``), torch only.

Low-level API (the engine in ``inference.py`` builds on it)::

    from online3r_ros.model import build_mast3r
    model = build_mast3r(**constructor_kwargs)   # reference AsymmetricMASt3R kwargs; nn.Module
    # state_dict keys/shapes == the reference (incl. the DPT ``scratch.layer_rn.{i}`` aliases), so
    # official weights load with ``load_state_dict(sd, strict=True)``.
    # MAST3R_VITL_KWARGS = the released ViT-L checkpoint's kwargs.

    res1, res2 = model(view1, view2, prompts=None)
        # view = {'img': [B,3,H,W] float in [-1,1], 'true_shape': [B,2] int (optional, must equal H, W)}
        # res1: pts3d [B,H,W,3], conf [B,H,W], desc [B,H,W,24], desc_conf [B,H,W]
        # res2: pts3d_in_other_view [B,H,W,3] (view 2's points in view 1's frame), conf, desc, desc_conf
    feat, pos = model.encode(img, true_shape=None, prompts=None)
        # img [B,3,H,W] (H, W multiples of 16) -> feat [B,N,Denc] (after enc_norm), pos [B,N,2] int64 (y, x)
    dec1, dec2 = model.decode(feat1, pos1, feat2, pos2)
        # lists of dec_depth+1 tensors: [feat_k [B,N,Denc], out_1..out_{L-1} raw [B,N,Ddec], dec_norm(out_L)]
    res1, res2 = model.heads(dec1, dec2, shape1=(H, W), shape2=(H, W))
        # res2 keeps the key 'pts3d' here (only forward renames it)

Precision: ``encode``/``decode`` are precision-agnostic (wrap them in ``torch.autocast`` on CUDA for
bf16/fp16); ``heads`` always run in float32 (autocast disabled inside, tokens cast to float), as the
reference does.

Prompts (Online3R, VPT-deep, encoder only): ``prompts`` is a ``[enc_depth, T, Denc]`` tensor (Online3R:
24 x 32 x 1024, zero-initialised: ``model.new_prompts(num_tokens=32)``). Encoder layer l gets ``prompts[l]``
prepended to its input and the prompt outputs are dropped. RoPE: prompt tokens sit at position (0, 0) and
patch tokens are shifted to (y+1, x+1) (Test3R's convention); patch-patch attention is unchanged by the common
shift. ``prompts=None`` gives exactly the reference outputs. With frozen weights, gradients reach the prompts.

CPU speed: by default (``set_impl('fast')``) inference on CPU in float32 uses fused SDPA, table RoPE, oneDNN
matmuls with fused GELU/residual and NNPACK Winograd 3x3 convolutions in the DPT heads (they round
differently, ~1e-5 relative; ``model.set_impl('exact')`` turns only them off). ``model.set_impl('naive')``
switches to reference-style code (explicit softmax(QK^T)V, croco's pure-PyTorch RoPE2D); it is used only by
``benchmarks/bench_mast3r.py`` for a side-by-side timing.
"""

from .config import MAST3R_VITL_KWARGS, MASt3RConfig, parse_mast3r_kwargs
from .network import MASt3R, build_mast3r

__all__ = ["MAST3R_VITL_KWARGS", "MASt3R", "MASt3RConfig", "build_mast3r", "parse_mast3r_kwargs"]
