"""The local archive against the real v2 server's source, second round.

Every test names the file and function of ``ImageMarkup/isic`` (or of the
framework it pins: django-ninja 1.4.5, Django 5.2, django-cors-headers 4.9.0,
isic-metadata) whose behaviour it checks; expected values are written out
from that source, not computed by the code under test.  Real HTTP against
:class:`~isicarchive.testing.LocalArchive`.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from isicarchive import IsicApi
from isicarchive import search as isic_search
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.testing.v2framework import decimal_text, django_datetime

DECIMAL_FIELDS = ("clin_size_long_diam_mm", "mel_thick_mm")
TWO_PLACES = re.compile(r"^\d{1,3}\.\d{2}$")  # DecimalField(max_digits=5, decimal_places=2)
DJANGO_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalArchive]:
    with LocalArchive(seed=41, config=ArchiveConfig(images=90)) as archive:
        yield archive


def get(server: LocalArchive, route: str, bearer: str | None = None, headers: dict[str, str] | None = None,
        **params: Any) -> requests.Response:
    sent = dict(headers or {})
    if bearer:
        sent["Authorization"] = f"Bearer {bearer}"
    return requests.get(f"{server.v2_url}/{route}", params=params, headers=sent, timeout=10, allow_redirects=False)


def every(server: LocalArchive, route: str, **params: Any) -> list[dict]:
    out: list[dict] = []
    page = get(server, route, **params).json()
    while True:
        out += page["results"]
        if not page["next"]:
            return out
        page = requests.get(page["next"], timeout=10).json()


# ------------------------------------------------------- values as typed
def test_decimal_metadata_comes_back_as_two_place_strings(server: LocalArchive) -> None:
    """isic/ingest/models/accession.py ``AccessionMetadata``: clin_size_long_diam_mm and mel_thick_mm are
    ``DecimalField(max_digits=5, decimal_places=2)``; ``ImageOut.resolve_metadata`` (isic/core/api/image.py)
    passes the Decimal through and ``DjangoJSONEncoder.default`` writes ``str(o)``: "24.10", never 24.1."""
    records = every(server, "images/")
    seen = {field: [r["metadata"]["clinical"][field] for r in records if field in r["metadata"]["clinical"]]
            for field in DECIMAL_FIELDS}
    for field, values in seen.items():
        assert values, field
        assert all(isinstance(v, str) and TWO_PLACES.match(v) for v in values), (field, values[:5])
    # whole numbers and one-place values keep two places, as Decimal('5.00') prints
    assert decimal_text(5) == "5.00" and decimal_text(24.1) == "24.10" and decimal_text("0.5") == "0.50"


def test_the_archive_search_compares_string_decimals_as_numbers(server: LocalArchive) -> None:
    """isic/core/dsl.py: number fields compare in the database's numeric column, so a range over a decimal
    field selects by value although the JSON carries text (here: checked against Decimal of that text)."""
    records = every(server, "images/")
    wanted = sorted(r["isic_id"] for r in records
                    if Decimal(r["metadata"]["clinical"].get("clin_size_long_diam_mm", "-1")) >= 10)
    found = sorted(r["isic_id"] for r in every(server, "images/search/", query="clin_size_long_diam_mm:[10 TO *]"))
    assert found == wanted and 0 < len(found) < len(records)
    one = next(r for r in records if "mel_thick_mm" in r["metadata"]["clinical"])
    value = one["metadata"]["clinical"]["mel_thick_mm"]
    exact = every(server, "images/search/", query=f"mel_thick_mm:{value.rstrip('0').rstrip('.')}")
    assert one["isic_id"] in {r["isic_id"] for r in exact}


def test_datetimes_render_as_djangos_json_encoder(server: LocalArchive) -> None:
    """django/core/serializers/json.py ``DjangoJSONEncoder.default``: isoformat, microseconds cut to
    milliseconds (r[:23] + r[26:]), "+00:00" written "Z"; CohortOut and StudyOut carry ``created``."""
    assert django_datetime("2015-01-01T00:10:00.123456+00:00") == "2015-01-01T00:10:00.123Z"
    assert django_datetime("2015-01-01T00:00:00+00:00") == "2015-01-01T00:00:00Z"
    assert django_datetime("2015-01-01T00:00:00.000999+02:00") == "2015-01-01T00:00:00.000+02:00"
    admin = server.token_for("admin")
    cohorts = get(server, "cohorts/", admin).json()["results"]
    studies = get(server, "studies/", admin).json()["results"]
    created = [c["created"] for c in cohorts] + [s["created"] for s in studies]
    assert created and all(DJANGO_DATETIME.match(c) for c in created), created[:3]


def test_client_reads_string_decimals_as_numbers(server: LocalArchive) -> None:
    """The client's decision (isicarchive.backends.v2.normalise): decimal strings become floats in both
    ``metadata`` and ``meta``, so select_images compares them, DataFrames hold float64, and the offline
    search language ranges over them; expected sets come from the raw JSON read as Decimal."""
    raw = every(server, "images/")
    thick = {r["isic_id"]: Decimal(r["metadata"]["clinical"]["mel_thick_mm"]) for r in raw
             if "mel_thick_mm" in r["metadata"]["clinical"]}
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    selected = api.select_images(["metadata.clinical.mel_thick_mm", ">=", 1.0])
    assert sorted(selected) == sorted(i for i, v in thick.items() if v >= 1) and selected
    legacy = api.select_images(["meta.clinical.mel_thick_mm", "<", 1])
    assert sorted(legacy) == sorted(i for i, v in thick.items() if v < 1)
    first = next(iter(thick))
    held = api.image(first).as_json()
    assert held["metadata"]["clinical"]["mel_thick_mm"] == held["meta"]["clinical"]["mel_thick_mm"] == float(
        thick[first])
    pytest.importorskip("pandas")
    columns = ["metadata.clinical.clin_size_long_diam_mm", "metadata.clinical.mel_thick_mm"]
    frame = api.select_images(["metadata.clinical.mel_thick_mm", "not is None"]).to_dataframe(columns)
    assert [str(t) for t in frame.dtypes] == ["float64", "float64"]
    assert frame["metadata.clinical.mel_thick_mm"].to_dict() == {i: float(v) for i, v in thick.items()}
    # a column with no value at all is still a number column (pandas alone would make it objects)
    sizes_only = api.select_images(["metadata.clinical.mel_thick_mm", "is None"]).to_dataframe(columns)
    assert [str(t) for t in sizes_only.dtypes] == ["float64", "float64"]
    # the search language over records as the archive sends them (strings) and as the client holds them
    query = "mel_thick_mm:[1 TO 2}"
    expected = sorted(i for i, v in thick.items() if 1 <= v < 2)
    assert sorted(r["isic_id"] for r in isic_search.select(query, raw)) == expected
    assert sorted(api.search_images(query)) == expected  # a Selection: id -> record


def test_string_decimal_columns_search_as_numbers() -> None:
    """The columnar search (``column_mask``, used on Parquet indexes) casts a text column of a number field
    ("24.10") to numbers before comparing, as the archive's numeric column compares."""
    pa = pytest.importorskip("pyarrow")
    column = pa.array(["0.50", "1.00", "24.10", None, "3.25"])
    mask = isic_search.column_mask(isic_search.parse("mel_thick_mm:[1 TO 5]"),
                                   lambda field: column if field == "mel_thick_mm" else None, len(column))
    assert mask.to_pylist() == [False, True, False, False, True]
    assert isic_search.as_number("24.10") == 24.1 and isic_search.as_number("abc") is None
    assert isic_search.as_number(True) is None


