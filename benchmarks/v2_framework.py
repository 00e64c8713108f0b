"""What the real server's framework behaviour costs a v2 cursor walk of the local archive.

The local archive answers as the archive's Django does (tests/test_server_fidelity.py): gzip for a client
that asks (``requests`` does by default), decimal strings, CORS and security headers.  Measured in one run
on one archive: a walk of ``images/`` with ``Accept-Encoding: gzip`` (the baseline: what a client meets),
the same walk with ``identity`` (no compression asked), and with the archive's ``gzip`` switched off; the
ratios are against the baseline, and the bytes on the wire are reported too.

    python benchmarks/v2_framework.py [--records 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
from typing import Any

import requests
from _timing import best_of

from isicarchive.testing import ArchiveConfig, LocalArchive


def walk(archive: LocalArchive, encoding: str) -> tuple[int, int]:
    session = requests.Session()
    session.headers["Accept-Encoding"] = encoding
    url: str | None = f"{archive.v2_url}/images/?limit=100"
    count = wire = 0
    while url:
        answer = session.get(url, timeout=60)
        wire += int(answer.headers["Content-Length"])
        page: Any = answer.json()
        count += len(page["results"])
        url = page["next"]
    return count, wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with LocalArchive(seed=3, config=ArchiveConfig(images=args.records)) as archive:
        walk(archive, "identity")  # the archive's listing and records, built once before timing
        base, (count, base_wire) = best_of(lambda: walk(archive, "gzip, deflate"), args.repeat)
        plain, (_, plain_wire) = best_of(lambda: walk(archive, "identity"), args.repeat)
        archive.gzip = False
        off, _ = best_of(lambda: walk(archive, "gzip, deflate"), args.repeat)
    print(f"{count} records, {count // 100 + 1} pages, best of {args.repeat}")
    print(f"gzip asked (baseline)   {base:7.2f} s  {base_wire / 1e6:8.1f} MB on the wire")
    print(f"identity asked          {plain:7.2f} s  {plain_wire / 1e6:8.1f} MB  ratio {plain / base:.2f}")
    print(f"archive.gzip = False    {off:7.2f} s  ratio {off / base:.2f}")


if __name__ == "__main__":
    main()
