"""The archive's snapshot zip read in place over HTTP, against the per-image API path.

A local archive (in this process, with ``--latency`` seconds added to every
response) serves its public images one by one (API v2) and as the server's
snapshot zip (``storage/snapshots/ISIC_images.zip``).  Measured:

- selecting ``--select`` images of the snapshot and exporting them: the bytes
  the archive sent, against the selected members' own bytes plus the central
  directory (and metadata.csv, which the index reads);
- exporting every image (``download_images(folder=…)``) from the snapshot and
  from the API (records from a search, each image its own request), both into
  empty folders with empty caches; best of ``--repeat`` runs each, alternating.

Images are small (64x48 pixels padded to ``--image-bytes``, 10-30 kB: 20,000
of them make a 400 MB zip).  The zip is built once and kept in the
benchmark's cache (``<tmp>/isicarchive-benchmarks``, keyed by the archive's
settings and the local archive's sources), and the archive serves the API's
image files from it, so that neither path pays the local archive's rendering.

    python benchmarks/snapshot.py [--images 20000] [--select 200] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isicarchive import IsicApi  # noqa: E402
from isicarchive.testing import ArchiveConfig, LocalArchive  # noqa: E402
from isicarchive.testing import snapshot as served  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--select", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--image-bytes", type=int, nargs=2, default=(10_000, 30_000))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    config = ArchiveConfig(images=args.images, datasets=1, private_datasets=0, image_size=(64, 48),
                           image_bytes=tuple(args.image_bytes))
    with LocalArchive(seed=5, config=config, latency=args.latency) as archive:
        started = time.perf_counter()
        data, built = kept_snapshot(archive, f"5:{config!r}")
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            infos = {i.filename: i for i in bundle.infolist()}
            directory = len(data) - bundle.start_dir
        serve_images_from(archive, data, infos)
        n_images = sum(name.startswith("images/") for name in infos)
        print(f"snapshot of {n_images} images: {len(data) / 1e6:.1f} MB, central directory "
              f"{directory / 1e3:.0f} kB, metadata.csv {infos['metadata.csv'].compress_size / 1e3:.0f} kB "
              f"({'built' if built else 'from the benchmark cache'} in {time.perf_counter() - started:.1f} s); "
              f"{args.latency * 1000:.0f} ms per response")
        url = f"{archive.url}/{served.SNAPSHOT_PATH}"

        # --- a selection: bytes on the wire
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            archive.clear_log()
            session = IsicApi(hostname=url, cache_folder=cache, progress=False)
            opened = archive.bytes_sent("snapshots")
            everything = session.search_images("")
            chosen = dict(random.Random(1).sample(sorted(everything.items()), args.select))
            archive.clear_log()
            started = time.perf_counter()
            result = session.download_images(chosen, Path(out) / "sel")
            took = time.perf_counter() - started
            sent = archive.bytes_sent("snapshots")
            members = sum(infos[f"images/{i}.jpg"].compress_size for i in chosen)
            print(f"open (directory + metadata.csv + index): {opened / 1e3:.0f} kB sent "
                  f"({opened / (directory + infos['metadata.csv'].compress_size):.3f}x the directory and metadata)")
            print(f"export of {len(chosen)} selected images: {sent / 1e6:.2f} MB sent for {members / 1e6:.2f} MB of "
                  f"members ({sent / members:.4f}x; target <= 1.05x), {took:.2f} s, ok={result.ok}")

        # --- everything: the snapshot against the per-image API path
        def from_snapshot() -> float:
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                snap = IsicApi(hostname=url, cache_folder=cache, progress=False)
                result = snap.download_images(snap.search_images(""), Path(out) / "all")
                assert result.ok and len(result.downloaded) == n_images, (result.failed, len(result.downloaded))
                return time.perf_counter() - started

        def from_api() -> float:
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                api = IsicApi(hostname=archive.url, api_version=2, cache_folder=cache, progress=False)
                result = api.download_images(api.search_images(""), Path(out) / "all")
                assert result.ok and len(result.downloaded) == n_images, (list(result.failed.items())[:3],
                                                                          len(result.downloaded))
                return time.perf_counter() - started

        snapshot_runs, api_runs = [], []
        for _ in range(args.repeat):
            api_runs.append(from_api())
            snapshot_runs.append(from_snapshot())
        best_snapshot, best_api = min(snapshot_runs), min(api_runs)
        print(f"export of all {n_images} images (search included), best of {args.repeat} alternating: "
              f"snapshot {best_snapshot:.2f} s {[round(t, 2) for t in snapshot_runs]}, per-image API "
              f"{best_api:.2f} s {[round(t, 2) for t in api_runs]}: {best_api / best_snapshot:.2f}x (target >= 2x)")


def kept_snapshot(archive: LocalArchive, settings: str) -> tuple[bytes, bool]:
    """The archive's snapshot zip, from the benchmark cache when built before for the same archive (served from
    then on); whether it was built now."""
    sources = Path(served.__file__).parent
    key = hashlib.sha256(settings.encode())
    for name in ("generator.py", "snapshot.py", "zipdownload.py"):
        key.update((sources / name).read_bytes())
    path = Path(tempfile.gettempdir()) / "isicarchive-benchmarks" / f"snapshot-{key.hexdigest()[:20]}.zip"
    try:
        data = path.read_bytes()
    except OSError:
        data = served.snapshot_zip(archive)  # renders every image once
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("snapshot-*.zip"):  # hundreds of MB each: the latest one is kept
            stale.unlink(missing_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_bytes(data)
        os.replace(part, path)
        return data, True
    served.serve_snapshot(archive, data)
    return data, False


def serve_images_from(archive: LocalArchive, data: bytes, infos: dict[str, zipfile.ZipInfo]) -> None:
    """The archive's image files (the API path) are the snapshot's members, not rendered again on each request
    (the local archive keeps only a few hundred renders)."""
    view = memoryview(data)
    where = {}
    for name, info in infos.items():
        if name.startswith("images/"):
            name_length, extra = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_length + extra
            where[name[len("images/"):-len(".jpg")]] = (start, start + info.file_size)
    images = archive.data.images_by_id

    def image_jpeg(image_id: str) -> bytes:
        start, end = where[images[image_id]["name"]]
        return bytes(view[start:end])

    archive.data.image_jpeg = image_jpeg  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
