"""The archive's snapshot of its public images, served by the local archive on its bucket-like storage host.

The real archive publishes ``snapshots/ISIC_images.zip`` on an open-data
bucket, written by ``isic/core/services/snapshot``: every public image as
``images/<isic_id>.<ext>`` stored (not compressed), then ``metadata.csv`` as
the archive writes it, ``licenses/<licence>.txt`` for each licence in use and
``attribution.txt``.  Here the same zip is built from the local archive's
public images the first time it is asked for, and served at
``<archive>/storage/snapshots/ISIC_images.zip`` with Range support and the
archive's latency, as any storage file.
"""

from __future__ import annotations

import io
import threading
import zipfile
from typing import TYPE_CHECKING

from .server import Response
from .zipdownload import LICENSES, attributions, metadata_csv

if TYPE_CHECKING:
    from .server import LocalArchive

__all__ = ["SNAPSHOT_PATH", "register", "serve_snapshot", "snapshot_zip"]

#: where the snapshot is, below the archive's URL
SNAPSHOT_PATH = "storage/snapshots/ISIC_images.zip"


def snapshot_zip(archive: LocalArchive) -> bytes:
    """The snapshot's bytes (built once per archive)."""
    data = archive.data
    with _LOCK:
        cached = _BUILT.get(id(archive))
        if cached is not None and cached[0] is archive:
            return cached[1]
        public = sorted((im for im in data.images if data.dataset_public(im["dataset"]["_id"])),
                        key=lambda im: im["name"])

        def attribution_of(image: dict) -> str:
            return (data.datasets_by_id.get(image["dataset"]["_id"]) or {}).get("attribution", "Anonymous")

        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as bundle:
            for image in public:
                bundle.writestr(f"images/{image['name']}.jpg", data.image_jpeg(image["_id"]))
            by_id = {im["name"]: im for im in public}
            bundle.writestr("metadata.csv", metadata_csv([data.search_record(im) for im in public],
                                                         lambda record: attribution_of(by_id[record["isic_id"]])))
            for licence in sorted({data.search_record(im)["copyright_license"] for im in public}):
                bundle.writestr(f"licenses/{licence}.txt", LICENSES.get(licence, licence))
            bundle.writestr("attribution.txt", "\n\n".join(attributions(attribution_of(im) for im in public)))
        _BUILT[id(archive)] = (archive, out.getvalue())
        return _BUILT[id(archive)][1]


def serve_snapshot(archive: LocalArchive, data: bytes) -> None:
    """Serve ``data`` as the archive's snapshot: a zip :func:`snapshot_zip` built earlier from the same
    archive data (a benchmark keeps one on disk: rendering every image of a large archive takes minutes)."""
    with _LOCK:
        _BUILT[id(archive)] = (archive, data)


_LOCK = threading.Lock()
_BUILT: dict[int, tuple[LocalArchive, bytes]] = {}


def register(archive: LocalArchive) -> None:
    """Serve the snapshot on the archive's storage host (anyone may read it, as the open-data bucket)."""
    archive.router.add("storage", "GET", r"snapshots/ISIC_images\.zip",
                       lambda req: Response.binary(snapshot_zip(archive), "application/zip"))
