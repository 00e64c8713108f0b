"""Metadata at archive scale: `cache_images()` and the selection index over a big local archive.

The archive runs in its own process (`isicarchive serve`), and each session in
a fresh process of its own, so that each peak memory (VmHWM) is that session's
alone: the first `cache_images()` (v1 offset pages, v2 cursor pages), then the
index build with the first selection; then a second session on the same cache
folder (records loaded from the cache file, one request).  Wall and CPU seconds are both
shown (CPU time is the steadier figure on a busy machine).

With pyarrow the index defers its columns: the first selection reads only the
path it names, the next new path builds every column (``ImageIndex.build``).
Each session therefore also times a selection on a second field, a third, key
membership (``ni``) and the build of every column (what an empty selection's
diagnosis needs), and prints the total of each session shape against the
baseline: a session on the same cache file whose index builds every column
when it is made (``ImageIndex.DEFERRED_READS = 0``).

Baselines measured in the same run:

- the floor: decoding every record's JSON with orjson (what any index built
  from decoded records pays), in the same process after the index;
- the pure build (``ImageIndex.COLUMNAR = False``: records decoded with
  orjson and transposed in Python) of the same records, in the same process
  after that (the index the session uses is pyarrow's where it is installed);
- with ``--before PATH``: the same session run on another copy of the library
  (``PATH`` holds its ``isicarchive`` package, e.g. a checkout of the previous
  release: ``git archive <commit> | tar -x -C PATH``), alternating with ours.

    python benchmarks/metadata_scale.py [--sizes 100000 400000] [--versions 1 2] [--before PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = r"""
import gc, json, sys, time
import orjson
from isicarchive import IsicApi

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name):
            return int(line.split()[1]) * 1024
    return 0

url, version, folder, eager = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "eager"
if eager:  # the baseline: every column built when the index is made (where this copy defers them)
    from isicarchive.selection import ImageIndex
    if hasattr(ImageIndex, "DEFERRED_READS"):
        ImageIndex.DEFERRED_READS = 0
api = IsicApi(hostname=url, api_version=version, progress=False, cache_folder=folder)
wall, cpu = time.perf_counter(), time.process_time()
count = len(api.cache_images())
out = {"count": count, "sync_s": time.perf_counter() - wall, "sync_cpu": time.process_time() - cpu,
       "sync_peak": status("VmHWM"), "records_rss": status("VmRSS")}
nested = "meta" if version == 1 else "metadata"
field = nested + ".clinical.age_approx"
wall, cpu = time.perf_counter(), time.process_time()
api.select_images([field, ">=", 50])
out.update(index_s=time.perf_counter() - wall, index_cpu=time.process_time() - cpu, peak=status("VmHWM"),
           rss=status("VmRSS"))
# what a session pays as it goes on: a selection on a second field (a deferred index reads the first path alone,
# then builds every column at the next new one), a third, key membership, then every column built (what an
# empty selection's diagnosis needs)
steps = [("second", [nested + ".clinical.sex", "==", "female"]),
         ("third", [nested + (".clinical.diagnosis" if version == 1 else ".clinical.diagnosis_1"), "==",
                    "melanoma" if version == 1 else "Malignant"]),
         ("ni", [nested + ".clinical", "ni", "sex"])]
for step, criterion in steps:
    wall, cpu = time.perf_counter(), time.process_time()
    api.select_images(criterion)
    out.update({step + "_s": time.perf_counter() - wall, step + "_cpu": time.process_time() - cpu})
index = api._image_index()
wall, cpu = time.perf_counter(), time.process_time()
getattr(index, "build", lambda: None)()
out.update(every_s=time.perf_counter() - wall, every_cpu=time.process_time() - cpu, every_peak=status("VmHWM"))
if eager:  # (the floor and the pure build are measured in the other sessions)
    print(json.dumps(out), flush=True)
    sys.exit(0)
# the floor: every record's JSON decoded once (as orjson writes it), a slice at a time
records = api.image_cache
held = records.held() if hasattr(records, "held") else [(k, orjson.dumps(r)) for k, r in records.items()]
blobs = [h if type(h) is bytes else orjson.dumps(h) for _, h in held]
gc.disable()  # as the library decodes records: without the cyclic collector's passes over them
cpu = time.process_time()
for start in range(0, len(blobs), 5000):
    orjson.loads(b"[" + b",".join(blobs[start:start + 5000]) + b"]")
out["floor_cpu"] = time.process_time() - cpu
gc.enable()
del blobs
# the pure build (every record decoded with orjson) of the same records, where this copy has both builds
from isicarchive.selection import ImageIndex
if getattr(ImageIndex, "COLUMNAR", False):
    from isicarchive.arrowindex import arrow_available
    out["columnar"] = arrow_available()
    ImageIndex.COLUMNAR = False
    wall, cpu = time.perf_counter(), time.process_time()
    ImageIndex(records)
    out.update(pure_s=time.perf_counter() - wall, pure_cpu=time.process_time() - cpu)
