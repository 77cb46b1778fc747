"""Local features of one image: the common currency of retrieval (ASMK) and prior-free relative pose.

Two extractors make them: OpenCV SIFT on the input image (RGB-D source, any camera without the MASt3R
retrieval checkpoint; :mod:`~online3r_ros.retrieval.sift`) and MASt3R's retrieval head over the encoder tokens
(:mod:`~online3r_ros.retrieval.mast3r_head`). A database only ever holds features of one ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor

__all__ = ["LocalFeatures"]


@dataclass
class LocalFeatures:
    """Local features of one image (CPU tensors).

    Attributes:
        kind: extractor name (``"sift"``, ``"mast3r"``); databases refuse to mix kinds.
        desc: ``[N, D]`` float32 descriptors, the ASMK input (SIFT: RootSIFT, L2-normalised; MASt3R: the
            retrieval head's post-whitened features as they are, the space its codebook was trained in).
        xy: ``[N, 2]`` float32 pixel coordinates ``(x, y)`` in the image they were computed on, or ``None``.
        points: ``[N, 3]`` float32 camera-frame points (m) at ``xy`` from depth (NaN: no valid depth), or
            ``None`` (no depth).
        image_size: ``(H, W)`` of that image.
    """

    kind: str
    desc: Tensor
    xy: Tensor | None = None
    points: Tensor | None = None
    image_size: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.desc.ndim != 2:
            raise ValueError(f"LocalFeatures.desc must be [N, D], got {tuple(self.desc.shape)}")
        n = int(self.desc.shape[0])
        for name in ("xy", "points"):
            t = getattr(self, name)
            if t is not None and (t.ndim != 2 or int(t.shape[0]) != n):
                raise ValueError(f"LocalFeatures.{name} must have {n} rows, got {tuple(t.shape)}")

    def __len__(self) -> int:
        return int(self.desc.shape[0])

    @property
    def dim(self) -> int:
        return int(self.desc.shape[1])

    def state_dict(self) -> dict:
        """Plain data (for maps, messages and pickling)."""
        return {
            "kind": self.kind,
            "desc": self.desc,
            "xy": self.xy,
            "points": self.points,
            "image_size": tuple(self.image_size),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> LocalFeatures:
        return cls(
            kind=str(state["kind"]),
            desc=state["desc"],
            xy=state.get("xy"),
            points=state.get("points"),
            image_size=tuple(int(v) for v in state.get("image_size", (0, 0))),
        )
