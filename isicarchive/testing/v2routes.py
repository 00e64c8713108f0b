"""The current v2 routes of the local archive (``/api/v2``), its storage host and OAuth.

Follows ``current-v2-api.md``: cursor pagination (``limit`` ≤ 100, opaque
``cursor``, ``{count, next, previous, results}`` with ``count`` on the first
page only, images ordered by ``created``), the search language
(:mod:`isicarchive.search`; a bad query is a 400), collections, users/me
with a bearer token, licence files, and file URLs on a separate "storage"
origin with Range support.  OAuth lives in :mod:`.oauthroutes`.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import search as _search
from ..errors import QueryError
from .server import ApiError, Request, Response
from .v2framework import django_datetime
from .v2paging import (
    by_created,
    descending_datetime_position,
    django_datetime_position,
    invalid,
    paginate,
    path_int,
    pydantic_int,
    query_int,
    query_int_list,
)

if TYPE_CHECKING:
    from .generator import User
    from .server import LocalArchive

def register(archive: LocalArchive) -> None:
    """Add the v2 and storage routes to the archive's router (collections: :mod:`.v2collections`)."""
    from . import v2collections, v2dois, v2extra, zipdownload

    data = archive.data

    def add(method: str, pattern: str, handler: Callable[..., Response]) -> None:
        archive.router.add("v2", method, pattern, handler)

    def visible(user: User | None) -> list[dict]:
        return data.view(("v2 images", data.visibility(user)),
                         lambda: _Listing(sorted(data.visible_images(user), key=lambda im: im["created"])))

    def positions(images: list[dict]) -> list[_dt.datetime]:
        # images page by their creation time (the archive's keyset cursor position: str(created)), kept
        # with the listing
        if isinstance(images, _Listing):
            if images.positions is None:
                images.positions = [_dt.datetime.fromisoformat(im["created"]) for im in images]
            return images.positions
        return [_dt.datetime.fromisoformat(im["created"]) for im in images]

    def record(req: Request) -> Callable[[dict], dict]:
        expires, key = archive.storage_terms()
        return lambda image: data.v2_record(image, req.base_url, expires, key)

    def searched(req: Request) -> list[dict]:
        query = (req.arg("query") or "").strip()
        collections = query_int_list(req, "collections") or []
        try:
            tree = _search.parse(query)
            predicate = _search.compile_query(tree)
        except QueryError as exc:
            raise ApiError(400, str(exc), payload=_search.PARSE_ERROR_BODY) from None

        def matching() -> list[dict]:
            images = visible(req.user)
            if isinstance(tree, _search.Term) and tree.field == "isic_id" and tree.kind == "prefix" \
                    and not tree.negated and not collections:
                # a partition of a metadata sync (isic_id:ISIC_12*): a range of the sorted ids, not a scan
                names = data.view(("names", data.visibility(req.user)),
                                  lambda: sorted((im["name"], n) for n, im in enumerate(images)))
                start = bisect.bisect_left(names, (tree.value,))
                stop = bisect.bisect_left(names, (tree.value + "\U0010ffff",), lo=start)
                return _Listing(images[n] for n in sorted(n for _, n in names[start:stop]))
            if collections:
                # a collection the caller cannot see contributes no images (an empty answer, not an error)
                seen = [c for c in collections if v2collections.can_see(data, req.user, c)]
                members = set().union(*(data.collection_members[c] for c in seen)) if seen else set()
                images = [im for im in images if im["_id"] in members]
            return _Listing(im for im in images if predicate(data.search_record(im)))

        # a search is evaluated once and its result kept for the following cursor pages
        return data.view(("v2 search", data.visibility(req.user), query, tuple(collections)), matching)

    def image_page(req: Request, images: list[dict]) -> Response:
        # PinnedFirstPagination (isic/core/api/image.py): ordered by created, or with pin_sort (any
        # non-empty value) by -pinned then created, the position then "pinned|created"; a position with the
        # wrong number of parts, or a part not of its field's type, is the hand-written 422
        if not req.arg("pin_sort"):
            return paginate(req, images, record(req), positions(images), parse=_single_position)
        # the local archive pins no image (Image.pinned is 0 for all), so the order is still by created
        keys = [_PinnedKey(0, moment) for moment in positions(images)]
        return paginate(req, images, record(req), keys, parse=_PinnedKey.parse)

    def images_list(req: Request) -> Response:
        return image_page(req, visible(req.user))

    def images_search(req: Request) -> Response:
        return image_page(req, searched(req))

    def images_search_size(req: Request) -> Response:
        return Response.json({"size": sum(data.image_file_size(im["_id"]) for im in searched(req))})

    def images_facets(req: Request) -> Response:
        return Response.json(facets([data.search_record(im) for im in searched(req)],
                                    [data.search_record(im) for im in data.images]))

    def readable_image(req: Request, isic_id: str) -> dict:
        image = data.images_by_name.get(isic_id)
        if image is None or not data.can_read_image(req.user, image):
            raise ApiError(404, "Not Found")
        return image

    def image_detail(req: Request, isic_id: str) -> Response:
        return Response.json(record(req)(readable_image(req, isic_id)))

    def image_similar(req: Request, isic_id: str) -> Response:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        limit = query_int(req, "limit")
        limit = 10 if limit is None else limit
        if limit > 50:
            raise invalid("limit", "less_than_equal", "Input should be less than or equal to 50", {"le": 50})
        image = readable_image(req, isic_id)
        # "similar": same diagnosis path, nearest in creation; distances grow with that distance
        target = data.search_record(image)["metadata"]["clinical"].get("diagnosis_3")
        candidates = [im for im in visible(req.user) if im is not image
                      and data.search_record(im)["metadata"]["clinical"].get("diagnosis_3") == target]
        number = data.image_numbers[image["_id"]]
        candidates.sort(key=lambda im: abs(data.image_numbers[im["_id"]] - number))
        render = record(req)
        return Response.json([{**render(im), "distance": round(0.05 + 0.01 * rank, 4)}
                              for rank, im in enumerate(candidates[:max(0, limit)])])

    add("GET", r"images", images_list)
    add("GET", r"images/search", images_search)
    add("GET", r"images/search/size", images_search_size)
    add("GET", r"images/facets", images_facets)
    # `{isic_id}` is a str path parameter: any segment reaches the view, whose get_object_or_404 is a JSON 404
    add("GET", r"images/(?P<isic_id>[^/]+)", image_detail)
    add("GET", r"images/(?P<isic_id>[^/]+)/similar", image_similar)

    # -------------------------------------------------------------- lesions
    def lesions() -> dict[str, list[dict]]:
        def build() -> dict[str, list[dict]]:
            grouped: dict[str, list[dict]] = {}
            for image in sorted(data.images, key=lambda im: im["created"]):
                lesion = data.search_record(image)["metadata"]["clinical"].get("lesion_id")
                if lesion:
                    grouped.setdefault(lesion, []).append(image)
            return dict(sorted(grouped.items()))
        return data.view(("lesions",), build)

    def lesion_record(req: Request, lesion_id: str, images: list[dict]) -> dict:
        shown = [im for im in images if data.can_read_image(req.user, im)]
        clinical = [data.search_record(im)["metadata"]["clinical"] for im in images]
        index = images[-1]
        path = [clinical[-1].get(f"diagnosis_{n}") for n in range(1, 6)]
        return {"id": lesion_id, "images": [record(req)(im) for im in shown], "images_count": len(images),
                "longitudinally_monitored": len({c.get("acquisition_day") for c in clinical}) > 1,
                "index_image_id": index["name"],
                "outcome_diagnosis": ":".join(p for p in path if p) or None,
                "outcome_diagnosis_1": path[0]}

    def visible_lesions(req: Request) -> list[tuple[str, list[dict]]]:
        return [(lid, ims) for lid, ims in lesions().items() if any(data.can_read_image(req.user, im) for im in ims)]

    def lesion_list(req: Request) -> Response:
        items = visible_lesions(req)
        # lesion_list sets custom_count, which CursorPagination reports on every page
        return paginate(req, items, lambda item: lesion_record(req, *item), [lid for lid, _ in items], counted=True)

    def lesion_detail(req: Request, lesion_id: str) -> Response:
        images = lesions().get(lesion_id)
        if not images or not any(data.can_read_image(req.user, im) for im in images):
            raise ApiError(404, "Not Found")
        return Response.json(lesion_record(req, lesion_id, images))

    add("GET", r"lesions", lesion_list)
    add("GET", r"lesions/(?P<lesion_id>[^/]+)", lesion_detail)

    # -------------------------------------------------------------- cohorts
    def cohort_record(ds: dict, number: int) -> dict:
        return {"id": number, "created": django_datetime(ds["created"]), "creator": 1, "contributor": number,
                "name": ds["name"],
                "description": ds["description"], "default_copyright_license": ds["license"],
                "default_attribution": ds["attribution"],
                "accession_count": sum(1 for im in data.images if im["dataset"]["_id"] == ds["_id"])}

    def visible_cohorts(req: Request) -> list[tuple[int, dict]]:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        # CohortPermissions.view_cohort_list (isic/ingest/models/cohort.py): staff, or the contributor's
        # owners (here: the dataset's owner); seeing a cohort's images does not make it visible
        return [(n, ds) for n, ds in enumerate(data.datasets, start=1)
                if req.user.admin or ds.get("owner", {}).get("_id") == req.user.id]

    def cohort_list(req: Request) -> Response:
        # CursorPagination's default ordering, -created: newest first, position str(created)
        items, keys = by_created(visible_cohorts(req), lambda item: item[1]["created"])
        return paginate(req, items, lambda item: cohort_record(item[1], item[0]), keys,
                        parse=descending_datetime_position)

    def cohort_detail(req: Request, cid: str) -> Response:
        items = visible_cohorts(req)
        wanted = path_int(cid)
        for number, ds in items:
            if number == wanted:
                return Response.json(cohort_record(ds, number))
        raise ApiError(404, "Not Found")

    add("GET", r"cohorts", cohort_list)
    add("GET", r"cohorts/(?P<cid>[^/]+)", cohort_detail)

    # ---------------------------------------------------------------- users
    def users_me(req: Request) -> Response:
        if req.user is None:
            raise ApiError(401, "Unauthorized")
        u = req.user
        return Response.json({"id": int(u.id[-6:], 16), "email": f"{u.login}@example.org",
                              "first_name": u.first_name, "last_name": u.last_name, "created": "2015-01-01T00:00:00Z",
                              "accepted_terms": "2020-01-01T00:00:00Z", "hash_id": u.id[-5:].upper(),
                              "full_name": f"{u.first_name} {u.last_name}"})

    add("GET", r"users/me", users_me)

    # -------------------------------------------------------------- studies
    def staff(req: Request) -> None:
        # studies, annotations and study tasks are staff-only in v2: auth=is_staff (isic/auth.py), whose
        # authenticators decline a non-staff user as they decline no one, so ninja answers 401 for both
        if req.user is None or not req.user.admin:
            raise ApiError(401, "Unauthorized")

    def study_v2(study: dict) -> dict:
        # StudyOut of isic/studies/api.py: features and questions (with their choices) inline
        number = int(study["_id"][-6:], 16)
        questions = [{"id": number * 100 + q, "type": "select", "prompt": question["id"], "official": True,
                      "required": True,
                      "choices": [{"id": (number * 100 + q) * 100 + c, "question": number * 100 + q, "text": text}
                                  for c, text in enumerate(question["choices"])]}
                     for q, question in enumerate(study["questions"])]
        features = [{"id": number * 100 + f, "required": False, "name": feature["name"], "official": True}
                    for f, feature in enumerate(study["features"])]
        return {"id": number, "created": django_datetime(study["created"]), "creator": 1, "name": study["name"],
                "description": study["description"], "features": features, "questions": questions}

    def studies_list(req: Request) -> Response:
        staff(req)
        items, keys = by_created(data.studies, lambda s: s["created"])  # -created, as cohorts
        return paginate(req, items, study_v2, keys, parse=descending_datetime_position)

    def study_detail(req: Request, sid: str) -> Response:
        staff(req)
        wanted = path_int(sid)
        for study in data.studies:
            if int(study["_id"][-6:], 16) == wanted:
                return Response.json(study_v2(study))
        raise ApiError(404, "Not Found")

    add("GET", r"studies", studies_list)
    add("GET", r"studies/(?P<sid>[^/]+)", study_detail)

    # -------------------------------------------------------------- storage
    def storage_file(req: Request, kind: str, isic_id: str) -> Response:
        image = data.images_by_name.get(isic_id)
        text = req.arg("expires")
        expires = int(text) if text and text.isdigit() else None
        signature = req.arg("sig")
        _, key = archive.storage_terms()
        # the public bucket serves anyone; the private one only a valid, unexpired signature
        public = image is not None and data.dataset_public(image["dataset"]["_id"])
        if image is None or (signature is None and not public) or (signature is not None and (
                signature != data.storage_signature(isic_id, expires, key)
                or (expires is not None and time.time() > expires))):
            raise ApiError(403, "AccessDenied: Request has expired or the signature does not match.")
        if kind == "thumbnails":
            return Response.binary(data.thumbnail_jpeg(image["_id"]), "image/jpeg")
        return Response.binary(data.image_jpeg(image["_id"]), "image/jpeg")

    archive.router.add("storage", "GET", r"(?P<kind>images|thumbnails)/(?P<isic_id>ISIC_[0-9]+)\.jpg",
                       storage_file)

    v2collections.register(archive, add, searched, visible)
    v2extra.register(archive, add, cohort_record, visible_cohorts)
    zipdownload.register(archive, add, searched)
    v2dois.register(archive, add)


