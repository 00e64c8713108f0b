"""Records for a list of ids: few requests in parallel, not one request after another."""

from __future__ import annotations

from pathlib import Path

import pytest

from isicarchive import IsicApi, NotFoundError
from isicarchive.testing import ArchiveConfig, LocalArchive


@pytest.fixture(scope="module")
def server() -> LocalArchive:
    with LocalArchive(seed=23, config=ArchiveConfig(images=450, image_size=(32, 24))) as archive:
        yield archive


def names(server: LocalArchive) -> list[str]:
    return [im["name"] for im in server.data.visible_images(None)]


def _as_client_holds(metadata: dict) -> dict:
    """The archive sends its decimals as text ("16.20"); the client holds them as floats."""
    clinical = {k: float(v) if k in ("clin_size_long_diam_mm", "mel_thick_mm") else v
                for k, v in metadata["clinical"].items()}
    return {**metadata, "clinical": clinical}


def test_v2_ids_are_fetched_as_searches_of_a_hundred(server: LocalArchive) -> None:
    wanted = names(server)[::-1][:250]  # in an order of the caller's own
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    server.clear_log()
    images = api.images_for(wanted)
    assert [im.name for im in images] == wanted
    assert [im.as_json()["metadata"] for im in images] == [
        _as_client_holds(server.data.v2_metadata(server.data.images_by_name[n])) for n in wanted]
    searches = server.requests(r"/images/search/$")
    assert len(server.log) == len(searches) == 3  # 100 + 100 + 50 ids; one id at a time made this 250
    # known images cost nothing more
    server.clear_log()
    assert [im.name for im in api.images_for(wanted[:10])] == wanted[:10]
    assert server.log == []


def test_v1_names_are_looked_up_concurrently_once_each(server: LocalArchive) -> None:
    wanted = names(server)[:40]
    api = IsicApi(hostname=server.url, api_version=1, progress=False)
    server.clear_log()
    images = api.images_for(wanted + wanted[:5])
    assert [im.name for im in images] == wanted + wanted[:5]
    assert len(server.log) == 40  # one request per distinct name (the listing by name carries the detail record)
    assert images[0].as_json() == {**server.data.images_by_name[wanted[0]],
                                   "dataset": images[0].as_json()["dataset"]}


@pytest.mark.parametrize("version", [1, 2])
def test_missing_ids_are_named_together(server: LocalArchive, version: int) -> None:
    api = IsicApi(hostname=server.url, api_version=version, progress=False)
    private = next(im["name"] for im in server.data.images if not server.data.dataset_public(im["dataset"]["_id"]))
    with pytest.raises(NotFoundError, match=r"2 of 3 images not found.*ISIC_9999999.*" + private
                       + "|2 of 3 images not found.*" + private + ".*ISIC_9999999"):
        api.images_for([names(server)[0], "ISIC_9999999", private])


def test_download_from_a_list_of_ids_looks_records_up_in_bulk(server: LocalArchive, tmp_path: Path) -> None:
    wanted = names(server)[:120]
    api = IsicApi(hostname=server.url, api_version=2, progress=False)
    server.clear_log()
    result = api.download_images(wanted, folder=tmp_path / "out")
    assert result.ok and len(result.downloaded) == 120
    assert len(server.requests(r"/api/v2/images/")) == 2  # two searches, then only file transfers
    licences = server.requests(r"/api/v2/zip-download/license-file/")  # and the folder's licenses/ texts
    assert len(server.requests(r"/api/v2/")) == 2 + len(licences) and len(licences) <= 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == sorted(f"{n}.jpg" for n in wanted)
