"""Training data: our datasets against torchvision's ImageFolder, a bare PIL dataset, download_images and tar.

Same local archive (its own process, images of 640x480), same run, ratios against baselines measured here:

* warm cache, ``--images`` images: an epoch through ``DataLoader(IsicDataset(...), num_workers=2)`` against
  torchvision's ``ImageFolder`` over the exported folder and a bare PIL ``Dataset`` over the same files (same
  decoder, Pillow; same transform, a resize to 224x224; same workers), and the HTTP requests of that epoch;
* cold cache at ``--latency`` seconds a response, ``--cold-images`` images: the first epoch through
  ``IsicIterableDataset`` (2 workers) against ``download_images`` of the same images into an empty cache;
* the WebDataset export of the warm images against ``tar -cf`` over the same cached files.

It needs torch and torchvision: run from any Python, it makes (once, ~5.5 GB, a CUDA build that runs on the
CPU here) the torchvision virtualenv of tests/tool_venvs.py in the test cache and runs itself there.

    python benchmarks/training.py [--images 2000] [--cold-images 400] [--latency 0.05] [--rounds 3]
                                  [--only warm|cold|webdataset]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER = r"""
import sys, threading, time
from isicarchive.testing import ArchiveConfig, LocalArchive
images, port, latency, stats = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
config = ArchiveConfig(images=images, private_datasets=0, image_size=(640, 480), segmentations_per_image=0.0)
archive = LocalArchive(seed=3, config=config, port=port, latency=latency).start()
print("ready", flush=True)
import os
while True:  # the number of requests served so far, for the parent to read (replaced whole: never half-written)
    with open(stats + ".tmp", "w") as fh:
        fh.write(str(len(archive.log)))
    os.replace(stats + ".tmp", stats)
    time.sleep(0.1)
"""


def in_torch_venv() -> None:
    """Run this script again in the torchvision virtualenv (made here once) unless torchvision imports."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests"))
        from tool_venvs import TEST_CACHE, TORCHVISION_VENV, tool_venv

        if not (TEST_CACHE / TORCHVISION_VENV[0] / ".ready").exists():
            print("making the torch + torchvision virtualenv of the test cache (once; minutes)...", flush=True)
        python = tool_venv(*TORCHVISION_VENV)
        if python is None:
            sys.exit("no virtualenv with torch and torchvision could be made here")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A local archive in its own process (so that serving does not compete with the client for the GIL)."""

    def __init__(self, images: int, latency: float, folder: Path) -> None:
        self.port = free_port()
        self.stats = folder / f"requests-{self.port}"
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(images), str(self.port), str(latency),
                                         str(self.stats)], stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> int:
        time.sleep(0.25)  # the server writes its count every 0.1 s
        return int(self.stats.read_text() or 0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def labelled(api: Any, images: int) -> Any:
    """The first ``images`` images of the archive that have a diagnosis_1 (the rest would be left out)."""
    from isicarchive.selection import Selection
    from isicarchive.training import target_value

    found = api.search_images("", limit=images)
    return Selection({k: r for k, r in found.items() if target_value(r, "diagnosis_1")}, session=api)


def epoch(dataset: Any, workers: int, batch_size: int = 32, context: str | None = None) -> tuple[float, int]:
    seconds, count, _ = timed_epoch(dataset, workers, batch_size, context)
    return seconds, count


def steady_spawned_epoch(dataset: Any, workers: int = 2, batch_size: int = 32) -> tuple[float, int]:
    """The second epoch of a loader whose spawned workers persist (``persistent_workers=True``, as the
    Training page advises under spawn): the epochs of a training run after the workers' start-up."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, multiprocessing_context="spawn",
                        persistent_workers=True)
    sum(len(images) for images, _ in loader)  # the first epoch starts the workers (each imports torch)
    started = time.perf_counter()
    count = sum(len(images) for images, _ in loader)
    seconds = time.perf_counter() - started
    del loader
    return seconds, count


def timed_epoch(dataset: Any, workers: int, batch_size: int = 32,
                context: str | None = None) -> tuple[float, int, float]:
    """Wall seconds, samples, and the CPU seconds of the epoch's worker processes (user + system, counted
    once they have exited: the loader joins them at the end of a non-persistent epoch)."""
    import resource

    from torch.utils.data import DataLoader

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, multiprocessing_context=context)
    cpu = children()
    started = time.perf_counter()
    iterator = iter(loader)
    count = sum(len(images) for images, _ in iterator)
    seconds = time.perf_counter() - started
    del iterator  # its workers exit and are reaped here
    return seconds, count, children() - cpu


def best(runs: int, call: Any) -> tuple[float, int]:
    results = [call() for _ in range(runs)]
    return min(r[0] for r in results), results[0][1]


class BarePIL:
    """The baseline a user writes: Pillow, then a tensor, then the transform (a torch Dataset by duck typing;
    at module level, so that spawned workers can unpickle it)."""

    def __init__(self, paths: list[Path], transform: Any) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        with Image.open(self.paths[index]) as image:
            return self.transform(pil_to_tensor(image.convert("RGB"))), 0


