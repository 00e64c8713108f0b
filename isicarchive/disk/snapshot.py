"""The archive's snapshot zip read in place over HTTP(S): ``IsicApi(hostname="https://…/ISIC_images.zip")``.

The archive publishes all its public images as one zip (``snapshots/ISIC_images.zip``,
written by the server's ``isic/core/services/snapshot``): ``images/<isic_id>.<ext>``
stored uncompressed, ``metadata.csv``, ``licenses/<licence>.txt`` and
``attribution.txt``.  A host URL ending in ``.zip`` opens it as an archive on
disk whose bytes stay on the server:

- the zip's central directory is read once, through fsspec's HTTP file system
  with its block cache (a few Range requests at the end of the file), and kept
  in the session's cache with the file's size (and ETag): the next session
  asks the server only for the size;
- a member is fetched when first read, with one Range request covering its
  local header and data, checked against the directory (name, method, size,
  CRC-32) and kept in the cache, so a cut run resumes with the members it
  lacks; exports (``download_images(folder=…)``) fetch neighbouring members
  in one request and write each, checked, straight into their folder (which
  a cut export resumes from), without a copy in the cache;
- the metadata (``metadata.csv``) is read like any member, and the same index,
  search language, selections and exports as for a zip on disk follow.

A directory that does not describe the file (offsets beyond its end, a member
whose local header names another file or holds other bytes) raises
:class:`~isicarchive.errors.LayoutError`.  Needs the ``snapshot`` extra
(fsspec, aiohttp, pyarrow).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from .. import limits
from ..errors import LayoutError
from ..hosts import is_snapshot_url

__all__ = ["SnapshotFiles", "is_snapshot_url", "open_snapshot"]

#: fsspec's block size for reading the directory: at most this much read before it, a request per block
_BLOCK = 256 << 10
#: bytes read past a member's data in its one request, for a local header's extra field (larger: a second one)
_LOCAL_EXTRA = 256


class SnapshotRoot(str):
    """The snapshot's URL, shown where the root of an archive on disk is (``.name``: its file name)."""

    @property
    def name(self) -> str:
        return PurePosixPath(urlsplit(self).path).name


class _Tail(io.RawIOBase):
    """The end of the zip from the cache, as a file for :class:`zipfile.ZipFile` (reads elsewhere: a lie)."""

    def __init__(self, tail: bytes, start: int, size: int) -> None:
        self._tail, self._start, self._size, self._at = tail, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = offset if whence == 0 else self._at + offset if whence == 1 else self._size + offset
        return self._at

    def tell(self) -> int:
        return self._at

    def read(self, n: int = -1) -> bytes:
        if self._at < self._start:
            raise LayoutError("the snapshot's cached directory does not hold what the zip asks for")
        end = self._size if n is None or n < 0 else min(self._size, self._at + n)
        data = self._tail[self._at - self._start:end - self._start]
        self._at += len(data)
        return data


