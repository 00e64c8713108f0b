"""More routes of the real archive's v2 API, for the local archive: the OpenAPI document and the docs
page, archive statistics, quick find, autocompletes, the upload routes the official CLI posts to
(``s3-upload/`` then ``accessions/``) and the login- or staff-only routes a client may touch.

Each handler names the function of ``ImageMarkup/isic`` it follows.  Authentication is the archive's
(``isic/auth.py``): a route whose authenticators all decline answers 401 ``{"detail": "Unauthorized"}``,
for a signed-in non-staff user on a staff route too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .server import ApiError, Request, Response
from .v2collections import can_see
from .v2framework import django_datetime, django_json
from .v2paging import by_created, descending_datetime_position, invalid, paginate, path_int

if TYPE_CHECKING:
    from .generator import User
    from .server import LocalArchive

__all__ = ["jaro_winkler", "register"]

#: isic/find/api.py AUTOCOMPLETE_LIMIT (contributors); collections answer 10 there and 20 in collections/
AUTOCOMPLETE_LIMIT = 20


def jaro_winkler(a: str, b: str) -> float:
    """The Jaro-Winkler similarity (prefix scale 0.1, at most four characters), as the ``jaro-winkler``
    package the archive ranks quick-find and autocomplete results with."""
    if a == b:
        return 1.0 if a else 0.0
    if not a or not b:
        return 0.0
    window = max(0, max(len(a), len(b)) // 2 - 1)
    taken = [False] * len(b)
    matched_a = []
    for i, char in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not taken[j] and b[j] == char:
                taken[j] = True
                matched_a.append(char)
                break
    if not matched_a:
        return 0.0
    matched_b = [b[j] for j in range(len(b)) if taken[j]]
    transpositions = sum(x != y for x, y in zip(matched_a, matched_b, strict=True)) / 2
    m = len(matched_a)
    jaro = (m / len(a) + m / len(b) + (m - transpositions) / m) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1 - jaro)


def _unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def signed_in(req: Request) -> User:
    """``auth=is_authenticated``."""
    if req.user is None:
        raise _unauthorized()
    return req.user


def staff(req: Request) -> User:
    """``auth=is_staff``: a signed-in non-staff user is declined as an anonymous one is (401)."""
    if req.user is None or not req.user.admin:
        raise _unauthorized()
    return req.user


def _query_text(req: Request, *, common: bool = False) -> str:
    """``QueryIn``/``AutocompleteQueryIn`` (isic/find/api.py, isic/core/api/collection.py): ``query`` required,
    at least 3 characters ("Query too short."); quick find also refuses a piece of "isic_"."""
    text = req.arg("query")
    if text is None:
        raise invalid("query", "missing", "Field required")
    if len(text) < 3:
        raise invalid("query", "value_error", "Value error, Query too short.", {"error": "Query too short."})
    if common and text.lower() in "isic_":
        raise invalid("query", "value_error", "Value error, Query too common.", {"error": "Query too common."})
    return text


def _min_length_query(req: Request) -> str:
    """``query=Query(..., min_length=3)`` (the find autocompletes): pydantic's own string error."""
    text = req.arg("query")
    if text is None:
        raise invalid("query", "missing", "Field required")
    if len(text) < 3:
        raise invalid("query", "string_too_short", "String should have at least 3 characters", {"min_length": 3})
    return text


