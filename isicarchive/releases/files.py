"""The files of a challenge release as one view: a folder, the official zips in it (read in place),
and the HDF5 image stores of 2024, confined to the root.

A release is downloaded as several zips and CSVs; people unzip some, keep
others zipped, and unzip into a folder of the same name
(``ISIC-2017_Training_Data/ISIC-2017_Training_Data/…``).  :class:`ReleaseFiles`
lists all of it under one namespace:

* a file in the folder: its path relative to the root (``a/b.csv``);
* a member of a zip in the folder: ``<zip path>/<member>``
  (``ISIC2018_Task1-2_Training_Input.zip/ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg``);
* an image of an HDF5 store (``train-image.hdf5``, one JPEG per ``isic_id``):
  ``<hdf5 path>/<isic_id>`` — listed only when asked for (:meth:`hdf5_keys`),
  read through the optional ``h5py``.

Everything here is untrusted input: links leading out of the root are not
followed, zip members with absolute or ``..`` paths are left out (and reported
in :attr:`ReleaseFiles.problems`), and every read is bounded by :mod:`isicarchive.limits`
(zips are read by the disk backend's own reader, with its bounds on sizes and inflation).
The view has the reading interface of :class:`isicarchive.disk.layouts.ArchiveFiles`
(``names``, ``find``, ``read``, ``text``, ``path_of``, ``close``), so the disk
backend reads a release's images as it reads any archive on disk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .. import limits
from ..disk.layouts import ArchiveFiles, LayoutError

__all__ = ["ReleaseFiles"]


class ReleaseFiles:
    """One namespace over a release's folder, the zips in it and its HDF5 stores (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.is_zip = self.root.is_file() and self.root.suffix.lower() == ".zip"
        self.problems: list[str] = []
        self._plain: dict[str, Path] = {}
        self._zips: dict[str, ArchiveFiles] = {}        # container name → the zip, read as any zip on disk is
        self._zip_members: dict[str, tuple[str, str]] = {}  # virtual name → (container, member)
        self._hdf5: dict[str, Path] = {}                 # container name → file
        self._hdf5_open: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.is_zip:
            self._add_zip(self.root.name, self.root)
        elif self.root.is_dir():
            self._walk()
        elif self.root.is_file() and self.root.suffix.lower() in (".hdf5", ".h5"):
            self._hdf5[self.root.name] = self.root
        else:
            raise LayoutError(f"{self.root} does not exist (a release is a folder, or one of its zips)")
        self._names = sorted([*self._plain, *self._zip_members])

    # ------------------------------------------------------------ listing
    def _walk(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):  # os.walk does not descend into linked folders
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                path = Path(dirpath, filename)
                name = "/".join(path.relative_to(self.root).parts)
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(self.root) or not target.is_file():
                        self.problems.append(f"{name} is a link leading out of the release folder: ignored")
                        continue
                lowered = filename.lower()
                if lowered.endswith(".zip"):
                    self._add_zip(name, path)
                elif lowered.endswith((".hdf5", ".h5")):
                    self._hdf5[name] = path
                else:
                    self._plain[name] = path

    def _add_zip(self, name: str, path: Path) -> None:
        # the disk backend's own zip reader: members bounded in size and inflation ratio, unsafe paths left out
        try:
            archive = ArchiveFiles(path)
        except LayoutError as exc:
            self.problems.append(f"{name}: {exc}: ignored")
            return
        self._zips[name] = archive
        self.problems += [f"{name}: {problem}" for problem in archive.problems]
        for member in archive.names:
            if member.startswith("__MACOSX/") or PurePosixPath(member).name.startswith("._"):
                continue
            self._zip_members[f"{name}/{member}"] = (name, member)

    @property
    def names(self) -> list[str]:
        """Every file of the view (zip members included; HDF5 images are listed by :meth:`hdf5_keys`)."""
        return self._names

    @property
    def hdf5_files(self) -> list[str]:
        """The HDF5 stores of the view, by name."""
        return sorted(self._hdf5)

    def find(self, basename: str) -> str | None:
        """The shallowest file of that name, anywhere in the view (in a zip too); None when absent."""
        found = [n for n in self._names if n.rsplit("/", 1)[-1] == basename]
        if not found:
            return None
        return min(found, key=lambda n: (n.count("/"), n))

    def find_any(self, basenames: Iterable[str]) -> str | None:
        """The first of several accepted names that is present."""
        return next((found for b in basenames if (found := self.find(b))), None)

    def under(self, folder: str) -> list[str]:
        """The files inside a folder of that name — unzipped, or in a zip named ``<folder>.zip``.

        A folder nested in a folder of the same name (unzipped into a folder
        of its own name) counts once.
        """
        out = []
        for name in self._names:
            parts = name.split("/")[:-1]
            if folder in parts or f"{folder}.zip" in parts:
                out.append(name)
        return out

    # -------------------------------------------------------------- reading
    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of a file of the view, at most ``limit`` (by default ``limits.archive_file_bytes``)."""
        largest = limits.current().archive_file_bytes if limit is None else limit
        if name in self._plain:
            path = self._plain[name]
            # confined when read too: the folder may have changed since it was listed
            if not Path(os.path.realpath(path)).is_relative_to(self.root):
                raise LayoutError(f"{name} in {self.root} is a link out of the release: not read")
            with path.open("rb") as stream:
                data = stream.read(largest + 1)
            if len(data) > largest:
                raise _too_large(name, self.root, largest)
            return data
        if name in self._zip_members:
            container, member = self._zip_members[name]
            return self._zips[container].read(member)  # bounded by the zip reader's own limits
        container, _, key = name.rpartition("/")
        if container in self._hdf5 and key:
            return self._read_hdf5(container, key, largest)
        raise LayoutError(f"{name} is not in the release at {self.root}")

    def text(self, name: str, limit: int | None = None) -> str:
        try:
            return self.read(name, limit).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LayoutError(f"{name} in {self.root} is not UTF-8 text") from None
        except OSError as exc:
            raise LayoutError(f"cannot read {name} in {self.root}: {exc.strerror or exc}") from None

    def path_of(self, name: str) -> Path | None:
        """The file itself for an unzipped file (None inside a zip or an HDF5 store)."""
        return self._plain.get(name)

    # ----------------------------------------------------------------- HDF5
    def _h5(self, container: str) -> Any:
        try:
            import h5py
        except ImportError:
            raise ImportError("the 2024 release keeps its images in HDF5: pip install 'isicarchive[releases]' "
                              "(or h5py)") from None
        with self._lock:
            if container not in self._hdf5_open:
                try:
                    self._hdf5_open[container] = h5py.File(self._hdf5[container], "r")
                except OSError as exc:
                    raise LayoutError(f"{container} in {self.root} is not a readable HDF5 file ({exc})") from None
            return self._hdf5_open[container]

    def hdf5_keys(self, container: str) -> list[str]:
        """The image ids stored in an HDF5 store (its top-level datasets)."""
        store = self._h5(container)
        with self._lock:
            return [str(key) for key in store.keys()]

    def _read_hdf5(self, container: str, key: str, limit: int) -> bytes:
        store = self._h5(container)
        with self._lock:
            if key not in store:
                raise LayoutError(f"{key} is not in {container} at {self.root}")
            dataset = store[key]
            if not hasattr(dataset, "shape") or dataset.nbytes > limit:
                raise LayoutError(f"{container}/{key} in {self.root} is not one image of at most {limit:,} bytes "
                                  "(isicarchive.limits.configure(archive_file_bytes=…) raises the limit)")
            value = dataset[()]
        if isinstance(value, bytes):
            return value
        tobytes = getattr(value, "tobytes", None)
        if tobytes is None:
            raise LayoutError(f"{container}/{key} in {self.root} holds no image bytes")
        return bytes(tobytes())

    def close(self) -> None:
        with self._lock:
            for archive in self._zips.values():
                archive.close()
            for store in self._hdf5_open.values():
                store.close()
            self._hdf5_open.clear()

    def __enter__(self) -> ReleaseFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _too_large(name: str, root: Path, largest: int) -> LayoutError:
    return LayoutError(f"{name} in {root} is larger than the {largest:,} bytes a file may be "
                       "(isicarchive.limits.configure(archive_file_bytes=…) raises the limit): not read")
