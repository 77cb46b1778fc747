"""``online3r codebook train IMAGES_OR_FOLDERS... --out FILE``: train a SIFT vocabulary (ASMK codebook).

Extracts RootSIFT descriptors (:class:`~online3r_ros.retrieval.sift.SiftExtractor`) from colour images (files,
or folders searched recursively; depth images are skipped) and clusters them with seeded faiss k-means into a
``.npz`` that :class:`~online3r_ros.retrieval.codebook.Codebook` loads.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .main import EXIT_INPUT, EXIT_OK, CliError, positive_int

__all__ = ["register", "codebook_command", "find_images", "extract_descriptors"]

COLOUR_EXTENSIONS = (".jpg", ".jpeg", ".png")
_NOT_COLOUR = ("depth", "disp", "mask", "normal", "label", "seg")


def _is_colour_name(path: Path) -> bool:
    lower = path.name.lower()
    return path.suffix.lower() in COLOUR_EXTENSIONS and not any(tag in lower for tag in _NOT_COLOUR)


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Colour images among ``paths``: files as given, folders searched recursively (sorted; names with
    ``depth``/``mask``/... skipped). Raises ``FileNotFoundError`` for a path that does not exist."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and _is_colour_name(f)))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return list(dict.fromkeys(found))


def pick_evenly(items: Sequence, max_items: int | None) -> list:
    """At most ``max_items`` of ``items``, evenly spread (first one kept); all when ``None``."""
    if max_items is None or len(items) <= max_items:
        return list(items)
    idx = np.linspace(0, len(items) - 1, max_items).round().astype(int)
    return [items[i] for i in np.unique(idx)]


def extract_descriptors(images: Sequence[Path], extractor, log=None) -> tuple[np.ndarray, int]:
    """Stack the descriptors of ``images`` -> (``[M, D]`` float32, number of images read)."""
    from ..datasets.base import SkipFrame
    from ..datasets.imageio import read_rgb

    chunks, n_ok = [], 0
    for path in images:
        try:
            rgb = read_rgb(path)
        except SkipFrame as exc:
            if log:
                log(f"skipping {path}: {exc}")
            continue
        chunks.append(extractor.extract(rgb).desc.numpy())
        n_ok += 1
    dim = chunks[0].shape[1] if chunks else 128
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), n_ok


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``codebook`` subcommand (with its ``train`` action)."""
    p = subparsers.add_parser(
        "codebook",
        help="train a SIFT visual vocabulary (ASMK codebook) for the retrieval database",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    actions = p.add_subparsers(dest="action", metavar="<action>")
    t = actions.add_parser("train", help="train a codebook from images")
    t.add_argument("inputs", nargs="+", type=Path, help="colour images (jpg/png) or folders (recursive)")
    t.add_argument("--out", type=Path, required=True, help="output codebook file (.npz)")
    t.add_argument("--size", type=positive_int, default=1024, help="number of visual words (1024)")
    t.add_argument(
        "--max-images", type=positive_int, default=None, help="use at most N images, evenly spread"
    )
    t.add_argument("--max-features", type=positive_int, default=1000, help="SIFT features per image (1000)")
    t.add_argument("--seed", type=int, default=0, help="k-means seed (0)")
    t.add_argument("--half", action="store_true", help="store float16 centroids (half the file size)")
    p.set_defaults(func=codebook_command, action=None)
    return p


def codebook_command(args: argparse.Namespace) -> int:
    """Handler of ``online3r codebook``."""
    if args.action != "train":
        raise CliError("missing action; run 'online3r codebook train --help'", 2)
    from ..retrieval.codebook import train_codebook
    from ..retrieval.sift import KIND, SiftExtractor

    if args.out.suffix != ".npz":
        raise CliError(f"--out must end in .npz, got {args.out}", EXIT_INPUT)
    try:
        images = find_images(args.inputs)
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_INPUT) from exc
    if not images:
        searched = ", ".join(str(p) for p in args.inputs)
        raise CliError(
            f"no colour images ({'/'.join(COLOUR_EXTENSIONS)}, recursively) found in: {searched}", EXIT_INPUT
        )
    images = pick_evenly(images, args.max_images)
    t0 = time.perf_counter()
    extractor = SiftExtractor(max_features=args.max_features)
    desc, n_ok = extract_descriptors(images, extractor, log=lambda m: print(m, file=sys.stderr))
    print(f"{len(desc)} descriptors from {n_ok}/{len(images)} images in {time.perf_counter() - t0:.1f} s")
    if len(desc) < args.size:
        raise CliError(
            f"{len(desc)} descriptors are fewer than --size {args.size} words: give more images or a smaller "
            "--size",
            EXIT_INPUT,
        )
    t0 = time.perf_counter()
    cb = train_codebook(desc, size=args.size, seed=args.seed, kind=KIND)
    cb.save(args.out, half=args.half)
    print(f"{cb.size} words x {cb.dim} trained in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return EXIT_OK
