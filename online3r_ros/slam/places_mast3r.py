"""MASt3R retrieval features for the pipeline (imported only with ``retrieval.features: mast3r``)."""

from __future__ import annotations

from pathlib import Path

from ..retrieval.features import LocalFeatures
from ..retrieval.mast3r_features import Mast3rRetrievalFeatures
from ..retrieval.mast3r_files import load_retrieval_checkpoint
from ..sources.base import PointmapSource, SourceFrame
from ..sources.mast3r import MASt3RSource
from .config import SlamConfig

__all__ = ["Mast3rDescriber", "make_mast3r_describer"]


class Mast3rDescriber:
    """The retrieval head over the encoder tokens the prepared frame carries (the input image is not used)."""

    kind = "mast3r"

    def __init__(self, features: Mast3rRetrievalFeatures) -> None:
        self.features = features

    def __call__(self, sf: SourceFrame, rgb, depth, K) -> LocalFeatures:
        return self.features(sf)


def make_mast3r_describer(
    cfg: SlamConfig, source: PointmapSource, checkpoint: Path | None
) -> Mast3rDescriber:
    """``retrieval.features: mast3r`` needs the MASt3R source and its retrieval checkpoint (clear errors)."""
    if not isinstance(source, MASt3RSource):
        raise ValueError(f"retrieval.features 'mast3r' needs the MASt3R source, not {source.name}")
    if checkpoint is None:
        raise ValueError(
            "retrieval.features 'mast3r' needs the retrieval head: set retrieval.checkpoint or put "
            "<checkpoint stem>_retrieval_trainingfree.pth beside source.checkpoint"
        )
    head, _ = load_retrieval_checkpoint(checkpoint)
    return Mast3rDescriber(Mast3rRetrievalFeatures(head.to(source.device), source))
