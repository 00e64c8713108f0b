"""The finished partitions of a v2 metadata sync, kept as pieces of the image cache file.

A v2 sync reads the archive as disjoint ``isic_id`` prefix searches walked in
parallel (:meth:`isicarchive.backends.v2.V2Backend.sync_images`).  Each
partition, once walked, is written to the cache folder as one gzip member
holding its entries exactly as the image cache file holds them
(``"<id>":<record JSON>``, one a line, in the order of the ids; see
:func:`isicarchive.records.write_lines`).  That file is the sync's checkpoint:
an interrupted sync (a kill, a lost network) starts again with the partitions
it has.  When the sync is complete, the image cache file is those members
joined in the order of their prefixes (disjoint prefixes in order are ids in
order), with the file's opening and closing brace: nothing is encoded or
compressed a second time.

Compressing a partition happens in the walk's own thread, where zlib works
without the interpreter's lock, while the other walks wait on the archive.
A partition file is written to a temporary name and renamed into place (a
reader never sees part of one) and is verified when read (gzip's CRC, then a
JSON parse of every entry); it is not flushed to the disk on its own: a file
that a power cut tore fails its CRC and the partition is fetched again.  The
folder is named after what the archive announced (its record count), so a
changed archive starts afresh.
"""

from __future__ import annotations

import contextlib
import gzip
import operator
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from . import _json
from .cache import Cache, safe_name
from .records import RecordStore, add_lines

__all__ = ["PartitionGone", "SyncCheckpoint", "SyncedRecords", "partition_lines"]

#: gzip level of the partitions (and so of the image cache file a complete sync writes): level 1
#: compresses 2.3x as fast as level 6 for a file 1.5x as large
LEVEL = 1
#: largest partition file read back (a partition holds a few thousand records of a few kB)
MAX_PARTITION_BYTES = 256 * 1024 * 1024


def partition_lines(store: RecordStore) -> bytes:
    """A partition's entries as the image cache file holds them: one a line, in the order of the ids, joined
    by ``,\\n`` (records kept as objects are encoded here)."""
    lines = []
    for key, held in sorted(store.held(), key=operator.itemgetter(0)):
        lines.append(_json.dumps(key) + b":" + (held if type(held) is bytes else _json.dumps(held)))
    return b",\n".join(lines)


def _member(data: bytes) -> bytes:
    """One gzip member (no file name, no time: the same bytes for the same data)."""
    return zlib.compress(data, LEVEL, wbits=31)


class SyncCheckpoint:
    """The finished partitions of a metadata sync, one gzip member each, until the image cache file is written.

    Parameters
    ----------
    cache : Cache
        The session's cache (for its error messages).
    folder : Path
        Where the partitions are kept.
    """

    SUFFIX = ".lines.gz"

    def __init__(self, cache: Cache, folder: Path) -> None:
        self.cache = cache
        self.folder = folder

    def _path(self, name: str) -> Path:
        return self.folder / f"{safe_name(name)}{self.SUFFIX}"

    def load(self, name: str) -> RecordStore | None:
        """A partition kept before (None when there is none, or it is damaged: then it is fetched again)."""
        path = self._path(name)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_PARTITION_BYTES + 1)
            if not data or len(data) > MAX_PARTITION_BYTES:
                # an empty partition is an empty gzip member, never an empty file (what a crash can leave)
                raise ValueError("empty" if not data else "larger than any partition")
            text = gzip.decompress(data)  # checks the CRC and the length
            store = RecordStore()
            if text:
                add_lines(store, text.split(b",\n"))
            return store
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            self.cache.discard_corrupt(path, exc)
            return None

    def save(self, name: str, store: RecordStore) -> None:
        """Keep a walked partition (its records as the store holds them; an empty one too, so that a resumed
        sync does not ask for it again)."""
        data = _member(partition_lines(store))
        path = self._path(name)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
        except OSError as exc:
            raise self.cache._write_error(path, exc) from exc

    def write_file(self, fh: BinaryIO | Any, names: Iterable[str]) -> None:
        """Write the image cache file of these partitions (all saved, none empty, in the order of their
        prefixes): the text :func:`~isicarchive.records.write_lines` writes of their records, in gzip members.

        Raises :class:`PartitionGone` when one of them is no longer there
        (another process finished the same sync meanwhile).
        """
        fh.write(_member(b"{\n"))
        first = True
        for name in names:
            try:
                part = open(self._path(name), "rb")
            except FileNotFoundError:
                raise PartitionGone(name) from None
            with part:
                if not first:
                    fh.write(_member(b",\n"))
                shutil.copyfileobj(part, fh, 1 << 20)
            first = False
        fh.write(_member(b"}" if first else b"\n}"))

    def finish(self) -> None:
        """The sync is complete and its records are in the image cache file: forget its partitions."""
        shutil.rmtree(self.folder, ignore_errors=True)


class PartitionGone(Exception):
    """A partition file was removed before the image cache file was written from it."""


class SyncedRecords(RecordStore):
    """The records of a complete partitioned sync, with the checkpoint that holds them as pieces of the
    image cache file (:attr:`parts`, None without a cache folder) and the names of its partitions that
    hold records, in order (:attr:`partitions`)."""

    __slots__ = ("parts", "partitions")

    def __init__(self, parts: SyncCheckpoint | None = None, partitions: Iterable[str] = ()) -> None:
        super().__init__()
        self.parts = parts
        self.partitions = list(partitions)
