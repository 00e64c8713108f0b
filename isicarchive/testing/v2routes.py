"""The current v2 routes of the local archive (``/api/v2``), its storage host and OAuth.

Follows ``current-v2-api.md``: cursor pagination (``limit`` ≤ 100, opaque
``cursor``, ``{count, next, previous, results}`` with ``count`` on the first
page only, images ordered by ``created``), the search language
(:mod:`isicarchive.search`; a bad query is a 400), collections, users/me
with a bearer token, licence files, and file URLs on a separate "storage"
origin with Range support.  OAuth lives in :mod:`.oauthroutes`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .. import search as _search
from ..errors import QueryError
from .server import ApiError, Request, Response

if TYPE_CHECKING:
    from .generator import User
    from .server import LocalArchive

MAX_LIMIT = 100
LICENSES = {
    "CC-0": "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication\n\nThe person who associated a work with this "
            "deed has dedicated the work to the public domain.\n",
    "CC-BY": "Attribution 4.0 International (CC BY 4.0)\n\nYou are free to share and adapt the material for any "
             "purpose, provided you give appropriate credit.\n",
    "CC-BY-NC": "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)\n\nYou may share and adapt the "
                "material for non-commercial purposes, giving appropriate credit.\n",
}


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p={position}".encode()).decode().rstrip("=")


def _position(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(text.split("=", 1)[1]))
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ApiError(400, "Invalid cursor.") from None


def paginate(req: Request, items: list, render: Callable[[Any], dict]) -> Response:
    """One page of ``items`` with next/previous URLs that keep the other parameters."""
    limit = req.int_arg("limit", MAX_LIMIT)
    if limit < 1:
        raise ApiError(400, "limit must be at least 1.")
    limit = min(limit, MAX_LIMIT)
    start = _position(req.arg("cursor"))
    page = items[start:start + limit]
    keep = {k: v for k, v in req.query.items() if k != "cursor"}

    def link(position: int) -> str:
        return f"{req.base_url}{req.path}?{urlencode({**keep, 'cursor': _cursor(position)})}"

    return Response.json({
        "count": len(items) if start == 0 else None,
        "next": link(start + limit) if start + limit < len(items) else None,
        "previous": link(max(0, start - limit)) if start > 0 else None,
        "results": [render(item) for item in page],
    })


def register(archive: LocalArchive) -> None:
    """Add the v2, storage and OAuth routes to the archive's router."""
    data = archive.data

    def add(method: str, pattern: str, handler: Callable[..., Response]) -> None:
        archive.router.add("v2", method, pattern, handler)

    def visible(user: User | None) -> list[dict]:
        return data.view(("v2 images", data.visibility(user)),
                         lambda: sorted(data.visible_images(user), key=lambda im: im["created"]))

    def record(req: Request) -> Callable[[dict], dict]:
        expires, key = archive.storage_terms()
        return lambda image: data.v2_record(image, req.base_url, expires, key)

    def collection_ids(req: Request) -> list[int]:
        text = req.arg("collections") or ""
        if not text:
            return []
        try:
            ids = [int(part) for part in text.split(",") if part]
        except ValueError:
            raise ApiError(400, f"Invalid collections: {text!r}.") from None
        for cid in ids:
            readable_collection(req, cid)
        return ids

    def searched(req: Request) -> list[dict]:
        try:
            predicate = _search.compile_query(_search.parse(req.arg("query") or ""))
        except QueryError as exc:
            raise ApiError(400, str(exc), payload=_search.PARSE_ERROR_BODY) from None
        ids = collection_ids(req)

        def matching() -> list[dict]:
            images = visible(req.user)
            if ids:
                members = set().union(*(data.collection_members[c] for c in ids))
                images = [im for im in images if im["_id"] in members]
            return [im for im in images if predicate(data.search_record(im))]

        # a search is evaluated once and its result kept for the following cursor pages
        query = (req.arg("query") or "").strip()
        return data.view(("v2 search", data.visibility(req.user), query, tuple(ids)), matching)

    def images_list(req: Request) -> Response:
        return paginate(req, visible(req.user), record(req))

    def images_search(req: Request) -> Response:
        return paginate(req, searched(req), record(req))

    def images_search_size(req: Request) -> Response:
        return Response.json({"size": sum(data.image_file_size(im["_id"]) for im in searched(req))})

    def image_detail(req: Request, isic_id: str) -> Response:
        image = data.images_by_name.get(isic_id)
        if image is None or not data.can_read_image(req.user, image):
            raise ApiError(404, "Not Found")
        return Response.json(record(req)(image))

    add("GET", r"images", images_list)
    add("GET", r"images/search", images_search)
    add("GET", r"images/search/size", images_search_size)
    add("GET", r"images/(?P<isic_id>ISIC_[0-9]+)", image_detail)

    # ---------------------------------------------------------- collections
    def collection_record(c: dict) -> dict:
        return {k: v for k, v in c.items() if k != "dataset_id"}

    def readable_collection(req: Request, cid: int) -> dict:
        collection = data.collections_by_id.get(cid)
        if collection is None or not (collection["public"] or (req.user is not None and (
                req.user.sees_private or req.user.id in data.datasets_by_id.get(
                    collection.get("dataset_id", ""), {}).get("access_users", [])))):
            raise ApiError(404, "Not Found")
        return collection

    def collections_list(req: Request) -> Response:
        items = [c for c in data.collections if _can_see(req, c)]
        pinned = req.arg("pinned")
        if pinned in ("true", "false"):
            items = [c for c in items if c["pinned"] == (pinned == "true")]
        sort = req.arg("sort") or "name"
        if sort not in ("name", "created", "-name", "-created"):
            raise ApiError(400, f"Invalid sort: {sort!r}.")
        items = sorted(items, key=lambda c: c[sort.lstrip("-")], reverse=sort.startswith("-"))
        return paginate(req, items, collection_record)

    def _can_see(req: Request, collection: dict) -> bool:
        try:
            readable_collection(req, collection["id"])
        except ApiError:
            return False
        return True

    def collection_detail(req: Request, cid: str) -> Response:
        return Response.json(collection_record(readable_collection(req, int(cid))))

    def collection_images(req: Request, cid: str) -> Response:
        members = data.collection_members[readable_collection(req, int(cid))["id"]]
        return paginate(req, [im for im in visible(req.user) if im["_id"] in members], record(req))

    add("GET", r"collections", collections_list)
    add("GET", r"collections/(?P<cid>[0-9]+)", collection_detail)
    add("GET", r"collections/(?P<cid>[0-9]+)/images", collection_images)

    def cohort_detail(req: Request, cid: str) -> Response:
        if req.user is None:
            raise ApiError(401, "Authentication required.")
        raise ApiError(403 if not req.user.admin else 404, "Not Found")

    add("GET", r"cohorts/(?P<cid>[0-9]+)", cohort_detail)

    # ---------------------------------------------------------------- users
    def users_me(req: Request) -> Response:
        if req.user is None:
            raise ApiError(401, "Authentication credentials were not provided.")
        u = req.user
        return Response.json({"id": int(u.id[-6:], 16), "username": u.login, "email": f"{u.login}@example.org",
                              "first_name": u.first_name, "last_name": u.last_name, "created": "2015-01-01T00:00:00Z",
                              "accepted_terms": "2020-01-01T00:00:00Z", "hash_id": u.id[-5:].upper(),
                              "full_name": f"{u.first_name} {u.last_name}"})

    add("GET", r"users/me", users_me)

    def license_file(req: Request, license: str) -> Response:
        if license not in LICENSES:
            raise ApiError(404, "Not Found")
        return Response(200, LICENSES[license].encode(), "text/plain; charset=utf-8")

    add("GET", r"zip-download/license-file/(?P<license>[A-Z0-9-]+)", license_file)

    # -------------------------------------------------------------- studies
    def study_v2(study: dict) -> dict:
        return {"id": int(study["_id"][-6:], 16), "name": study["name"], "description": study["description"],
                "created": study["created"], "public": study["public"],
                "questions": [{"prompt": q["id"], "choices": q["choices"]} for q in study["questions"]]}

    def studies_list(req: Request) -> Response:
        return paginate(req, [s for s in data.studies if data.can_read_study(req.user, s)], study_v2)

    def study_detail(req: Request, sid: str) -> Response:
        for study in data.studies:
            if int(study["_id"][-6:], 16) == int(sid) and data.can_read_study(req.user, study):
                return Response.json(study_v2(study))
        raise ApiError(404, "Not Found")

    add("GET", r"studies", studies_list)
    add("GET", r"studies/(?P<sid>[0-9]+)", study_detail)

    # -------------------------------------------------------------- storage
    def storage_file(req: Request, kind: str, isic_id: str) -> Response:
        image = data.images_by_name.get(isic_id)
        text = req.arg("expires")
        expires = int(text) if text and text.isdigit() else None
        signature = req.arg("sig")
        _, key = archive.storage_terms()
        if image is None or signature != data.storage_signature(isic_id, expires, key) \
                or (expires is not None and time.time() > expires):
            raise ApiError(403, "AccessDenied: Request has expired or the signature does not match.")
        if kind == "thumbnails":
            return Response.binary(data.thumbnail_jpeg(image["_id"]), "image/jpeg")
        return Response.binary(data.image_jpeg(image["_id"]), "image/jpeg")

    archive.router.add("storage", "GET", r"(?P<kind>images|thumbnails)/(?P<isic_id>ISIC_[0-9]+)\.jpg",
                       storage_file)