def _single_position(text: str) -> _dt.datetime:
    if "|" in text:
        raise ValueError("a position of another ordering")
    return django_datetime_position(text)


@functools.total_ordering
class _PinnedKey:
    """An image's place in the ``("-pinned", "created")`` ordering; its position is ``f"{pinned}|{created}"``."""

    __slots__ = ("created", "pinned")

    def __init__(self, pinned: int, created: _dt.datetime) -> None:
        self.pinned, self.created = pinned, created

    def __lt__(self, other: _PinnedKey) -> bool:
        return (-self.pinned, self.created) < (-other.pinned, other.created)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PinnedKey) and (self.pinned, self.created) == (other.pinned, other.created)

    def __hash__(self) -> int:
        return hash((self.pinned, self.created))

    def __str__(self) -> str:
        return f"{self.pinned}|{self.created}"

    @classmethod
    def parse(cls, text: str) -> _PinnedKey:
        parts = text.split("|")
        if len(parts) != 2:
            raise ValueError("a position of another ordering")
        number = pydantic_int(parts[0])  # IntegerField.to_python: int(value)
        if number is None:
            raise ValueError("pinned is no integer")
        return cls(number, django_datetime_position(parts[1]))


class _Listing(list):
    """A kept listing (images in creation order) with its cursor positions, computed once."""

    positions: list[_dt.datetime] | None = None