class SnapshotFiles:
    """A snapshot zip on an HTTP(S) server, with the interface of :class:`isicarchive.disk.layouts.ArchiveFiles`."""

    is_zip = True

    def __init__(self, url: str, cache_root: Path | None) -> None:
        try:
            import fsspec
        except ImportError:
            raise ImportError("a snapshot over HTTP needs fsspec and aiohttp: "
                              "pip install 'isicarchive[snapshot]'") from None
        self.root = SnapshotRoot(url)
        self.url = url
        self.problems: list[str] = []
        self._fs = fsspec.filesystem("http", skip_instance_cache=True)
        self._folder = None if cache_root is None else \
            cache_root / "snapshot" / hashlib.sha256(url.encode()).hexdigest()[:24]
        self._lock = threading.Lock()
        self._zip = self._directory()
        self._infos = {info.filename: info for info in self._zip.infolist()}
        bounds = limits.current()
        declared = sum(info.file_size for info in self._infos.values())
        if declared > bounds.zip_total_bytes:
            raise LayoutError(f"{url} would inflate to {declared} bytes, more than the {bounds.zip_total_bytes} a "
                              "zip may (isicarchive.limits.configure(zip_total_bytes=…) raises the limit)")
        self.names = []
        for name, info in self._infos.items():
            if info.is_dir():
                continue
            path = PurePosixPath(name.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or "\0" in name:
                self.problems.append(f"zip member {name!r} has an unsafe path: ignored")
                continue
            if info.header_offset + info.compress_size > self._size:
                raise LayoutError(f"{url}: its central directory lies (the member {name[:80]} lies beyond the "
                                  f"end of the {self._size}-byte file)")
            self.names.append(name)

    # ------------------------------------------------------------ directory
    def _directory(self) -> zipfile.ZipFile:
        """The zip's directory: from the cache when the file's size and ETag are those it was read at."""
        try:
            info = self._fs.info(self.url)
        except FileNotFoundError:
            raise LayoutError(f"no snapshot at {self.url} (404)") from None
        except Exception as exc:  # aiohttp's and fsspec's errors: connection refused, TLS, timeouts
            raise LayoutError(f"cannot reach the snapshot at {self.url}: {type(exc).__name__}: {exc}") from None
        size = info.get("size")
        if not isinstance(size, int) or size < 22:
            raise LayoutError(f"{self.url} does not say its size (a Range-capable server is needed) or is no zip")
        self._size = size
        etag = str(info.get("ETag") or info.get("etag") or "")
        marker = {"url": self.url, "size": size, "etag": etag}
        kept = self._cached_directory(marker)
        if kept is not None:
            return kept
        try:
            with self._fs.open(self.url, "rb", block_size=_BLOCK, cache_type="blockcache", size=size) as fh:
                bundle = zipfile.ZipFile(fh)
                start = bundle.start_dir
                if not 0 <= start <= size:
                    raise LayoutError(f"{self.url}: its central directory lies (it starts outside the file)")
                fh.seek(start)
                tail = fh.read(size - start)
        except zipfile.BadZipFile as exc:
            raise LayoutError(f"{self.url} is not a readable zip ({exc})") from None
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.url}: cannot read its central directory ({exc})") from None
        if self._folder is not None:
            self._keep(self._folder / "directory.bin", tail)
            self._keep(self._folder / "directory.json", json.dumps({**marker, "start": start}).encode())
        return zipfile.ZipFile(_Tail(tail, start, size))

    def _cached_directory(self, marker: dict) -> zipfile.ZipFile | None:
        if self._folder is None:
            return None
        try:
            kept = json.loads((self._folder / "directory.json").read_text())
            tail = (self._folder / "directory.bin").read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(kept, dict) or {k: kept.get(k) for k in marker} != marker or \
                kept.get("start") != marker["size"] - len(tail):
            return None
        try:
            return zipfile.ZipFile(_Tail(tail, kept["start"], marker["size"]))
        except (zipfile.BadZipFile, LayoutError):
            return None

    @staticmethod
    def _keep(path: Path, data: bytes) -> None:
        """Written atomically: a reader sees the old file or the new one, never part of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        part.write_bytes(data)
        os.replace(part, path)

    # -------------------------------------------------------------- members
    def find(self, basename: str) -> str | None:
        """The shallowest member of that name."""
        return next((n for n in sorted(self.names, key=len) if PurePosixPath(n).name == basename), None)

    def read(self, name: str) -> bytes:
        """A member's bytes: from the cache, else one Range request, checked by name, size and CRC-32."""
        info = self._infos.get(name) if isinstance(name, str) else None
        if info is None or name not in self.names:
            raise LayoutError(f"{str(name)[:80]!r} is not a member of {self.url}")
        bounds = limits.current()
        if info.file_size > bounds.archive_file_bytes:
            raise LayoutError(f"{name} in {self.url} is larger than the {bounds.archive_file_bytes} bytes a file of "
                              "an archive may be (isicarchive.limits.configure(archive_file_bytes=…))")
        kept = self._kept(name)
        if kept is not None:
            try:
                data = kept.read_bytes()
            except OSError:
                data = None
            if data is not None and len(data) == info.file_size and zlib.crc32(data) == info.CRC:
                return data
        data = self._fetch(info)
        if kept is not None:
            self._keep(kept, data)
        return data

    def _span(self, info: zipfile.ZipInfo) -> tuple[int, int]:
        """The bytes that hold a member's local header and data (a local extra field of up to
        ``_LOCAL_EXTRA`` bytes included; a longer one costs a second request)."""
        encoded = info.filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        start = info.header_offset
        return start, min(self._size, start + 30 + len(encoded) + _LOCAL_EXTRA + info.compress_size)

    def _get(self, name: str, start: int, end: int) -> bytes:
        try:
            return self._fs.cat_file(self.url, start=start, end=end)
        except Exception as exc:  # the connection's errors: the member is not read, the next run tries again
            raise OSError(f"{name} in {self.url}: the transfer failed ({type(exc).__name__}: {exc})") from None

    def _fetch(self, info: zipfile.ZipInfo) -> bytes:
        start, end = self._span(info)
        return self._member(info, memoryview(self._get(info.filename, start, end)))

    def _member(self, info: zipfile.ZipInfo, raw: memoryview) -> bytes:
        """A member's bytes out of the bytes fetched from its local header on, checked against its entry.

        ``raw`` is a view into what was fetched (a span of many members: no copy of the rest of it per member).
        """
        name = info.filename
        encoded = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        start = info.header_offset
        if len(raw) < 30 or raw[:4] != b"PK\x03\x04":
            raise LayoutError(f"{self.url}: its central directory lies (no local header of {name[:80]} where it "
                              "says)")
        name_length = int.from_bytes(raw[26:28], "little")
        data_start = 30 + name_length + int.from_bytes(raw[28:30], "little")
        if raw[30:30 + name_length] != encoded:
            raise LayoutError(f"{self.url}: its central directory lies (the local header at {start} names another "
                              f"file than {name[:80]})")
        if data_start + info.compress_size > len(raw):
            raw = memoryview(bytes(raw) + self._get(name, start + len(raw), start + data_start + info.compress_size))
        packed = raw[data_start:data_start + info.compress_size]
        if info.compress_type == zipfile.ZIP_STORED:
            data = bytes(packed)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            try:
                data = zlib.decompressobj(-15).decompress(packed, info.file_size + 1)
            except zlib.error:
                raise LayoutError(f"{name} in {self.url}: the member is damaged (it does not inflate)") from None
        else:
            raise LayoutError(f"{name} in {self.url}: compression method {info.compress_type} is not read over HTTP")
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise LayoutError(f"{name} in {self.url}: the member's bytes are not those its directory entry "
                              "describes (size or CRC-32 differ)")
        return data

    def _kept(self, name: str) -> Path | None:
        return None if self._folder is None else self._folder / "members" / hashlib.sha256(name.encode()).hexdigest()

    def prefetch(self, names: list[str], workers: int = 8, span_bytes: int = 8 << 20,
                 deliver: Callable[[str, bytes], None] | None = None) -> int:
        """Fetch many members at once; the number fetched.

        Members that follow one another in the zip are fetched together, one
        Range request for up to ``span_bytes`` (less when there is little to
        fetch, so that every worker gets two spans or more; a whole snapshot:
        a few thousand requests instead of one per image), ``workers``
        requests at once.  Nothing but the members' own headers and bytes is asked for.
        Each member is checked (name, size, CRC-32) and kept in the cache, or,
        with ``deliver``, handed to ``deliver(name, data)`` instead (in the
        fetching thread; an export that writes it where it is wanted, and
        resumes from there).  Members already in the cache are not fetched
        again (nor handed over: read them).  A span that fails is left to
        the members' own reads, which try again.
        """
        if self._folder is None and deliver is None:
            return 0
        wanted = []
        largest = limits.current().archive_file_bytes
        for name in dict.fromkeys(names):
            info = self._infos.get(name)
            if info is None or name not in self.names or info.file_size > largest:
                continue  # its own read says why
            kept = self._kept(name)
            if kept is not None and kept.is_file():
                continue
            wanted.append(info)
        wanted.sort(key=lambda info: info.header_offset)
        # spans small enough that every worker has two or more of them, large enough to cost few requests
        span_bytes = max(256 << 10, min(span_bytes, sum(i.compress_size for i in wanted) // (2 * max(1, workers))))
        spans: list[list[zipfile.ZipInfo]] = []
        end = -1
        for info in wanted:
            start, stop = self._span(info)
            if spans and start <= end and stop - spans[-1][0].header_offset <= span_bytes:
                spans[-1].append(info)
            else:
                spans.append([info])
            end = stop

        def fetch(members: list[zipfile.ZipInfo]) -> int:
            first = members[0].header_offset
            try:
                raw = memoryview(self._get(members[0].filename, first, self._span(members[-1])[1]))
            except OSError:
                return 0
            done = 0
            for info in members:
                try:
                    data = self._member(info, raw[info.header_offset - first:])
                    if deliver is None:
                        kept = self._kept(info.filename)
                        assert kept is not None
                        self._keep(kept, data)
                except (LayoutError, OSError):
                    continue  # its own read reports what is wrong
                if deliver is not None:
                    deliver(info.filename, data)
                done += 1
            return done

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return sum(pool.map(fetch, spans))

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LayoutError(f"{name} in {self.url} is not UTF-8 text") from None
        except OSError as exc:
            raise LayoutError(f"cannot read {name} in {self.url}: {exc}") from None

    def path_of(self, name: str) -> Path | None:
        return None

    def fingerprint(self, metadata: list[str]) -> str:
        """What changes when the snapshot does: every member's name, size and CRC, and the file's size."""
        digest = hashlib.sha256(f"{self.url}\0{self._size}".encode())
        for info in self._infos.values():
            digest.update(f"\0{info.filename}\0{info.CRC}:{info.file_size}:{info.header_offset}".encode(
                "utf-8", "surrogatepass"))
        return "snapshot-sha256:" + digest.hexdigest()

    def close(self) -> None:
        self._zip.close()


def open_snapshot(url: str, cache_root: Path | None) -> SnapshotFiles:
    return SnapshotFiles(url, cache_root)