def test_string_decimals_survive_an_export_and_search_on_disk(server: LocalArchive, tmp_path: Path) -> None:
    """An export's metadata CSV and the disk index (isicarchive.disk) read decimal text as numbers: the same
    range selects the same images online and on disk."""
    pytest.importorskip("pyarrow")
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    chosen = api.search_images("mel_thick_mm:* OR clin_size_long_diam_mm:*")
    assert len(chosen) > 5 and api.download_images(chosen, tmp_path / "export").ok
    offline = IsicApi(hostname=(tmp_path / "export").as_uri(), progress=False)
    found = []
    for query in ("mel_thick_mm:[0 TO 3]", "clin_size_long_diam_mm:{10 TO *]", "clin_size_long_diam_mm:[* TO 10]",
                  "mel_thick_mm:*"):
        online = sorted(i for i in api.search_images(query) if i in chosen)
        assert sorted(offline.search_images(query)) == online, query
        found.append(len(online))
    assert all(found[1:]), found


# ------------------------------------------------------- authentication
STAFF_ONLY = ["studies/", "annotations/", "study-tasks/", "autocomplete/user/?query=ali"]
LOGIN_ONLY = ["users/me/", "cohorts/", "contributors/", "autocomplete/cohort/?query=abc",
              "autocomplete/contributor/?query=abc"]


def test_staff_routes_answer_401_to_signed_in_non_staff_users(server: LocalArchive) -> None:
    """isic/auth.py ``is_staff = [SessionAuthStaffUser(), OAuth2AuthBearer("is_staff")]`` and ninja's
    ``Operation._run_authentication``: every authenticator declines a non-staff user, as it declines an
    anonymous one, so the answer is AuthenticationError's 401 {"detail": "Unauthorized"}, not 403."""
    bob, admin = server.token_for("bob"), server.token_for("admin")
    for route in STAFF_ONLY:
        for token in (None, bob):
            answer = get(server, route, token)
            assert (answer.status_code, answer.json()) == (401, {"detail": "Unauthorized"}), (route, token)
        assert get(server, route, admin).status_code == 200, route
    shared = requests.post(f"{server.v2_url}/collections/1/share/", json={"user_ids": [2]},
                           headers={"Authorization": f"Bearer {bob}"}, timeout=10)
    assert (shared.status_code, shared.json()) == (401, {"detail": "Unauthorized"})


