"""The framework-agnostic training core: labels, missing targets, shards, no request per sample, sessions
in forked and spawned processes (no torch needed)."""

from __future__ import annotations

import io
import multiprocessing
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from isicarchive import IsicApi
from isicarchive.errors import MissingTargetError, QueryError
from isicarchive.legacy import V2_DIAGNOSIS_PATHS
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.training import (
    Samples,
    SessionHandle,
    SharedEpoch,
    decode_pixels,
    epoch_order,
    shard_indices,
    target_value,
)
from tests.conftest import make_api
from tests.training_children import epoch_after_go, read_in_child


@pytest.fixture(scope="module")
def server() -> Any:
    with LocalArchive(seed=23, config=ArchiveConfig(images=24)) as archive:
        yield archive


def _diagnosed(api: IsicApi) -> Any:
    return api.select_images([["meta.clinical.diagnosis", "not is None"]])


def _decode_file(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)))


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize("version", [1, 2])
def test_classes_targets_and_weights_as_torchvision_has_them(server: LocalArchive, version: int) -> None:
    api = make_api(server, api_version=version)
    selection = _diagnosed(api)
    samples = Samples(selection, target="diagnosis_1")
    # the first node of each legacy term's path in today's hierarchy (v2 records carry it as written)
    expected = [V2_DIAGNOSIS_PATHS[r["meta"]["clinical"]["diagnosis"]][0] for r in selection.values()]
    assert samples.classes == sorted(set(expected))
    assert samples.class_to_idx == {c: i for i, c in enumerate(samples.classes)}
    assert [samples.classes[t] for t in samples.targets] == expected
    counts = Counter(samples.targets)
    weights = samples.class_weights()
    # inverse frequency: n / (k * n_c), so that weights times counts are equal for every class
    assert [weights[c] * counts[c] for c in range(len(samples.classes))] == pytest.approx(
        [len(samples) / len(samples.classes)] * len(samples.classes))
    assert samples.record(0) == selection[samples.ids[0]] and samples.record(0) is not selection[samples.ids[0]]


def test_legacy_names_on_v2_and_todays_names_on_v1() -> None:
    v1 = {"_id": "a", "meta": {"clinical": {"diagnosis": "basal cell carcinoma", "benign_malignant": "malignant"}}}
    v2 = {"isic_id": "ISIC_1", "metadata": {"clinical": {"diagnosis_1": "Benign", "diagnosis_2":
                                                          "Benign melanocytic proliferations", "diagnosis_3": "Nevus"}}}
    assert target_value(v1, "diagnosis_1") == "Malignant"
    assert target_value(v1, "diagnosis_3") == "Basal cell carcinoma"
    assert target_value(v1, "diagnosis_4") is None
    assert target_value(v1, "benign_malignant") == "malignant"
    assert target_value(v2, "diagnosis") == "nevus"
    assert target_value(v2, "benign_malignant") == "benign"
    assert target_value(v2, "metadata.clinical.diagnosis_2") == "Benign melanocytic proliferations"


def test_missing_target_says_how_many_unless_kept_or_dropped(server: LocalArchive) -> None:
    api = make_api(server, api_version=2)
    every = api.select_images([["isic_id", "not is None"]])
    lacking = [k for k, r in every.items() if not (r.get("metadata") or {}).get("clinical", {}).get("diagnosis_3")]
    assert 0 < len(lacking) < len(every)
    with pytest.raises(MissingTargetError, match=f"{len(lacking)} of {len(every)} images have no diagnosis_3") as err:
        Samples(every, target="diagnosis_3")
    assert err.value.count == len(lacking) and sorted(err.value.ids) == sorted(lacking)
    assert pickle.loads(pickle.dumps(err.value)).count == len(lacking)  # it comes back from worker processes
    kept = Samples(every, target="diagnosis_3", missing="keep")
    assert len(kept) == len(every) and [kept.ids[i] for i, t in enumerate(kept.targets) if t == -1] == lacking
    assert sum(w * c for w, c in zip(kept.class_weights(), np.bincount([t for t in kept.targets if t >= 0]),
                                     strict=True)) == pytest.approx(len(every) - len(lacking))
    dropped = Samples(every, target="diagnosis_3", missing="drop")
    assert len(dropped) == len(every) - len(lacking) and not set(dropped.ids) & set(lacking)
    with pytest.raises(QueryError, match="not among the classes given"):
        Samples(every, target="diagnosis_1", classes=["Benign"])
    with pytest.raises(QueryError, match="missing must be one of"):
        Samples(every, missing="ignore")


