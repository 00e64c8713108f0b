"""Per-image work on Dask (``IsicApi.map_images``) against a plain serial loop, same archive, same run.

The local archive runs in its own process with images of a realistic size.
Runs, each checked to give results identical to the serial loop:

* CPU-bound: decode + superpixel map + mean colour of every superpixel, over
  N images already in the cache: the serial loop and ``LocalCluster(n_workers=2)``
  made as Dask's docs show (alternating run by run; wall time and the workers'
  CPU time per image), the same cluster without the library's run-time worker
  settings, a cluster started with ``worker_settings()``, Dask's threaded
  scheduler;
* machinery overhead: a function that does nothing (ms per image);
* download-bound: the same work with an empty cache and ``--latency`` per
  response, the default ``map_images`` (a local cluster) against the serial loop;
* a worker SIGKILLed at about half of the run: the run completes, identical
  results, every cached file still decodes.

    python benchmarks/scaleout.py [--images 300] [--latency 0.05] [--size 640x480] [--download-images 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best_of as timed

from isicarchive.scaleout import worker_settings

SERVER = r"""
import sys, time
from isicarchive.testing import LocalArchive
from isicarchive.testing.generator import ArchiveConfig, ArchiveData
width, height = (int(v) for v in sys.argv[2].split("x"))
config = ArchiveConfig(images=int(sys.argv[1]), private_datasets=0, image_size=(width, height))
with LocalArchive(data=ArchiveData(seed=7, config=config), latency=float(sys.argv[3])) as archive:
    print(archive.url, flush=True)
    while True:
        time.sleep(3600)
