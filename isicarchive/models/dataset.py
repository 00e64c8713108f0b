"""``Dataset``: a v1 dataset (a v2 collection is mapped onto it)."""

from __future__ import annotations

from typing import Any

from ..errors import AuthenticationError
from .base import Model

__all__ = ["Dataset"]


class Dataset(Model):
    """An archive dataset.

    ``access_list``, ``metadata`` and ``images_for_review`` are loaded by
    :meth:`load` where the user may see them; for others (anonymous users,
    readers) they stay None — a 401/403 there is normal, not an error.
    """

    KIND = "dataset"
    FIELDS = (
        ("id", "_id", ""), ("name", "name", ""), ("description", "description", ""), ("license", "license", None),
        ("access_level", "_accessLevel", None), ("attribution", "attribution", None), ("count", "count", None),
        ("owner", "owner", None), ("created", "created", None), ("creator", "creator", None),
        ("updated", "updated", None),
    )
    # the attributes FIELDS creates, declared for type checkers and editors
    id: str
    name: str
    description: str
    license: str | None
    access_level: int | None
    attribution: str | None
    count: int | None
    owner: str | None
    created: str | None
    creator: dict | None
    updated: str | None
    SUMMARY = ("id", "name", "license", "count", "access_level")

    def __init__(self, record: dict | None = None, api: Any = None) -> None:
        super().__init__(record, api)
        self.access_list: dict | None = None
        self.metadata: list | None = None
        self.images_for_review: list | None = None

    def load(self) -> Dataset:
        """Load access list, registered metadata and review queue where permitted."""
        backend = self._context().backend
        for attribute, what in (("access_list", "access"), ("metadata", "metadata"),
                                ("images_for_review", "review")):
            try:
                setattr(self, attribute, backend.dataset_extra(self.id, what))
            except AuthenticationError:
                setattr(self, attribute, None)
        return self

    def images(self) -> list[dict]:
        """Records of this dataset's images in the session's image cache."""
        api = self._require_api()
        if not api.image_cache:
            api.cache_images()
        return [rec for rec in api.image_cache.values() if (rec.get("dataset") or {}).get("_id") == self.id]
