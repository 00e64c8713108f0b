"""The cost of the file-lock helper and writers' own partial files, per file, against the bare lock.

Each file of a download is fetched under its lock; since isicarchive.locking the bytes go to a
partial file of the writer's own (adopted by a rename, put in place by a rename).  This times that
bookkeeping alone — lock, adopt, write 64 KiB, move into place — for N files in a folder that also
holds many finished ones (the folder is listed once per process for partial files of dead writers),
against the same with a bare ``filelock.FileLock`` and a shared ``.part`` (the way before).

    python benchmarks/locking.py [--files 2000] [--others 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import filelock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of  # noqa: E402

from isicarchive import locking  # noqa: E402

CHUNK = os.urandom(64 * 1024)


def bare(folder: Path, n: int) -> None:
    for i in range(n):
        part = folder / f".image_{i:06d}.part"
        with filelock.FileLock(str(part) + ".lock"):
            with open(part, "wb") as fh:
                fh.write(CHUNK)
            os.replace(part, folder / f"image_{i:06d}.jpg")


def helper(folder: Path, n: int) -> None:
    locking._listings.clear()  # a fresh process: the folder is listed once
    for i in range(n):
        part = folder / f".image_{i:06d}.part"
        with locking.file_lock(str(part) + ".lock"):
            own = locking.adopt_partial(part)
            try:
                with open(own, "wb") as fh:
                    fh.write(CHUNK)
                os.replace(own, folder / f"image_{i:06d}.jpg")
            finally:
                locking.release_partial(own, part)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--others", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="isic-locking-"))
    try:
        results = {}
        for name, run in (("bare FileLock, shared .part", bare), ("file_lock + own partial", helper)):
            folder = root / name.split()[0]
            folder.mkdir()
            for i in range(args.others):
                (folder / f"image_other_{i:06d}.jpg").touch()

            def clean(folder: Path = folder) -> None:
                for path in folder.glob("image_0*.jpg"):
                    path.unlink()

            seconds, _ = best_of(lambda folder=folder, run=run: run(folder, args.files), args.repeat, clean)
            results[name] = seconds
        base = results["bare FileLock, shared .part"]
        for name, seconds in results.items():
            print(f"{name:30s} {seconds:7.3f} s  {1e6 * seconds / args.files:7.1f} us/file  {seconds / base:5.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
