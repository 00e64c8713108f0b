"""v2 metadata sync at archive scale: our partitioned, parallel `cache_images()` against a serial cursor walk.

The archive runs in its own process (`isicarchive serve`, 50 ms latency per
response).  Measured in one run: a plain serial walk of `images/` (requests,
100 records a page); our first `cache_images()` into an empty cache; a sync
killed at about half of its records and run again (how many of the pages are
fetched again); and the one request when nothing is new.

    python benchmarks/metadata_sync.py [--records 200000] [--latency 0.05] [--port 8012] [--walks 8 16 32]

Beside each sync's own CPU seconds, the CPU seconds the archive's process
spent meanwhile: both share the machine's cores, so a client that spends less
leaves more to the archive.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

PORT = 8012
URL = f"http://127.0.0.1:{PORT}"
#: the archive's process (its CPU seconds are read from /proc around each sync)
SERVER: list[int] = []
SYNC = r"""
import sys, time
from isicarchive import IsicApi
api = IsicApi(hostname=sys.argv[1], api_version=2, cache_folder=sys.argv[2], progress=False)
if len(sys.argv) > 3 and sys.argv[3] != "0":
    api.context.backend.sync_workers = int(sys.argv[3])
print("syncing", flush=True)
started, cpu = time.perf_counter(), time.process_time()
api.cache_images()
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.process_time() - cpu, peak, time.time(), flush=True)
print(time.perf_counter() - started, api.request_count, flush=True)
"""


def serve(records: int, latency: float) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "serve", "--port", str(PORT), "--images",
                               str(records), "--datasets", "1", "--latency", str(latency)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None and "Local ISIC archive" in server.stdout.readline()
    SERVER[:] = [server.pid]
    return server


def server_cpu() -> float:
    """CPU seconds of the archive's process so far (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{SERVER[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serial_walk() -> tuple[int, float, int]:
    session = requests.Session()
    started = time.perf_counter()
    url: str | None = f"{URL}/api/v2/images/?limit=100"
    count = pages = 0
    while url:
        page = session.get(url, timeout=60).json()
        count += len(page["results"])
        pages += 1
        url = page["next"]
    return count, time.perf_counter() - started, pages


def sync(cache: Path, workers: int | None = None, library: str | None = None) -> tuple[float, int, float]:
    """The ``cache_images()`` call's seconds (timed in its process, as the serial walk is timed in this one),
    its requests, and the whole process's seconds (interpreter start, imports and exit included).

    ``library``: a folder holding another copy of the isicarchive package, imported instead of this one.
    """
    return sync_figures(cache, workers, library)[:3]


def sync_figures(cache: Path, workers: int | None = None, library: str | None = None) -> tuple:
    """:func:`sync`'s figures, then the call's CPU seconds, the process's peak memory, its seconds of exit,
    the whole process's CPU seconds and the archive's CPU seconds meanwhile."""
    env = dict(os.environ)
    if library is not None:
        env["PYTHONPATH"] = library + os.pathsep + env.get("PYTHONPATH", "")
    before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SYNC, URL, str(cache), str(workers or 0)], capture_output=True,
                          text=True, check=True, env=env, cwd=library or None)
    ended = time.time()
    process_s = time.perf_counter() - started
    after, server_after = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu()
    cpu, peak, synced = done.stdout.split()[-5:-2]
    seconds, requests_made = done.stdout.split()[-2:]
    process_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return (float(seconds), int(requests_made), process_s, float(cpu), int(peak), ended - float(synced),
            process_cpu, server_after - server_before)


def main() -> None:
    global URL, PORT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--before", help="a folder holding another copy of the isicarchive package (e.g. the "
                                         "previous release), whose whole-process sync is measured alongside")
    parser.add_argument("--port", type=int, default=PORT, help="the local archive's port")
    parser.add_argument("--walks", type=int, nargs="*", default=[8, 16, 32],
                        help="other numbers of parallel walks to time (the library's default is 24)")
    args = parser.parse_args()
    PORT, URL = args.port, f"http://127.0.0.1:{args.port}"
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    server = serve(args.records, args.latency)
    try:
        archive_before = server_cpu()
        count, serial_s, pages = serial_walk()
        print(f"serial cursor walk: {count} records, {pages} pages in {serial_s:.1f} s (the archive's CPU "
              f"{server_cpu() - archive_before:.1f} s)", flush=True)
        # the archive builds its sorted id list with the first prefix search: built here, so that the first
        # sync timed does not pay for it and the next ones not
        requests.get(f"{URL}/api/v2/images/search/", params={"query": "isic_id:ISIC_00*", "limit": 1}, timeout=600)
        # and each partition's listing with its first search: a sync not timed asks them all once, so that the
        # first sync timed (ours) does not pay for what the next ones (before, other walks) find built
        with tempfile.TemporaryDirectory() as cache:
            sync(Path(cache), 32)
        runs = [("ours", None)] + ([("before", str(Path(args.before).resolve()))] if args.before else [])
        for label, library in runs:
            with tempfile.TemporaryDirectory() as cache:
                figures = sync_figures(Path(cache), library=library)
            seconds, requests_made, process_s, cpu, peak, exit_s, process_cpu, archive_cpu = figures
            if library is None:
                ours_s, ours_requests = seconds, requests_made
            print(f"{label} (partitioned, parallel): {seconds:.1f} s (CPU {cpu:.1f} s) with {requests_made} "
                  f"requests: {serial_s / seconds:.1f}x the serial walk; the whole process, start and exit "
                  f"included: {process_s:.1f} s, {serial_s / process_s:.1f}x (exit {exit_s:.2f} s, CPU "
                  f"{process_cpu:.1f} s; the archive's CPU meanwhile {archive_cpu:.1f} s); "
                  f"peak memory {peak / 1e9:.2f} GB", flush=True)
        for workers in args.walks:
            with tempfile.TemporaryDirectory() as cache:
                other_s, _, other_process_s = sync(Path(cache), workers)
            print(f"  with {workers} walks instead: {other_s:.1f} s ({serial_s / other_s:.1f}x); whole process "
                  f"{other_process_s:.1f} s ({serial_s / other_process_s:.1f}x)", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            # a sync killed at about half of its partitions, then run again
            cache = Path(folder)
            proc = subprocess.Popen([sys.executable, "-c", SYNC, URL, str(cache)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, start_new_session=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "syncing"
            time.sleep(ours_s / 2)  # about half of the records
            os.killpg(proc.pid, signal.SIGKILL)
            saved = sum(1 for _ in cache.rglob(".sync/*/*.lines.gz"))
            proc.wait()
            resumed_s, resumed_requests, _ = sync(cache)
            print(f"killed with {saved} partitions kept; the rerun took {resumed_s:.1f} s and {resumed_requests} "
                  f"requests ({resumed_requests / ours_requests:.0%} of a full sync's)")
            again_s, again_requests, again_process_s = sync(cache)
            print(f"nothing new: {again_requests} request(s), {again_s:.1f} s (whole process {again_process_s:.1f} s)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