# ------------------------------------------------------------------ facets
# The archive's facets (isic/core/search.py ``facets``): one Elasticsearch aggregation per searchable
# field of isic-metadata's FIELD_REGISTRY (``search.es_facet``, 6.1.0 here; the archive pins 5.1.0, whose
# registry also has blurry, hairy, marker_pen and color_tint), the computed ``age_approx`` histogram
# (isic/ingest/models/accession.py ``computed_fields``) and ``copyright_license`` terms.
#: field -> (interval, extended_bounds min, max) of a histogram aggregation
_HISTOGRAMS = {"clin_size_long_diam_mm": (10, 0, 100), "age_approx": (5, 0, 85)}
_RANGES = {"mel_thick_mm": [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 3.0), (3.0, 3.5),
                            (3.5, 4.0), (4.0, 4.5), (4.5, 5.0), (5.0, None)]}
_TERMS_SIZE = {**{f"diagnosis_{n}": 100 for n in range(1, 6)}, **{f"anatom_site_{n}": 100 for n in range(1, 6)}}
#: isic_metadata.fields.ImageTypeEnum, in its order (``_prettify_facets`` sorts by it and adds the absent ones)
_IMAGE_TYPES = ("dermoscopic", "clinical: overview", "clinical: close-up", "TBP tile: close-up",
                "TBP tile: overview", "RCM: macroscopic", "RCM: tile", "RCM: mosaic")