def register(archive: LocalArchive, add: Callable[..., None], cohort_record: Callable[[dict, int], dict],
             visible_cohorts: Callable[[Request], list[tuple[int, dict]]]) -> None:
    data = archive.data

    def user_number(user: User) -> int:
        return int(user.id[-6:], 16)

    # ------------------------------------------------------- OpenAPI, docs
    def openapi_json(req: Request) -> Response:
        # ninja/openapi/views.py openapi_json: ninja's Response (a JsonResponse): no charset
        return django_json(openapi_document())

    archive.router.add("v2", "GET", r"openapi\.json", openapi_json)

    def docs_page(req: Request) -> Response:
        # isic/urls.py: path("api/docs/swagger/", openapi_view) with isic/core/templates/ninja/swagger.html
        page = (
            "<!DOCTYPE html>\n<html>\n  <head>\n"
            '    <link type="text/css" rel="stylesheet" href="/static/ninja/swagger-ui.css">\n'
            "    <title>ISIC Archive</title>\n  </head>\n  <body>\n"
            '    <div id="swagger-ui"></div>\n'
            '    <script src="/static/ninja/swagger-ui-bundle.js"></script>\n'
            '    <script>SwaggerUIBundle({url: "/api/v2/openapi.json", dom_id: "#swagger-ui"})</script>\n'
            "  </body>\n</html>\n")
        return Response(200, page.encode(), "text/html; charset=utf-8")

    archive.router.add("docs", "GET", r"swagger", docs_page)

    # ------------------------------------------------------------- stats
    def stats(req: Request) -> Response:
        # isic/stats/api.py stats: get_archive_stats() less engagement.30_day_sessions_per_country
        annotations = data.annotations
        return Response.json({
            "image": {"images_count": len(data.images),
                      "public_images_count": sum(1 for im in data.images if data.dataset_public(im["dataset"]["_id"])),
                      "annotated_images_count": len({a["image"]["_id"] for a in annotations})},
            "collection": {"collections_count": len(data.collections),
                           "public_collections_count": sum(1 for c in data.collections if c["public"])},
            "doi": {"dois_count": sum(1 for c in data.collections if c.get("doi"))},
            "study": {"studies_count": len(data.studies),
                      "public_studies_count": sum(1 for s in data.studies if s.get("public", True)),
                      "study_annotations_count": len(annotations)},
            "user": {"users_count": len(data.users),
                     "uploading_users_count": len({ds.get("creator", {}).get("_id") for ds in data.datasets} - {None}),
                     "annotating_users_count": len({a["user"]["_id"] for a in annotations})},
            "engagement": {"30_day_sessions_count": 0},
        })

    add("GET", r"stats", stats)

    # -------------------------------------------------------- quick find
    def quickfind(req: Request) -> Response:
        # isic/find/api.py quickfind -> isic/find/find.py quickfind_execute, serializers.py
        query = _query_text(req, common=True)
        upper = query.upper()
        out: list[dict] = []

        def best(items: list[Any], key: Callable[[Any], str]) -> list[Any]:
            return sorted(items, key=lambda item: jaro_winkler(upper, key(item).upper()), reverse=True)[:5]

        images = [im for im in data.visible_images(req.user) if query.lower() in im["name"].lower()]
        for image in best(images, lambda im: im["name"]):
            ds = data.datasets_by_id.get(image["dataset"]["_id"]) or {}
            out.append({"title": image["name"], "subtitle": f"{ds.get('attribution', 'Anonymous')} "
                                                             f"({ds.get('license', 'CC-0')})",
                        "icon": "ri-image-line", "url": f"/images/{image['name']}/",
                        "yours": req.user is not None and ds.get("owner", {}).get("_id") == req.user.id,
                        "result_type": "Image"})
        collections = [c for c in data.collections if query.lower() in c["name"].lower()
                       and can_see(data, req.user, c["id"])]
        for collection in best(collections, lambda c: c["name"]):
            out.append({"title": collection["name"],
                        "subtitle": f"{len(data.collection_members.get(collection['id'], ()))} images",
                        "icon": "ri-stack-line", "url": f"/collections/{collection['id']}/",
                        "yours": req.user is not None and collection.get("creator") == req.user.id,
                        "result_type": "Collection"})
        # studies: get_visible_objects("studies.view_study"): public ones for everyone, all for staff
        staff_user = req.user is not None and req.user.admin
        studies = [s for s in data.studies if query.lower() in s["name"].lower() and (s.get("public") or staff_user)]
        for study in best(studies, lambda s: s["name"]):
            out.append({"title": study["name"], "subtitle": "Created by ISIC Staff", "icon": "ri-microscope-line",
                        "url": f"/studies/{int(study['_id'][-6:], 16)}/", "yours": False, "result_type": "Study"})
        # cohorts, contributors and users: staff only ("Regular users can only search images/studies/collections")
        if staff_user:
            cohorts = [(n, ds) for n, ds in enumerate(data.datasets, start=1) if query.lower() in ds["name"].lower()]
            for number, ds in best(cohorts, lambda item: item[1]["name"]):
                out.append({"title": ds["name"], "subtitle": ds["attribution"], "icon": "ri-group-line",
                            "url": f"/staff/ingest-review/{number}/", "yours": False, "result_type": "Cohort"})
        return django_json(out)

    add("GET", r"quickfind", quickfind)

    # ----------------------------------------------------- autocompletes
    def collection_out(collection: dict) -> dict:
        return {key: collection.get(key) for key in ("id", "name", "description", "public", "pinned", "locked",
                                                     "doi", "doi_url")}

    def collections_autocomplete(req: Request) -> Response:
        # isic/core/api/collection.py collection_autocomplete: unlocked, visible; a signed-in non-staff user's
        # own only; by Jaro-Winkler similarity, then name; 20
        query = _query_text(req)
        found = [c for c in data.collections if query.lower() in c["name"].lower() and not c["locked"]
                 and can_see(data, req.user, c["id"])]
        if req.user is not None and not req.user.admin:
            found = [c for c in found if c.get("creator") == req.user.id]
        found.sort(key=lambda c: (-jaro_winkler(c["name"].upper(), query.upper()), c["name"]))
        return Response.json([collection_out(c) for c in found[:AUTOCOMPLETE_LIMIT]])

    def find_collection_autocomplete(req: Request) -> Response:
        # isic/find/api.py find_collection_autocomplete: no magic (cohort) collections; name then -created,
        # then by similarity; 10
        query = _min_length_query(req)
        found = [c for c in data.collections if query.lower() in c["name"].lower() and c.get("dataset_id") is None
                 and can_see(data, req.user, c["id"])]
        found.sort(key=lambda c: (c["name"], _negated(c["created"])))
        found.sort(key=lambda c: jaro_winkler(query.upper(), c["name"].upper()), reverse=True)
        return Response.json([collection_out(c) for c in found[:10]])

    def cohort_autocomplete(req: Request) -> Response:
        signed_in(req)
        query = _min_length_query(req)
        return Response.json([cohort_record(ds, n) for n, ds in visible_cohorts(req)
                              if query.lower() in ds["name"].lower()])

    def contributor_autocomplete(req: Request) -> Response:
        signed_in(req)
        query = _min_length_query(req)
        found = sorted(((n, c) for n, c in visible_contributors(req) if query.lower() in c["institution_name"].lower()),
                       key=lambda item: item[1]["institution_name"])
        return Response.json([{"id": n, "institution_name": c["institution_name"]}
                              for n, c in found[:AUTOCOMPLETE_LIMIT]])

    def user_autocomplete(req: Request) -> Response:
        staff(req)
        query = _min_length_query(req)
        found = sorted((u for u in data.users if query.lower() in f"{u.login}@example.org"), key=lambda u: u.login)
        found.sort(key=lambda u: jaro_winkler(query.upper(), f"{u.login}@example.org".upper()), reverse=True)
        return Response.json([{"id": user_number(u), "email": f"{u.login}@example.org", "first_name": u.first_name,
                               "last_name": u.last_name} for u in found[:10]])

    add("GET", r"collections/autocomplete", collections_autocomplete)
    add("GET", r"autocomplete/collection", find_collection_autocomplete)
    add("GET", r"autocomplete/cohort", cohort_autocomplete)
    add("GET", r"autocomplete/contributor", contributor_autocomplete)
    add("GET", r"autocomplete/user", user_autocomplete)

    # ------------------------------------------------------ contributors
    def contributor_of(number: int, ds: dict) -> dict:
        owner = ds.get("owner", {}).get("_id")
        owners = [user_number(u) for u in data.users if u.id == owner]
        return {"id": number, "created": django_datetime(ds["created"]), "creator": owners[0] if owners else 1,
                "owners": owners, "institution_name": ds["attribution"], "institution_url": "",
                "legal_contact_info": "", "default_copyright_license": ds["license"],
                "default_attribution": ds["attribution"]}

    def visible_contributors(req: Request) -> list[tuple[int, dict]]:
        user = signed_in(req)
        # get_visible_objects("ingest.view_contributor"): staff see all, others the ones they own
        return [(n, contributor_of(n, ds)) for n, ds in enumerate(data.datasets, start=1)
                if user.admin or ds.get("owner", {}).get("_id") == user.id]

    def contributor_list(req: Request) -> Response:
        # isic/ingest/api.py contributor_list (auth=is_authenticated); CursorPagination orders by -created
        items, keys = by_created(visible_contributors(req), lambda item: data.datasets[item[0] - 1]["created"])
        return paginate(req, items, lambda item: item[1], keys, parse=descending_datetime_position)

    def contributor_detail(req: Request, cid: str) -> Response:
        items = visible_contributors(req)
        wanted = path_int(cid)
        for number, contributor in items:
            if number == wanted:
                cohorts = [{"id": number, "name": data.datasets[number - 1]["name"],
                            "accession_count": sum(1 for im in data.images
                                                   if im["dataset"]["_id"] == data.datasets[number - 1]["_id"])}]
                return Response.json({**contributor, "cohorts": cohorts, "cohort_count": 1,
                                      "accession_count": cohorts[0]["accession_count"]})
        raise ApiError(404, "Not Found")

    add("GET", r"contributors", contributor_list)
    add("GET", r"contributors/(?P<cid>[^/]+)", contributor_detail)

    # ------------------------------------------------ staff-only studies
    def annotation_out(annotation: dict) -> dict:
        return {"id": _number(annotation["_id"]), "study": _number(annotation.get("studyId", "0")),
                "image": _number(annotation["image"]["_id"]), "task": _number(annotation["_id"]),
                "annotator": _number(annotation["user"]["_id"])}

    def annotation_list(req: Request) -> Response:
        staff(req)  # isic/studies/api.py annotation_list: auth=is_staff
        items, keys = by_created(data.annotations, _annotation_created)  # -created, the paginator's default
        return paginate(req, items, annotation_out, keys, parse=descending_datetime_position)

    def annotation_detail(req: Request, aid: str) -> Response:
        staff(req)
        wanted = path_int(aid)
        for annotation in data.annotations:
            if _number(annotation["_id"]) == wanted:
                return Response.json(annotation_out(annotation))
        raise ApiError(404, "Not Found")

    def task_out(annotation: dict) -> dict:
        return {"id": _number(annotation["_id"]), "study": _number(annotation.get("studyId", "0")),
                "image": _number(annotation["image"]["_id"]), "annotator": _number(annotation["user"]["_id"]),
                "complete": annotation.get("state", "complete") == "complete"}

    def study_task_list(req: Request) -> Response:
        staff(req)
        items, keys = by_created(data.annotations, _annotation_created)
        return paginate(req, items, task_out, keys, parse=descending_datetime_position)

    def study_task_detail(req: Request, tid: str) -> Response:
        staff(req)
        wanted = path_int(tid)
        for annotation in data.annotations:
            if _number(annotation["_id"]) == wanted:
                return Response.json(task_out(annotation))
        raise ApiError(404, "Not Found")

    add("GET", r"annotations", annotation_list)
    add("GET", r"annotations/(?P<aid>[^/]+)", annotation_detail)
    add("GET", r"study-tasks", study_task_list)
    add("GET", r"study-tasks/(?P<tid>[^/]+)", study_task_detail)

    # --------------------------------------------- users: accept terms
    def accept_terms(req: Request) -> Response:
        signed_in(req)  # isic/core/api/user.py user_accept_terms: auth=is_authenticated, answers {}
        return Response.json({})

    add("PUT", r"users/accept-terms", accept_terms)

    # ------------------------------------------ uploads (the official CLI)
    uploads: dict[str, bytes] = {}
    accessions: list[dict] = []

    def s3_initialize(req: Request) -> Response:
        # django-s3-file-field 1.1.0 views.py upload_initialize: a Django REST framework view with the
        # default (AllowAny) permissions, so it answers anonymous callers; serializer errors are DRF's 400
        body = _drf_body(req, {"field_id": str, "file_name": str, "file_size": int, "content_type": str})
        if body["field_id"] != "ingest.Accession.original_blob":
            raise ApiError(400, "field_id", payload={"field_id": [f'Invalid field ID: "{body["field_id"]}".']})
        if body["file_size"] < 1:
            raise ApiError(400, "file_size",
                           payload={"file_size": ["Ensure this value is greater than or equal to 1."]})
        key = hashlib.blake2b(f"{len(uploads)}:{body['file_name']}".encode(), digest_size=8).hexdigest()
        object_key = f"ingest/{key}/{body['file_name']}"
        signature = _sign({"field_id": body["field_id"], "object_key": object_key})
        upload_id = f"upload-{key}"
        return Response.json({"object_key": object_key, "upload_id": upload_id, "parts": [
            {"part_number": 1, "size": body["file_size"],
             "upload_url": f"{req.base_url}/storage/uploads/{upload_id}?partNumber=1"}],
            "upload_signature": signature})

    def s3_complete(req: Request) -> Response:
        body = _drf_body(req, {"upload_signature": str, "upload_id": str, "parts": list})
        _unsign(body["upload_signature"])
        return Response.json({"complete_url": f"{req.base_url}/storage/uploads/{body['upload_id']}?complete=1",
                              "body": "<CompleteMultipartUpload></CompleteMultipartUpload>"})

    def s3_finalize(req: Request) -> Response:
        body = _drf_body(req, {"upload_signature": str})
        signed = _unsign(body["upload_signature"])
        key = signed["object_key"].split("/")[1]
        size = len(uploads.get(f"upload-{key}", b""))
        if f"upload-{key}" not in uploads:
            raise ApiError(400, "missing", payload="Object not found")
        return Response.json({"field_value": _sign({"object_key": signed["object_key"], "file_size": size})})

    def storage_upload(req: Request, upload_id: str) -> Response:
        # object storage: a part's PUT answers its ETag; the completion POST answers 200
        if req.method == "PUT":
            uploads[upload_id] = req.body
            return Response(200, b"", "text/plain", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})
        return Response(200, b"<CompleteMultipartUploadResult/>", "application/xml")

    archive.router.add("s3", "POST", r"upload-initialize", s3_initialize)
    archive.router.add("s3", "POST", r"upload-complete", s3_complete)
    archive.router.add("s3", "POST", r"finalize", s3_finalize)
    archive.router.add("storage", "PUT", r"uploads/(?P<upload_id>[\w-]+)", storage_upload)
    archive.router.add("storage", "POST", r"uploads/(?P<upload_id>[\w-]+)", storage_upload)

    def accession_create(req: Request) -> Response:
        # isic/ingest/api.py accession_create: auth=is_authenticated, AccessionIn (extra forbidden), the
        # cohort's 404, then 403 {"error": ...} without permission, 201 {"id": ...}
        user = signed_in(req)
        body = _json_object(req)
        problems: list[dict[str, Any]] = []
        for name in sorted(set(body) - {"cohort", "original_blob", "metadata", "engagement_external_id"}):
            problems.append({"type": "extra_forbidden", "loc": ["body", "payload", name],
                             "msg": "Extra inputs are not permitted"})
        for name in ("cohort", "original_blob"):
            if name not in body:
                problems.append({"type": "missing", "loc": ["body", "payload", name], "msg": "Field required"})
        cohort = body.get("cohort")
        if "cohort" in body and (isinstance(cohort, bool) or not isinstance(cohort, int)):
            problems.append({"type": "int_type", "loc": ["body", "payload", "cohort"],
                             "msg": "Input should be a valid integer"})
        blob = body.get("original_blob")
        if "original_blob" in body and not _field_value(blob):
            problems.append({"type": "value_error", "loc": ["body", "payload", "original_blob"],
                             "msg": "Value error, Invalid S3 file field value.",
                             "ctx": {"error": "Invalid S3 file field value."}})
        if problems:
            raise ApiError(422, "invalid", payload={"detail": problems})
        assert isinstance(cohort, int)
        if not 1 <= cohort <= len(data.datasets):
            raise ApiError(404, "Not Found")
        ds = data.datasets[cohort - 1]
        if not (user.admin or ds.get("owner", {}).get("_id") == user.id):
            raise ApiError(403, "Forbidden",
                           payload={"error": "You do not have permission to add accessions to this cohort."})
        accessions.append({"cohort": cohort, "original_blob": blob, "creator": user.id})
        return Response.json({"id": len(accessions)}, 201)

    add("POST", r"accessions", accession_create)


