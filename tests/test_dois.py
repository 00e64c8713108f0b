"""DOI'd collections against the local archive, which mints DOIs as the real server does."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from isicarchive import IsicApi
from isicarchive.collections import normalise_doi, publish_doi, request_doi
from isicarchive.errors import NotFoundError, QueryError, UnsupportedError
from isicarchive.lockfile import materialise, verify_lock
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture
def server() -> LocalArchive:
    with LocalArchive(seed=37, config=ArchiveConfig(images=24, image_size=(32, 24), datasets=3,
                                                   private_datasets=1)) as archive:
        yield archive


def session(server: LocalArchive, login: str | None = None) -> IsicApi:
    kw = {} if login is None else {"token": server.token_for(login)}
    return IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001, **kw)  # type: ignore[arg-type]


def _post(server: LocalArchive, path: str, body: dict, login: str | None) -> requests.Response:
    headers = {} if login is None else {"Authorization": f"Bearer {server.token_for(login)}"}
    return requests.post(f"{server.v2_url}/{path}", json=body, headers=headers, timeout=10)


def _new_collection(server: LocalArchive, ids: list[str], name: str = "Paper 2026") -> int:
    answer = _post(server, "collections/create-from-isic-ids/", {"name": name, "isic_ids": ids}, "admin")
    assert answer.status_code == 202
    return int(answer.json()["collection_id"])


def test_a_minted_doi_locks_the_collection_and_gives_its_images(server: LocalArchive, tmp_path: Path) -> None:
    public = [im["name"] for im in server.data.visible_images(None)][:6]
    cid = _new_collection(server, public)
    staff = session(server, "admin")
    slug = request_doi(staff, cid, "The images of our paper.")
    assert slug == "paper-2026"
    detail = staff._backend.dataset(str(cid))
    assert detail["locked"] is True and detail["doi"] is None  # a draft is not the collection's DOI yet
    # locked: the archive refuses to change it now
    refused = _post(server, f"collections/{cid}/populate-from-isic-ids/", {"isic_ids": public[:1]}, "admin")
    assert refused.status_code == 409
    publish_doi(staff, slug)
    detail = staff._backend.dataset(str(cid))
    assert detail["public"] is True and detail["doi"].startswith("10.34970/")
    assert detail["doi_url"] == f"https://doi.org/{detail['doi']}"

    anonymous = session(server)
    selection = anonymous.collection(doi=f"https://doi.org/{detail['doi']}")
    assert sorted(selection) == sorted(public)
    lock = selection.lock(tmp_path / "paper.lock.json")
    assert lock.selection["doi"] == detail["doi"] and lock.selection["collections"] == [cid]
    cited = selection.cite("bibtex")
    assert f"doi = {{{detail['doi']}}}" in cited and "Paper 2026" in cited
    selection.export(tmp_path / "exported")
    cff = (tmp_path / "exported" / "CITATION.cff").read_text()
    assert f'value: "{detail["doi"]}"' in cff and 'description: "Paper 2026"' in cff
    assert materialise(tmp_path / "paper.lock.json", tmp_path / "imgs").ok
    assert verify_lock(tmp_path / "paper.lock.json").ok  # the query is the DOI: run again, nothing added


def test_the_archive_refuses_dois_as_the_real_server_does(server: LocalArchive) -> None:
    public = [im["name"] for im in server.data.visible_images(None)][:3]
    cid = _new_collection(server, public)
    body = {"collection_id": cid, "description": "d", "supplemental_files": []}
    assert _post(server, "doi/", body, None).status_code == 401
    forbidden = _post(server, "doi/", body, "alice")
    assert forbidden.status_code == 403 and forbidden.json() == {"error": "You do not have permission to create a DOI."}
    assert _post(server, "doi/", {**body, "collection_id": 999}, "admin").status_code == 404
    assert _post(server, "doi/", {"collection_id": cid, "description": "d"}, "admin").status_code == 422
    not_an_object = _post(server, "doi/", [body], "admin")  # type: ignore[arg-type]
    assert not_an_object.status_code == 422 and not_an_object.json()["detail"] == [
        {"type": "model_attributes_type", "loc": ["body", "payload"], "msg": "Input should be a valid dictionary"}]
    magic = _post(server, "doi/", {**body, "collection_id": 1}, "admin")  # a dataset's (cohort's) collection
    assert magic.status_code == 400 and magic.json() == {"message": "Magic collections cannot be the basis of a DOI."}
    empty = _new_collection(server, public[:1], "Emptied")
    _post(server, f"collections/{empty}/remove-from-list/", {"isic_ids": public[:1]}, "admin")
    answer = _post(server, "doi/", {**body, "collection_id": empty}, "admin")
    assert answer.json() == {"message": "An empty collection cannot be the basis of a DOI."}
    assert _post(server, "doi/", body, "admin").status_code == 201
    again = _post(server, "doi/", body, "admin")
    assert again.status_code == 400 and again.json() == {"message": "This collection already has a DOI."}
    assert _post(server, "doi/nope/publish/", {}, "admin").status_code == 404


def test_doi_lookups_fail_clearly(server: LocalArchive) -> None:
    with pytest.raises(QueryError, match="not a DOI"):
        normalise_doi("ISIC_0000001")
    assert normalise_doi("doi:10.34970/123456") == "10.34970/123456"
    with pytest.raises(NotFoundError, match="10.34970/999999"):
        session(server).collection(doi="10.34970/999999")
    v1 = IsicApi(hostname=server.url, api_version=1, progress=False)
    with pytest.raises(UnsupportedError):
        v1.collection(doi="10.34970/123456")