#: terms ordered by key rather than by count (the registry's ``"order": {"_key": "asc"}``)
_KEY_ORDER = frozenset({"fitzpatrick_skin_type"})


def facets(matching: list[dict], everything: list[dict]) -> dict[str, Any]:
    """Counts per value of every faceted field, as the archive's ``images/facets/``.

    ``{field: {"meta": {missing_count, present_count}, "buckets": [...]}}``;
    ``everything`` is the whole index, whose terms a terms aggregation with
    ``min_doc_count: 0`` lists with a count of 0.
    """
    out: dict[str, Any] = {}
    for field in [f for f in _search.FIELDS if f not in ("isic_id", "public")]:
        values = [_search.field_value(r, field) for r in matching]
        present = [v for v in values if v is not None]
        facet: dict[str, Any] = {"meta": {"missing_count": len(values) - len(present), "present_count": len(present)}}
        if field in _HISTOGRAMS:
            facet["buckets"] = _histogram(field, [n for n in map(_search.as_number, present) if n is not None])
        elif field in _RANGES:
            numbers = [n for n in map(_search.as_number, present) if n is not None]
            facet["buckets"] = []
            for start, stop in _RANGES[field]:
                inside = sum(1 for v in numbers if v >= start and (stop is None or v < stop))
                # Elasticsearch's range bucket; _prettify_facets gives the open last one "to": "*"
                facet["buckets"].append({"key": f"{start}-{'*' if stop is None else stop}", "from": start,
                                         "to": "*" if stop is None else stop, "doc_count": inside})
        else:
            facet["buckets"] = _terms(field, present, everything)
        out[field] = facet
    return out