"""


def superpixel_colours(image) -> dict:
    """Mean colour of every superpixel (the worked example of docs/scaling-out.md)."""
    idx = image.superpixels["idx"].ravel()
    pixels = image.data.reshape(-1, image.data.shape[-1])[:, :3].astype(np.float64)
    counts = np.bincount(idx, minlength=image.superpixels["max"] + 1)
    means = np.stack([np.bincount(idx, pixels[:, c], minlength=counts.size) for c in range(3)], axis=1)
    means /= np.maximum(counts, 1)[:, None]
    return {"superpixels": int(counts.size), "digest": hashlib.sha1(means.round(6).tobytes()).hexdigest()}


def nothing(image) -> dict:
    return {}


def serial(api, records: list[dict], load: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for record in records:
        image = api.image(record)  # from the record in hand, as map_images does: no look-up
        if "imagedata" in load:
            image.load_imagedata()
        if "superpixels" in load:
            image.load_superpixels(map_superpixels=True)
        out[image.id] = superpixel_colours(image)
        image.clear_data()
    return out


def same(frame, expected: dict[str, dict]) -> bool:
    got = {i: {"superpixels": int(r.superpixels), "digest": r.digest} for i, r in frame.iterrows()}
    return got == expected and frame["error"].isna().all()


def start(images: int, size: str, latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(images), size, str(latency)],
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--download-images", type=int, default=100,
                        help="images of the download-bound run (at most 256: the local archive keeps as many rendered)")
    parser.add_argument("--size", default="640x480", help="pixels of the CPU-bound run's images")
    parser.add_argument("--download-size", default="320x240",
                        help="pixels of the download-bound run's images (the local archive renders each on request: "
                             "large ones would measure its rendering, not the transfers)")
    args = parser.parse_args()
    from distributed import Client

    from isicarchive import IsicApi

    load = ("imagedata", "superpixels")
    # --- CPU-bound, warm cache
    server, url = start(args.images, args.size, 0.0)
    try:
        with tempfile.TemporaryDirectory() as cache:
            api = IsicApi(hostname=url, api_version=1, cache_folder=cache, progress=False)
            records = list(api.cache_images().values())[: args.images]
            api.download_images(records, superpixels=True).raise_for_failures()
            serial(api, records, load)  # once untimed: it writes the spidx index files every run below reads
            # the target's comparison: the serial loop against a cluster made as Dask's docs show, alternating
            # run by run (the same load for both), and the same cluster before the library's run-time settings
            # (mallopt, the slower profiler: isicarchive.allocator), turned off in its workers' environment
            before = {"ISICARCHIVE_MALLOPT": "0", "ISICARCHIVE_WORKER_PROFILE": "keep"}
            with plain_cluster({}) as plain, Client(plain) as client, \
                    plain_cluster(before) as plain_before, Client(plain_before) as client_before:
                for c in (client, client_before):
                    api.map_images(nothing, records[:20], load=(), client=c, progress=False)  # sessions opened
                runs: dict[str, list[tuple[float, float]]] = {"serial": [], "plain": [], "before": []}
                for _ in range(REPEAT):
                    cpu = own_cpu()
                    t, expected = timed(lambda: serial(api, records, load))
                    runs["serial"].append((t, own_cpu() - cpu))
                    for name, c in (("plain", client), ("before", client_before)):
                        cpu = workers_cpu(c)
                        t, frame = timed(lambda c=c: api.map_images(superpixel_colours, records, load=load, client=c,
                                                                    progress=False))
                        runs[name].append((t, workers_cpu(c) - cpu))
                        if not same(frame, expected):
                            raise SystemExit(f"{name}: results differ from the serial loop")
            t_serial = min(t for t, _ in runs["serial"])
            print(f"CPU-bound, {len(records)} images of {args.size} in the cache, best of {REPEAT} runs each "
                  "(serial and plain clusters alternating)")

            def row(label: str, name: str) -> None:
                best = min(t for t, _ in runs[name])
                per_image = min(c for _, c in runs[name]) / len(records) * 1000
                print(f"  {label:54s} {best:7.2f} s  {t_serial / best:5.2f}x  CPU {per_image:5.1f} ms/image  "
                      f"{[round(t, 2) for t, _ in runs[name]]}")

            row("serial loop (this process)", "serial")
            row("LocalCluster(n_workers=2), as Dask's docs show", "plain")
            row("the same without mallopt and the slower profiler", "before")
            cpu_of = {name: min(c for _, c in runs[name]) for name in runs}
            print(f"  (results identical to the serial loop; CPU an image of all the workers' threads, the figure "
                  f"least moved by other load: serial / plain cluster {cpu_of['serial'] / cpu_of['plain']:.2f}, "
                  f"before / plain cluster {cpu_of['before'] / cpu_of['plain']:.2f})")
            t_threads, by_threads = timed(lambda: api.map_images(superpixel_colours, records, load=load,
                                                                 client="threads", progress=False), REPEAT)
            with worker_settings(), one_worker() as single, Client(single) as client:
                api.map_images(nothing, records[:20], load=(), client=client, progress=False)
                t_single, by_single = timed(lambda: api.map_images(superpixel_colours, records, load=load,
                                                                  client=client, progress=False), REPEAT)
            started = time.perf_counter()
            with worker_settings(), two_workers() as cluster, Client(cluster) as client:
                t_start = time.perf_counter() - started
                api.map_images(nothing, records[:20], load=(), client=client, progress=False)  # sessions opened
                t_cluster, by_cluster = timed(lambda: api.map_images(superpixel_colours, records, load=load,
                                                                     client=client, progress=False), REPEAT)
                t_nothing, _ = timed(lambda: api.map_images(nothing, records, load=(), client=client,
                                                            progress=False))
                t_default, by_default = timed(lambda: api.map_images(superpixel_colours, records, load=load,
                                                                     progress=False))
            t_owned, by_owned = timed(lambda: api.map_images(superpixel_colours, records, load=load,
                                                             client="cluster", progress=False))
            print(f"  Dask threads                    {t_threads:7.2f} s  {t_serial / t_threads:5.2f}x  "
                  f"identical={same(by_threads, expected)}")
            print(f"  client='cluster' (start incl.)  {t_owned:7.2f} s  {t_serial / t_owned:5.2f}x  "
                  f"identical={same(by_owned, expected)}")
            print(f"  LocalCluster 1 process, WORKER_CONFIG (client='cluster') "
                  f"{t_single:7.2f} s  {t_serial / t_single:5.2f}x  identical={same(by_single, expected)}")
            print(f"  LocalCluster 2 processes, WORKER_CONFIG (client='cluster') "
                  f"{t_cluster:7.2f} s  {t_serial / t_cluster:5.2f}x  "
                  f"identical={same(by_cluster, expected)}  (cluster start {t_start:.1f} s, not counted; "
                  f"{t_single / t_cluster:.2f}x the single worker)")
            print(f"  map_images() default (threads)  {t_default:7.2f} s  {t_serial / t_default:5.2f}x  "
                  f"identical={same(by_default, expected)}")
            print(f"  overhead of the machinery       {t_nothing / len(records) * 1000:7.2f} ms per image "
                  f"(a function that does nothing, cluster running)")
            kill_run(api, records, expected, cache)
    finally:
        server.kill()
    # --- download-bound, empty cache, latency per response
    server, url = start(args.download_images, args.download_size, args.latency)
    try:
        with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as cold_serial, \
                tempfile.TemporaryDirectory() as cold_dask:
            listing = IsicApi(hostname=url, api_version=1, progress=False)
            records = list(listing.cache_images().values())[: args.download_images]
            # the local archive renders each image on its first request: render them all before timing, so
            # that both runs measure waiting on the archive, not its rendering
            warming = IsicApi(hostname=url, api_version=1, cache_folder=warm, progress=False)
            warming.download_images(records).raise_for_failures()
            api = IsicApi(hostname=url, api_version=1, cache_folder=cold_serial, progress=False)
            t_serial, expected = timed(lambda: {r["_id"]: mean_colour(loaded(api, r)) for r in records})
            api2 = IsicApi(hostname=url, api_version=1, cache_folder=cold_dask, progress=False)
            t_dask, frame = timed(lambda: api2.map_images(mean_colour, records, progress=False))
            got = {i: {"red": r.red, "green": r.green, "blue": r.blue} for i, r in frame.iterrows()}
            print(f"Download-bound, {len(records)} images of {args.download_size}, {args.latency * 1000:.0f} ms per "
                  "response, empty cache, mean colour of each image")
            print(f"  serial loop                     {t_serial:7.2f} s")
            print(f"  map_images() default (threads)  {t_dask:7.2f} s  {t_serial / t_dask:5.2f}x  "
                  f"identical={got == expected}")
    finally:
        server.kill()


#: runs of each CPU-bound configuration; the best counts
REPEAT = 3


def plain_cluster(environ: dict[str, str]):
    """A cluster made as Dask's documentation shows, nothing but the number of workers; ``environ`` for its
    workers' environment (they inherit this process's when they start)."""
    from distributed import LocalCluster

    from isicarchive.scaleout import environment

    with environment(environ):
        return LocalCluster(n_workers=2)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def workers_cpu(client) -> float:
    """CPU seconds the cluster's worker processes have used (all their threads: profiler and event loop too)."""
    return sum(client.run(own_cpu).values())


