"""Building a local archive's content: 25,000 images against ten times 2,500, in the same run.

``ArchiveData`` renders no pixels while it builds (they are made on demand), so its work is the
records alone and grows linearly: the large build should take about ten times the small one
(a ratio near 1.0).  tests/test_local_archive.py checks the same without a clock, by counting
lines run; the time itself is measured here.

    python benchmarks/local_archive.py [--images 25000] [--repeat 3]
"""

from __future__ import annotations

import argparse

from _timing import best_of

from isicarchive.testing import ArchiveConfig, ArchiveData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    small_images = max(1, args.images // 10)
    small, _ = best_of(lambda: ArchiveData(seed=1, config=ArchiveConfig(images=small_images)), args.repeat)
    large, data = best_of(lambda: ArchiveData(seed=1, config=ArchiveConfig(images=args.images)), args.repeat)
    assert len(data.images) == args.images
    print(f"{small_images:>7,} images: {small:7.3f} s")
    print(f"{args.images:>7,} images: {large:7.3f} s  ({large / (10 * small):.2f} x ten small builds)")


if __name__ == "__main__":
    main()