def test_login_only_routes_answer_anonymous_callers_401(server: LocalArchive) -> None:
    """``auth=is_authenticated`` (isic/core/api/user.py user_me, user_accept_terms; isic/ingest/api.py
    cohort_list, contributor_list, accession_create; isic/find/api.py autocompletes; image_similar): 401 with
    ninja's body; a token the archive does not know on an ``allow_any`` route is an anonymous caller."""
    for route in LOGIN_ONLY:
        answer = get(server, route)
        assert (answer.status_code, answer.json()) == (401, {"detail": "Unauthorized"}), route
        assert get(server, route, server.token_for("bob")).status_code == 200, route
    name = server.data.visible_images(None)[0]["name"]
    assert get(server, f"images/{name}/similar/").status_code == 401
    accept = requests.put(f"{server.v2_url}/users/accept-terms/", timeout=10)
    assert (accept.status_code, accept.json()) == (401, {"detail": "Unauthorized"})
    # auth runs before validation (Operation.run: _run_checks, then _get_values): no 422 for a stranger
    upload = requests.post(f"{server.v2_url}/accessions/", json={"nonsense": 1}, timeout=10)
    assert (upload.status_code, upload.json()) == (401, {"detail": "Unauthorized"})
    assert get(server, "images/", "not-a-token-the-archive-issued").status_code == 200


