"""Metadata at archive scale: `cache_images()` and the selection index over a big local archive.

The archive runs in its own process (`isicarchive serve`), so the figures are the
client's: seconds for the first `cache_images()` (v1 offset pages and v2 cursor
pages), the index build, and this process's peak memory.  Two sizes are measured
in the same run, so the ratio shows whether listing stays linear in N.

    python benchmarks/metadata_scale.py [--sizes 100000 400000] [--port 8011]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

from isicarchive import IsicApi


def serve(images: int, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "serve", "--port", str(port), "--images",
                               str(images), "--datasets", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    assert server.stdout is not None and "Local ISIC archive" in server.stdout.readline()
    return server


def measure(url: str, version: int) -> tuple[int, float, float]:
    api = IsicApi(hostname=url, api_version=version, progress=False, cache_folder=tempfile.mkdtemp())
    started = time.perf_counter()
    count = len(api.cache_images())
    listed = time.perf_counter() - started
    started = time.perf_counter()
    api.select_images(["meta.clinical.age_approx" if version == 1 else "metadata.clinical.age_approx", ">=", 50])
    indexed = time.perf_counter() - started
    return count, listed, indexed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    seconds: dict[tuple[int, int], float] = {}
    for size in args.sizes:
        server = serve(size, args.port)
        try:
            for version in args.versions:
                count, listed, indexed = measure(f"http://127.0.0.1:{args.port}", version)
                seconds[(version, size)] = listed
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
                print(f"v{version}, {count} records: cache_images {listed:.1f} s ({count / listed:,.0f} records/s), "
                      f"index + first selection {indexed:.1f} s; this process's peak so far {peak:.2f} GB",
                      flush=True)
        finally:
            server.terminate()
            server.wait()
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        for version in args.versions:
            ratio = seconds[(version, large)] / seconds[(version, small)]
            times = large / small
            print(f"v{version}: {times:.0f}x the records took {ratio:.1f}x the time (linear: {times:.0f}x)")


if __name__ == "__main__":
    main()