def warm(args: argparse.Namespace, folder: Path, epochs: bool = True) -> dict[str, Any]:
    import torch
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2
    from torchvision.transforms.functional import pil_to_tensor

    from isicarchive import IsicApi
    from isicarchive.torch import IsicDataset

    server = Server(args.images, 0.0, folder)
    try:
        api = IsicApi(hostname=server.url, api_version=2, cache_folder=folder / "cache", progress=False)
        selection = labelled(api, args.images)
        started = time.perf_counter()
        api.download_images(selection, strict=True)
        fill = time.perf_counter() - started
        if not epochs:
            return {"webdataset": shards(api, selection, folder)}
        exported = selection.export(folder / "imagefolder", layout="imagefolder", target="diagnosis_1")
        resize = v2.Resize((224, 224), antialias=True)

        ours = IsicDataset(selection, target="diagnosis_1", transform=resize)
        theirs = ImageFolder(str(folder / "imagefolder"), transform=lambda image: resize(pil_to_tensor(image)))
        bare = BarePIL(list(exported.files), resize)
        plain = IsicDataset(selection, target="diagnosis_1")
        position = {image_id: index for index, image_id in enumerate(plain.samples.ids)}
        same = sum(torch.equal(pil_to_tensor(theirs.loader(path)), plain[position[Path(path).stem]][0])
                   for path, _ in theirs.samples[:50])
        os.sync()  # the cache's fresh gigabyte written back before timing, not during the first contender's epochs
        before = server.requests()
        load = os.getloadavg()[0]
        # rounds of the three in turn (not each one's epochs in a row), each opened by another contender: a change
        # of load or a write-back hits every contender alike; the best epoch of each, and each round's ratio
        contenders = {"ours_2": ours, "imagefolder_2": theirs, "bare_2": bare}
        for dataset in contenders.values():  # untimed: the process's first loader pays one-time costs
            timed_epoch(Subset(dataset, range(min(64, len(dataset)))), 2)
        rounds: dict[str, list[tuple[float, int, float]]] = {name: [] for name in contenders}
        names = list(contenders)
        for number in range(args.rounds):
            for name in names[number % 3:] + names[:number % 3]:  # each contender opens a round in turn
                rounds[name].append(timed_epoch(contenders[name], 2))
        figures = {name: (min(r[0] for r in runs), runs[0][1]) for name, runs in rounds.items()}
        figures.update({"ours_0": best(1, lambda: epoch(ours, 0)),
                        "ours_2_spawn": best(1, lambda: epoch(ours, 2, context="spawn")),
                        "bare_2_spawn": best(1, lambda: epoch(bare, 2, context="spawn")),
                        "ours_2_spawn_steady": steady_spawned_epoch(ours),
                        "bare_2_spawn_steady": steady_spawned_epoch(bare),
                        "bare_0": best(1, lambda: epoch(bare, 0))})
        requests = server.requests() - before
        load = max(load, os.getloadavg()[0])
        webdataset = shards(api, selection, folder)
    finally:
        server.stop()
    ratios = {f"ratio_{name}": sorted(t[0] / o[0] for o, t in zip(rounds["ours_2"], rounds[name], strict=True))
              for name in ("imagefolder_2", "bare_2")}
    worker_cpu = {f"{name}_worker_cpu_ms": 1000 * min(r[2] for r in runs) / runs[0][1] for name, runs in rounds.items()}
    return {"images": len(selection), "cache_fill_s": fill, "identical_of_50": same, "requests": requests,
            "load_average": load, "rounds": args.rounds, **{k: v[0] for k, v in figures.items()}, **ratios,
            **worker_cpu, "counted": figures["ours_2"][1], "webdataset": webdataset}