def two_workers():
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")


def one_worker():
    from distributed import LocalCluster

    return LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")


def loaded(api, record):
    image = api.image(record)
    image.load_imagedata()
    return image


def mean_colour(image) -> dict:
    red, green, blue = (float(image.data[..., c].mean()) for c in range(3))
    return {"red": red, "green": green, "blue": blue}

def kill_run(api, records: list[dict], expected: dict[str, dict], cache: str) -> None:
    """A worker SIGKILLs itself at about half of the run (once); Dask runs its tasks again."""
    from distributed import Client

    marker = Path(cache) / "killed-once"
    half = records[len(records) // 2]["_id"]

    def dies_once(image) -> dict:
        if image.id == half and not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return superpixel_colours(image)


    with worker_settings(), two_workers() as cluster, Client(cluster) as client:
        took, frame = timed(lambda: api.map_images(dies_once, records, load=("imagedata", "superpixels"),
                                                   client=client, progress=False))
    broken = corrupt_files(Path(cache))
    print(f"  worker SIGKILLed at 50%         {took:7.2f} s  completed, identical={same(frame, expected)}, "
          f"killed={marker.exists()}, corrupt cache files={len(broken)}")


def corrupt_files(folder: Path) -> list[Path]:
    """Cached images, PNGs and index files that do not decode."""
    import imageio.v3 as iio

    broken = []
    for path in folder.rglob("*"):
        try:
            if path.suffix in (".jpg", ".png"):
                iio.imread(path)
            elif path.suffix == ".npz":
                with np.load(path) as data:
                    [data[name] for name in data.files]
        except Exception:
            broken.append(path)
    return broken


if __name__ == "__main__":
    main()
