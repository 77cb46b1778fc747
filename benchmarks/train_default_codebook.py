"""Recipe of the shipped SIFT vocabulary ``online3r_ros/retrieval/data/sift_codebook.npz`` (reproducible).

Training data (only the project's own):
  * the 500 colour frames of ``shared/data/7scenes_redkitchen_0000_0499`` (every 2nd: 250),
  * the 58 colour keyframes of ``shared/data/tum_fr3_cabinet_keyframes/raw_imgs``,
  * 120 synthetic renders (640x480) of :func:`online3r_ros.synthetic.make_synthetic_sequence`, seeds 0-5, 20
    frames each spread over one orbit.
RootSIFT with :class:`~online3r_ros.retrieval.sift.SiftExtractor` (defaults but ``max_features=1000``), faiss
k-means with 1024 words, seed 0, 20 iterations; saved as float16.

    PYTHONPATH=. python benchmarks/train_default_codebook.py [--out FILE] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from online3r_ros.cli.codebook import extract_descriptors, find_images
from online3r_ros.retrieval.codebook import default_codebook_path, train_codebook
from online3r_ros.retrieval.sift import KIND, SiftExtractor
from online3r_ros.synthetic import make_synthetic_sequence

REPO = Path(__file__).resolve().parents[1]
SIZE, SEED, MAX_FEATURES = 1024, 0, 1000
SYNTH_SEEDS, SYNTH_FRAMES = range(6), 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=default_codebook_path())
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()

    extractor = SiftExtractor(max_features=MAX_FEATURES)
    t0 = time.perf_counter()
    seven = find_images([args.data / "7scenes_redkitchen_0000_0499"])[::2]
    tum = find_images([args.data / "tum_fr3_cabinet_keyframes" / "raw_imgs"])
    d_real, n_real = extract_descriptors(seven + tum, extractor)
    chunks = [d_real]
    for seed in SYNTH_SEEDS:
        seq = make_synthetic_sequence(n_frames=SYNTH_FRAMES, width=640, height=480, seed=seed)
        for i in range(SYNTH_FRAMES):
            chunks.append(extractor.extract(seq[i].rgb).desc.numpy())
    desc = np.concatenate(chunks)
    n_synth = len(SYNTH_SEEDS) * SYNTH_FRAMES
    print(
        f"{len(desc)} descriptors: {len(d_real)} from {n_real} real images "
        f"({len(seven)} 7-Scenes, {len(tum)} TUM), "
        f"{len(desc) - len(d_real)} from {n_synth} synthetic renders; {time.perf_counter() - t0:.1f} s"
    )
    t0 = time.perf_counter()
    cb = train_codebook(desc, size=SIZE, seed=SEED, kind=KIND)
    cb.save(args.out, half=True)
    dt, nbytes = time.perf_counter() - t0, args.out.stat().st_size
    print(f"{cb.size} x {cb.dim} words in {dt:.1f} s -> {args.out} ({nbytes} B)")


if __name__ == "__main__":
    main()
