"""Collections of the local archive's v2 API (``isic/core/api/collection.py`` of the real archive).

Reads: ``collections/`` (``pinned``, ``sort=name|created``), ``collections/{id}/``,
``collections/{id}/attribution/``.  Writes, for signed-in owners (and staff):
``create-from-isic-ids/`` (202), ``{id}/populate-from-search/`` and
``{id}/populate-from-isic-ids/`` (202: the archive queues them; here they are
done before the answer), ``{id}/populate-from-list/`` and
``{id}/remove-from-list/`` (200 with a summary per id, what the official
CLI's ``collection add-images``/``remove-images`` call), ``DELETE {id}/``
(204) and ``{id}/share/`` (staff, 202).  A locked collection refuses writes
with 409; someone else's with 403; one you cannot see is a 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import search as _search
from ..errors import QueryError
from .server import ApiError, Request, Response
from .v2framework import django_json, json_object_body
from .v2paging import (
    by_created,
    descending_datetime_position,
    django_datetime_position,
    invalid,
    paginate,
    pydantic_int,
    query_bool,
)

if TYPE_CHECKING:
    from .generator import ArchiveData, User
    from .server import LocalArchive

__all__ = ["can_see", "register"]

_ISIC_ID = re.compile(r"^ISIC_\d{7}$")
#: fields of CollectionOut; the rest of our collection dicts is bookkeeping
_PUBLISHED = ("id", "name", "description", "public", "pinned", "locked", "doi", "doi_url")


def can_see(data: ArchiveData, user: User | None, cid: int) -> bool:
    collection = data.collections_by_id.get(cid)
    if collection is None:
        return False
    if collection["public"]:
        return True
    if user is None:
        return False
    dataset = data.datasets_by_id.get(collection.get("dataset_id", ""), {})
    return (user.sees_private or user.id in dataset.get("access_users", []) or collection.get("creator") == user.id
            or user.id in collection.get("shared_with", ()))


def _record(collection: dict) -> dict:
    return {key: collection.get(key) for key in _PUBLISHED}


def _isic_ids(body: dict, *, at_least: int = 0, at_most: int | None = None) -> list[str]:
    ids = body.get("isic_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and _ISIC_ID.match(i) for i in ids):
        raise ApiError(422, "isic_ids", payload={"detail": [{"type": "string_pattern_mismatch",
                                                             "loc": ["body", "payload", "isic_ids"],
                                                             "msg": "String should match pattern '^ISIC_\\d{7}$'"}]})
    if len(ids) < at_least or (at_most is not None and len(ids) > at_most):
        kind = "too_short" if len(ids) < at_least else "too_long"
        raise ApiError(422, "isic_ids", payload={"detail": [{"type": kind, "loc": ["body", "payload", "isic_ids"],
                                                             "msg": f"List should have at least {at_least} item"
                                                             if kind == "too_short" else
                                                             f"List should have at most {at_most} items"}]})
    return ids


#: Django's 500 page with DEBUG off (django/views/defaults.py ``server_error``)
_SERVER_ERROR_PAGE = (b"\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error (500)</title>\n</head>\n"
                      b"<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n")


def collection_number(cid: str) -> int:
    """The ``id`` path parameter: ``id: int`` on most collection routes (a 422 when it is no integer);
    populate-from-list and remove-from-list leave it untyped, so the database refuses it (a 500)."""
    number = pydantic_int(cid)
    if number is None:
        raise invalid("id", "int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                      where="path")
    return number


def register(archive: LocalArchive, add: Callable[..., None], searched: Callable[[Request], list[dict]],
             visible: Callable[[User | None], list[dict]]) -> None:
    data = archive.data

    def signed_in(req: Request) -> User:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        return req.user

    def readable(req: Request, cid: str) -> dict:
        number = collection_number(cid)
        if not can_see(data, req.user, number):
            raise ApiError(404, "Not Found")
        return data.collections_by_id[number]

    def writable(req: Request, cid: str, action: str = "add images to") -> dict:
        user = signed_in(req)
        collection = readable(req, cid)
        if not (user.admin or collection.get("creator") == user.id):
            raise ApiError(403, "Forbidden",
                           payload={"error": f"You do not have permission to {action} this collection."})
        if collection["locked"]:
            raise ApiError(409, "Locked", payload={"error": "Collection is locked"})
        return collection

    # ----------------------------------------------------------------- reads
    def collection_list(req: Request) -> Response:
        pinned = query_bool(req, "pinned")
        sort = req.arg("sort")
        if sort is not None and sort not in ("name", "created"):
            raise invalid("sort", "literal_error", "Input should be 'name' or 'created'",
                          {"expected": "'name' or 'created'"})
        items = [c for c in data.collections if can_see(data, req.user, c["id"])]
        if pinned is not None:
            items = [c for c in items if c["pinned"] == pinned]
        # CursorPagination: the default ordering is -created; sort=name|created orders by that field and its
        # value (str of it) is the cursor's position, checked as that field's type
        if sort == "name":
            items = sorted(items, key=lambda c: c["name"])
            return paginate(req, items, _record, [c["name"] for c in items])
        items, keys = by_created(items, lambda c: c["created"], newest_first=sort is None)
        return paginate(req, items, _record, keys,
                        parse=django_datetime_position if sort else descending_datetime_position)

    def collection_detail(req: Request, cid: str) -> Response:
        return Response.json(_record(readable(req, cid)))

    def attribution(req: Request, cid: str) -> Response:
        collection = readable(req, cid)
        members = data.collection_members[collection["id"]]
        counts: dict[tuple[str, str], int] = {}
        for image in visible(req.user):
            if image["_id"] in members:
                rec = data.search_record(image)
                ds = data.datasets_by_id.get(image["dataset"]["_id"]) or {}
                key = (rec["copyright_license"], ds.get("attribution", "Anonymous"))
                counts[key] = counts.get(key, 0) + 1
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        return Response.json([{"license": lic, "attribution": who, "count": n} for (lic, who), n in ordered])

    add("GET", r"collections", collection_list)
    add("GET", r"collections/(?P<cid>[^/]+)", collection_detail)
    add("GET", r"collections/(?P<cid>[^/]+)/attribution", attribution)

    # ---------------------------------------------------------------- writes
    def visible_ids(user: User | None, ids: list[str]) -> dict[str, dict]:
        found = {}
        for isic_id in ids:
            image = data.images_by_name.get(isic_id)
            if image is not None and data.can_read_image(user, image):
                found[isic_id] = image
        return found

    def add_members(collection: dict, images: list[dict]) -> None:
        data.collection_members[collection["id"]].update(im["_id"] for im in images)
        data.changed()

    def create_from_ids(req: Request) -> Response:
        user = signed_in(req)
        body = json_object_body(req)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, "name", payload={"detail": [{"type": "missing", "loc": ["body", "payload", "name"],
                                                             "msg": "Field required"}]})
        ids = _isic_ids(body, at_least=1)
        if any(c["name"] == name and c.get("creator") == user.id for c in data.collections):
            raise ApiError(400, "exists", payload={"message": "A collection with that name already exists."})
        cid = max(data.collections_by_id) + 1
        collection = {"id": cid, "name": name, "description": str(body.get("description", "")), "public": False,
                      "pinned": False, "locked": False, "doi": None, "doi_url": None,
                      "created": _now(), "updated": _now(), "creator": user.id, "shared_with": []}
        data.collections.append(collection)
        data.collections_by_id[cid] = collection
        data.collection_members[cid] = set()
        add_members(collection, list(visible_ids(user, ids).values()))
        return Response.json({"collection_id": cid}, 202)

    def populate_from_ids(req: Request, cid: str) -> Response:
        collection = writable(req, cid)
        ids = _isic_ids(json_object_body(req), at_least=1)
        found = visible_ids(req.user, ids)
        if collection["public"]:
            found = {k: im for k, im in found.items() if data.dataset_public(im["dataset"]["_id"])}
        add_members(collection, list(found.values()))
        return Response.json({}, 202)

    def populate_from_search(req: Request, cid: str) -> Response:
        collection = writable(req, cid)
        body = json_object_body(req)
        query = body.get("query") or ""
        collections = body.get("collections") or []
        params = {"query": query} | ({"collections": ",".join(map(str, collections))} if collections else {})
        probe = Request(req.method, req.path, req.route, req.api, params, req.headers, b"", req.user, req.base_url,
                        req.data)
        try:
            _search.parse(query)
        except QueryError:
            raise ApiError(400, "bad query", payload=_search.PARSE_ERROR_BODY) from None
        images = searched(probe)
        if collection["public"] and any(not data.dataset_public(im["dataset"]["_id"]) for im in images):
            raise ApiError(409, "private", payload={"error": "Collection is public and cannot contain private images."})
        add_members(collection, images)
        return Response.json({}, 202)

    def from_list(req: Request, cid: str, remove: bool) -> Response:
        signed_in(req)
        ids = _isic_ids(json_object_body(req), at_most=500)
        try:
            int(cid)  # the untyped id reaches the database, which refuses text: Django's 500 page
        except ValueError:
            return Response(500, _SERVER_ERROR_PAGE, "text/html; charset=utf-8")
        collection = writable(req, cid, "add images to")
        found = visible_ids(req.user, ids)
        missing = [i for i in ids if i not in found]
        if remove:
            data.collection_members[collection["id"]].difference_update(im["_id"] for im in found.values())
            data.changed()
            return django_json({"no_perms_or_does_not_exist": missing, "succeeded": list(found)})
        private = [i for i, im in found.items() if collection["public"] and not data.dataset_public(
            im["dataset"]["_id"])]
        succeeded = [i for i in found if i not in private]
        add_members(collection, [found[i] for i in succeeded])
        return django_json({"no_perms_or_does_not_exist": missing, "private_image_public_collection": private,
                               "succeeded": succeeded})

    def delete(req: Request, cid: str) -> Response:
        user = signed_in(req)
        collection = readable(req, cid)
        if not (user.admin or collection.get("creator") == user.id):
            raise ApiError(403, "Forbidden",
                           payload={"error": "You do not have permission to delete this collection."})
        if collection["locked"] or collection.get("doi"):
            raise ApiError(400, "locked", payload={"error": "Collections with DOIs or that are locked cannot be "
                                                            "deleted."})
        data.collections.remove(collection)
        del data.collections_by_id[collection["id"]]
        del data.collection_members[collection["id"]]
        data.changed()
        return Response(204, b"", "application/json")

    def share(req: Request, cid: str) -> Response:
        user = signed_in(req)
        if not user.admin:
            raise ApiError(401, "Unauthorized")  # auth=is_staff: a non-staff user is declined, as no one is
        collection = readable(req, cid)
        body = json_object_body(req)
        user_ids = body.get("user_ids")
        if not isinstance(user_ids, list) or not all(isinstance(u, int) for u in user_ids):
            raise ApiError(422, "user_ids", payload={"detail": [{"type": "list_type",
                                                                 "loc": ["body", "payload", "user_ids"],
                                                                 "msg": "Input should be a valid list"}]})
        if collection.get("dataset_id") is None and collection.get("pinned"):
            raise ApiError(400, "magic", payload={"error": "Magic collections cannot be shared."})
        by_number = {int(u.id[-6:], 16): u for u in data.users}
        if int(user.id[-6:], 16) in user_ids:
            raise ApiError(400, "self", payload={"error": "Cannot share a collection with yourself."})
        collection.setdefault("shared_with", []).extend(by_number[n].id for n in user_ids if n in by_number)
        data.changed()
        return Response.json({}, 202)

    add("POST", r"collections/create-from-isic-ids", create_from_ids)
    add("POST", r"collections/(?P<cid>[^/]+)/populate-from-isic-ids", populate_from_ids)
    add("POST", r"collections/(?P<cid>[^/]+)/populate-from-search", populate_from_search)
    add("POST", r"collections/(?P<cid>[^/]+)/populate-from-list", lambda req, cid: from_list(req, cid, False))
    add("POST", r"collections/(?P<cid>[^/]+)/remove-from-list", lambda req, cid: from_list(req, cid, True))
    add("DELETE", r"collections/(?P<cid>[^/]+)", delete)
    add("POST", r"collections/(?P<cid>[^/]+)/share", share)


def _now() -> Any:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).isoformat()
