"""The local archive's v2 endpoints as the real archive answers them (isic/core/api, isic/ingest/api,
isic/zip_download/api): paging, errors, facets, lesions, cohorts, collections and their writes, zip downloads."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

import pytest
import requests

from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def server() -> Any:
    with LocalArchive(seed=31, config=ArchiveConfig(images=150)) as archive:
        yield archive


def get(server: LocalArchive, route: str, bearer: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return requests.get(f"{server.v2_url}/{route}", params=params, headers=headers, timeout=10,
                        allow_redirects=False)


def post(server: LocalArchive, route: str, token: str | None, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{server.v2_url}/{route}", json=body, headers=headers, timeout=10, allow_redirects=False)


def every(server: LocalArchive, route: str, token: str | None = None, **params: Any) -> list[dict]:
    out: list[dict] = []
    page = get(server, route, token, **params).json()
    while True:
        out += page["results"]
        if not page["next"]:
            return out
        page = requests.get(page["next"], headers={"Authorization": f"Bearer {token}"} if token else {},
                            timeout=10).json()


# ------------------------------------------------------------------ paging
def test_keyset_cursor_survives_images_added_between_pages() -> None:
    with LocalArchive(seed=32, config=ArchiveConfig(images=30)) as archive:
        first = get(archive, "images/", limit=10).json()
        archive.data.add_images(5)  # contributors upload meanwhile
        rest: list[dict] = []
        url = first["next"]
        while url:
            page = requests.get(url, timeout=10).json()
            rest += page["results"]
            url = page["next"]
        names = [r["isic_id"] for r in first["results"] + rest]
        assert len(names) == len(set(names))  # nothing twice (an offset cursor would repeat five)
        expected = sorted(archive.data.visible_images(None), key=lambda im: im["created"])
        assert names == [im["name"] for im in expected]


def test_parameter_errors_are_django_ninja_422s(server: LocalArchive) -> None:
    sort = get(server, "collections/", sort="id")
    assert (sort.status_code, sort.json()["detail"][0]["loc"]) == (422, ["query", "sort"])
    pinned = get(server, "collections/", pinned="maybe")
    assert (pinned.status_code, pinned.json()["detail"][0]["type"]) == (422, "bool_parsing")
    collections = get(server, "images/search/", collections="1,x")
    assert (collections.status_code, collections.json()["detail"][0]["loc"]) == (422, ["query", "collections"])


def test_a_collection_you_cannot_see_gives_an_empty_result(server: LocalArchive) -> None:
    private = next(c for c in server.data.collections if not c["public"])
    answer = get(server, "images/search/", collections=str(private["id"]))
    assert answer.status_code == 200 and answer.json()["results"] == [] and answer.json()["count"] == 0
    admin = server.token_for("admin")
    assert get(server, "images/search/", admin, collections=str(private["id"])).json()["count"] > 0


def test_routes_answer_as_django_does(server: LocalArchive) -> None:
    unknown = get(server, "no-such-thing/")
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith("text/html")
    slashless = get(server, "images", limit=2)
    assert slashless.status_code == 301 and slashless.headers["Location"].endswith("/api/v2/images/?limit=2")
    assert requests.get(f"{server.v2_url}/images", params={"limit": 2}, timeout=10).json()["results"]
    wrong = requests.put(f"{server.v2_url}/images/", timeout=10)
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert get(server, "collections/1/images/").status_code == 404  # the archive has no such route


# ------------------------------------------------------------------ facets
def test_facets_count_what_the_search_finds(server: LocalArchive) -> None:
    found = every(server, "images/search/", query="age_approx:[30 TO *]")
    facets = get(server, "images/facets/", query="age_approx:[30 TO *]").json()
    sexes = Counter(r["metadata"]["clinical"].get("sex") for r in found)
    buckets = {b["key"]: b["doc_count"] for b in facets["sex"]["buckets"]}
    assert {k: v for k, v in buckets.items() if v} == {k: v for k, v in sexes.items() if k is not None}
    assert facets["sex"]["meta"] == {"missing_count": sexes.get(None, 0), "present_count": len(found) - sexes.get(
        None, 0)}
    assert {"dermoscopic", "clinical: overview", "RCM: tile"} <= {b["key"] for b in facets["image_type"]["buckets"]}
    assert facets["mel_thick_mm"]["buckets"][-1]["to"] == "*"
    assert get(server, "images/facets/", query="NOT sex:male").status_code == 400


# ----------------------------------------------------------------- similar
def test_similar_images_need_a_sign_in_and_cap_the_limit(server: LocalArchive) -> None:
    name = server.data.visible_images(None)[0]["name"]
    assert get(server, f"images/{name}/similar/").status_code == 401
    token = server.token_for("bob")
    similar = get(server, f"images/{name}/similar/", token, limit=5).json()
    assert isinstance(similar, list) and len(similar) <= 5 and all("distance" in s for s in similar)
    assert name not in {s["isic_id"] for s in similar}
    assert get(server, f"images/{name}/similar/", token, limit=51).status_code == 422


# ----------------------------------------------------------------- lesions
def test_lesions_group_the_images_of_one_lesion(server: LocalArchive) -> None:
    lesions = every(server, "lesions/")
    records = every(server, "images/")
    by_lesion: dict[str, set[str]] = {}
    for r in records:
        if "lesion_id" in r["metadata"]["clinical"]:
            by_lesion.setdefault(r["metadata"]["clinical"]["lesion_id"], set()).add(r["isic_id"])
    assert {lesion["id"] for lesion in lesions} == set(by_lesion)
    one = max(lesions, key=lambda lesion: lesion["images_count"])
    assert {im["isic_id"] for im in one["images"]} == by_lesion[one["id"]] and one["images_count"] >= 2
    assert one["index_image_id"] in by_lesion[one["id"]]
    assert set(one) == {"id", "images", "images_count", "longitudinally_monitored", "index_image_id",
                        "outcome_diagnosis", "outcome_diagnosis_1"}
    assert get(server, f"lesions/{one['id']}/").json()["id"] == one["id"]
    assert get(server, "lesions/IL_9999999/").status_code == 404
    # some lesions are followed over time: their images were taken on different days
    days: dict[str, set] = {}
    for r in records:
        clinical = r["metadata"]["clinical"]
        if "lesion_id" in clinical:
            days.setdefault(clinical["lesion_id"], set()).add(clinical.get("acquisition_day"))
    followed = {lesion["id"] for lesion in lesions if lesion["longitudinally_monitored"]}
    assert followed == {lesion for lesion, seen in days.items() if len(seen) > 1} and followed
    assert len(followed) < len(lesions)


def test_studies_are_staff_only_with_the_real_shape(server: LocalArchive) -> None:
    assert get(server, "studies/").status_code == 401
    # auth=is_staff (isic/auth.py): its authenticators decline a non-staff user, so django-ninja answers 401
    assert (lambda r: (r.status_code, r.json()))(get(server, "studies/", server.token_for("bob"))) == (
        401, {"detail": "Unauthorized"})
    studies = get(server, "studies/", server.token_for("admin")).json()["results"]
    assert studies and set(studies[0]) == {"id", "created", "creator", "name", "description", "features", "questions"}
    question = studies[0]["questions"][0]
    assert set(question) == {"id", "type", "prompt", "official", "required", "choices"}
    assert set(question["choices"][0]) == {"id", "question", "text"}


# ----------------------------------------------------------------- cohorts
def test_cohorts_are_for_signed_in_users(server: LocalArchive) -> None:
    assert get(server, "cohorts/").status_code == 401
    cohorts = every(server, "cohorts/", server.token_for("admin"))
    assert len(cohorts) == len(server.data.datasets)
    assert get(server, f"cohorts/{cohorts[0]['id']}/", server.token_for("admin")).json()["name"] == cohorts[0]["name"]


# ------------------------------------------------------------- collections
def test_collection_attribution_counts_its_visible_images(server: LocalArchive) -> None:
    collection = next(c for c in every(server, "collections/") if not c["pinned"])
    members = every(server, "images/search/", collections=str(collection["id"]))
    counts = get(server, f"collections/{collection['id']}/attribution/").json()
    assert sum(c["count"] for c in counts) == len(members)
    assert Counter((r["copyright_license"], r["attribution"]) for r in members) == Counter(
        {(c["license"], c["attribution"]): c["count"] for c in counts})
    assert set(collection) == {"id", "name", "description", "public", "pinned", "locked", "doi", "doi_url"}


def test_collection_writes_by_the_owner_only() -> None:
    with LocalArchive(seed=33, config=ArchiveConfig(images=40)) as archive:
        bob, carol = archive.token_for("bob"), archive.token_for("carol")
        public = [im["name"] for im in archive.data.visible_images(None)]
        assert post(archive, "collections/create-from-isic-ids/", None, {"name": "x", "isic_ids": public[:2]}
                    ).status_code == 401
        created = post(archive, "collections/create-from-isic-ids/", bob, {"name": "mine", "isic_ids": public[:3]})
        assert created.status_code == 202
        cid = created.json()["collection_id"]

        def members(token: str | None = bob) -> set[str]:
            return {r["isic_id"] for r in every(archive, "images/search/", token, collections=str(cid))}

        assert members() == set(public[:3])
        assert get(archive, f"collections/{cid}/").status_code == 404  # private: not even its owner's name leaks
        added = post(archive, f"collections/{cid}/populate-from-list/", bob, {"isic_ids": [public[5], "ISIC_9999999"]})
        assert added.json() == {"no_perms_or_does_not_exist": ["ISIC_9999999"], "private_image_public_collection": [],
                                "succeeded": [public[5]]}
        removed = post(archive, f"collections/{cid}/remove-from-list/", bob, {"isic_ids": [public[0]]})
        assert removed.json()["succeeded"] == [public[0]] and members() == {public[1], public[2], public[5]}
        assert post(archive, f"collections/{cid}/populate-from-search/", bob, {"query": "NOT x"}).status_code == 400
        assert post(archive, f"collections/{cid}/populate-from-search/", bob,
                    {"query": f"isic_id:{public[7]}"}).status_code == 202
        assert public[7] in members()
        refused = post(archive, f"collections/{cid}/populate-from-list/", carol, {"isic_ids": [public[9]]})
        assert refused.status_code == 404  # carol cannot see bob's private collection
        locked = next(c for c in archive.data.collections if c["locked"] and c["public"])
        assert post(archive, f"collections/{locked['id']}/populate-from-list/", archive.token_for("admin"),
                    {"isic_ids": [public[1]]}).status_code == 409
        # staff only (auth=is_staff): a non-staff user is declined like an anonymous one, 401
        assert post(archive, f"collections/{cid}/share/", bob, {"user_ids": [1]}).status_code == 401
        assert requests.delete(f"{archive.v2_url}/collections/{cid}/", headers={"Authorization": f"Bearer {carol}"},
                               timeout=10).status_code == 404
        assert requests.delete(f"{archive.v2_url}/collections/{cid}/", headers={"Authorization": f"Bearer {bob}"},
                               timeout=10).status_code == 204
        assert get(archive, f"collections/{cid}/", bob).status_code == 404


# ------------------------------------------------------------ zip download
def test_zip_download_flow_and_the_servers_metadata_csv(server: LocalArchive) -> None:
    query = "diagnosis_1:Malignant"
    url = post(server, "zip-download/url/", None, {"query": query}).json()
    token = url.split("zsid=", 1)[1]
    listing = get(server, "zip-download/file-listing/", token=token).json()
    found = every(server, "images/search/", query=query)
    paths = {f["zipPath"] for f in listing["files"]}
    assert {f"{r['isic_id']}.jpg" for r in found} | {"metadata.csv", "attribution.txt"} <= paths
    assert {f"licenses/{r['copyright_license']}.txt" for r in found} <= paths
    assert listing["suggestedFilename"] == "ISIC-images.zip"
    text = get(server, "zip-download/metadata-file/", token=token).text
    rows = list(csv.DictReader(io.StringIO(text)))
    header = next(csv.reader(io.StringIO(text)))
    keys = sorted({k for r in found for section in r["metadata"].values() for k in section} - {"pixels_x", "pixels_y"})
    assert header == ["isic_id", "attribution", "copyright_license", *keys]
    assert [row["isic_id"] for row in rows] == sorted(r["isic_id"] for r in found)
    first = min(found, key=lambda r: r["isic_id"])
    assert rows[0]["attribution"] == first["attribution"]
    assert rows[0]["age_approx"] == str(first["metadata"]["clinical"].get("age_approx", ""))
    attribution = get(server, "zip-download/attribution-file/", token=token).text
    assert set(attribution.split("\n\n")) == {r["attribution"] for r in found}
    assert get(server, "zip-download/file-listing/", token=token + "x").status_code == 401
    licence = get(server, "zip-download/license-file/CC-BY/")
    assert licence.status_code == 200 and licence.text.startswith("Attribution 4.0 International")


def test_metadata_frame_is_the_archives_csv_with_a_paged_fallback(server: LocalArchive, tmp_path: Any) -> None:
    from isicarchive import IsicApi

    api = IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001)
    query = "age_approx:[40 TO *]"
    frame = api.metadata_frame(query, path=tmp_path / "metadata.csv")
    found = every(server, "images/search/", query=query)
    assert list(frame["isic_id"]) == sorted(r["isic_id"] for r in found)
    keys = sorted({k for r in found for section in r["metadata"].values() for k in section} - {"pixels_x", "pixels_y"})
    assert list(frame.columns) == ["isic_id", "attribution", "copyright_license", *keys]
    assert (tmp_path / "metadata.csv").read_text().splitlines()[0].startswith("isic_id,attribution")
    by_id = {r["isic_id"]: r for r in found}
    assert all(by_id[row.isic_id]["metadata"]["clinical"]["age_approx"] == row.age_approx for row in frame.itertuples())
    # where the archive offers no zip flow, the same rows come from the paged search
    rule = server.faults.add("status", r"/zip-download/url/$", status=404)
    try:
        paged = api.metadata_frame(query)
    finally:
        server.faults.remove(rule)
    assert rule.fired >= 1
    assert list(paged["isic_id"]) == list(frame["isic_id"])
    assert list(paged["age_approx"]) == list(frame["age_approx"])
