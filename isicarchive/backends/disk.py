"""An archive on disk as a backend: a folder or zip of the official CLI, a challenge release, an export.

``IsicApi(hostname='file:///path/to/folder-or.zip')`` opens one read-only.
Its records have the v2 shape (``isic_id``, ``metadata.acquisition`` /
``clinical`` with today's field names) and are normalised as v2 records are,
so the original's criteria and the v2 names both work in ``select_images``;
``search_images`` evaluates the archive's search language on the columnar
index (:mod:`isicarchive.disk.index`).  Pixels are read from the folder or
from inside the zip; superpixels are computed locally, as on v2.  What needs
the archive itself (sign-in, studies, annotations, collections, files the
folder lacks) raises :class:`~isicarchive.errors.UnsupportedError` naming
where it exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..disk.index import ArchiveIndex, open_index
from ..disk.layouts import ArchiveFiles, LayoutError, open_files
from ..disk.snapshot import SnapshotFiles, is_snapshot_url, open_snapshot
from ..errors import NotFoundError, UnsupportedError
from ..legacy import check_legacy_terms
from ..search import column_mask, parse
from .base import Backend, ProgressHook
from .v2 import normalise

__all__ = ["DiskBackend"]

if TYPE_CHECKING:
    from ..releases.files import ReleaseFiles
    from ..releases.session import OpenedRelease

_ISIC_ID = re.compile(r"^ISIC_\d{7}$")


def _release(location: str | Path, named: bool, cache_root: Path | None) -> OpenedRelease | None:
    from ..releases.session import named as release_named
    from ..releases.session import open_release

    path = Path(location).expanduser().resolve()
    if named and not release_named(path):
        return None
    return open_release(path, cache_root)


class DiskBackend(Backend):
    """Read-only backend over a folder or zip (see the module docstring)."""

    version = 2  # the records' shape
    auth_header = "Authorization"
    local = True

    def __init__(self, transport: Any, location: str | Path, cache_root: Path | None = None) -> None:
        super().__init__(transport)
        try:
            import pyarrow  # noqa: F401  (the index is Parquet, the search runs on its columns)
        except ImportError:
            raise ImportError("archives on disk need pyarrow: pip install 'isicarchive[disk]'") from None
        # a challenge release (isicarchive.releases): named by releases.open, else found when no other layout is
        release = None if is_snapshot_url(location) else _release(location, named=True, cache_root=cache_root)
        if release is None:
            files: ArchiveFiles | SnapshotFiles | None = None
            try:
                # a snapshot zip over HTTP (isicarchive.disk.snapshot) is read as a zip on disk is
                files = open_snapshot(str(location), cache_root) if is_snapshot_url(location) else \
                    open_files(location)
                self.files: ArchiveFiles | ReleaseFiles | SnapshotFiles = files
                self.index: ArchiveIndex = open_index(files, cache_root)  # type: ignore[arg-type]
            except LayoutError as exc:
                if files is not None:
                    files.close()
                if is_snapshot_url(location):
                    raise
                release = _release(location, named=False, cache_root=cache_root)
                if release is None:
                    raise LayoutError(f"{exc}; nor is it a challenge release (isicarchive.releases.list() names "
                                      "their files)") from None
        if release is not None:
            self.files, self.index = release.files, release.index
        #: the release read (its splits' images, records and masks), for isicarchive.releases
        self.release = release
        self.root = self.files.root
        self.layout = self.index.layout
        #: what was found wrong with the archive while indexing it (also logged as warnings)
        self.problems = self.index.problems

    @property
    def kind(self) -> str:
        return "an archive on disk"

    def check_criteria(self, criteria: list[tuple[str, str, Any]], values_of: Callable[[str], Any]) -> None:
        check_legacy_terms(criteria, values_of)  # today's records, as on v2

    def _unsupported(self, what: str, where: str = "the archive online (API v1 or v2)") -> UnsupportedError:
        return UnsupportedError(f"{what} is not offered by an archive on disk ({self.root.name}); it exists in "
                                f"{where}.")

    # ----------------------------------------------------------------- auth
    def login(self, username: str, password: str) -> tuple[str, dict]:
        raise self._unsupported("signing in")

    def me(self) -> dict | None:
        return None

    # --------------------------------------------------------------- images
    def is_id(self, value: str) -> bool:
        return bool(_ISIC_ID.match(value))

    def image(self, image_id: str) -> dict:
        row = self.index.rows.get(image_id)
        if row is None:
            raise NotFoundError(f"image {image_id!r} is not in the archive at {self.root}")
        return normalise(self.index.records([row])[0])

    def image_by_name(self, name: str) -> dict:
        return self.image(name)

    def images(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        limit = (params or {}).get("limit")
        rows = None if not limit else list(range(min(int(limit), len(self.index))))
        return iter([normalise(r) for r in self.index.records(rows)])

    def images_by_key(self, keys: list[str], workers: int = 8) -> dict[str, dict]:
        rows = [self.index.rows[k] for k in dict.fromkeys(keys) if k in self.index.rows]
        return {r["isic_id"]: normalise(r) for r in self.index.records(rows)}

    def sync_images(self, known: Mapping[str, dict], progress: ProgressHook | None = None,
                    checkpoint: Callable[[str], Any] | None = None,
                    on_total: Callable[[int], None] | None = None) -> tuple[list[dict], bool]:
        if len(known) == len(self.index) and all(key in known for key in self.index.rows):
            return [], False  # the index is the cache: nothing new unless the archive was opened again
        if on_total:
            on_total(len(self.index))
        records = [normalise(r) for r in self.index.records()]
        if progress:
            progress(len(records))
        return records, True

    def _matching_rows(self, query: str) -> Any:
        import numpy as np

        mask = column_mask(parse(query), self.index.column, len(self.index))
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))

    def search_ids(self, query: str) -> list[str]:
        """The ids of the images a query selects, from the index's columns alone."""
        return self.index.table.column("isic_id").take(self._matching_rows(query)).to_pylist()

    def search_images(self, query: str, collections: Any = None, limit: int | None = None) -> list[dict]:
        """Records a query in the archive's search language selects, evaluated on the index."""
        if collections:
            raise self._unsupported("collections", "the current v2 API online")
        rows = self._matching_rows(query)
        return [normalise(r) for r in self.index.records(rows[:limit] if limit else rows)]

    @staticmethod
    def _path_in_archive(record: dict) -> str | None:
        return ((record.get("files") or {}).get("full") or {}).get("path")

    def image_file(self, record: dict) -> str:
        """Where the image is inside the archive (read with :meth:`read_image`, never over HTTP)."""
        return self._path_in_archive(record) or ""

    def read_image(self, record: dict) -> bytes:
        """The image's bytes, from the folder or from inside the zip."""
        path = self._path_in_archive(record)
        if path is None:
            row = self.index.rows.get(str(record.get("isic_id")))
            path = None if row is None else self.index.table.column("file")[row].as_py()
        if path is None:
            raise self._unsupported(f"the pixels of {record.get('isic_id')} (listed in the metadata, not in the "
                                    "folder)", "the archive online; download them there")
        try:
            return self.files.read(path)
        except (OSError, KeyError) as exc:
            raise NotFoundError(f"cannot read {path} in {self.root}: {exc}") from None

    def prefetch_images(self, records: list[dict], workers: int = 8,
                        deliver: Callable[[int, bytes], None] | None = None) -> None:
        """Bring many images of a snapshot read over HTTP into the cache at once (nothing to do elsewhere);
        with ``deliver``, hand each image's checked bytes to ``deliver(position in records, data)`` instead
        of the cache (images already in the cache are left to :meth:`read_image`)."""
        if isinstance(self.files, SnapshotFiles):
            table = self.index.table.column("file")
            paths = [self._path_in_archive(r) or (table[row].as_py() if (row := self.index.rows.get(
                str(r.get("isic_id")))) is not None else None) for r in records]
            positions: dict[str, list[int]] = {}
            for position, path in enumerate(paths):
                if path:
                    positions.setdefault(path, []).append(position)

            def hand_over(name: str, data: bytes) -> None:
                assert deliver is not None
                for position in positions.get(name, ()):
                    deliver(position, data)

            self.files.prefetch(list(positions), workers=workers, deliver=hand_over if deliver else None)

    def local_path(self, record: dict) -> Path | None:
        """The image file itself in a folder (None inside a zip)."""
        path = self._path_in_archive(record)
        return None if path is None else self.files.path_of(path)

    def lesion(self, lesion_id: str) -> dict:
        images = self.search_images(f'lesion_id:"{lesion_id}"') if re.fullmatch(r"[\w-]+", lesion_id) else []
        if not images:
            raise NotFoundError(f"lesion {lesion_id!r} is not in the archive at {self.root}")
        images.sort(key=lambda r: r["isic_id"])
        clinical = images[-1]["metadata"]["clinical"]
        path = [clinical[f"diagnosis_{n}"] for n in range(1, 6) if clinical.get(f"diagnosis_{n}")]
        return {"id": lesion_id, "images_count": len(images), "images": images,
                "index_image_id": images[0]["isic_id"], "longitudinally_monitored": False,
                "outcome_diagnosis": ":".join(path) or None, "outcome_diagnosis_1": path[0] if path else None}

    # ------------------------------------------------- what needs the archive
    def datasets(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        raise self._unsupported("datasets and collections")

    def dataset(self, dataset_id: str) -> dict:
        raise self._unsupported("datasets and collections")

    def collection_images(self, collection_id: int, limit: int | None = None) -> list[dict]:
        raise self._unsupported("collections", "the current v2 API online")

    def close(self) -> None:
        self.files.close()

