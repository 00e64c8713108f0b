"""``Segmentation``: a lesion boundary drawn on an image (v1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_module
from .base import Model

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see .._lazy)

__all__ = ["Segmentation"]


class Segmentation(Model):
    """A segmentation with its review info and (after :meth:`load_mask`) mask."""

    KIND = "segmentation"
    FIELDS = (
        ("id", "_id", ""), ("image_id", "imageId", None), ("created", "created", None),
        ("creator", "creator", None), ("failed", "failed", None), ("skill", "skill", None),
        ("reviews", "reviews", []), ("meta", "meta", {}),
    )
    # the attributes FIELDS creates, declared for type checkers and editors
    id: str
    image_id: str | None
    created: str | None
    creator: dict | None
    failed: bool | None
    skill: str | None
    reviews: list[dict]
    meta: dict
    SUMMARY = ("id", "image_id", "skill", "failed")

    def __init__(self, record: dict | None = None, api: Any = None) -> None:
        super().__init__(record, api)
        self.mask: np.ndarray | None = None

    @property
    def area(self) -> int | None:
        """Lesion pixels, after :meth:`load_mask`."""
        return None if self.mask is None else int(np.count_nonzero(self.mask))

    def load_mask(self) -> np.ndarray:
        """The 8-bit mask (0 outside, 255 lesion), cached as ``sgmsk_<id>.png``."""
        if self.mask is None:
            self.mask = self._context().store.segmentation_mask(self.id)
        return self.mask

    def superpixels_in_mask(self, image: Any) -> np.ndarray:
        """Pixels of each superpixel of ``image`` inside the lesion mask."""
        mask = self.load_mask() > 0
        image.load_superpixels()
        idx = image.superpixels["idx"]
        return np.bincount(idx[mask].ravel(), minlength=int(idx.max()) + 1)