# ------------------------------------------------------------------ shards
@pytest.mark.parametrize("n, world_size, num_workers", [(25, 2, 2), (7, 3, 2), (1, 2, 2), (100, 1, 3)])
def test_shards_cover_every_sample_once(n: int, world_size: int, num_workers: int) -> None:
    for epoch in (0, 1):
        dealt = [shard_indices(n, seed=3, epoch=epoch, rank=r, world_size=world_size, worker=w,
                               num_workers=num_workers) for r in range(world_size) for w in range(num_workers)]
        flat = [i for shard in dealt for i in shard]
        assert sorted(flat) == list(range(n))  # no duplicate, no gap
        # a rank whose loader takes its workers' samples in turn reads its share in the epoch's order
        order = epoch_order(n, seed=3, epoch=epoch).tolist()
        for r in range(world_size):
            mine = dealt[r * num_workers:(r + 1) * num_workers]
            interleaved = [shard[k] for k in range(max(map(len, mine))) for shard in mine if k < len(shard)]
            assert interleaved == order[r::world_size]
    assert shard_indices(50, seed=1, epoch=2) == shard_indices(50, seed=1, epoch=2)
    assert shard_indices(50, seed=1, epoch=2) != shard_indices(50, seed=1, epoch=3)
    assert shard_indices(5, shuffle=False) == [0, 1, 2, 3, 4]
    with pytest.raises(QueryError, match="rank 2 is not one of the 2 ranks"):
        shard_indices(5, rank=2, world_size=2)


# --------------------------------------------------------- request counts
@pytest.mark.parametrize("version", [1, 2])
def test_a_warm_cache_epoch_sends_no_request(fresh_archive: LocalArchive, tmp_path: Path, version: int) -> None:
    api = make_api(fresh_archive, api_version=version, cache_folder=tmp_path)
    samples = Samples(_diagnosed(api), target="benign_malignant")
    cold = dict(samples.stream(range(len(samples))))  # the first epoch fills the cache
    fresh_archive.clear_log()
    sent = api.request_count
    warm = dict(samples.stream(range(len(samples))))
    warm.update((i, samples.pixels(i)) for i in range(3))
    assert fresh_archive.log == [] and api.request_count == sent
    assert all(np.array_equal(cold[i], warm[i]) for i in cold)
    # the pixels are the cached file's, decoded
    path = api.context.store.image_path(samples.records[0])
    assert path is not None and np.array_equal(warm[0], _decode_file(path.read_bytes()))


@pytest.mark.parametrize("version", [1, 2])
def test_an_image_from_a_record_in_hand_costs_no_request(fresh_archive: LocalArchive, version: int) -> None:
    records = list(_diagnosed(make_api(fresh_archive, api_version=version)).values())[:3]
    api = make_api(fresh_archive, api_version=version)  # a new session: no image cache, no objects
    fresh_archive.clear_log()
    image = api.image(records[0])
    images = api.images_for(records)
    assert fresh_archive.log == []
    assert image.id == images[0].id and image.meta and [i.as_json() for i in images] == records
    other = make_api(fresh_archive, api_version=version)
    ids = Samples([r["_id"] for r in records], api=other, target="benign_malignant").ids  # ids need a look-up
    assert ids == [r["_id"] for r in records] and fresh_archive.log


def test_a_list_of_ids_needs_a_session(server: LocalArchive) -> None:
    with pytest.raises(QueryError, match="pass api="):
        Samples(["ISIC_0000000"])


def test_an_archive_on_disk(server: LocalArchive, tmp_path: Path) -> None:
    api = make_api(server, api_version=2)
    api.download_images(_diagnosed(api), tmp_path / "folder", strict=True)
    disk = IsicApi(hostname=(tmp_path / "folder").as_uri(), progress=False)
    samples = Samples(disk.select_images([["meta.clinical.diagnosis", "not is None"]]), target="diagnosis_1")
    assert len(samples) == len(_diagnosed(api))
    first = tmp_path / "folder" / f"{samples.ids[0]}.jpg"
    assert np.array_equal(samples.pixels(0), _decode_file(first.read_bytes()))
    assert disk.request_count == 0


