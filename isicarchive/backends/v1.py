"""The legacy v1 (Girder) API: ``/api/v1``, 24-hex object ids, offset paging."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .. import _json
from ..errors import ArchiveUnavailableError, AuthenticationError, NotFoundError, QueryError
from ..records import RecordStore
from ..transport import checked_record, iter_pages, record_id
from .base import Backend, ProgressHook

__all__ = ["V1Backend"]

_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
#: records per page when paging through every image (detail form)
IMAGE_PAGE = 500
LIST_PAGE = 200


class V1Backend(Backend):
    """Girder ``/api/v1`` backend."""

    version = 1
    auth_header = "Girder-Token"

    def is_id(self, value: str) -> bool:
        return bool(_OBJECT_ID.match(value))

    def _get(self, endpoint: str, params: dict[str, Any] | None = None, expect: type = dict,
             what: str | None = None) -> Any:
        try:
            return self.http.get_json(endpoint, params=params, expect=expect)
        except NotFoundError as exc:
            # Girder answers 400 for unknown ids and never 404 on its own routes: a 404 means no v1 service
            raise ArchiveUnavailableError(
                f"the legacy v1 API does not answer at {self.http.base_url} ({str(exc).split(' answered ', 1)[-1]}): "
                "it was retired from the ISIC Archive. Use today's API: IsicApi(api_version=2) "
                "(or `isicarchive --api v2 …`).", status=exc.status, url=exc.url) from None
        except QueryError as exc:
            # Girder answers 400 "Invalid image id (…)" for ids that do not exist
            if what and "invalid" in str(exc).lower() and "id" in str(exc).lower():
                raise NotFoundError(f"{what} not found: {exc}", status=exc.status, url=exc.url) from None
            raise

    def _paged(self, endpoint: str, params: dict[str, Any] | None, page: int = LIST_PAGE) -> Iterator[dict]:
        base = dict(params or {})
        if "limit" in base or "offset" in base:
            yield from self._get(endpoint, base, list)
            return
        yield from iter_pages(lambda limit, offset: self._get(endpoint, {**base, "limit": limit, "offset": offset},
                                                              list), page)

    # ----------------------------------------------------------------- auth
    def login(self, username: str, password: str) -> tuple[str, dict]:
        try:
            response = self.http.request("GET", "user/authentication", auth=(username, password))
        except AuthenticationError as exc:
            raise AuthenticationError(f"login of {username!r} refused by the archive: "
                                      f"{str(exc).split(': ', 1)[-1]}", status=exc.status, url=exc.url) from None
        try:
            payload = _json.loads(response.content)
        except ValueError:
            payload = None  # an HTML sign-in page of a portal or proxy
        token = (payload.get("authToken") or {}) if isinstance(payload, dict) else {}
        if not isinstance(token, dict) or not isinstance(token.get("token"), str) or not token["token"]:
            raise AuthenticationError(f"login of {username!r}: the archive's answer holds no token "
                                      "(is this the archive's address?)")
        user = payload.get("user") if isinstance(payload, dict) else None
        return token["token"], user if isinstance(user, dict) else {}

    def logout(self) -> None:
        self.http.request("DELETE", "user/authentication")

    def me(self) -> dict | None:
        return self.http.get_json("user/me")

    # --------------------------------------------------------------- images
    def image(self, image_id: str) -> dict:
        record = self._get(f"image/{image_id}", what=f"image {image_id!r}")
        checked_record(record, "_id")
        return record

    def image_by_name(self, name: str) -> dict:
        # the listing filtered by name gives the detail record in the same answer: one request, not two
        found = self._get("image", {"name": name, "limit": 1, "detail": "true"}, list)
        if not found:
            raise NotFoundError(f"no image named {name!r} (or you may not see it)")
        return found[0]

    def images(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        return self._paged("image", params)

    def sync_images(self, known: Mapping[str, dict], progress: ProgressHook | None = None,
                    checkpoint: Any = None, on_total: Any = None) -> tuple[RecordStore, bool]:
        """Page through records in ``_id`` order, starting where ``known`` ends.

        Re-reading the last known record along with what follows costs one
        request when nothing is new, and shows whether the archive still
        agrees with the cache; if it does not, everything is fetched again
        (second value True: replace the cache).
        """
        if not known:
            return self._pages(0, progress), True
        offset = len(known) - 1
        page = self._image_page(offset)
        if not page or page[0].get("_id") != max(known):
            return self._pages(0, progress), True
        new = RecordStore.of_json((record_id(r), r) for r in page[1:])
        if progress:
            progress(len(new))
        if len(page) == IMAGE_PAGE:
            new.update(self._pages(offset + IMAGE_PAGE, progress))
        return new, False

    def _image_page(self, offset: int) -> list[dict]:
        return self._get("image", {"detail": "true", "limit": IMAGE_PAGE, "offset": offset,
                                   "sort": "_id", "sortdir": 1}, list)

    def _pages(self, offset: int, progress: ProgressHook | None) -> RecordStore:
        def page(limit: int, at: int) -> list[dict]:
            records = self._image_page(at)
            if progress:
                progress(len(records))
            return records

        # each record kept as JSON as its page comes in: the whole list never exists as dicts at once
        return RecordStore.of_json((record_id(r), r) for r in iter_pages(page, IMAGE_PAGE, offset))

    def image_file(self, record: dict) -> str:
        return f"image/{record['_id']}/download"

    def superpixels_endpoint(self, image_id: str) -> str:
        return f"image/{image_id}/superpixels"

    def superpixels_png(self, image_id: str) -> bytes:
        return self.http.get_bytes(self.superpixels_endpoint(image_id))[0]

    # ------------------------------------------------------------- datasets
    def datasets(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        return self._paged("dataset", params)

    def dataset(self, dataset_id: str) -> dict:
        return self._get(f"dataset/{dataset_id}", what=f"dataset {dataset_id!r}")

    def dataset_extra(self, dataset_id: str, what: str) -> Any:
        """``access``, ``metadata`` or ``review`` of a dataset (writers/reviewers only)."""
        expect = dict if what == "access" else list
        return self._get(f"dataset/{dataset_id}/{what}", expect=expect)

    # -------------------------------------------------------------- studies
    def studies(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        return self._paged("study", params)

    def study(self, study_id: str) -> dict:
        return self._get(f"study/{study_id}", what=f"study {study_id!r}")

    def annotations(self, study_id: str, params: dict[str, Any] | None = None) -> list[dict]:
        return self._get("annotation", {"studyId": study_id, **(params or {})}, list)

    def annotation(self, annotation_id: str) -> dict:
        return self._get(f"annotation/{annotation_id}", what=f"annotation {annotation_id!r}")

    def markup_values(self, annotation_id: str, feature_id: str) -> list[float]:
        from urllib.parse import quote

        return self._get(f"annotation/{annotation_id}/markup/{quote(feature_id, safe='')}/superpixels",
                         expect=list)

    # -------------------------------------------------------- segmentations
    def segmentations(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        return self._paged("segmentation", params)

    def segmentation(self, segmentation_id: str) -> dict:
        return self._get(f"segmentation/{segmentation_id}", what=f"segmentation {segmentation_id!r}")

    def segmentation_mask(self, segmentation_id: str) -> bytes:
        return self.http.get_bytes(f"segmentation/{segmentation_id}/mask")[0]