def _annotation_created(annotation: dict) -> str:
    """When an annotation (a study task) was made: its start, or the study's epoch for a task not begun."""
    return str(annotation.get("startTime") or "2015-01-01T00:00:00+00:00")


def _negated(text: str) -> str:
    """A sort key that orders ISO datetimes newest first when sorted ascending."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def _number(object_id: str) -> int:
    return int(object_id[-6:], 16) if object_id else 0


def _json_object(req: Request) -> dict:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        raise ApiError(422, "bad JSON", payload={"detail": [{"type": "json_invalid", "loc": ["body", 0],
                                                             "msg": "JSON decode error",
                                                             "ctx": {"error": "Expecting value"}}]}) from None
    if not isinstance(body, dict):
        raise ApiError(422, "bad body", payload={"detail": [{"type": "missing", "loc": ["body", "payload"],
                                                             "msg": "Field required"}]})
    return body


def _drf_body(req: Request, fields: dict[str, type]) -> dict:
    """A Django REST framework serializer's checks: every field required (400 ``{"field": ["This field is
    required."]}``), integers and strings of the right kind."""
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        raise ApiError(400, "parse", payload={"detail": "JSON parse error - Expecting value"}) from None
    if not isinstance(body, dict):
        raise ApiError(400, "shape", payload={"non_field_errors": ["Invalid data. Expected a dictionary, but got "
                                                                   f"{type(body).__name__}."]})
    errors: dict[str, list[str]] = {}
    for name, kind in fields.items():
        value = body.get(name)
        if value is None:
            errors[name] = ["This field is required."] if name not in body else ["This field may not be null."]
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = ["A valid integer is required."]
        elif kind is str and not isinstance(value, str):
            errors[name] = ["Not a valid string."]
        elif kind is str and value == "":
            errors[name] = ["This field may not be blank."]
        elif kind is list and not isinstance(value, list):
            errors[name] = ['Expected a list of items but got type "' + type(value).__name__ + '".']
    if errors:
        raise ApiError(400, "invalid", payload=errors)
    return body