def test_decode_refuses_what_is_no_image() -> None:
    from isicarchive.errors import IsicError

    with pytest.raises(IsicError, match="does not decode"):
        decode_pixels(b"<html>nope</html>")
    from isicarchive import limits
    from isicarchive.pixels import ImageTooLargeError

    big = io.BytesIO()
    PILImage.new("RGB", (300, 200)).save(big, format="JPEG")
    previous = limits.configure(max_pixels=50_000)
    try:
        with pytest.raises(ImageTooLargeError, match="60,000 pixels"):
            decode_pixels(big.getvalue())
    finally:
        limits.configure(max_pixels=previous.max_pixels)
    grey = io.BytesIO()
    PILImage.fromarray(np.full((4, 5), 7, np.uint8)).save(grey, format="PNG")
    assert decode_pixels(grey.getvalue()).shape == (4, 5, 1)


# ------------------------------------------------------- fork and spawn
def _private_samples(server: LocalArchive, api: IsicApi, count: int) -> Samples:
    private = [k for k, r in api.cache_images().items() if not server.data.dataset_public(r["dataset"]["_id"])]
    assert len(private) >= count
    return Samples(private[:count], api=api, target="benign_malignant", missing="keep")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_processes_open_their_own_connections(server: LocalArchive, method: str) -> None:
    # signed in, over private images: the children read them with the session's credentials (a spawned child
    # with those its pickled copy brought); no cache folder: every read is a request
    api = make_api(server, api_version=1, token=server.token_for("alice"))
    samples = _private_samples(server, api, 4)
    expected = [samples.pixels(i).tobytes() for i in range(4)]  # the parent's pool holds a live connection now
    assert len(api.context.transport.session.adapters["http://"].poolmanager.pools) == 1  # type: ignore[attr-defined]
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    # two forked children share the parent's memory, sockets included; a spawned child (a new interpreter,
    # ~0.5 s of CPU) gets a pickled copy, and one shows what that copy opens
    count = 2 if method == "fork" else 1
    children = [context.Process(target=read_in_child, args=(samples, [0, 1, 2, 3], queue)) for _ in range(count)]
    for child in children:
        child.start()
    mine = [samples.pixels(i).tobytes() for i in (0, 1, 2, 3)]  # the parent reads meanwhile
    answers = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert mine == expected
    for answer in answers:
        assert not isinstance(answer, str), answer
        pools, pixels, _ = answer
        # a forked child's inherited session holds no connection yet (the parent's are not shared); a spawned
        # child's copy signed in anew (GET user/me) on one of its own
        assert pools == (0 if method == "fork" else 1)
        assert pixels == expected


def test_a_pickled_session_reopens_with_its_credentials(server: LocalArchive) -> None:
    token = server.token_for("alice")
    api = make_api(server, api_version=1, token=token)
    samples = _private_samples(server, api, 2)
    handle = pickle.loads(pickle.dumps(samples.session))
    assert token not in repr(handle) and token not in repr(samples.session)
    assert isinstance(handle, SessionHandle) and handle.api is not api and handle.api.authenticated
    # the private images read through the copy (a spawned process reads them so in the connections test above)
    copy = pickle.loads(pickle.dumps(samples))
    assert [copy.pixels(i).tobytes() for i in range(2)] == [samples.pixels(i).tobytes() for i in range(2)]
    # the session itself pickles the same way
    again = pickle.loads(pickle.dumps(api))
    assert again.authenticated and again.base_url == api.base_url and again is not api


def test_cached_files_are_listed_once_and_refetched_when_cleaned(fresh_archive: LocalArchive, tmp_path: Path) -> None:
    api = make_api(fresh_archive, api_version=2, cache_folder=tmp_path)
    samples = Samples(_diagnosed(api), target="benign_malignant")
    cache = api.context.cache
    assert cache is not None and cache.find_images(samples.ids) == {}
    first = [samples.image_bytes(i) for i in range(3)]
    cached = cache.find_images(samples.ids)
    assert set(cached) == set(samples.ids[:3])
    assert all(cache.find_image(key) == path for key, path in cached.items())
    stray = cache.path("image", samples.ids[5], "_x.jpg.lock")  # a lock is no image
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"")
    assert cache.find_images(samples.ids[:2] + samples.ids[5:6]) == {k: cached[k] for k in samples.ids[:2]}
    cached[samples.ids[0]].unlink()  # the cache was cleaned meanwhile
    fresh_archive.clear_log()
    assert samples.image_bytes(0) == first[0] and len(fresh_archive.requests("storage|download")) == 1