def _histogram(field: str, numbers: list[float]) -> list[dict]:
    """A histogram aggregation with ``extended_bounds``: every bucket from the lower bound (or the lowest
    value) to the upper one (or the highest value), empty ones included, keys as floats."""
    step, low, high = _HISTOGRAMS[field]
    first = min([low] + [int(v // step) * step for v in numbers])
    last = max([high] + [int(v // step) * step for v in numbers])
    return [{"key": float(k), "doc_count": sum(1 for v in numbers if k <= v < k + step)}
            for k in range(int(first), int(last) + step, step)]


def _terms(field: str, present: list[Any], everything: list[dict]) -> list[dict]:
    """A terms aggregation with ``min_doc_count: 0``: by count (then key), or by key; booleans as 0/1."""
    known = {_search.field_value(r, field) for r in everything} - {None}
    if field == "image_type":
        known |= set(_IMAGE_TYPES)
    counts: dict[Any, int] = {value: 0 for value in known}
    for value in present:
        counts[value] = counts.get(value, 0) + 1
    if field in _KEY_ORDER:
        ordered = sorted(counts.items(), key=lambda kv: str(kv[0]))
    else:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    if field != "image_type":  # the archive lists every image type, whatever the size
        ordered = ordered[:_TERMS_SIZE.get(field, 10)]
    else:
        rank = {name: n for n, name in enumerate(_IMAGE_TYPES)}
        ordered.sort(key=lambda kv: rank.get(kv[0], len(rank)))
    if _search.FIELDS[field] == _search.BOOLEAN:
        # a boolean's buckets: key 0 or 1 and key_as_string "false" or "true"
        return [{"key": int(k), "key_as_string": "true" if k else "false", "doc_count": n} for k, n in ordered]
    return [{"key": k, "doc_count": n} for k, n in ordered]
