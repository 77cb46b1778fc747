"""Loop detection for the mapper: verified loop candidates of each new keyframe (ROS-free).

:class:`LoopCloser` is the :class:`~online3r_ros.slam.backend.BackendHooks` ``loop_candidates`` hook of an
in-process mapper (:class:`~online3r_ros.slam.system.SlamSystem`), and the retrieval node runs the same
:class:`~online3r_ros.retrieval.place.PlaceRecognizer` query on the keyframes it hears of. Each new keyframe
queries the database over keyframes older than its ``retrieval.exclude_recent`` predecessors, then joins it;
candidates with depth are verified by a prior-free pose, which also guides the edge's matching. The edge test
of the backend (match fractions both ways) decides last: a wrong loop is worse than a missed one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..retrieval.place import PlaceCandidate, PlaceRecognizer
from .config import SlamConfig

if TYPE_CHECKING:
    from .backend import MapperBackend

__all__ = ["LoopCloser"]


class LoopCloser:
    """``loop_candidates(backend, kf_id)`` from the keyframes' features (see the module docstring)."""

    def __init__(self, config: SlamConfig, places: PlaceRecognizer) -> None:
        self.config, self.places = config, places
        self._generation: int | None = None

    def __call__(self, backend: MapperBackend, kf_id: int) -> list[PlaceCandidate]:
        if backend.generation != self._generation:  # a new or loaded map: index what it already holds
            self.places.reset()
            self._generation = backend.generation
        for i in range(kf_id):
            f = backend.kf_features[i]
            if f is not None and i not in self.places:
                self.places.add(i, f)
        feats = backend.kf_features[kf_id]
        if feats is None:
            return []
        return self.places.loop_candidates(kf_id, feats, self.config.retrieval.exclude_recent)
