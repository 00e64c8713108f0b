"""A lesion of the current archive (v2): its images, index image, follow-up and outcome."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Model

__all__ = ["Lesion"]


class Lesion(Model):
    """A lesion (``lesions/{id}/``): the images of one lesion of one patient.

    Attributes
    ----------
    images : list of Image
        Its images you may see, as :class:`Image` objects of the session.
    index_image : Image or None
        The image the archive shows for the lesion.
    longitudinally_monitored : bool
        Whether its images were taken on more than one day.
    outcome_diagnosis : str or None
        The full diagnosis path (``Malignant:…:Melanoma Invasive``);
        ``outcome_diagnosis_1`` its first level.
    """

    KIND = "lesion"
    FIELDS: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("id", "id", None), ("images_count", "images_count", 0),
        ("longitudinally_monitored", "longitudinally_monitored", False), ("index_image_id", "index_image_id", None),
        ("outcome_diagnosis", "outcome_diagnosis", None), ("outcome_diagnosis_1", "outcome_diagnosis_1", None),
    )
    SUMMARY = ("id", "images_count", "outcome_diagnosis_1")
    id: str
    index_image_id: str | None

    def __init__(self, record: dict | None = None, api: Any = None) -> None:
        super().__init__(record, api)
        self.name = self.id
        api = self._api
        self.images = [api.context.image_object(r) for r in self._record.get("images", [])] if api is not None else []
        self.index_image = next((im for im in self.images if im.name == self.index_image_id), None)

    @property
    def patient_id(self) -> str | None:
        return next((im.patient_id for im in self.images if im.patient_id), None)
