"""``Annotation``: one user's answers and superpixel markups on one study image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_module
from .base import Model

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see .._lazy)

__all__ = ["Annotation", "markup_entry"]


def markup_entry(values: Sequence[float]) -> dict:
    """One feature's markup in the original package's form, from per-superpixel values.

    ``idx``: superpixels marked (value > 0), ``lst``: their values, ``num``:
    how many; the area fields stay None until computed (as the original left them).
    """
    idx = [i for i, v in enumerate(values) if v > 0]
    return {"idx": idx, "lst": [values[i] for i in idx], "num": len(idx),
            "area": None, "area_pct": None, "area_mpct": None,
            "tarea": None, "tarea_pct": None, "tarea_mpct": None}


class Annotation(Model):
    """A study annotation.

    ``features`` maps feature id → ``{'idx': superpixels marked, 'lst':
    their values (0.5 possible, 1.0 definite), 'num': count, …}`` (the
    original package's form), filled by :meth:`load_features` or by
    :meth:`Study.load_annotations`.
    """

    KIND = "annotation"
    FIELDS = (
        ("id", "_id", ""), ("study_id", "studyId", None), ("state", "state", None), ("status", "status", None),
        ("start_time", "startTime", None), ("stop_time", "stopTime", None), ("responses", "responses", {}),
        ("markups", "markups", {}), ("log", "log", []), ("image", "image", {}), ("user", "user", {}),
    )
    # the attributes FIELDS creates, declared for type checkers and editors
    id: str
    study_id: str | None
    state: str | None
    status: str | None
    start_time: str | None
    stop_time: str | None
    responses: dict
    markups: dict
    log: list
    image: dict
    user: dict
    SUMMARY = ("id", "study_id", "image_id", "user_id", "state", "status")

    def __init__(self, record: dict | None = None, api: Any = None, features: dict | None = None) -> None:
        super().__init__(record, api)
        self.image_id: str | None = (self.image or {}).get("_id") or self._record.get("imageId")
        self.user_id: str | None = (self.user or {}).get("_id") or self._record.get("userId")
        self.features: dict[str, dict] = dict(features or {})

    def load_features(self) -> dict[str, dict]:
        """Fetch the superpixel values of every feature marked present."""
        backend = self._context().backend
        for feature, present in (self.markups or {}).items():
            if present and feature not in self.features:
                self.features[feature] = markup_entry(backend.markup_values(self.id, feature))
        return self.features

    def feature_values(self, feature: str, n_superpixels: int) -> np.ndarray:
        """Per-superpixel values of one feature (0 where not marked)."""
        values = np.zeros(n_superpixels, dtype=np.float32)
        entry = self.features.get(feature)
        if entry:
            values[np.asarray(entry["idx"], dtype=np.int64)] = np.asarray(entry["lst"], dtype=np.float32)
        return values

    def load_image(self) -> Any:
        """The annotated :class:`~isicarchive.models.Image`."""
        return self._require_api().image(self.image_id)

    def overlay(self, feature: str | Sequence[str] | None = None, color: Any = (255, 0, 0), alpha: float = 0.6,
                filename: str | None = None, outlines: bool = False) -> np.ndarray:
        """The image with one feature's (or all features') markup painted on it."""
        image = self.load_image()
        image.load_superpixels()
        n = int(image.superpixels["max"]) + 1
        self.load_features()
        names = list(self.features) if feature is None else [feature] if isinstance(feature, str) else list(feature)
        values = np.zeros(n, dtype=np.float32)
        for name in names:
            values = np.maximum(values, self.feature_values(name, n))
        return image.overlay(values, color=color, alpha=alpha, outlines=outlines, filename=filename)
