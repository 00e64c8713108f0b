"""Shared by the examples: the archive to talk to.

With ``--host URL`` (or ``$ISICARCHIVE_HOST``) the examples use that archive;
without, they start a local one in-process, so they run anywhere, offline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def archive_url(description: str) -> Iterator[tuple[str, argparse.Namespace]]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=os.environ.get("ISICARCHIVE_HOST"), help="archive URL")
    parser.add_argument("--out", default="example-output", help="output folder")
    args = parser.parse_args()
    if args.host:
        yield args.host, args
        return
    from isicarchive.testing import LocalArchive

    with LocalArchive(seed=3) as local:
        yield local.url, args
