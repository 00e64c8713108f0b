"""``Study``: an expert annotation study (v1)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .annotation import Annotation
from .base import Model

__all__ = ["Study"]


class Study(Model):
    """An annotation study: its images, features, questions, users and annotations.

    After :meth:`load_annotations`: ``annotations`` (list of
    :class:`Annotation`), ``image_features`` (image id → feature ids marked
    by anyone), ``loaded_features`` (feature id → number of annotations that
    mark it).
    """

    KIND = "study"
    FIELDS = (
        ("id", "_id", ""), ("name", "name", ""), ("description", "description", ""), ("created", "created", None),
        ("creator", "creator", None), ("features", "features", []), ("questions", "questions", []),
        ("images", "images", []), ("users", "users", []), ("participation_requests", "participationRequests", []),
        ("user_completion", "userCompletion", {}), ("updated", "updated", None),
    )
    # the attributes FIELDS creates, declared for type checkers and editors
    id: str
    name: str
    description: str
    created: str | None
    creator: dict | None
    features: list[dict]
    questions: list[dict]
    images: list[dict]
    users: list[dict]
    participation_requests: list[dict]
    user_completion: dict
    updated: str | None
    SUMMARY = ("id", "name", "image_count", "feature_count", "annotation_count")

    def __init__(self, record: dict | None = None, api: Any = None) -> None:
        super().__init__(record, api)
        for key in ("features", "images", "users"):
            items = getattr(self, key) or []
            if not all(isinstance(item, dict) for item in items):
                from ..errors import ArchiveResponseError

                raise ArchiveResponseError(f"the archive sent a study whose {key!r} list holds something other "
                                           "than records")
        self.annotations: list[Annotation] = []
        self.image_features: dict[str, list[str]] = {}
        self.loaded_features: dict[str, int] = {}

    @property
    def image_count(self) -> int:
        return len(self.images)

    @property
    def feature_count(self) -> int:
        return len(self.features)

    @property
    def annotation_count(self) -> int | None:
        """Annotations loaded by :meth:`load_annotations`; None before (not 0: the study may have many)."""
        return len(self.annotations) if self.annotations else None

    def image_names(self) -> list[str]:
        return [str(im.get("name") or "") for im in self.images]

    def feature_list(self) -> list[str]:
        return [f["id"] for f in self.features]

    def cache_imagedata(self, superpixels: bool = True, workers: int | None = None,
                        progress: bool | None = None) -> Any:
        """Download every accessible image (and superpixel PNG) of the study into the cache.

        Returns the :class:`~isicarchive.downloads.DownloadResult`.
        """
        return self._context().store.download_images(self.images, superpixels=superpixels, workers=workers,
                                                     progress=progress)

    def load_annotations(self, progress: bool | None = None) -> list[Annotation]:
        """Load every annotation with its feature markups (cached in ``stann_<id>.json.gz``)."""
        api = self._require_api()
        summaries = api.context.backend.annotations(self.id)
        records, features = api.context.store.study_annotations(self.id, summaries, progress=progress)
        self.annotations = [Annotation(records[s["_id"]], api, features.get(s["_id"])) for s in summaries
                            if s["_id"] in records]
        image_features: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = defaultdict(int)
        for ann in self.annotations:
            for feature in ann.features:
                image_features[ann.image_id or ""].add(feature)
                counts[feature] += 1
        self.image_features = {k: sorted(v) for k, v in image_features.items()}
        self.loaded_features = dict(counts)
        return self.annotations

    def annotation(self, annotation_id: str) -> Annotation:
        """One loaded annotation by id."""
        for ann in self.annotations:
            if ann.id == annotation_id:
                return ann
        from ..errors import NotFoundError

        raise NotFoundError(f"annotation {annotation_id!r} is not among the loaded annotations of study "
                            f"{self.name!r} (call load_annotations() first)")

    def annotations_for(self, image: str | None = None, user: str | None = None,
                        feature: str | None = None) -> list[Annotation]:
        """Loaded annotations filtered by image (id or name), user id and/or marked feature."""
        names = {im.get("name"): im.get("_id") for im in self.images}
        image_id = names.get(image, image) if image else None
        return [a for a in self.annotations
                if (image_id is None or a.image_id == image_id)
                and (user is None or a.user_id == user)
                and (feature is None or feature in a.features)]