def cold(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from torchvision.transforms import v2

    from isicarchive import IsicApi
    from isicarchive.torch import IsicIterableDataset

    server = Server(args.cold_images, args.latency, folder)
    try:
        def session(name: str) -> Any:
            return IsicApi(hostname=server.url, api_version=2, cache_folder=folder / name, progress=False)

        api = session("cold-download")
        selection = labelled(api, args.cold_images)
        started = time.perf_counter()
        result = api.download_images(selection, strict=True)
        download = time.perf_counter() - started
        streaming = session("cold-stream")
        stream = IsicIterableDataset(labelled(streaming, args.cold_images), target="diagnosis_1",
                                     transform=v2.Resize((224, 224), antialias=True))
        seconds, count = epoch(stream, 2)
    finally:
        server.stop()
    return {"images": len(selection), "latency": args.latency, "download_images_s": download,
            "stream_epoch_s": seconds, "streamed": count, "bytes": result.bytes}


def shards(api: Any, selection: Any, folder: Path) -> dict[str, Any]:
    """The WebDataset export of a warm selection against ``tar -cf`` over the same cached files."""
    files = [api.context.store.image_path(r) for r in selection.values()]
    listing = folder / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    timings: dict[str, list[float]] = {"ours": [], "tar": []}
    for _ in range(3):
        shutil.rmtree(folder / "wds", ignore_errors=True)
        started = time.perf_counter()
        result = selection.export(folder / "wds", layout="webdataset", target="diagnosis_1")
        timings["ours"].append(time.perf_counter() - started)
        (folder / "plain.tar").unlink(missing_ok=True)
        started = time.perf_counter()
        subprocess.run(["tar", "-cf", str(folder / "plain.tar"), "-T", str(listing)], check=True,
                       stderr=subprocess.DEVNULL)
        timings["tar"].append(time.perf_counter() - started)
    return {"images": len(selection), "ours_s": min(timings["ours"]), "tar_s": min(timings["tar"]),
            "shards": len(result.files), "shard_bytes": sum(p.stat().st_size for p in result.files),
            "tar_bytes": (folder / "plain.tar").stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--cold-images", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="warm epochs of each contender, taken in turn")
    parser.add_argument("--only", choices=["warm", "cold", "webdataset"])
    args = parser.parse_args()
    in_torch_venv()
    import torch

    torch.set_num_threads(1)  # what a data-loader worker has; the main process only collates here
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only == "webdataset":
            s = report["webdataset"] = warm(args, folder, epochs=False)["webdataset"]
            print(f"WebDataset export of {s['images']} images ({s['shards']} shard(s)) {s['ours_s']:.2f} s; tar -cf "
                  f"over the same files {s['tar_s']:.2f} s: ours at {s['tar_s'] / s['ours_s']:.2f}x tar's throughput")
        if args.only in (None, "warm"):
            w = report["warm"] = warm(args, folder)
            print(f"warm cache, {w['images']} images of 640x480 (cache filled in {w['cache_fill_s']:.1f} s), "
                  f"an epoch, 2 workers, resize to 224x224:")
            print(f"  (best of {w['rounds']} rounds of the three in turn, after a warm-up; load average up to "
                  f"{w['load_average']:.1f}; "
                  "worker CPU: user + system of both workers, per sample)")
            print(f"  IsicDataset                {w['ours_2']:7.2f} s   ({w['requests']} HTTP requests)   "
                  f"worker CPU {w['ours_2_worker_cpu_ms']:.2f} ms")
            for name, label in (("imagefolder_2", "torchvision ImageFolder"), ("bare_2", "bare PIL Dataset")):
                each = ", ".join(f"{r:.2f}" for r in w[f"ratio_{name}"])
                print(f"  {label:<26} {w[name]:7.2f} s   ours {w[name] / w['ours_2']:.2f}x (rounds: {each})   "
                      f"worker CPU {w[f'{name}_worker_cpu_ms']:.2f} ms")
            print(f"  no workers: IsicDataset {w['ours_0']:.2f} s, bare PIL {w['bare_0']:.2f} s; 2 workers vs 0: "
                  f"ours {w['ours_0'] / w['ours_2']:.2f}x, bare {w['bare_0'] / w['bare_2']:.2f}x")
            print(f"  spawned workers (each imports torch anew): IsicDataset {w['ours_2_spawn']:.2f} s, bare PIL "
                  f"{w['bare_2_spawn']:.2f} s; ours {w['bare_2_spawn'] / w['ours_2_spawn']:.2f}x, "
                  f"{w['ours_0'] / w['ours_2_spawn']:.2f}x no workers")
            steady, bare_steady = w["ours_2_spawn_steady"], w["bare_2_spawn_steady"]
            print(f"  spawned workers that persist, second epoch: IsicDataset {steady:.2f} s, bare PIL "
                  f"{bare_steady:.2f} s; ours {bare_steady / steady:.2f}x, {w['ours_0'] / steady:.2f}x no workers")
            print(f"  tensors identical to ImageFolder's decode of the exported files: {w['identical_of_50']}/50")
            s = w["webdataset"]
            print(f"WebDataset export of {s['images']} images ({s['shards']} shard(s), "
                  f"{s['shard_bytes'] / 1e6:.0f} MB "
                  f"with records) {s['ours_s']:.2f} s; tar -cf over the same files {s['tar_s']:.2f} s "
                  f"({s['tar_bytes'] / 1e6:.0f} MB): ours at {s['tar_s'] / s['ours_s']:.2f}x tar's throughput")
        if args.only in (None, "cold"):
            c = report["cold"] = cold(args, folder)
            rate = c["images"] / c["download_images_s"]
            print(f"cold cache, {c['images']} images, {c['latency'] * 1000:.0f} ms latency:")
            print(f"  download_images            {c['download_images_s']:7.2f} s   {rate:.1f} images/s")
            print(f"  IsicIterableDataset epoch  {c['stream_epoch_s']:7.2f} s   "
                  f"{c['streamed'] / c['stream_epoch_s']:.1f} images/s = "
                  f"{c['download_images_s'] / c['stream_epoch_s']:.2f}x download_images")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
