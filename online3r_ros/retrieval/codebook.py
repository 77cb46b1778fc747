"""Visual vocabulary (ASMK codebook): k-means centroids of local descriptors, saved as ``.npz``.

A :class:`Codebook` is what :class:`~online3r_ros.retrieval.database.ImageDatabase` quantises descriptors
against. :func:`train_codebook` clusters descriptors with faiss k-means (seeded); the package ships a SIFT
vocabulary trained on project data (:func:`load_default_codebook`; recipe: ``retrieval/data/README.md``).
MASt3R's official ``*_codebook.pkl`` loads through :func:`Codebook.load` too (``retrieval.mast3r_files``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Codebook", "train_codebook", "default_codebook_path", "load_default_codebook"]

FORMAT_VERSION = 1


@dataclass
class Codebook:
    """Visual words of one descriptor kind.

    Attributes:
        centroids: ``[K, D]`` float32 word centres (descriptor space, not normalised).
        kind: descriptor kind (``"sift"``, ``"mast3r"``), the ``LocalFeatures.kind`` it indexes.
    """

    centroids: np.ndarray
    kind: str

    def __post_init__(self) -> None:
        c = np.asarray(self.centroids)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"Codebook.centroids must be [K, D] with K, D >= 1, got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.floating) or not np.isfinite(c).all():
            raise ValueError("Codebook.centroids must be finite floating-point values")
        self.centroids = np.ascontiguousarray(c, dtype=np.float32)
        self.kind = str(self.kind)

    @property
    def size(self) -> int:
        """Number of words ``K``."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Descriptor dimension ``D``."""
        return int(self.centroids.shape[1])

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write a compressed ``.npz`` (``half``: float16 centroids, half the size). Returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"codebook files are .npz, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:  # np.savez would append .npz to names without it
            np.savez_compressed(
                fh,
                centroids=self.centroids.astype(np.float16 if half else np.float32),
                kind=np.array(self.kind),
                version=np.array(FORMAT_VERSION),
            )
        return path

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> Codebook:
        """Read a ``.npz`` written by :meth:`save`, or MASt3R's ``.pkl`` codebook (``kind`` default "mast3r").

        Raises ``FileNotFoundError`` (missing) or ``ValueError`` (not a codebook, corrupt, wrong ``kind``).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"codebook file not found: {path}")
        if path.suffix == ".pkl":
            return cls._load_pkl(path, kind or "mast3r")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"centroids", "kind"} - set(data.files)
                if missing:
                    raise ValueError(f"not a codebook file (missing {sorted(missing)}): {path}")
                version = int(data["version"]) if "version" in data.files else FORMAT_VERSION
                if version > FORMAT_VERSION:
                    raise ValueError(
                        f"codebook file {path} has format {version}, newer than {FORMAT_VERSION}"
                    )
                cb = cls(centroids=data["centroids"], kind=str(data["kind"]))
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"cannot read codebook file {path}: {exc}") from exc
        except ValueError as exc:
            if str(path) in str(exc):
                raise
            raise ValueError(f"bad codebook file {path}: {exc}") from exc
        if kind is not None and cb.kind != kind:
            raise ValueError(f"codebook {path} is for {cb.kind!r} descriptors, expected {kind!r}")
        return cb

    @classmethod
    def _load_pkl(cls, path: Path, kind: str) -> Codebook:
        try:
            from .mast3r_files import load_asmk_codebook
        except ImportError as exc:
            raise ValueError(
                f"cannot load {path}: reading MASt3R .pkl codebooks needs "
                "online3r_ros.retrieval.mast3r_files.load_asmk_codebook, which is not available"
            ) from exc
        return cls(centroids=np.asarray(load_asmk_codebook(path)), kind=kind)


def train_codebook(
    descriptors: np.ndarray, size: int = 1024, seed: int = 0, kind: str = "sift", niter: int = 20
) -> Codebook:
    """k-means (faiss, seeded, deterministic for the same input and seed) of ``[M, D]`` descriptors.

    ``M >= size`` is required; faiss subsamples to 256 points per centroid.
    """
    import faiss

    x = np.ascontiguousarray(np.asarray(descriptors), dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"descriptors must be [M, D], got shape {x.shape}")
    if size < 1:
        raise ValueError(f"codebook size must be >= 1, got {size}")
    if x.shape[0] < size:
        raise ValueError(f"need at least {size} descriptors for {size} words, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("descriptors contain NaN or inf")
    km = faiss.Kmeans(x.shape[1], int(size), niter=int(niter), seed=int(seed), verbose=False)
    km.train(x)
    return Codebook(centroids=np.asarray(km.centroids, dtype=np.float32).reshape(size, x.shape[1]), kind=kind)


def default_codebook_path() -> Path:
    """The SIFT vocabulary shipped with the package (``retrieval/data/sift_codebook.npz``)."""
    return Path(__file__).resolve().parent / "data" / "sift_codebook.npz"


def load_default_codebook() -> Codebook:
    """Load :func:`default_codebook_path` (1024 RootSIFT words; see ``retrieval/data/README.md``)."""
    return Codebook.load(default_codebook_path(), kind="sift")
