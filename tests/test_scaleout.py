"""IsicApi.map_images and Selection.to_dask_dataframe on a distributed.LocalCluster of 2 processes."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

# distributed and pandas are imported by the tests that use them: every xdist worker collects this module,
# one runs it (importing both cost each of the others 1.5 s of CPU)
if not all(importlib.util.find_spec(name) for name in ("distributed", "cloudpickle", "pandas")):
    pytest.skip("the dask extra is not installed", allow_module_level=True)

import cloudpickle  # noqa: E402

from isicarchive import IsicApi, IsicError, QueryError  # noqa: E402
from isicarchive.scaleout import ImageTaskError, SessionSpec  # noqa: E402
from isicarchive.testing import LocalArchive  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

# the workers are other processes: this module's functions travel by value, as a script's do
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def archive() -> Iterator[LocalArchive]:
    with LocalArchive(seed=61) as server:
        yield server


@pytest.fixture(scope="module")
def expected(archive: LocalArchive) -> dict[str, dict]:
    """The serial loop over ``visible(archive)``: what every Dask run over those images must equal."""
    return serial_loop(IsicApi(hostname=archive.url, api_version=1, progress=False), visible(archive))


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    import dask
    import distributed

    # Worker processes forked from a server that has imported Dask, distributed and pandas once, rather than
    # spawned interpreters that each import them again (its two workers and the one restarted after the kill
    # below cost 4 s of CPU more so). They are still processes of their own: the tasks, the function and the
    # session travel pickled, the allocator's thresholds are set in each, a SIGKILL takes one down. A cluster
    # of the library's own (client="cluster", above) spawns its workers as Dask's default is.
    # Its processes tick less while it waits for the tests between its calls (none of them looks at the profiler, the
    # event loop's ticks or the system monitor): the workers' profiler off, ticks every second instead of 20 ms,
    # the system monitor every 2 s instead of 500 ms; 0.09 s of CPU less per second of its life. Read when the
    # scheduler, the nannies and their workers are made (a restarted worker gets its nanny's), so set for that alone:
    # the clusters the tests make themselves have Dask's defaults.
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        with dask.config.set({"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                              "distributed.admin.system-monitor.interval": "2s"}):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               dashboard_address=":0", silence_logs=40)
        with cluster, distributed.Client(cluster) as dask_client:
            yield dask_client


def colours(image) -> dict:
    """Mean colour of every superpixel, summarised."""
    idx = image.superpixels["idx"].ravel()
    pixels = image.data.reshape(-1, image.data.shape[-1])[:, :3].astype(np.float64)
    counts = np.bincount(idx, minlength=image.superpixels["max"] + 1)
    red = np.bincount(idx, pixels[:, 0], minlength=counts.size) / np.maximum(counts, 1)
    return {"superpixels": int(counts.size), "red": float(red.sum()), "height": int(image.data.shape[0])}


def serial_loop(api: IsicApi, ids: list[str]) -> dict[str, dict]:
    """What a user writes by hand: the reference every Dask run must equal."""
    out = {}
    for image_id in ids:
        image = api.image(image_id)
        image.load_imagedata()
        image.load_superpixels(map_superpixels=True)
        out[image.id] = colours(image)
    return out


def rows(frame: pd.DataFrame) -> dict[str, dict]:
    return {str(i): {"superpixels": int(r.superpixels), "red": float(r.red), "height": int(r.height)}
            for i, r in frame.iterrows()}


def visible(archive: LocalArchive, n: int = 12) -> list[str]:
    # 12 images: six tasks of two on the module cluster, each worker has several (24 cost 1.4 s of CPU more)
    return [r["_id"] for r in archive.data.visible_images(None)[:n]]


# the tests that need no module cluster come first: that cluster's scheduler and workers would tick on through them
def test_a_function_that_cannot_travel_is_refused_before_any_work(archive: LocalArchive) -> None:
    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    lock = threading.Lock()
    before = api.request_count
    with pytest.raises(IsicError, match="cannot be sent to Dask workers"):
        api.map_images(lambda image: {"locked": lock.locked()}, visible(archive, 3))
    assert api.request_count == before  # not even the records were looked up
    with pytest.raises(QueryError, match="known parts"):
        api.map_images(colours, visible(archive, 3), load=("pixels",))
    with pytest.raises(QueryError, match="distributed.Client"):
        api.map_images(colours, visible(archive, 3), client="gpu")


def test_a_local_scheduler_does_not_look_for_a_cluster(archive: LocalArchive,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Dask, given a scheduler's name, asks distributed for a running client first: that import costs a first
    # call about a second, and the threads, processes and sync schedulers need no cluster
    import distributed

    asked = []

    def current(*args: object, **kwargs: object) -> None:
        asked.append(args)
        raise ValueError("no client")

    monkeypatch.setattr(distributed.Client, "current", current)
    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    ids = visible(archive, 2)
    for scheduler in ("threads", "sync", None):
        assert sorted(api.map_images(lambda image: {"id": image.id}, ids, client=scheduler, load=()).index) == \
            sorted(ids)
    assert asked == []


def test_lazy_form_and_selection_dataframes(archive: LocalArchive, expected: dict[str, dict]) -> None:
    import pandas as pd

    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    ids = visible(archive, 10)
    lazy = api.map_images(colours, ids, load=("imagedata", "superpixels"), compute=False, npartitions=3)
    assert lazy.npartitions == 3 and list(lazy.columns) == ["superpixels", "red", "height", "error"]
    assert rows(lazy.compute(scheduler="sync")) == {image_id: expected[image_id] for image_id in ids}
    selection = api.select_images(["meta.clinical.age_approx", ">=", 0])
    plain = selection.to_dataframe()
    spread = selection.to_dask_dataframe(npartitions=4)
    assert spread.npartitions == 4 and list(spread.columns) == list(plain.columns)
    pd.testing.assert_frame_equal(spread.compute(), plain, check_dtype=False, check_index_type=False)
    with pytest.raises(QueryError):
        selection.to_dask_dataframe(npartitions=0)


def worker_settings(image) -> dict:
    import dask

    return {"pid": os.getpid(), "profiler": dask.config.get("distributed.worker.profile.enabled"),
            "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "mmap": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def test_cluster_workers_run_without_the_profiler_and_with_fixed_allocator_thresholds(
        archive: LocalArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    # each slowed CPU-bound per-image work in a worker below the same work in one process (docs/benchmarks.md);
    # an earlier cluster of this process leaves Dask's threshold in its environment, which Dask lets win
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    # the cluster it starts has a worker process per core: one is enough to look into (a second cost 2.5 s of CPU)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    import dask
    import distributed  # noqa: F401  (its defaults loaded first: leaving the set below would take them away)

    # spawned, as Dask's default has it (the module's cluster below forks from a forkserver, whichever test runs first)
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        frame = api.map_images(worker_settings, visible(archive, 4), client="cluster", load=(), progress=False)
    assert frame["error"].isna().all() and len(frame) == 4
    assert set(frame["profiler"]) == {False}
    assert set(frame["trim"]) == {str(128 << 20)} and set(frame["mmap"]) == {str(64 << 20)}
    assert os.getpid() not in set(frame["pid"])  # worker processes, not this one
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's environment as it was


def allocator_state(image) -> dict:
    """In the worker: what mallopt was told, and the fewest page faults of freeing and reallocating 20 MB
    (of three tries).

    Only this thread's faults count (RUSAGE_THREAD): the worker's other threads (its event loop, the
    profiler, the memory monitor) fault pages of their own, more of them on a loaded machine. The fewest,
    not the sum: a thread that finds its malloc arena locked by another takes a fresh one for that block
    (one try of a full run faulted 505 pages so), and without the thresholds every try faults again.
    """
    import resource

    import numpy as np

    from isicarchive import allocator

    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = np.ones(20 << 20, np.uint8)
        block.sum()
        del block
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    return {"pid": os.getpid(), "applied": str(allocator.applied()), "faults": min(faults[1:]),
            "trim_env": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_plain_clusters_workers_get_the_allocator_thresholds(archive: LocalArchive) -> None:
    # a cluster made as Dask's docs show, its worker spawned (Dask's default; not the module cluster's forkserver,
    # whose malloc was set up when it started, so that its forked workers may not have Dask's setting): the worker
    # starts with Dask's MALLOC_TRIM_THRESHOLD_=65536, which gives every freed block back to the system; the
    # library sets its thresholds inside it
    import dask
    import distributed

    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=40) as cluster, distributed.Client(cluster) as client:
        frame = api.map_images(allocator_state, visible(archive, 4), client=client, load=(), progress=False)
        assert frame["error"].isna().all() and len(frame) == 4
        assert os.getpid() not in set(frame["pid"])
        assert set(frame["applied"]) == {str({"M_TRIM_THRESHOLD": True, "M_MMAP_THRESHOLD": True})}
        # without the thresholds the freed block is faulted in again (about 520 pages each time)
        assert frame["faults"].max() < 100, frame["faults"].tolist()
        applied = client.run(lambda: __import__("isicarchive.allocator").allocator.applied())  # type: ignore[attr-defined]
        assert all(state == {"M_TRIM_THRESHOLD": True, "M_MMAP_THRESHOLD": True} for state in applied.values())
        # Dask's profiler samples every 10 ms in such a worker; the plugin slows it, and puts it back when removed
        assert set(client.run(profile_period).values()) == {100}
        client.unregister_worker_plugin("isicarchive-allocator")
        assert set(client.run(profile_period).values()) == {10}


def profile_period(dask_worker: object) -> float:
    return dask_worker.periodic_callbacks["profile"].callback_time  # type: ignore[attr-defined]


def test_results_identical_to_the_serial_loop(archive: LocalArchive, client: object, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture, expected: dict[str, dict]) -> None:
    ids = visible(archive)
    api = IsicApi(hostname=archive.url, api_version=1, cache_folder=tmp_path, progress=True)
    frame = api.map_images(colours, ids, client=client, load=("imagedata", "superpixels"))
    assert list(frame.index) == ids and frame.index.name == "id"
    assert list(frame.columns) == ["superpixels", "red", "height", "error"]
    assert rows(frame) == expected and frame["error"].isna().all()
    assert f"Dask dashboard at {client.dashboard_link}" in capsys.readouterr().err  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="isicarchive.progress"):
        by_threads = api.map_images(colours, ids, client="threads", load=("imagedata", "superpixels"))
    assert rows(by_threads) == expected
    # the progress of a local run (a tqdm bar at a terminal, log lines here: nobody watches the tests)
    assert f"Images: {len(ids)}/{len(ids)} image" in caplog.text


def test_failures_become_rows_unless_strict(archive: LocalArchive, client: object) -> None:
    ids = visible(archive, 12)
    doomed = set(ids[::4])

    def sometimes(image) -> dict:
        if image.id in doomed:
            raise ValueError(f"no luck with {image.id}")
        return {"rows": int(image.data.shape[0])}

    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    frame = api.map_images(sometimes, ids, client=client)
    failed = frame[frame["error"].notna()]
    assert set(failed.index) == doomed
    assert all(failed.loc[i, "error"] == f"ValueError: no luck with {i}" for i in doomed)
    assert frame.loc[[i for i in ids if i not in doomed], "rows"].notna().all()
    with pytest.raises(ImageTaskError, match="ValueError: no luck") as caught:
        api.map_images(sometimes, ids, client=client, strict=True)
    assert caught.value.image_id in doomed


def test_a_killed_worker_costs_only_its_tasks(archive: LocalArchive, client: object, tmp_path: Path,
                                              expected: dict[str, dict]) -> None:
    ids = visible(archive)
    marker = tmp_path / "killed"
    victim = ids[len(ids) // 2]

    def dies_once(image) -> dict:
        if image.id == victim and not marker.exists():
            marker.write_text("the worker was killed here")
            os.kill(os.getpid(), signal.SIGKILL)
        return colours(image)

    cache = tmp_path / "cache"
    api = IsicApi(hostname=archive.url, api_version=1, cache_folder=cache, progress=False)
    frame = api.map_images(dies_once, ids, client=client, load=("imagedata", "superpixels"), npartitions=6)
    assert marker.exists()
    assert rows(frame) == expected
    assert_cache_valid(cache)


def assert_cache_valid(cache: Path) -> None:
    import imageio.v3 as iio

    files = [p for p in cache.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".part")]
    for path in files:
        if path.suffix in (".jpg", ".png"):
            assert iio.imread(path).size
        elif path.suffix == ".npz":
            with np.load(path) as data:
                assert all(data[name].size for name in data.files)


def test_two_clusters_share_one_cache_folder(archive: LocalArchive, client: object, tmp_path: Path,
                                            expected: dict[str, dict]) -> None:
    import distributed

    ids = visible(archive)
    cache = tmp_path / "shared"
    outcomes: dict[str, pd.DataFrame] = {}
    # the second cluster's worker is a thread pool of this process (a third worker process cost 3 s of CPU): its
    # two threads and the module cluster's two worker processes fill the same cache folder at once
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
                                  silence_logs=40) as other, distributed.Client(other) as second:

        def run(name: str, dask_client: object) -> None:
            api = IsicApi(hostname=archive.url, api_version=1, cache_folder=cache, progress=False)
            outcomes[name] = api.map_images(colours, ids, client=dask_client, load=("imagedata", "superpixels"))

        threads = [threading.Thread(target=run, args=pair) for pair in (("first", client), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert rows(outcomes["first"]) == expected == rows(outcomes["second"])
    assert len(list(cache.rglob("image_*.jpg"))) == len(ids)
    assert_cache_valid(cache)


def test_credentials_of_a_signed_in_session_reach_the_workers(archive: LocalArchive, client: object) -> None:
    hidden = {d["_id"] for d in archive.data.datasets if not d["public"]}
    private = [r["_id"] for r in archive.data.images if r["dataset"]["_id"] in hidden][:4]
    assert private
    alice = IsicApi("alice", archive.credentials["alice"], hostname=archive.url, api_version=1, progress=False)
    frame = alice.map_images(lambda image: {"rows": image.data.shape[0]}, private, client=client)
    assert frame["error"].isna().all() and (frame["rows"] > 0).all()
    # the token travels only inside the tasks' argument: not in its repr, not in the task names
    token = alice.context.transport._token
    assert token and token not in repr(SessionSpec.of(alice))
    lazy = alice.map_images(lambda image: {"rows": image.data.shape[0]}, private, compute=False)
    assert token not in str(list(dict(lazy.__dask_graph__()).keys()))
    # an anonymous session's workers cannot read them
    anonymous = IsicApi(hostname=archive.url, api_version=1, progress=False)
    records = [alice.image(i).as_json() for i in private]
    refused = anonymous.map_images(lambda image: {"rows": image.data.shape[0]}, records, client=client)
    assert refused["error"].str.startswith("AuthenticationError").all()



def slow_label(label: str) -> Callable[[object], dict]:
    def run(image: object) -> dict:
        time.sleep(0.3)  # both calls' tasks are on the cluster at once
        return {"which": label}
    return run


def test_two_calls_over_one_session_get_their_own_results(archive: LocalArchive, client: object) -> None:
    # task names were the partition and the session alone: while the first call's tasks were still on the
    # cluster, a second call over the same session was handed their results (other images, another function)
    api = IsicApi(hostname=archive.url, api_version=1, progress=False)
    first, second = visible(archive, 8)[:4], visible(archive, 8)[4:]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        one = pool.submit(api.map_images, slow_label("first"), first, client=client, load=(), progress=False)
        two = pool.submit(api.map_images, slow_label("second"), second, client=client, load=(), progress=False)
        one_frame, two_frame = one.result(timeout=60), two.result(timeout=60)
    assert list(one_frame.index) == first and set(one_frame["which"]) == {"first"}
    assert list(two_frame.index) == second and set(two_frame["which"]) == {"second"}