def test_the_official_clis_upload_flow(server: LocalArchive) -> None:
    """isic-cli ``accession upload``: django-s3-file-field's upload-initialize / part PUT / upload-complete /
    finalize (views.py, Django REST framework views with default AllowAny permissions: a 400 with DRF's
    field errors, never a 401), then ``POST accessions/`` (isic/ingest/api.py accession_create): 401
    anonymous, 422 for the body, 404 for an unknown cohort, 403 {"error": ...} without permission, 201."""
    s3 = f"{server.v2_url}/s3-upload"
    refused = requests.post(f"{s3}/upload-initialize/", json={}, timeout=10)
    assert refused.status_code == 400 and refused.json()["field_id"] == ["This field is required."]
    content = b"\xff\xd8 not really a jpeg"
    init = requests.post(f"{s3}/upload-initialize/", timeout=10, json={
        "field_id": "ingest.Accession.original_blob", "file_name": "lesion.jpg", "file_size": len(content),
        "content_type": "image/jpeg"}).json()
    parts = []
    for part in init["parts"]:
        put = requests.put(part["upload_url"], data=content, timeout=10)
        parts.append({"part_number": part["part_number"], "size": part["size"], "etag": put.headers["ETag"]})
    done = requests.post(f"{s3}/upload-complete/", timeout=10, json={
        "upload_id": init["upload_id"], "parts": parts, "upload_signature": init["upload_signature"]}).json()
    assert requests.post(done["complete_url"], data=done["body"], timeout=10).ok
    field_value = requests.post(f"{s3}/finalize/", json={"upload_signature": init["upload_signature"]},
                                timeout=10).json()["field_value"]
    admin = {"Authorization": f"Bearer {server.token_for('admin')}"}
    bob = {"Authorization": f"Bearer {server.token_for('bob')}"}
    accessions = f"{server.v2_url}/accessions/"
    assert requests.post(accessions, json={"cohort": 1, "original_blob": field_value}, timeout=10).status_code == 401
    bad = requests.post(accessions, json={"cohort": 1, "original_blob": "forged"}, headers=admin, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"][0]["msg"] == "Value error, Invalid S3 file field value."
    missing = requests.post(accessions, json={"cohort": 999, "original_blob": field_value}, headers=admin, timeout=10)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    denied = requests.post(accessions, json={"cohort": 1, "original_blob": field_value}, headers=bob, timeout=10)
    assert (denied.status_code, denied.json()) == (
        403, {"error": "You do not have permission to add accessions to this cohort."})
    created = requests.post(accessions, json={"cohort": 1, "original_blob": field_value}, headers=admin, timeout=10)
    assert created.status_code == 201 and isinstance(created.json()["id"], int)


# --------------------------------------------------------- the framework
def test_head_and_plain_options_on_get_routes_are_405(server: LocalArchive) -> None:
    """ninja/operation.py ``PathView._find_operation`` matches declared methods only, ``_not_allowed`` is
    Django's HttpResponseNotAllowed(content=b"Method not allowed"): HEAD and OPTIONS on a GET route are 405
    with ``Allow: GET`` (ninja's PathView is no Django View, which would answer HEAD as GET)."""
    for method in ("HEAD", "OPTIONS"):
        answer = requests.request(method, f"{server.v2_url}/images/", timeout=10)
        assert answer.status_code == 405 and answer.headers["Allow"] == "GET", method
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert requests.options(f"{server.v2_url}/images/", timeout=10).text == "Method not allowed"
    both = requests.put(f"{server.v2_url}/collections/1/", timeout=10)
    assert both.status_code == 405 and both.headers["Allow"] == "DELETE, GET"


def test_cors_preflight_and_simple_requests(server: LocalArchive) -> None:
    """corsheaders/middleware.py (4.9.0) with CORS_ALLOW_ALL_ORIGINS = True (isic/settings/base.py):
    ``check_preflight`` answers OPTIONS + Access-Control-Request-Method with an empty 200 before any view;
    ``add_response_headers`` adds ``Vary: origin`` always, ``*`` for any Origin, and on OPTIONS the
    default headers, methods and max age (defaults.py, conf.py)."""
    preflight = requests.options(f"{server.v2_url}/images/search/", timeout=10, headers={
        "Origin": "https://example.org", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert (preflight.status_code, preflight.content) == (200, b"")
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == (
        "accept, authorization, content-type, user-agent, x-csrftoken, x-requested-with")
    assert preflight.headers["access-control-allow-methods"] == "DELETE, GET, OPTIONS, PATCH, POST, PUT"
    assert preflight.headers["access-control-max-age"] == "86400"
    simple = get(server, "images/", headers={"Origin": "https://example.org"}, limit=1)
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-methods" not in simple.headers and "access-control-allow-credentials" not in \
        simple.headers
    plain = get(server, "images/", limit=1)
    assert "access-control-allow-origin" not in plain.headers and "origin" in plain.headers["Vary"].split(", ")
    # the preflight runs on any path, before routing: even where no route is
    assert requests.options(f"{server.v2_url}/no-such-route/", timeout=10, headers={
        "Origin": "https://example.org", "Access-Control-Request-Method": "GET"}).status_code == 200


def test_gzip_as_djangos_middleware_does_it(server: LocalArchive) -> None:
    """django/middleware/gzip.py ``GZipMiddleware.process_response``: under 200 bytes untouched; otherwise
    ``Vary: Accept-Encoding`` and, when "gzip" is accepted and it is shorter, a gzip body
    (``compress_string``: mtime 0, a random-length FNAME)."""
    raw = requests.get(f"{server.v2_url}/images/", params={"limit": 5}, timeout=10, stream=True,
                       headers={"Accept-Encoding": "gzip"})
    body = raw.raw.read()
    assert raw.headers["Content-Encoding"] == "gzip" and int(raw.headers["Content-Length"]) == len(body)
    assert body[3] & 0x08 and body[4:8] == b"\0\0\0\0"  # FNAME set, mtime 0
    assert gzip.decompress(body).startswith(b'{"count":')
    assert raw.headers["Vary"] == "Cookie, Accept-Encoding, origin"
    identity = get(server, "images/", headers={"Accept-Encoding": "identity"}, limit=5)
    assert "Content-Encoding" not in identity.headers and "Accept-Encoding" in identity.headers["Vary"]
    short = get(server, "images/not-an-image/", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in short.headers and short.headers["Vary"] == "Cookie, origin"


def test_content_types_and_security_headers(server: LocalArchive) -> None:
    """ninja main.py ``NinjaAPI.get_content_type``: "application/json; charset=utf-8"; a view's own
    JsonResponse (isic/find/api.py quickfind, ninja openapi_json) is Django's "application/json";
    SecurityMiddleware and XFrameOptionsMiddleware add their defaults to every answer."""
    listed = get(server, "images/", limit=1)
    assert listed.headers["Content-Type"] == "application/json; charset=utf-8"
    assert get(server, "images/ISIC_9999999/").headers["Content-Type"] == "application/json; charset=utf-8"
    assert get(server, "quickfind/", query="ISIC_00000").headers["Content-Type"] == "application/json"
    assert get(server, "openapi.json").headers["Content-Type"] == "application/json"
    for name, value in {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                        "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin"}.items():
        assert listed.headers[name] == value


def test_malformed_path_parameters_reach_the_view(server: LocalArchive) -> None:
    """ninja turns ``{id}`` into Django's ``<id>`` (any segment): a str parameter reaches the view, whose
    get_object_or_404 is a JSON 404 (image_detail, lesion_detail); ``id: int`` is pydantic's 422 at
    ["path", "id"] (collection_detail, cohort_detail); never Django's HTML 404 where the route matches."""
    for route in ("images/not-an-isic-id/", "images/ISIC_12/", "lesions/nope/"):
        answer = get(server, route)
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), route
    bad = get(server, "collections/abc/")
    assert (bad.status_code, bad.json()) == (422, {"detail": [{
        "type": "int_parsing", "loc": ["path", "id"],
        "msg": "Input should be a valid integer, unable to parse string as an integer"}]})
    assert get(server, "collections/1.0/").json() == get(server, "collections/1/").json()  # pydantic's lax int
    assert get(server, "cohorts/abc/", server.token_for("admin")).status_code == 422
    assert get(server, "cohorts/abc/").status_code == 401  # authentication comes first
    # populate-from-list leaves id untyped: the database refuses the text, Django's 500 page
    admin = {"Authorization": f"Bearer {server.token_for('admin')}"}
    broken = requests.post(f"{server.v2_url}/collections/abc/populate-from-list/", json={"isic_ids": []},
                           headers=admin, timeout=10)
    assert broken.status_code == 500 and "Server Error (500)" in broken.text
    assert get(server, "collections/1/no-such-thing/").headers["Content-Type"].startswith("text/html")


def test_query_parameters_parse_as_pydantic_does(server: LocalArchive) -> None:
    """ninja/parser.py ``parse_querydict`` (last value; ``getlist`` for list fields) and pydantic 2's lax
    int: "5.0" is 5, an empty ``limit=`` is a 422 (not the default); ``SearchQueryIn.collections_to_list``
    (isic/core/serializers.py) splits one value at commas and takes repeated ones each as an int."""
    assert len(get(server, "images/", limit="5.0").json()["results"]) == 5
    assert len(get(server, "images/", limit=" 3 ").json()["results"]) == 3
    for text in ("", "5.5", "1e1"):
        answer = get(server, "images/", limit=text)
        assert answer.status_code == 422 and answer.json()["detail"][0]["type"] == "int_parsing", text
    first, second = (c["id"] for c in get(server, "collections/").json()["results"][:2])
    joined = {r["isic_id"] for r in every(server, "images/search/", collections=f"{first},{second}")}
    repeated = {r["isic_id"] for r in every(server, "images/search/", collections=[first, second])}
    assert joined == repeated
    assert {r["isic_id"] for r in every(server, "images/search/", collections="")} == {
        r["isic_id"] for r in every(server, "images/")}
    wrong = get(server, "images/search/", collections=[str(first), "x"])
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["query", "collections", 1]
    word = get(server, "images/search/", collections="a")
    assert word.json()["detail"][0]["ctx"] == {"error": "invalid literal for int() with base 10: 'a'"}


def test_422_items_keep_type_loc_msg_and_ctx(server: LocalArchive) -> None:
    """ninja main.py ``validation_error_from_error_contexts``: pydantic's items less ``input`` and ``url``,
    ``ctx`` kept (less_than_equal carries {"le": 50}: image_similar's ``Query(10, le=50)``)."""
    name = server.data.visible_images(None)[0]["name"]
    answer = get(server, f"images/{name}/similar/", server.token_for("bob"), limit=60)
    assert answer.json() == {"detail": [{"type": "less_than_equal", "loc": ["query", "limit"],
                                         "msg": "Input should be less than or equal to 50", "ctx": {"le": 50}}]}


# ------------------------------------------------------------ new routes
def test_openapi_document_and_docs_page(server: LocalArchive) -> None:
    """isic/urls.py: ``NinjaAPI(title="ISIC Archive", version="v2", docs_url=None)`` serves
    /api/v2/openapi.json (ninja openapi/views.py openapi_json) with the include_in_schema=True operations;
    the docs page is /api/docs/swagger/ (openapi_view)."""
    document = get(server, "openapi.json").json()
    assert document["openapi"] == "3.1.0" and document["info"]["title"] == "ISIC Archive"
    assert sorted(document["paths"]) == sorted(f"/api/v2/{p}" for p in (
        "images/", "images/search/", "images/{isic_id}/", "images/{isic_id}/similar/", "collections/",
        "collections/{id}/", "lesions/", "lesions/{id}/", "users/me/"))
    assert document["paths"]["/api/v2/images/"]["get"]["operationId"] == "isic_core_api_image_image_list"
    schemas = document["components"]["schemas"]
    assert sorted(schemas["ImageOut"]["properties"]) == sorted(  # ImageOut: ModelSchema "public" + its fields
        ["public", "isic_id", "copyright_license", "attribution", "files", "metadata"])
    assert set(schemas["UserOut"]["properties"]) == {"id", "email", "first_name", "last_name", "created",
                                                     "accepted_terms", "hash_id", "full_name"}
    refs = re.findall(r'"#/components/schemas/(\w+)"', requests.get(f"{server.v2_url}/openapi.json", timeout=10).text)
    assert refs and set(refs) <= set(schemas)
    page = requests.get(f"{server.url}/api/docs/swagger/", timeout=10)
    assert page.status_code == 200 and "/api/v2/openapi.json" in page.text and "<title>ISIC Archive" in page.text


def test_archive_statistics(server: LocalArchive) -> None:
    """isic/stats/api.py ``stats``: get_archive_stats() (isic/stats/views.py) less the per-country sessions."""
    stats = get(server, "stats/").json()
    assert set(stats) == {"image", "collection", "doi", "study", "user", "engagement"}
    assert stats["engagement"] == {"30_day_sessions_count": 0}
    assert stats["image"]["images_count"] == 90 and stats["user"]["users_count"] == len(server.data.users)
    assert stats["image"]["public_images_count"] == len(every(server, "images/"))


def test_quick_find(server: LocalArchive) -> None:
    """isic/find/api.py ``quickfind`` (QueryIn: 3 characters at least, nothing "isic_" contains) and
    isic/find/find.py ``quickfind_execute``: five of a kind at most, images and collections for everyone."""
    found = get(server, "quickfind/", query="ISIC_00000").json()
    images = [f for f in found if f["result_type"] == "Image"]
    assert len(images) == 5 and all(f["title"].startswith("ISIC_00000") for f in images)
    assert set(images[0]) == {"title", "subtitle", "icon", "url", "yours", "result_type"}
    assert images[0]["icon"] == "ri-image-line" and images[0]["url"] == f"/images/{images[0]['title']}/"
    short = get(server, "quickfind/", query="IS").json()["detail"][0]
    assert (short["msg"], short["ctx"]) == ("Value error, Query too short.", {"error": "Query too short."})
    assert get(server, "quickfind/", query="SIC_").json()["detail"][0]["msg"] == "Value error, Query too common."
    assert get(server, "quickfind/").json()["detail"][0]["type"] == "missing"
    # studies as get_visible_objects("studies.view_study") has them: public ones for anyone, all for staff
    studies = [f["title"] for f in get(server, "quickfind/", query="study").json() if f["result_type"] == "Study"]
    assert studies == ["ISIC Annotation Study 0"]
    staff = get(server, "quickfind/", server.token_for("admin"), query="study").json()
    assert sorted(f["title"] for f in staff if f["result_type"] == "Study") == [
        "ISIC Annotation Study 0", "Private study 1"]


def test_collection_autocompletes(server: LocalArchive) -> None:
    """isic/core/api/collection.py ``collection_autocomplete`` (AutocompleteQueryIn, unlocked, visible) and
    isic/find/api.py ``find_collection_autocomplete`` (``Query(..., min_length=3)``, no cohort collections)."""
    bob = server.token_for("bob")
    made = requests.post(f"{server.v2_url}/collections/create-from-isic-ids/", timeout=10,
                         headers={"Authorization": f"Bearer {bob}"},
                         json={"name": "Bob's melanoma picks", "isic_ids": [every(server, "images/")[0]["isic_id"]]})
    assert made.status_code == 202
    found = get(server, "collections/autocomplete/", bob, query="MELA").json()
    assert [c["name"] for c in found] == ["Bob's melanoma picks"]
    assert set(found[0]) == {"id", "name", "description", "public", "pinned", "locked", "doi", "doi_url"}
    assert get(server, "collections/autocomplete/", query="mela").json() == []  # private: not for strangers
    assert get(server, "collections/autocomplete/", query="Chall").json() == []  # locked ones are left out
    assert get(server, "collections/autocomplete/", query="ab").json()["detail"][0]["msg"] == (
        "Value error, Query too short.")
    short = get(server, "autocomplete/collection/", query="ab").json()["detail"][0]
    assert (short["type"], short["ctx"]) == ("string_too_short", {"min_length": 3})
    challenges = get(server, "autocomplete/collection/", query="Challenge 2018").json()
    assert challenges[0]["name"].startswith("Challenge 2018") and len(challenges) <= 10
    assert get(server, "autocomplete/collection/", query="MSK-1").json() == []  # a cohort's ("magic") collection


# ------------------------------------------------------------- paging
def test_cursor_positions_that_do_not_parse(server: LocalArchive) -> None:
    """isic/core/api/image.py ``PinnedFirstPagination._apply_ordering``: the position is coerced with the
    ordering field's ``to_python`` (``created``, a DateTimeField) and a failure is a hand-written
    NinjaValidationError: loc and msg only.  A good position is ``str(created)``."""
    import base64

    bad = base64.b64encode(b"p=not-a-date").decode()
    answer = get(server, "images/", cursor=bad)
    assert (answer.status_code, answer.json()) == (422, {"detail": [
        {"loc": ["query", "cursor"], "msg": "Value error, Invalid cursor."}]})
    following = get(server, "images/", limit=2).json()["next"]
    cursor = parse_qs(urlsplit(following).query)["cursor"][0]
    position = parse_qs(base64.b64decode(cursor).decode())["p"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00", position), position
    # a date alone is a datetime Django reads (its midnight)
    day = base64.b64encode(b"p=2015-01-01").decode()
    assert get(server, "images/", cursor=day).status_code == 200


def test_lesion_pages_all_carry_the_count(server: LocalArchive) -> None:
    """isic/ingest/api.py ``lesion_list`` sets ``qs.custom_count``; ``CursorPagination.paginate_queryset``
    (isic/core/pagination.py) then reports it on every page, not only the first."""
    first = get(server, "lesions/", limit=3).json()
    second = requests.get(first["next"], timeout=10).json()
    assert first["count"] == second["count"] and isinstance(second["count"], int) and second["count"] > 3
    images_page = requests.get(get(server, "images/", limit=3).json()["next"], timeout=10).json()
    assert images_page["count"] is None  # images count on the first page only


# ------------------------------------------------------------- facets
def test_facets_follow_the_registry_and_computed_fields(server: LocalArchive) -> None:
    """isic/core/search.py ``facets``/``_prettify_facets`` with isic-metadata 6.1.0's FIELD_REGISTRY
    (registry.py) and Accession.computed_fields: age_approx histogram (interval 5, bounds 0..85),
    clin_size_long_diam_mm histogram (10, 0..100), mel_thick_mm ranges, image_type in ImageTypeEnum order
    with every value, fitzpatrick_skin_type by key, booleans as 0/1 with key_as_string."""
    facets = get(server, "images/facets/").json()
    registry_6_1 = {"personal_hx_mm", "family_hx_mm", "melanocytic", "mel_ulcer", "concomitant_biopsy", "sex",
                    "diagnosis_confirm_type", "image_type", "dermoscopic_type", "tbp_tile_type", "mel_mitotic_index",
                    "anatom_site_special", "patient_id", "lesion_id", "rcm_case_id", "image_manipulation",
                    "fitzpatrick_skin_type", "clin_size_long_diam_mm", "mel_thick_mm",
                    *(f"diagnosis_{n}" for n in range(1, 6)), *(f"anatom_site_{n}" for n in range(1, 6))}
    assert set(facets) == registry_6_1 | {"age_approx", "copyright_license"}
    ages = facets["age_approx"]["buckets"]
    assert [b["key"] for b in ages][:18] == [float(k) for k in range(0, 90, 5)]
    assert sum(b["doc_count"] for b in ages) == facets["age_approx"]["meta"]["present_count"]
    assert [b["key"] for b in facets["clin_size_long_diam_mm"]["buckets"]][:11] == [float(k) for k in range(0, 110, 10)]
    assert [b["key"] for b in facets["image_type"]["buckets"]] == [
        "dermoscopic", "clinical: overview", "clinical: close-up", "TBP tile: close-up", "TBP tile: overview",
        "RCM: macroscopic", "RCM: tile", "RCM: mosaic"]
    thick = facets["mel_thick_mm"]["buckets"]
    assert [b["key"] for b in thick] == [f"{k / 2}-{(k + 1) / 2}" for k in range(10)] + ["5.0-*"]
    assert thick[-1] == {"key": "5.0-*", "from": 5.0, "to": "*", "doc_count": thick[-1]["doc_count"]}
    melanocytic = facets["melanocytic"]["buckets"]
    assert {(b["key"], b["key_as_string"]) for b in melanocytic} <= {(0, "false"), (1, "true")} and melanocytic


def test_collections_page_newest_first_by_created(server: LocalArchive) -> None:
    """isic/core/pagination.py ``CursorPagination``: ``default_ordering = ("-created",)`` when the view does
    not order (collection_list without sort, cohort_list, study_list); the position is ``str(created)`` and
    a position that is no datetime is the hand-written 422; ``sort=name`` pages by name."""
    import base64

    pages, url = [], f"{server.v2_url}/collections/?limit=5"
    while url:
        page = requests.get(url, timeout=10).json()
        pages.append(page)
        url = page["next"]
    listed = [c["id"] for p in pages for c in p["results"]]
    created = {c["id"]: c["created"] for c in server.data.collections}
    assert listed == sorted(listed, key=lambda i: created[i], reverse=True) and len(set(listed)) == len(listed)
    cursor = parse_qs(urlsplit(pages[0]["next"]).query)["cursor"][0]
    position = parse_qs(base64.b64decode(cursor).decode())["p"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00", position), position
    bad = get(server, "collections/", cursor=base64.b64encode(b"p=yesterday").decode())
    assert bad.json() == {"detail": [{"loc": ["query", "cursor"], "msg": "Value error, Invalid cursor."}]}
    by_name = get(server, "collections/", sort="name", limit=3).json()
    name_cursor = parse_qs(urlsplit(by_name["next"]).query)["cursor"][0]
    assert parse_qs(base64.b64decode(name_cursor).decode())["p"][0] == by_name["results"][-1]["name"]
    wrong_sort = get(server, "collections/", sort="id").json()["detail"][0]
    assert wrong_sort["ctx"] == {"expected": "'name' or 'created'"}
    admin = server.token_for("admin")
    cohorts = get(server, "cohorts/", admin).json()["results"]
    assert [c["created"] for c in cohorts] == sorted((c["created"] for c in cohorts), reverse=True)


def test_pin_sort_positions_carry_both_fields(server: LocalArchive) -> None:
    """isic/core/api/image.py ``PinnedFirstPagination``: ``pin_sort`` orders by ("-pinned", "created") and
    the position joins both with "|" (``_get_position_from_instance``); a cursor built for the other
    ordering has the wrong number of parts and is refused (``_apply_ordering``: ``_invalid_cursor``)."""
    import base64

    plain = get(server, "images/", limit=4).json()
    pinned = get(server, "images/", limit=4, pin_sort="true").json()
    assert [r["isic_id"] for r in pinned["results"]] == [r["isic_id"] for r in plain["results"]]  # none pinned
    cursor = parse_qs(urlsplit(pinned["next"]).query)["cursor"][0]
    position = parse_qs(base64.b64decode(cursor).decode())["p"][0]
    assert re.fullmatch(r"0\|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00", position), position
    refused = {"detail": [{"loc": ["query", "cursor"], "msg": "Value error, Invalid cursor."}]}
    assert requests.get(pinned["next"].replace("pin_sort=true", "pin_sort="), timeout=10).json() == refused
    plain_cursor = parse_qs(urlsplit(plain["next"]).query)["cursor"][0]
    assert get(server, "images/", cursor=plain_cursor, pin_sort="1").json() == refused
    walked = []
    url: str | None = f"{server.v2_url}/images/?limit=7&pin_sort=true"
    while url:
        page = requests.get(url, timeout=10).json()
        walked += [r["isic_id"] for r in page["results"]]
        url = page["next"]
    assert walked == [r["isic_id"] for r in every(server, "images/")]


def test_oauth_views_answer_options_and_wrong_methods_as_django_views(server: LocalArchive) -> None:
    """django-oauth-toolkit's views are Django class-based views (django/views/generic/base.py ``View``):
    ``options`` answers 200 with the methods the view has (HEAD wherever GET is), another method is
    ``http_method_not_allowed``'s empty 405; CORS still applies (CorsMiddleware wraps every path)."""
    token = requests.options(f"{server.url}/oauth/token/", timeout=10)
    assert (token.status_code, token.headers["Allow"], token.content) == (200, "POST, OPTIONS", b"")
    page = requests.options(f"{server.url}/oauth/authorize/", timeout=10, headers={"Origin": "https://x.org"})
    assert page.headers["Allow"] == "GET, POST, HEAD, OPTIONS" and page.headers["access-control-allow-origin"] == "*"
    wrong = requests.get(f"{server.url}/oauth/token/", timeout=10)
    assert (wrong.status_code, wrong.headers["Allow"], wrong.content) == (405, "POST, OPTIONS", b"")


def test_cohorts_are_visible_to_staff_and_their_contributors_owners(server: LocalArchive) -> None:
    """isic/ingest/models/cohort.py ``CohortPermissions.view_cohort_list``: staff see every cohort, others
    those whose contributor they own; access to a cohort's private images does not show the cohort."""
    alice = server.token_for("alice")  # may see the private dataset's images
    assert get(server, "cohorts/", alice).json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert get(server, "cohorts/4/", alice).json() == {"detail": "Not Found"}
    assert get(server, "cohorts/", server.token_for("admin")).json()["count"] == len(server.data.datasets)


def test_the_client_says_studies_are_for_staff(server: LocalArchive) -> None:
    """With the archive's 401 for a signed-in non-staff user (isic/studies/api.py study_list: auth=is_staff),
    the client's error names the reason instead of only asking to sign in."""
    from isicarchive import AuthenticationError

    bob = IsicApi("bob", server.credentials["bob"], hostname=server.url, api_version=2, progress=False)
    with pytest.raises(AuthenticationError, match="staff accounts only") as raised:
        bob.study()
    assert raised.value.status == 401
    stranger = IsicApi(hostname=server.url, api_version=2, progress=False)
    with pytest.raises(AuthenticationError) as anonymous:
        stranger.study()
    assert "staff accounts only" not in str(anonymous.value)
