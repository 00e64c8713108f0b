"""``Image``: one archive image, its pixels and its superpixels."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import superpixels as _sp
from .._lazy import lazy_module
from ..errors import UnsupportedError
from .base import Model

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see .._lazy)

__all__ = ["Image"]


class Image(Model):
    """An archive image.

    Attributes
    ----------
    id, name, created, creator, dataset, meta, notes, updated
        From the archive's record (v2 records are mapped onto the same names).
    data : numpy.ndarray or None
        Pixels, after :meth:`load_imagedata`.
    superpixels : dict
        ``'idx'`` (2-D label array), ``'map'`` (padded map, see
        :func:`isicarchive.superpixels.superpixel_map`), ``'max'`` (highest
        label), ``'shp'`` (index shape), after :meth:`load_superpixels` /
        :meth:`map_superpixels`.
    segmentation_masks : dict or None
        Segmentation id → 8-bit lesion mask, after :meth:`load_segmentation_masks` (v1).
    """

    KIND = "image"
    FIELDS = (
        ("id", "_id", ""), ("name", "name", ""), ("created", "created", None), ("creator", "creator", {}),
        ("dataset", "dataset", {}), ("meta", "meta", {}), ("notes", "notes", {}), ("updated", "updated", None),
    )
    # the attributes FIELDS creates, declared for type checkers and editors
    id: str
    name: str
    created: str | None
    creator: dict
    dataset: dict
    meta: dict
    notes: dict
    updated: str | None
    SUMMARY = ("id", "name", "dataset_name", "diagnosis", "size")

    def __init__(self, record: dict | None = None, api: Any = None) -> None:
        super().__init__(record, api)
        self.data: np.ndarray | None = None
        self.superpixels: dict[str, Any] = {"idx": None, "map": None, "max": 0, "shp": (0, 0)}
        self.segmentation_masks: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------ summaries
    @property
    def dataset_name(self) -> str | None:
        return (self.dataset or {}).get("name")

    @property
    def lesion_id(self) -> str | None:
        """The lesion the image shows (v2 metadata; None where the archive names none)."""
        from ..grouping import field_of

        return field_of(self._record, "lesion_id")

    @property
    def patient_id(self) -> str | None:
        """The patient the image is of (v2 metadata; None where the archive names none)."""
        from ..grouping import field_of

        return field_of(self._record, "patient_id")

    @property
    def diagnosis(self) -> str | None:
        clinical = (self.meta or {}).get("clinical") or {}
        return clinical.get("diagnosis") or clinical.get("diagnosis_3") or clinical.get("diagnosis_1")

    @property
    def size(self) -> str | None:
        acq = (self.meta or {}).get("acquisition") or {}
        x, y = acq.get("pixelsX"), acq.get("pixelsY")
        return f"{x}x{y}" if x and y else None

    def _html_extra(self) -> str:
        if self.data is None:
            # v2 records carry a pre-signed thumbnail the notebook can show without loading pixels
            thumbnail = ((self._record.get("files") or {}).get("thumbnail_256") or {}).get("url")
            if isinstance(thumbnail, str) and thumbnail.startswith(("https://", "http://")):
                return (f"<br><img alt='{html.escape(self.name)}' width='160' "
                        f"src='{html.escape(thumbnail, quote=True)}'/>")
            return ""
        step = max(1, int(np.ceil(max(self.data.shape[:2]) / 160)))
        thumb = np.ascontiguousarray(self.data[::step, ::step])
        import imageio.v3 as iio

        png = iio.imwrite("<bytes>", thumb, extension=".png")
        return (f"<br><img alt='{html.escape(self.name)}' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'/>")

    # ---------------------------------------------------------------- loads
    def load_imagedata(self) -> None:
        """Load the pixels into :attr:`data` (from the cache when present)."""
        if self.data is None:
            self.data = self._context().store.image_pixels(self._record)

    def load_superpixels(self, map_superpixels: bool = False) -> None:
        """Load the superpixel index into ``superpixels['idx']`` (cache first).

        v1 images have the archive's superpixels.  v2 images have none in the
        archive: they are computed locally with the legacy archive's
        parameters (:meth:`compute_superpixels`, the ``slic`` extra) and
        cached under the original names, so code written for v1 runs as is.

        Raises
        ------
        ImportError
            On v2 without scikit-image, naming the extra to install.
        """
        if self.superpixels["idx"] is None:
            try:
                idx = self._context().store.superpixel_index(self.id)
            except UnsupportedError:
                self.compute_superpixels()
            else:
                self._set_index(idx)
        if map_superpixels:
            self.map_superpixels()

    def _set_index(self, idx: np.ndarray) -> None:
        self.superpixels.update(idx=idx, max=int(idx.max()), shp=idx.shape, map=None)

    def map_superpixels(self) -> None:
        """Build ``superpixels['map']`` (loading the index first if needed)."""
        if self.superpixels["idx"] is None:
            self.load_superpixels()
        if self.superpixels["map"] is None:
            self.superpixels["map"] = _sp.superpixel_map(self.superpixels["idx"])

    def compute_superpixels(self, n_segments: int = 1000, **slic_options: Any) -> None:
        """Compute superpixels locally (scikit-image SLIC; the ``slic`` extra).

        For v2 images, which have none in the archive.  The result uses the
        archive's encoding and is cached as ``spimg_``/``spidx_`` files.
        """
        from ..slic import compute_superpixels

        self.load_imagedata()
        assert self.data is not None
        idx = compute_superpixels(self.data, n_segments=n_segments, **slic_options)
        self._context().store.remember_superpixels(self.id, idx)
        self._set_index(idx)

    def load_segmentation_masks(self) -> dict[str, np.ndarray]:
        """The lesion mask of each of this image's segmentations (v1), into :attr:`segmentation_masks`."""
        if self.segmentation_masks is None:
            self.segmentation_masks = {segmentation.id: segmentation.load_mask()
                                       for segmentation in self.segmentations()}
        return self.segmentation_masks

    def clear_data(self) -> None:
        """Drop pixels, superpixels and masks from memory (the cache keeps them)."""
        self.data = None
        self.superpixels = {"idx": None, "map": None, "max": 0, "shp": (0, 0)}
        self.segmentation_masks = None

    # -------------------------------------------------------------- helpers
    def _index(self) -> np.ndarray:
        self.load_superpixels()
        return self.superpixels["idx"]

    def _pixels_and_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The pixels and the superpixel index, checked to be of one size (both come from the archive)."""
        self.load_imagedata()
        assert self.data is not None
        idx = self._index()
        if np.shape(self.data)[:2] != np.shape(idx):
            from ..errors import ArchiveResponseError

            raise ArchiveResponseError(f"the superpixels of {self.name or self.id} are {np.shape(idx)} pixels, the "
                                       f"image {np.shape(self.data)[:2]}: they do not belong together")
        return self.data, idx

    def superpixel_pixels(self, label: int) -> np.ndarray:
        """Flat pixel indices of one superpixel (maps superpixels if needed)."""
        self.map_superpixels()
        return _sp.pixels(self.superpixels["map"], label)

    def superpixel_outlines(self) -> np.ndarray:
        """Boolean mask of superpixel boundaries."""
        return _sp.outlines(self._index())

    def superpixel_neighbours(self, label: int) -> set[int]:
        """Superpixels touching ``label``."""
        return _sp.neighbours(self._index(), label)  # type: ignore[return-value]

    def paint_superpixels(self, labels: Iterable[int], color: Sequence[float] | str = (255, 0, 0),
                          alpha: float = 1.0) -> np.ndarray:
        """A copy of the image with ``labels`` painted."""
        return _sp.paint(*self._pixels_and_index(), labels, color, alpha)

    def overlay(self, values: Sequence[float], color: Sequence[float] | str = (255, 0, 0), alpha: float = 0.5,
                outlines: bool = False, filename: str | None = None) -> np.ndarray:
        """Blend per-superpixel values (e.g. a feature markup) over the image.

        Parameters
        ----------
        values : sequence of float
            One value in 0..1 per superpixel.
        outlines : bool
            Also draw superpixel boundaries (white).
        filename : str, optional
            Save the result as a PNG there as well.
        """
        out = _sp.overlay(*self._pixels_and_index(), values, color, alpha)
        if outlines:
            out[_sp.outlines(self._index())] = 255
        if filename:
            import imageio.v3 as iio

            iio.imwrite(filename, out)
        return out

    def segmentations(self) -> list[Any]:
        """This image's segmentations (v1)."""
        api = self._require_api()
        return [api.segmentation(s["_id"]) for s in api.context.backend.segmentations({"imageId": self.id})]
