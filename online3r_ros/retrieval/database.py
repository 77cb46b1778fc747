"""Incremental ASMK image database (place recognition for loop closure and relocalisation).

Built on the ``asmk`` package (Tolias et al., ICCV'13): its faiss codebook index quantises descriptors, its
binary kernel scores residuals, and its inverted file (:class:`asmk.inverted_file.IVF`) holds the database.
Parameters are MASt3R-SLAM's: database images use 1 word per descriptor, queries 5, binary residuals, no idf,
similarity exponent ``alpha = 3`` above a threshold of 0; a query returns the top ``k = 3`` images scoring
above ``5e-3``. As in MASt3R-SLAM, :meth:`ImageDatabase.query_and_add` reuses the query's quantisation
(its first word per descriptor) to add the image.

The per-image aggregation (residual sum per visual word) is the asmk kernel's ``aggregate_image``, vectorised;
each image's aggregated words are kept so that :meth:`~ImageDatabase.remove` and
:meth:`~ImageDatabase.load_state_dict` rebuild the IVF in one vectorised pass (asmk's IVF cannot delete).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

import numpy as np
import torch
from asmk import hamming
from asmk.codebook import Codebook as AsmkCodebook
from asmk.index import FaissL2Index
from asmk.inverted_file import IVF
from asmk.kernel import ASMKKernel

from .codebook import Codebook
from .features import LocalFeatures

__all__ = ["ImageDatabase"]

STATE_VERSION = 1


def _codebook_hash(centroids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(centroids, dtype=np.float32).tobytes()).hexdigest()


class ImageDatabase:
    """ASMK database of images identified by int ids (e.g. keyframe indices).

    Args:
        codebook: visual vocabulary; its ``kind``/``dim`` fix what features the database accepts.
        build_multiple_assignment / query_multiple_assignment: words per descriptor when adding / querying.
        alpha, similarity_threshold: ASMK selectivity ``sim**alpha`` for ``sim >= threshold``.
        binary: binarised residuals (the asmk "bin" kernel).
    """

    def __init__(
        self,
        codebook: Codebook,
        *,
        build_multiple_assignment: int = 1,
        query_multiple_assignment: int = 5,
        alpha: float = 3.0,
        similarity_threshold: float = 0.0,
        binary: bool = True,
    ) -> None:
        if not 1 <= build_multiple_assignment <= query_multiple_assignment <= codebook.size:
            raise ValueError(
                "need 1 <= build_multiple_assignment <= query_multiple_assignment <= codebook size"
            )
        self.codebook = codebook
        self.params = {
            "build_multiple_assignment": int(build_multiple_assignment),
            "query_multiple_assignment": int(query_multiple_assignment),
            "alpha": float(alpha),
            "similarity_threshold": float(similarity_threshold),
            "binary": bool(binary),
        }
        self._cdb = AsmkCodebook(FaissL2Index(), size=codebook.size)
        self._cdb.index(codebook.centroids)
        self._kernel = ASMKKernel(self._cdb, binary=bool(binary))
        self._codebook_hash = _codebook_hash(codebook.centroids)
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self) -> None:
        """Forget every image."""
        self._ivf = IVF.initialize_empty(use_idf=False, codebook_size=self.codebook.size)
        self._ids: list[int] = []  # external id of IVF image i
        self._index: dict[int, int] = {}  # external id -> IVF image
        self._agg: list[tuple[np.ndarray, np.ndarray]] = []  # IVF image -> (aggregated residuals, words)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    @property
    def ids(self) -> list[int]:
        """Image ids in insertion order."""
        return list(self._ids)

    @property
    def kind(self) -> str:
        return self.codebook.kind

    # ------------------------------------------------------------------ ASMK steps
    def _check(self, feats: LocalFeatures) -> np.ndarray:
        if feats.kind != self.codebook.kind:
            raise ValueError(f"database holds {self.codebook.kind!r} features, got {feats.kind!r}")
        if feats.dim != self.codebook.dim:
            raise ValueError(f"database descriptors are {self.codebook.dim}-d, got {feats.dim}-d")
        desc = feats.desc.detach().cpu().numpy() if torch.is_tensor(feats.desc) else np.asarray(feats.desc)
        return np.ascontiguousarray(desc, dtype=np.float32)

    def _quantize(self, desc: np.ndarray, multiple_assignment: int) -> np.ndarray:
        """``[N, ma]`` int64 nearest words (asmk codebook, faiss flat L2), nearest first."""
        return self._cdb.quantize(desc, multiple_assignment=multiple_assignment)[1].astype(np.int64)

    def _aggregate(self, desc: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """asmk ``ASMKKernel.aggregate_image``, vectorised: per unique word the sum of residuals of the
        descriptors assigned to it -> (binary packed ``[W, D/32]`` uint32 or L2-normalised, words ``[W]``)."""
        n, ma = words.shape
        flat = words.reshape(-1)
        order = np.argsort(flat, kind="stable")
        sorted_words = flat[order]
        rows = order // ma
        residuals = desc[rows] - self.codebook.centroids[sorted_words]
        starts = np.flatnonzero(np.r_[True, sorted_words[1:] != sorted_words[:-1]])
        unique = sorted_words[starts]
        ades = np.add.reduceat(residuals, starts, axis=0).astype(np.float32)
        if self.params["binary"]:
            ades = hamming.binarize_and_pack_2D(ades)
        else:
            ades = ades / (np.linalg.norm(ades, axis=1, keepdims=True) + 1e-6)
        return ades, unique

    def _scores(self, ades: np.ndarray, words: np.ndarray) -> np.ndarray:
        """ASMK score of every IVF image ``[n]`` (asmk IVF search with the kernel's similarity)."""
        p = self.params

        def similarity(qvec, vecs, image_ids):
            return self._kernel.similarity(
                qvec, vecs, image_ids, alpha=p["alpha"], similarity_threshold=p["similarity_threshold"]
            )

        ranks, ranked = self._ivf.search(ades, words, similarity_func=similarity, topk=None)
        scores = np.zeros(len(self._ids))
        scores[ranks] = ranked
        return scores

    # ------------------------------------------------------------------ public API
    def add(self, image_id: int, feats: LocalFeatures, _words: np.ndarray | None = None) -> None:
        """Add one image. ``image_id`` must be new; an image without descriptors is stored (never matches)."""
        image_id = int(image_id)
        desc = self._check(feats)
        if image_id in self._index:
            raise ValueError(f"image id {image_id} is already in the database")
        ma = self.params["build_multiple_assignment"]
        if _words is None and len(desc):
            _words = self._quantize(desc, ma)
        if len(desc):
            ades, words = self._aggregate(desc, _words[:, :ma])
        else:
            ades, words = self._empty_agg()
        internal = len(self._ids)
        self._ids.append(image_id)
        self._index[image_id] = internal
        self._agg.append((ades, words))
        if len(words):
            self._ivf.add(ades, words.copy(), np.full(len(words), internal, dtype=np.int64))
        else:  # keep the IVF's image count in step with ours
            self._ivf.norm_factor = np.concatenate((self._ivf.norm_factor, [0.0]))
            self._ivf.n_images = internal + 1

    def query(
        self, feats: LocalFeatures, k: int = 3, min_score: float = 5e-3, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(image_id, score)`` with ``score > min_score``, best first (ties: first added first).

        ``exclude``: ids never returned (e.g. the current keyframe's neighbours). Empty database: ``[]``.
        """
        return self._query(feats, k, min_score, exclude)[0]

    def query_and_add(
        self,
        image_id: int,
        feats: LocalFeatures,
        k: int = 3,
        min_score: float = 5e-3,
        exclude: Collection[int] = (),
    ) -> list[tuple[int, float]]:
        """:meth:`query` then :meth:`add` (reusing the query's word assignment); returns the query result."""
        self._check(feats)
        if int(image_id) in self._index:
            raise ValueError(f"image id {int(image_id)} is already in the database")
        result, words = self._query(feats, k, min_score, exclude)
        self.add(image_id, feats, _words=words)
        return result

    def _query(self, feats, k, min_score, exclude) -> tuple[list[tuple[int, float]], np.ndarray | None]:
        desc = self._check(feats)
        if not len(desc):
            return [], None
        words = self._quantize(desc, self.params["query_multiple_assignment"])
        if not self._ids or k < 1:
            return [], words
        scores = self._scores(*self._aggregate(desc, words))
        if exclude:
            drop = [self._index[i] for i in exclude if i in self._index]
            scores[drop] = -np.inf
        order = np.argsort(-scores, kind="stable")[: int(k)]
        result = [(self._ids[i], float(scores[i])) for i in order if scores[i] > min_score]
        return result, words

    def scores(self, feats: LocalFeatures) -> dict[int, float]:
        """ASMK score of ``feats`` against every image (``{image_id: score}``; diagnostics and tests)."""
        desc = self._check(feats)
        if not self._ids or not len(desc):
            return {i: 0.0 for i in self._ids}
        s = self._scores(
            *self._aggregate(desc, self._quantize(desc, self.params["query_multiple_assignment"]))
        )
        return dict(zip(self._ids, s.tolist(), strict=True))

    def remove(self, ids: int | Iterable[int]) -> int:
        """Remove images (unknown ids are ignored); rebuilds the IVF from the kept aggregated data. Returns
        how many were removed."""
        ids = {int(ids)} if isinstance(ids, (int, np.integer)) else {int(i) for i in ids}
        keep = [j for j, i in enumerate(self._ids) if i not in ids]
        removed = len(self._ids) - len(keep)
        if removed:
            self._rebuild([self._ids[j] for j in keep], [self._agg[j] for j in keep])
        return removed

    def _empty_agg(self) -> tuple[np.ndarray, np.ndarray]:
        width = (self.codebook.dim + 31) // 32 if self.params["binary"] else self.codebook.dim
        return np.zeros((0, width), np.uint32 if self.params["binary"] else np.float32), np.zeros(0, np.int64)

    def _rebuild(self, ids: list[int], agg: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Fill a fresh asmk IVF with per-image aggregated data in one vectorised pass."""
        self.reset()
        n, size = len(ids), self.codebook.size
        if n == 0:
            return
        empty_ades = self._empty_agg()[0]
        ades = np.concatenate([a for a, _ in agg] + [empty_ades])
        words = np.concatenate([w for _, w in agg]).astype(np.int64)
        imids = np.repeat(np.arange(n, dtype=np.int64), [len(w) for _, w in agg])
        order = np.argsort(words, kind="stable")
        counts = np.bincount(words, minlength=size)
        splits = np.cumsum(counts)[:-1]
        vecs = np.split(ades[order], splits)
        owners = np.split(imids[order], splits)
        ivf = self._ivf
        ivf.ivf_vecs = [v.copy() if c else None for v, c in zip(vecs, counts, strict=True)]
        ivf.ivf_image_ids = [o.copy() if c else None for o, c in zip(owners, counts, strict=True)]
        ivf.counts = counts.astype(np.int32)
        ivf.norm_factor = np.bincount(imids, minlength=n).astype(np.float64)
        ivf.n_images = n
        self._ids = list(ids)
        self._index = {i: j for j, i in enumerate(ids)}
        self._agg = list(agg)

    def state_dict(self) -> dict:
        """Plain python scalars/strings/lists and torch tensors (``torch.save``-able, weights_only-safe)."""
        sizes = [len(w) for _, w in self._agg]
        ades = np.concatenate([a for a, _ in self._agg] + [self._empty_agg()[0]])
        words = np.concatenate([w for _, w in self._agg] + [np.zeros(0, np.int64)])
        if ades.dtype == np.uint32:
            ades = ades.view(np.int32)  # torch has no general uint32
        return {
            "version": STATE_VERSION,
            "kind": self.codebook.kind,
            "codebook_size": self.codebook.size,
            "codebook_dim": self.codebook.dim,
            "codebook_sha1": self._codebook_hash,
            "params": dict(self.params),
            "ids": list(self._ids),
            "words_per_image": torch.tensor(sizes, dtype=torch.int64),
            "ades": torch.from_numpy(np.ascontiguousarray(ades)),
            "words": torch.from_numpy(words.astype(np.int64)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; ``ValueError`` if made with another codebook or params."""
        if int(state.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"unsupported ImageDatabase state version {state.get('version')!r}")
        if state["kind"] != self.codebook.kind or state["codebook_sha1"] != self._codebook_hash:
            raise ValueError(
                f"ImageDatabase state was built with another codebook ({state['kind']!r}, "
                f"{state['codebook_size']} words); this one uses {self.codebook.kind!r}, {self.codebook.size}"
            )
        if dict(state["params"]) != self.params:
            raise ValueError(f"ImageDatabase state has params {state['params']}, this database {self.params}")
        ades = state["ades"].numpy()
        if self.params["binary"]:
            ades = ades.view(np.uint32)
        sizes = state["words_per_image"].numpy()
        bounds = np.cumsum(sizes)[:-1]
        ids = [int(i) for i in state["ids"]]
        if len(sizes) != len(ids) or not int(sizes.sum()) == len(state["words"]) == len(ades):
            raise ValueError("ImageDatabase state is inconsistent (ids, words_per_image, words, ades)")
        words = state["words"].numpy().astype(np.int64)
        agg = list(zip(np.split(ades, bounds), np.split(words, bounds), strict=True)) if ids else []
        self._rebuild(ids, agg)