print(json.dumps(out), flush=True)
"""


def serve(images: int, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "serve", "--port", str(port), "--images",
                               str(images), "--datasets", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    assert server.stdout is not None and "Local ISIC archive" in server.stdout.readline()
    return server


def session(url: str, version: int, library: str | None, folder: str, eager: bool = False) -> dict:
    """One session in a process of its own (``library``: another copy of the package to import instead),
    with the cache folder ``folder`` (``eager``: every column built when the index is made)."""
    env = dict(os.environ)
    if library is not None:
        env["PYTHONPATH"] = library + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SESSION, url, str(version), folder, "eager" if eager else "deferred"],
                          capture_output=True,
                          text=True, env=env, cwd=library or None, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - started  # interpreter start, imports and exit included
    return figures


def sessions(url: str, version: int, library: str | None) -> tuple[dict, dict, dict]:
    """A first session (it lists every record), a second one on its cache (loads them from the file), and the
    baseline: a session on the cache that builds every column when the index is made."""
    with tempfile.TemporaryDirectory() as folder:
        return (session(url, version, library, folder), session(url, version, library, folder),
                session(url, version, library, folder, eager=True))


SHAPES = [("index + first field", ("index",)), ("+ second field", ("index", "second")),
          ("+ third field", ("index", "second", "third")), ("+ ni", ("index", "second", "third", "ni")),
          ("+ every column", ("index", "second", "third", "ni", "every"))]


def shapes(version: int, f: dict, eager: dict, against: str = "every column built at once") -> None:
    """Each session shape's total (the steps so far) against the eager build's index + first selection."""
    base_s, base_cpu = eager["index_s"], eager["index_cpu"]
    cells = []
    for label, steps in SHAPES:
        wall = sum(f[step + "_s"] for step in steps)
        cpu = sum(f[step + "_cpu"] for step in steps)
        cells.append(f"{label} {wall:.2f} s ({wall / base_s:.2f}x; CPU {cpu:.2f} s, {cpu / base_cpu:.2f}x)")
    print(f"    v{version} session shapes, in all, against {against} ({base_s:.2f} s, CPU "
          f"{base_cpu:.2f} s, peak {eager['peak'] / 1e9:.2f} GB, same cache file): " + "; ".join(cells), flush=True)


def show(label: str, version: int, f: dict) -> None:
    print(f"  v{version} {label}: {f['count']} records; cache_images {f['sync_s']:.1f} s (CPU {f['sync_cpu']:.1f} s), "
          f"peak {f['sync_peak'] / 1e9:.2f} GB; index + first selection {f['index_s']:.2f} s "
          f"(CPU {f['index_cpu']:.2f} s; decoding the JSON alone: CPU {f['floor_cpu']:.2f} s); "
          f"peak with the index {f['peak'] / 1e9:.2f} GB; whole process {f['process_s']:.1f} s", flush=True)
    print(f"    then a second field {f['second_s']:.2f} s (CPU {f['second_cpu']:.2f} s), a third "
          f"{f['third_s']:.2f} s (CPU {f['third_cpu']:.2f} s), ni {f['ni_s']:.2f} s (CPU {f['ni_cpu']:.2f} s), every "
          f"column built {f['every_s']:.2f} s (CPU {f['every_cpu']:.2f} s); peak {f['every_peak'] / 1e9:.2f} GB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--before", help="a folder holding another copy of the isicarchive package, measured "
                                         "alternately with this one as the baseline")
    args = parser.parse_args()
    before = str(Path(args.before).resolve()) if args.before else None
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    seconds: dict[tuple[int, int], float] = {}
    for size in args.sizes:
        server = serve(size, args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            for version in args.versions:
                runs = [("ours", sessions(url, version, None))]
                if before is not None:
                    runs.append(("before", sessions(url, version, before)))
                for label, (first, second, eager) in runs:
                    show(f"{label}, first session", version, first)
                    show(f"{label}, second session (the cache file)", version, second)
                    print(f"  v{version} {label}, every column built when the index is made (the cache file): index + "
                          f"first selection {eager['index_s']:.2f} s (CPU {eager['index_cpu']:.2f} s), peak "
                          f"{eager['peak'] / 1e9:.2f} GB", flush=True)
                    shapes(version, first, eager)
                    shapes(version, second, eager)
                    print(f"    index + first selection: {first['index_cpu'] / first['floor_cpu']:.2f}x the CPU of "
                          "decoding the records' JSON alone")
                    for which, f in (("first", first), ("second", second)):
                        if "pure_cpu" in f:
                            every = sum(f[step + "_cpu"] for step in SHAPES[-1][1])
                            print(f"    {which} session: the pure build of the same records (no pyarrow) took "
                                  f"{f['pure_s']:.2f} s (CPU {f['pure_cpu']:.2f} s): index + first selection "
                                  f"({'columnar' if f['columnar'] else 'pure, no pyarrow'}) "
                                  f"{f['pure_s'] / f['index_s']:.2f}x faster "
                                  f"(CPU {f['pure_cpu'] / f['index_cpu']:.2f}x); "
                                  f"index + every step above: CPU {f['pure_cpu'] / every:.2f}x")
                ours = runs[0][1][0]
                seconds[(version, size)] = ours["sync_s"]
                if before is not None:
                    old_eager = runs[1][1][2]
                    for f in runs[0][1][:2]:
                        shapes(version, f, old_eager, "the code before, every column built at once")
                    for n, which in enumerate(("first", "second")):
                        new, old = runs[0][1][n], runs[1][1][n]
                        print(f"    ours against before, {which} session: index CPU "
                              f"{old['index_cpu'] / new['index_cpu']:.2f}x faster, cache_images CPU "
                              f"{old['sync_cpu'] / new['sync_cpu']:.2f}x faster, peak with the index "
                              f"{new['peak'] / old['peak']:.2f}x ({old['peak'] / 1e9:.2f} -> {new['peak'] / 1e9:.2f} "
                              f"GB), whole process {old['process_s'] / new['process_s']:.2f}x faster (the same steps "
                              "in each: where an index builds every column at once, the second field and every "
                              "column cost it nothing more)")
        finally:
            server.terminate()
            server.wait()
        print(f"load average now: {os.getloadavg()[0]:.1f}", flush=True)
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        for version in args.versions:
            ratio = seconds[(version, large)] / seconds[(version, small)]
            times = large / small
            print(f"v{version}: {times:.0f}x the records took {ratio:.1f}x the time (linear: {times:.0f}x)")


if __name__ == "__main__":
    main()