def _sign(payload: dict) -> str:
    """A stand-in for ``django.core.signing.dumps``: base64 JSON and a keyed digest, colon-separated."""
    text = base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode().rstrip("=")
    return f"{text}:{hashlib.blake2b(text.encode(), key=b'local-archive', digest_size=12).hexdigest()}"


def _unsign(value: str) -> dict:
    text, _, digest = value.rpartition(":")
    if not text or hashlib.blake2b(text.encode(), key=b"local-archive", digest_size=12).hexdigest() != digest:
        raise ApiError(400, "bad signature", payload={"detail": "Bad signature."})
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))  # type: ignore[no-any-return]


def _field_value(value: Any) -> bool:
    """``S3PlaceholderFile.from_field``: a signed field value (``finalize``'s ``field_value``)."""
    if not isinstance(value, str):
        return False
    try:
        return "object_key" in _unsign(value)
    except (ApiError, ValueError):
        return False


def _output_schemas() -> dict[str, Any]:
    """The output schemas' fields as the archive declares them (isic/core/api/image.py ImageOut, FileOut,
    ImageFilesOut; collection.py CollectionOut; user.py UserOut; isic/ingest/api.py LesionOut), in
    pydantic's JSON-schema form (titles from the field names, nullable fields as ``anyOf``)."""
    def field(name: str, kind: str | None = None, *, nullable: bool = False, fmt: str | None = None,
              **extra: Any) -> tuple[str, dict]:
        body: dict[str, Any] = {"type": kind} if kind else {}
        if fmt:
            body["format"] = fmt
        body.update(extra)
        if nullable:
            body = {"anyOf": [body, {"type": "null"}]}
        return name, {**body, "title": name.replace("_", " ").title()}

    def model(name: str, fields: list[tuple[str, dict]], required: list[str]) -> dict:
        return {"title": name, "type": "object", "properties": dict(fields), "required": required}

    image_fields = [field("public", "boolean", default=False), field("isic_id", "string"),
                    field("copyright_license", "string"), field("attribution", "string"),
                    ("files", {"$ref": "#/components/schemas/ImageFilesOut"}),
                    field("metadata", "object", additionalProperties=True)]
    image_required = ["isic_id", "copyright_license", "attribution", "files", "metadata"]
    return {
        "FileOut": model("FileOut", [field("url", "string"), field("size", "integer")], ["url", "size"]),
        "ImageFilesOut": model("ImageFilesOut", [("full", {"$ref": "#/components/schemas/FileOut"}),
                                                 ("thumbnail_256", {"$ref": "#/components/schemas/FileOut"})],
                               ["full", "thumbnail_256"]),
        "ImageOut": model("ImageOut", image_fields, image_required),
        "SimilarImageOut": model("SimilarImageOut", image_fields + [field("distance", "number")],
                                 image_required + ["distance"]),
        "CollectionOut": model("CollectionOut", [
            field("id", "integer", nullable=True), field("name", "string"), field("description", "string"),
            field("public", "boolean", default=False), field("pinned", "boolean", default=False),
            field("locked", "boolean", default=False), field("doi", "string", nullable=True, default=None),
            field("doi_url", "string", nullable=True, default=None)], ["name", "description"]),
        "UserOut": model("UserOut", [
            field("id", "integer", nullable=True), field("email", "string"), field("first_name", "string"),
            field("last_name", "string"), field("created", "string", fmt="date-time"),
            field("accepted_terms", "string", nullable=True, fmt="date-time"),
            field("hash_id", "string", nullable=True), field("full_name", "string")],
            ["email", "created", "accepted_terms", "hash_id", "full_name"]),
        "LesionOut": model("LesionOut", [
            field("id", "string"), ("images", {"items": {"$ref": "#/components/schemas/ImageOut"}, "type": "array",
                                               "title": "Images"}),
            field("images_count", "integer"), field("longitudinally_monitored", "boolean"),
            field("index_image_id", "string", nullable=True), field("outcome_diagnosis", "string", nullable=True),
            field("outcome_diagnosis_1", "string", nullable=True)],
            ["id", "images", "images_count", "longitudinally_monitored", "index_image_id", "outcome_diagnosis",
             "outcome_diagnosis_1"]),
    }


