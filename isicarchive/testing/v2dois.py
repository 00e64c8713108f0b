"""DOIs of the local archive's v2 API, as the real archive mints them.

After ImageMarkup/isic ``isic/core/api/doi.py`` and
``isic/core/services/collection/doi.py``:

* ``POST doi/`` (signed in; ``{"collection_id", "description",
  "supplemental_files", "related_identifiers"}``) creates a *draft* DOI and
  answers 201 ``{"slug": …}``.  Only staff may (403 ``{"error": "You do not
  have permission to create a DOI."}``); a collection that does not exist is
  a 404; one that already has a DOI (or a draft), an empty one, or a "magic"
  one (a cohort's: here the per-dataset collections) is refused with 400
  ``{"message": …}``, the archive's answer to a ``ValidationError``.
  Creating the draft sets the description and **locks** the collection.
  A draft is not shown in the collection's ``doi`` field.
* ``POST doi/{slug}/publish/`` publishes it (the archive queues the work and
  answers 200 at once; here it is done before the answer): the collection
  becomes public and gets its ``doi`` and ``doi_url``
  (``https://doi.org/10.34970/…``).  The archive also lifts the embargo of
  private images in it; the local archive's images take their visibility
  from their dataset, so that step is not modelled.

The archive's ``PATCH doi/{slug}/`` (a draft's description) is not served:
the local server answers no PATCH requests.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .server import ApiError, Request, Response
from .v2framework import json_object_body

if TYPE_CHECKING:
    from .server import LocalArchive

__all__ = ["DOI_PREFIX", "register", "slugify"]

#: the ISIC Archive's DataCite prefix
DOI_PREFIX = "10.34970"


def slugify(text: str) -> str:
    """Django's ``slugify``: ASCII, lower case, runs of spaces and hyphens as one hyphen."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-_")


def _unprocessable(loc: str, kind: str, message: str) -> ApiError:
    return ApiError(422, message, payload={"detail": [{"type": kind, "loc": ["body", "payload", loc],
                                                       "msg": message}]})


def _payload(req: Request) -> dict[str, Any]:
    body = json_object_body(req)
    if not isinstance(body.get("collection_id"), int) or isinstance(body.get("collection_id"), bool):
        raise _unprocessable("collection_id", "missing" if "collection_id" not in body else "int_parsing",
                             "Field required" if "collection_id" not in body else "Input should be a valid integer")
    if not isinstance(body.get("description"), str):
        raise _unprocessable("description", "missing", "Field required")
    files = body.get("supplemental_files")
    if not isinstance(files, list):
        raise _unprocessable("supplemental_files", "missing", "Field required")
    if len(files) > 10:
        raise _unprocessable("supplemental_files", "value_error",
                             "Value error, You can only upload up to 10 supplemental files.")
    if files:  # the archive takes uploaded files (S3 fields); the local archive has no upload flow
        raise _unprocessable("supplemental_files", "value_error", "Value error, Invalid S3 file field value.")
    related = body.get("related_identifiers", [])
    if not isinstance(related, list):
        raise _unprocessable("related_identifiers", "list_type", "Input should be a valid list")
    if sum(1 for r in related if isinstance(r, dict) and r.get("relation_type") == "IsDescribedBy") > 1:
        raise ApiError(400, "related", payload={"message": "A DOI can only have one IsDescribedBy related "
                                                           "identifier."})
    return body


def register(archive: LocalArchive, add: Callable[..., None]) -> None:
    data = archive.data
    drafts: dict[str, dict[str, Any]] = {}
    rng = random.Random(f"{data.seed}:doi")

    def staff(req: Request, action: str) -> None:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        if not req.user.admin:
            raise ApiError(403, "Forbidden", payload={"error": f"You do not have permission to {action}."})

    def new_doi_id() -> str:
        taken = {c.get("doi") for c in data.collections} | {d["id"] for d in drafts.values()}
        while True:
            # as the archive pads it: prefix/6 digits
            candidate = f"{DOI_PREFIX}/{rng.randint(10_000, 999_999):06}"
            if candidate not in taken:
                return candidate

    def create(req: Request) -> Response:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        body = _payload(req)
        collection = data.collections_by_id.get(body["collection_id"])
        if collection is None:
            raise ApiError(404, "Not Found")
        staff(req, "create a DOI")
        members = data.collection_members.get(collection["id"], set())
        if collection.get("doi") or any(d["collection_id"] == collection["id"] for d in drafts.values()):
            problem = "This collection already has a DOI."
        elif not members:
            problem = "An empty collection cannot be the basis of a DOI."
        elif collection.get("dataset_id") is not None:
            problem = "Magic collections cannot be the basis of a DOI."
        else:
            problem = None
        if problem:
            raise ApiError(400, problem, payload={"message": problem})
        slug = slugify(str(collection["name"]))
        if slug in drafts:
            raise ApiError(400, "slug", payload={"message": "Draft doi with this Slug already exists."})
        drafts[slug] = {"id": new_doi_id(), "slug": slug, "collection_id": collection["id"],
                        "creator": req.user.id}
        collection["description"] = body["description"]
        collection["locked"] = True
        data.changed()
        return Response.json({"slug": slug}, 201)

    def publish(req: Request, slug: str) -> Response:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        draft = drafts.get(slug)
        if draft is None:
            raise ApiError(404, "Not Found")
        staff(req, "publish this DOI")
        collection = data.collections_by_id[draft["collection_id"]]
        collection.update(public=True, doi=draft["id"], doi_url=f"https://doi.org/{draft['id']}")
        del drafts[slug]
        data.changed()
        return Response.json({"message": "DOI publish task started successfully."})

    add("POST", r"doi", create)
    add("POST", r"doi/(?P<slug>[-\w]+)/publish", publish)