def test_a_corrupt_cached_file_is_fetched_again(fresh_archive: LocalArchive, tmp_path: Path) -> None:
    from isicarchive.cache import CacheCorruptionWarning

    api = make_api(fresh_archive, api_version=2, cache_folder=tmp_path)
    selection = _diagnosed(api)
    api.download_images(selection, strict=True)
    samples = Samples(selection, target="benign_malignant")
    path = api.context.store.image_path(samples.records[0])
    assert path is not None
    path.write_bytes(b"\xff\xd8\xff\xe0 cut short")  # a JPEG's first bytes, then nothing that decodes
    fresh_archive.clear_log()
    with pytest.warns(CacheCorruptionWarning, match="corrupt"):
        pixels = samples.pixels(0)
    original = fresh_archive.data.image_jpeg(fresh_archive.data.images_by_name[samples.ids[0]]["_id"])
    assert np.array_equal(pixels, _decode_file(original))
    assert len(fresh_archive.requests("/storage/")) == 1 and path.read_bytes() == original
    assert np.array_equal(samples.pixels(0), pixels) and len(fresh_archive.requests("/storage/")) == 1


def _read_without_listing(samples: Samples, queue: Any) -> None:
    import os

    listed: list[str] = []
    listdir = os.listdir
    os.listdir = lambda *args: listed.append(str(args)) or listdir(*args)  # type: ignore[assignment,func-returns-value]
    try:
        queue.put(([samples.image_bytes(i) for i in range(len(samples))], listed))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        queue.put(repr(exc))
    finally:
        os.listdir = listdir


def _answer_of_a_child(method: str, target: Any, samples: Samples) -> Any:
    """What ``target(samples, queue)`` puts on the queue, run in a child process started by ``method``."""
    context = multiprocessing.get_context(method)
    answers = context.Queue()
    child = context.Process(target=target, args=(samples, answers))
    child.start()
    answer = answers.get(timeout=60)
    child.join(timeout=30)
    return answer


@pytest.mark.parametrize("method", ["fork", "pickled"])
def test_worker_processes_read_the_files_found_when_the_samples_were_made(
        fresh_archive: LocalArchive, tmp_path: Path, method: str) -> None:
    api = make_api(fresh_archive, api_version=2, cache_folder=tmp_path)
    selection = _diagnosed(api)
    api.download_images(selection, strict=True)
    samples = Samples(selection, target="benign_malignant")
    if method == "pickled":  # what a spawned worker receives (read here: a spawned process costs ~1 s of imports)
        import queue as queues

        answers: Any = queues.Queue()
        _read_without_listing(pickle.loads(pickle.dumps(samples)), answers)
        answer = answers.get_nowait()
    else:
        answer = _answer_of_a_child(method, _read_without_listing, samples)
    assert not isinstance(answer, str), answer
    read, listed = answer
    # no cache folder listed again in the worker (each listing cost a data-loader worker ~0.1 s per epoch)
    assert listed == []
    assert read == [api.context.store.image_path(r).read_bytes() for r in samples.records]  # type: ignore[union-attr]


def _count_look_ups(samples: Samples, queue: Any) -> None:
    from isicarchive.cache import Cache

    looked: list[str] = []
    find_image = Cache.find_image
    Cache.find_image = lambda self, key: looked.append(key) or find_image(self, key)  # type: ignore[method-assign,func-returns-value]
    try:
        queue.put(([samples.image_bytes(i) for i in range(len(samples))], looked))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        queue.put(repr(exc))