def openapi_document() -> dict[str, Any]:
    """The operations the archive publishes (``include_in_schema=True``), as django-ninja 1.4.5's
    ``get_schema`` lays them out: OpenAPI 3.1.0, ``info`` from ``NinjaAPI(title="ISIC Archive",
    version="v2")``, operation ids ``<module>_<function>``, the allow_any/is_authenticated security."""
    security: list[dict[str, list[str]]] = [{"SessionAuth": []}, {"OAuth2AuthBearer": []}]
    paging = [
        {"in": "query", "name": "limit", "schema": {"anyOf": [{"type": "integer"}, {"type": "null"}],
                                                     "title": "Limit",
                                                     "description": "Number of results to return per page."},
         "required": False, "description": "Number of results to return per page."},
        {"in": "query", "name": "cursor", "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                                      "default": None, "title": "Cursor",
                                                      "description": "The pagination cursor value."},
         "required": False, "description": "The pagination cursor value."},
    ]
    search = [
        {"in": "query", "name": "query", "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                                     "title": "Query"}, "required": False},
        {"in": "query", "name": "collections", "schema": {"anyOf": [{"items": {"type": "integer"}, "type": "array"},
                                                                     {"type": "null"}], "title": "Collections"},
         "required": False},
    ]

    def operation(module: str, name: str, tag: str, summary: str, parameters: list[dict], schema: dict,
                  paged: bool = False) -> dict:
        body = ({"$ref": f"#/components/schemas/Paged{schema['$ref'].rsplit('/', 1)[1]}"} if paged else schema)
        return {"get": {"operationId": f"{module.replace('.', '_')}_{name}", "summary": summary,
                        "parameters": parameters + (paging if paged else []),
                        "responses": {"200": {"description": "OK",
                                              "content": {"application/json": {"schema": body}}}},
                        "tags": [tag], "security": security}}

    def path_param(name: str, kind: str) -> dict:
        return {"in": "path", "name": name, "schema": {"title": name.replace("_", " ").title(), "type": kind},
                "required": True}

    image, collection, lesion, user = ({"$ref": f"#/components/schemas/{n}"}
                                       for n in ("ImageOut", "CollectionOut", "LesionOut", "UserOut"))
    paths = {
        "/api/v2/images/": operation("isic.core.api.image", "image_list", "images", "Return a list of images.",
                                     [], image, paged=True),
        "/api/v2/images/search/": operation("isic.core.api.image", "image_search", "images",
                                            "Search images with a key:value query string.", search, image,
                                            paged=True),
        "/api/v2/images/{isic_id}/": operation("isic.core.api.image", "image_detail", "images",
                                               "Retrieve a single image by ISIC ID.",
                                               [path_param("isic_id", "string")], image),
        "/api/v2/images/{isic_id}/similar/": operation(
            "isic.core.api.image", "image_similar", "images", "Find images similar to the specified image.",
            [path_param("isic_id", "string"),
             {"in": "query", "name": "limit", "schema": {"default": 10, "maximum": 50, "title": "Limit",
                                                          "type": "integer"}, "required": False}],
            {"items": {"$ref": "#/components/schemas/SimilarImageOut"}, "type": "array"}),
        "/api/v2/collections/": operation(
            "isic.core.api.collection", "collection_list", "collections", "Return a list of collections.",
            [{"in": "query", "name": "pinned", "schema": {"anyOf": [{"type": "boolean"}, {"type": "null"}],
                                                           "title": "Pinned"}, "required": False},
             {"in": "query", "name": "sort", "schema": {"anyOf": [{"enum": ["name", "created"], "type": "string"},
                                                                 {"type": "null"}], "title": "Sort"},
              "required": False}], collection, paged=True),
        "/api/v2/collections/{id}/": operation("isic.core.api.collection", "collection_detail", "collections",
                                               "Retrieve a single collection by ID.",
                                               [path_param("id", "integer")], collection),
        "/api/v2/lesions/": operation("isic.ingest.api", "lesion_list", "lesions",
                                      "Return a list of lesions with diagnoses.", [], lesion, paged=True),
        "/api/v2/lesions/{id}/": operation("isic.ingest.api", "lesion_detail", "lesions",
                                           "Retrieve a single lesion by ID.", [path_param("id", "string")], lesion),
        "/api/v2/users/me/": operation("isic.core.api.user", "user_me", "users",
                                       "Retrieve the currently logged in user.", [], user),
    }
    schemas: dict[str, Any] = _output_schemas()
    for name in ("ImageOut", "CollectionOut", "LesionOut", "UserOut"):
        schemas[f"Paged{name}"] = {"title": f"Paged{name}", "type": "object", "required": ["results", "count",
                                                                                        "next", "previous"],
                                   "properties": {"results": {"items": {"$ref": f"#/components/schemas/{name}"},
                                                              "type": "array", "title": "Results"},
                                                  "count": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                                                  "next": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                                  "previous": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    return {"openapi": "3.1.0", "info": {"title": "ISIC Archive", "version": "v2", "description": ""},
            "paths": paths,
            "components": {"schemas": schemas,
                           "securitySchemes": {"SessionAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                                               "OAuth2AuthBearer": {"type": "http", "scheme": "bearer"}}},
            "servers": []}
