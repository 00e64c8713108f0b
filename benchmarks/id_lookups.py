"""Records for a list of ids: `api.images_for(ids)` against a serial loop of `api.image(id)`, same run.

A local archive (in this process's threads) with 50 ms latency per response;
v2 looks ids up as searches of 100 ids in parallel, v1 as concurrent look-ups.
The serial baseline runs on a slice of the list (it costs a round trip per id).

    python benchmarks/id_lookups.py [--ids 10000] [--serial 300] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import time

from isicarchive import IsicApi
from isicarchive.testing import ArchiveConfig, LocalArchive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--serial", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    config = ArchiveConfig(images=args.ids, datasets=1, private_datasets=0, studies=0)
    with LocalArchive(seed=0, config=config, latency=args.latency) as archive:
        ids = [im["name"] for im in archive.data.images]
        for version in (2, 1):
            serial = IsicApi(hostname=archive.url, api_version=version, progress=False)
            started = time.perf_counter()
            for isic_id in ids[: args.serial]:
                serial.image(isic_id)
            per_id = (time.perf_counter() - started) / args.serial
            bulk = IsicApi(hostname=archive.url, api_version=version, progress=False)
            archive.clear_log()
            started = time.perf_counter()
            images = bulk.images_for(ids)
            took = time.perf_counter() - started
            assert [im.name for im in images] == ids
            serial_all = per_id * len(ids)
            print(f"v{version}: {len(ids)} records in {took:.1f} s with {len(archive.log)} requests; a serial loop "
                  f"takes {per_id * 1e3:.0f} ms per id ({serial_all:.0f} s for all): {serial_all / took:.0f}x")


if __name__ == "__main__":
    main()