def test_a_cache_filled_after_the_samples_were_made_is_listed_once_per_worker(
        fresh_archive: LocalArchive, tmp_path: Path) -> None:
    api = make_api(fresh_archive, api_version=2, cache_folder=tmp_path)
    selection = _diagnosed(api)
    samples = Samples(selection, target="benign_malignant")  # on a cold cache
    api.download_images(selection, strict=True)
    fresh_archive.clear_log()
    answer = _answer_of_a_child("fork", _count_look_ups, samples)
    assert not isinstance(answer, str), answer
    read, looked = answer
    assert looked == []  # one listing of the cache in the worker, not a look-up per sample (a glob each)
    assert read == [api.context.store.image_path(r).read_bytes() for r in samples.records]  # type: ignore[union-attr]
    assert fresh_archive.log == []


def _fill(samples: Samples, queue: Any) -> None:
    try:
        queue.put([samples.image_bytes(i) for i in range(len(samples))])
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        queue.put(repr(exc))


def test_workers_share_one_cache_and_fetch_each_file_once(fresh_archive: LocalArchive, tmp_path: Path) -> None:
    api = make_api(fresh_archive, api_version=2, cache_folder=tmp_path)
    samples = Samples(list(_diagnosed(api).values())[:6], api=api, target="benign_malignant")
    fresh_archive.clear_log()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_fill, args=(samples, queue)) for _ in range(3)]
    for child in children:
        child.start()
    answers = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert all(not isinstance(a, str) for a in answers), answers
    assert answers[0] == answers[1] == answers[2]
    # three processes, one cache: every file fetched once (the others waited on its lock, then read it)
    assert len(fresh_archive.requests("/storage/")) == len(samples)


def test_credentials_stay_out_of_logs(server: LocalArchive, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    token = server.token_for("alice")
    caplog.set_level(logging.DEBUG)
    api = make_api(server, api_version=1, token=token, debug=True)
    private = [k for k, r in api.cache_images().items() if not server.data.dataset_public(r["dataset"]["_id"])]
    samples = Samples(private[:2], api=api, target="benign_malignant", missing="keep")
    reopened = pickle.loads(pickle.dumps(samples))
    assert [reopened.pixels(i).shape for i in range(2)] == [samples.pixels(i).shape for i in range(2)]
    assert "GET" in caplog.text and token not in caplog.text
    assert token not in repr(samples) + repr(reopened.session) + repr(samples.session)


def test_an_unpickled_transport_opens_its_own_pool(server: LocalArchive) -> None:
    api = make_api(server, api_version=1, token=server.token_for("alice"))
    transport = api.context.transport
    transport.get_json("user/me")
    copy = pickle.loads(pickle.dumps(transport))
    assert copy.session is not transport.session and copy.authenticated
    assert not copy.session.adapters["http://"].poolmanager.pools  # type: ignore[attr-defined]
    assert copy.get_json("user/me")["login"] == "alice"
    assert transport.get_json("user/me")["login"] == "alice"  # the original's connections are untouched


def test_masks_of_a_release_on_disk(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from isicarchive import releases
    from isicarchive.releases import sample

    sample.write("isic2018-task1", tmp_path / "release")
    session = releases.open("isic2018-task1", tmp_path / "release", cache_folder=tmp_path / "cache", check_counts=False)
    selection = session.select_images([["isic_id", "not is None"]])
    masks = Samples(selection, target="mask", missing="drop")
    assert 0 < len(masks) <= len(selection)
    for index, image_id in enumerate(masks.ids):
        assert np.array_equal(masks.mask(index), releases.mask(session, image_id))
        assert masks.pixels(index).shape[:2] == masks.mask(index).shape
    assert session.request_count == 0


def test_a_kept_worker_process_follows_the_epoch_set_after_it_started() -> None:
    # a loader's persistent workers are started once, in the first epoch: a spawned one (the epoch pickled into
    # it) still sees each later set_epoch; a plain number copied into it stayed at the first epoch's order
    epoch = SharedEpoch(1)
    context = multiprocessing.get_context("spawn")
    started, go, queue = context.Event(), context.Event(), context.Queue()
    child = context.Process(target=epoch_after_go, args=(epoch, started, go, queue))
    child.start()
    try:
        assert started.wait(60)
        epoch.value = 2
        go.set()
        assert queue.get(timeout=60) == 2
    finally:
        child.join(timeout=30)
    # pickled outside a process start (saved, copied), it is the number and a cell of its own
    saved = pickle.loads(pickle.dumps(epoch))
    epoch.value = 3
    assert (saved.value, epoch.value) == (2, 3) and repr(saved) == "SharedEpoch(2)"
