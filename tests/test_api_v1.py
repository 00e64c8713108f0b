"""IsicApi against the local v1 archive, end to end over real HTTP."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from isicarchive import (
    Annotation,
    AuthenticationError,
    CacheError,
    Dataset,
    Image,
    IsicApi,
    IsicError,
    NotFoundError,
    QueryError,
    Study,
)
from isicarchive.cache import IMCACHE_ID
from isicarchive.testing import ArchiveConfig, LocalArchive


# the original README sets ndarray.shape, which NumPy 2.5 deprecates; the snippet must keep working as written
@pytest.mark.filterwarnings("ignore:Setting the shape on a NumPy array:DeprecationWarning")
def test_readme_walkthrough_anonymous(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    api = api_factory(archive, cache_folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == list("0123456789abcdef")
    study = api.study("ISIC Annotation Study 0")
    assert isinstance(study, Study) and study.images and study.features and study.questions
    result = study.cache_imagedata()
    assert result.ok and len(result.downloaded) == 2 * len(study.images)
    for image in study.images:
        shard = tmp_path / image["_id"][-1]
        assert list(shard.glob(f"image_{image['_id']}_{image['name']}.jpg"))
        assert (shard / f"spimg_{image['_id']}.png").exists()
    annotations = study.load_annotations()
    assert annotations and all(isinstance(a, Annotation) for a in annotations)
    assert (tmp_path / study.id[-1] / f"stann_{study.id}.json.gz").exists()
    assert set(study.loaded_features) <= {f["id"] for f in study.features}
    dataset = api.dataset("UDA-1")
    assert isinstance(dataset, Dataset) and dataset.count
    assert dataset.access_list is None and dataset.metadata is None  # anonymous: 401 there is normal
    image = api.image("ISIC_0000000")
    assert isinstance(image, Image) and image.name == "ISIC_0000000"
    image.load_imagedata()
    image.load_superpixels()
    image.map_superpixels()
    # the original README's snippet
    data = image.data
    shape = data.shape
    data.shape = (shape[0] * shape[1], -1)
    m = image.superpixels["map"]
    count = m[472, -1]
    data[m[472, 0:count], 0] = 255
    idx = image.superpixels["idx"]
    assert (data[idx.ravel() == 472, 0] == 255).all() and count == (idx == 472).sum()
    assert image.superpixels["max"] == idx.max()


def test_logged_in_session_sees_private_data(archive: LocalArchive, api_factory) -> None:
    anon = api_factory(archive)
    alice = api_factory(archive, "alice", archive.credentials["alice"])
    private = next(d for d in archive.data.datasets if not d["public"])
    with pytest.raises(NotFoundError):
        anon.dataset(private["name"])
    with pytest.raises(AuthenticationError):
        anon.dataset(private["_id"])
    dataset = alice.dataset(private["name"])
    assert dataset.access_list is not None and dataset.metadata is not None and dataset.images_for_review
    private_study = next(s for s in archive.data.studies if not s["public"])
    assert alice.study(private_study["name"]).id == private_study["_id"]
    with pytest.raises(NotFoundError):
        anon.study(private_study["name"])


def test_cache_never_serves_private_data_to_anonymous(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    alice = api_factory(archive, "alice", archive.credentials["alice"], cache_folder=tmp_path)
    private_ids = {im["_id"] for im in archive.data.images if not archive.data.dataset_public(im["dataset"]["_id"])}
    assert private_ids <= set(alice.cache_images())
    private_record = archive.data.images_by_id[next(iter(private_ids))]
    alice.image(private_record["_id"]).load_imagedata()
    anon = api_factory(archive, cache_folder=tmp_path)
    assert not private_ids & set(anon.cache_images())
    with pytest.raises(AuthenticationError):
        anon.image(private_record["_id"]).load_imagedata()
    # the private image file lives only in alice's layer
    root_files = [p.name for p in tmp_path.glob("?/*")]
    assert not any(private_record["_id"] in name for name in root_files)


def test_login_and_logout_on_a_live_session_switch_its_cache_layer(archive: LocalArchive, api_factory,
                                                                   tmp_path: Path) -> None:
    private_ids = {im["_id"] for im in archive.data.images if not archive.data.dataset_public(im["dataset"]["_id"])}
    api = api_factory(archive, cache_folder=tmp_path)
    api.cache_images()
    api.login("alice", archive.credentials["alice"])
    assert private_ids <= set(api.cache_images())
    private_id = next(iter(private_ids))
    api.image(private_id).load_imagedata()
    root_files = [p.name for p in tmp_path.glob("?/*")]
    assert not any(private_id in name for name in root_files)  # written to alice's layer, not the shared root
    api.logout()
    assert not private_ids & set(api.image_cache)  # nothing of alice's stays in the anonymous session
    assert not private_ids & set(api.cache_images())
    with pytest.raises(AuthenticationError):
        api.image(private_id).load_imagedata()


def test_sessions_from_bare_tokens_of_two_people_keep_apart(archive: LocalArchive, api_factory,
                                                            tmp_path: Path) -> None:
    private_ids = {im["_id"] for im in archive.data.images if not archive.data.dataset_public(im["dataset"]["_id"])}
    alice = api_factory(archive, token=archive.token_for("alice"), cache_folder=tmp_path)
    assert private_ids <= set(alice.cache_images())
    private_id = next(iter(private_ids))
    alice.image(private_id).load_imagedata()
    carol = api_factory(archive, token=archive.token_for("carol"), cache_folder=tmp_path)
    assert not private_ids & set(carol.cache_images())
    assert carol.context.cache.find_image(private_id) is None  # alice's private file is out of carol's reach
    assert alice.context.cache.find_image(private_id) is not None


def test_cache_images_warm_is_one_request_and_fetches_only_new(fresh_archive: LocalArchive, api_factory,
                                                               tmp_path: Path) -> None:
    api = api_factory(fresh_archive, cache_folder=tmp_path)
    first = dict(api.cache_images())
    assert len(first) == len(fresh_archive.data.visible_images(None))
    again = api_factory(fresh_archive, cache_folder=tmp_path)
    fresh_archive.clear_log()
    assert again.cache_images() == first
    assert len(fresh_archive.log) == 1 and again.request_count == 1
    added = fresh_archive.data.add_images(5)
    fresh_archive.clear_log()
    third = api_factory(fresh_archive, cache_folder=tmp_path)
    records = third.cache_images()
    visible_new = {im["_id"] for im in added if fresh_archive.data.dataset_public(im["dataset"]["_id"])}
    assert set(records) == set(first) | visible_new
    assert len(fresh_archive.log) == 1  # the page after the known ones holds all new records
    with gzip.open(tmp_path / "0" / f"imcache_{IMCACHE_ID}.json.gz") as fh:
        assert set(json.loads(fh.read())) == set(records)


def test_cached_image_loads_with_zero_requests(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    api = api_factory(archive, cache_folder=tmp_path)
    image = api.image(archive.data.visible_images(None)[3]["name"])
    image.load_imagedata()
    image.load_superpixels()
    second = api_factory(archive, cache_folder=tmp_path)
    before = second.request_count
    twin = Image(image.as_json(), second)
    twin.load_imagedata()
    twin.load_superpixels()
    twin.map_superpixels()
    assert second.request_count == before
    np.testing.assert_array_equal(twin.data, image.data)
    assert (tmp_path / image.id[-1] / f"spidx_{image.id}.npz").exists()


def test_cache_images_survives_30_percent_faults() -> None:
    config = ArchiveConfig(images=2000, datasets=3, private_datasets=0, studies=1)
    with LocalArchive(seed=21, config=config) as server:
        clean = IsicApi(hostname=server.url, api_version=1, progress=False).cache_images()
        assert len(clean) == 2000
        for kind, extra in (("status", {"status": 503}), ("status", {"status": 429, "retry_after": 0}),
                            ("status", {"status": 500}), ("reset", {}), ("truncate", {}), ("malformed", {})):
            server.faults.add(kind, r"/api/v1/image$", probability=0.05, **extra)
        api = IsicApi(hostname=server.url, api_version=1, progress=False, backoff=0.001, retries=10)
        faulty = api.cache_images()
        fired = sum(rule.fired for rule in server.faults.rules)
        assert fired >= 1
        assert faulty == clean


def test_not_found_names_what_was_asked(archive: LocalArchive, api_factory) -> None:
    api = api_factory(archive)
    with pytest.raises(NotFoundError, match="ISIC_9999999"):
        api.image("ISIC_9999999")
    with pytest.raises(KeyError):
        api.image("f" * 24)
    with pytest.raises(NotFoundError, match="No Such Study"):
        api.study("No Such Study")
    with pytest.raises(NotFoundError):
        api.dataset("nope")
    with pytest.raises(NotFoundError):
        api.annotation("not-an-id")
    with pytest.raises(QueryError):
        api.image(12.5)  # type: ignore[arg-type]


def test_listing_and_lazy_generators(archive: LocalArchive, api_factory) -> None:
    api = api_factory(archive)
    names = [r["name"] for r in api.image_list()]
    assert len(names) == len(archive.data.visible_images(None))
    assert len(api.image(params={"limit": 5})) == 5
    assert {s["name"] for s in api.study()} == {s["name"] for s in archive.data.studies if s["public"]}
    assert "ISIC Annotation Study 0" in api.studies
    datasets = api.dataset()
    assert datasets and all("name" in d for d in datasets)
    segs = api.segmentation(params={"limit": 3})
    seg = api.segmentation(segs[0]["_id"])
    assert seg.load_mask().max() == 255 and seg.area > 0


def test_annotation_overlay_and_features(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    api = api_factory(archive, cache_folder=tmp_path)
    study = api.study("ISIC Annotation Study 0")
    marked = next(a for a in study.load_annotations() if a.features)
    feature = next(iter(marked.features))
    image = marked.load_image()
    image.load_superpixels()
    values = marked.feature_values(feature, image.superpixels["max"] + 1)
    expected = archive.data.markup_values(archive.data.annotations_by_id[marked.id], feature)
    np.testing.assert_allclose(values, expected)
    out = marked.overlay(feature, filename=str(tmp_path / "overlay.png"))
    assert out.shape == image.data.shape and (tmp_path / "overlay.png").exists()
    assert study.annotations_for(feature=feature)
    # a second load comes from the stann file: no markup requests
    before = api.request_count
    again = api_factory(archive, cache_folder=tmp_path).study(study.id)
    again.load_annotations()
    assert again._api.request_count == 2  # the study record and the annotation list only
    del before


def test_secrets_never_leak(fresh_archive: LocalArchive, api_factory, tmp_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    password = fresh_archive.credentials["alice"]
    caplog.set_level(logging.DEBUG)
    api = api_factory(fresh_archive, "alice", password, cache_folder=tmp_path, debug=True)
    token = api.context.transport._token
    assert token
    api.cache_images()
    api.image("ISIC_0000001").load_imagedata()
    fresh_archive.faults.add("status", status=503)
    with pytest.raises(IsicError) as failure:
        api.study("ISIC Annotation Study 0")
    texts = [repr(api), str(api), api._repr_html_(), caplog.text, str(failure.value), repr(failure.value)]
    for text in texts:
        assert password not in text and token not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            if path.suffix == ".gz":
                content = gzip.decompress(content)
            assert password.encode() not in content and token.encode() not in content
    fresh_archive.faults.clear()
    with pytest.raises(AuthenticationError) as refused:
        api_factory(fresh_archive, "alice", "wrong-" + password)
    assert password not in str(refused.value)
    assert "Login failed" in str(refused.value)
    assert "INFO" in caplog.text or "GET" in caplog.text  # debug logging did log requests


def test_http_refused_for_remote_hosts_and_https_added() -> None:
    with pytest.raises(IsicError, match="http://"):
        IsicApi(hostname="http://isic-archive.example.org", api_version=1)
    api = IsicApi(hostname="isic-archive.example.org", api_version=1)
    assert api.base_url == "https://isic-archive.example.org/api/v1"
    assert IsicApi().base_url == "https://api.isic-archive.com/api/v2"  # today's archive: v1 is retired there
    assert IsicApi(api_version=1).base_url == "https://isic-archive.com/api/v1"


def test_cache_folder_of_another_archive_is_refused(archive: LocalArchive, api_factory, tmp_path: Path) -> None:
    api_factory(archive, cache_folder=tmp_path)
    with pytest.raises(CacheError, match="mix"):
        IsicApi(hostname="isic-archive.example.org", api_version=1, cache_folder=tmp_path)


def test_token_argument_and_logout(fresh_archive: LocalArchive, api_factory) -> None:
    token = fresh_archive.token_for("alice")
    api = api_factory(fresh_archive, token=token)
    assert api.user and api.user["login"] == "alice" and api.authenticated
    api.logout()
    assert not api.authenticated
    with pytest.raises(AuthenticationError):
        api_factory(fresh_archive, token="bad-token").image(
            next(im for im in fresh_archive.data.images if not fresh_archive.data.dataset_public(
                im["dataset"]["_id"]))["_id"])


def test_html_repr_has_thumbnail(archive: LocalArchive, api_factory) -> None:
    image = api_factory(archive).image("ISIC_0000002")
    assert "<img" not in image._repr_html_()
    image.load_imagedata()
    assert "data:image/png;base64" in image._repr_html_()
    assert "ISIC_0000002" in repr(image) and "ISIC image" in str(image)


def test_https_local_archive_with_its_ca_bundle(tmp_path: Path) -> None:
    pytest.importorskip("trustme")
    with LocalArchive(seed=4, https=True) as server:
        api = IsicApi(hostname=server.url, api_version=1, verify=server.ca_file, progress=False)
        assert api.base_url.startswith("https://") and len(api.cache_images()) > 0
        with pytest.raises(IsicError):
            IsicApi(hostname=server.url, api_version=1, progress=False, retries=0).cache_images()  # unknown CA: refused


def test_session_does_not_keep_released_images_alive(archive: LocalArchive, api_factory) -> None:
    import gc

    api = api_factory(archive)
    name = archive.data.visible_images(None)[5]["name"]
    image = api.image(name)
    image.load_imagedata()
    assert api.image(name) is image  # still held: the same object
    del image
    gc.collect()
    assert name not in api._image_objects  # released with its pixels


def test_notebook_view_shows_the_cache_folder_as_typed(archive: LocalArchive, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    api = IsicApi(hostname=archive.url, api_version=1, cache_folder="notebook-cache", progress=False)
    assert api.cache_folder == str(tmp_path / "notebook-cache")  # the attribute stays absolute
    assert "<td style='text-align:left'>notebook-cache</td>" in api._repr_html_()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other"
    shown = IsicApi(hostname=archive.url, api_version=1, cache_folder=elsewhere, progress=False)._repr_html_()
    assert str(elsewhere) in shown or "~/" in shown
