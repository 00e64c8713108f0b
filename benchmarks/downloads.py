"""Bulk downloads: our engine against the official isic CLI, same local archive (v2), same run.

The archive runs in its own process (``isicarchive serve --port 8000``, the
address the official CLI's ``ISIC_DEV`` mode talks to) with injected latency;
both clients download the same N images into fresh, empty folders, each timed
as a whole process (interpreter start and exit included), as a user feels it.

Two comparisons, each run fairly: every client runs ``--rounds`` times
(default 2), alternating (ours, official, official, ours, ...: each client
runs once right after the other), and each client's best run counts. The
archive renders an image on its first request, so a single run would charge
those renders to whichever client came first.

* from a search: ``search_images("", limit=N)`` then ``download_images``,
  against ``isic image download -l N``;
* from a list of ISIC ids (a paper's list, the common case):
  ``download_images(list_of_ids)``, against the same ``-l N`` download (the
  official CLI has no list-of-ids option).

``--total-bandwidth B`` caps the archive's link at B bytes/s over all its
connections together: the transfer then costs both clients the same wall
time, and what each adds on top of the bytes' time is its own (start-up,
look-ups, the tail); ``--bandwidth B`` caps each connection instead (which
rewards the client with more connections). ``--all`` adds the runs of the first version of
this benchmark: a resume (killed at ~50% of the bytes, then completed) and a
429 storm. The official CLI (package ``isic-cli``) lives in a virtualenv
made once in the test cache (tests/tool_venvs.py).

    python benchmarks/downloads.py [--images 200] [--latency 0.05] [--rounds 2] [--only search|ids]
                                   [--total-bandwidth BYTES_PER_S] [--bandwidth BYTES_PER_S] [--all]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = 8000
OURS_SEARCH = r"""
import sys
from isicarchive import IsicApi
api = IsicApi(hostname="http://127.0.0.1:8000", api_version=2, progress=False, retries=15)
selection = api.search_images("", limit=int(sys.argv[2]))
result = api.download_images(selection, folder=sys.argv[1], strict=True)
print(result.bytes)
"""
OURS_IDS = r"""
import sys
from isicarchive import IsicApi
api = IsicApi(hostname="http://127.0.0.1:8000", api_version=2, progress=False, retries=15)
ids = [f"ISIC_{i:07d}" for i in range(int(sys.argv[2]))]
result = api.download_images(ids, folder=sys.argv[1], strict=True)
print(result.bytes)
"""


def official_cli() -> Path | None:
    """The official CLI's ``isic`` from its venv in the test cache (made on first use), or None."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tool_venvs import tool_venv

    python = tool_venv("isic-cli-newest", ["isic-cli"], minimum=(3, 12))  # the newest release needs 3.12+
    if python is None:
        print("isic-cli could not be installed (offline?); baseline skipped", file=sys.stderr)
        return None
    return python.parent / "isic"


def serve(images: int, latency: float, sizes: tuple[int, int], faults: list[str],
          bandwidth: float | None = None, total_bandwidth: float | None = None) -> subprocess.Popen:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", PORT)) == 0:
            sys.exit(f"port {PORT} is taken (the official CLI's dev mode talks to 127.0.0.1:{PORT} only); "
                     "stop what listens there and run again")
    args = [sys.executable, "-m", "isicarchive.cli", "serve", "--port", str(PORT), "--images", str(images),
            "--datasets", "1", "--latency", str(latency), "--image-bytes", str(sizes[0]), str(sizes[1])]
    if bandwidth:
        args += ["--bandwidth", str(bandwidth)]
    if total_bandwidth:
        args += ["--total-bandwidth", str(total_bandwidth)]
    for fault in faults:
        args += ["--fault", fault]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None and "Local ISIC archive" in server.stdout.readline()
    return server


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file())


def ours_cmd(out: Path, n: int, script: str = OURS_SEARCH) -> list[str]:
    return [sys.executable, "-c", script, str(out), str(n)]


def cli_cmd(isic: Path, out: Path, n: int) -> list[str]:
    return [str(isic), "--no-version-check", "image", "download", "-l", str(n), str(out)]


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    return run_measured(cmd, env)[:2]  # type: ignore[return-value]


def run_measured(cmd: list[str], env: dict, server: subprocess.Popen | None = None) -> tuple[float, str, float, float]:
    """Wall seconds, stdout, the client's CPU seconds (user + system) and the archive's CPU seconds meanwhile
    (CPU time, unlike wall time, hardly moves with the load of a shared machine)."""
    served = _cpu_of(server) if server is not None else 0.0
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(err.read().decode(errors="replace")[-1500:])
        stdout = out.read().decode(errors="replace")
    serving = _cpu_of(server) - served if server is not None else 0.0
    return wall, stdout, usage.ru_utime + usage.ru_stime, serving


def _cpu_of(process: subprocess.Popen) -> float:
    """CPU seconds a running process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def on_disk(folder: Path) -> int:
    """Bytes of the files in ``folder``, partial ones included (a file that goes away meanwhile counts 0)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    total += entry.stat().st_size if entry.is_file() else 0
                except FileNotFoundError:  # moved into place or cleaned up since the listing
                    continue
    except FileNotFoundError:
        return 0
    return total


def interrupted(cmd: list[str], env: dict, out: Path, stop_at: int) -> None:
    """Start a download and kill it once ``stop_at`` bytes are on disk (partial files included)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and on_disk(out) < stop_at:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def compare(label: str, ours: list[str], isic: Path | None, n: int, rounds: int, env: dict, tmp: Path,
            server: subprocess.Popen) -> None:
    """Both clients ``rounds`` times, alternating (ours first in odd rounds, the official CLI first in even
    ones), each into a fresh folder; prints every run and the ratio of the best runs."""
    runs: dict[str, list[tuple[float, float, float]]] = {"ours": [], "cli": []}
    for attempt in range(rounds):
        order = ["ours", "cli"] if attempt % 2 == 0 else ["cli", "ours"]
        for who in order:
            if who == "cli" and isic is None:
                continue
            out = tmp / f"{label}-{who}-{attempt}"
            cmd = [*ours, str(out), str(n)] if who == "ours" else cli_cmd(isic, out, n)  # type: ignore[arg-type]
            wall, _, cpu, served = run_measured(cmd, env, server)
            runs[who].append((wall, cpu, served))
            shutil.rmtree(out, ignore_errors=True)  # the page cache of this run's files, not the next's
    load = os.getloadavg()[0]

    def line(name: str, measured: list[tuple[float, float, float]]) -> str:
        each = " / ".join(f"{wall:.2f} s ({cpu:.2f} + {served:.2f})" for wall, cpu, served in measured)
        return f"  {name:13} best {min(measured)[0]:.2f} s; runs {each}"

    print(f"{label}, {n} images (load average {load:.2f}); each run: wall (CPU seconds of the client + of the archive)")
    print(line("ours", runs["ours"]))
    if runs["cli"]:
        print(line("official CLI", runs["cli"]))
        print(f"  ratio {min(runs['cli'])[0] / min(runs['ours'])[0]:.2f}x (best of {rounds} each)")


def resume_and_storm(isic: Path | None, n: int, args: argparse.Namespace, env: dict, tmp: Path) -> None:
    """The resume after a kill at ~50% of the bytes, and a storm of 429s, one run each."""
    sizes = (args.min_bytes, args.max_bytes)
    server = serve(n, args.latency, sizes, [])
    try:
        run(ours_cmd(tmp / "full", n), env)
        total = folder_bytes(tmp / "full")
        for label, make in (("ours", lambda out: ours_cmd(out, n)),
                            ("official CLI", (lambda out: cli_cmd(isic, out, n)) if isic else None)):
            if make is None:
                continue
            out = tmp / f"resume-{label.replace(' ', '-')}"
            interrupted(make(out), env, out, total // 2)
            kept = on_disk(out)
            complete = sum(p.stat().st_size for p in out.glob("ISIC_*.jpg"))
            _, stdout = run(make(out), env)
            # ours reports the bytes it transferred; the official CLI re-fetches every incomplete file
            second = int(stdout.strip().splitlines()[-1]) if label == "ours" else total - complete
            print(f"resume {label:13}: killed with {kept / total:.0%} of the bytes on disk; the second run "
                  f"transferred {second / total:.0%} of a full download")
    finally:
        stop(server)
    server = serve(n, args.latency, sizes, ["429:/storage/:0.3"])
    try:
        storm_ours, _ = run(ours_cmd(tmp / "storm-ours", min(n, 200)), env)
        print(f"429 storm (30% of file requests, Retry-After 1 s), {min(n, 200)} images: ours {storm_ours:.1f} s",
              end="")
        if isic:
            storm_cli, _ = run(cli_cmd(isic, tmp / "storm-cli", min(n, 200)), env)
            print(f", official CLI {storm_cli:.1f} s, ratio {storm_cli / storm_ours:.2f}x")
        else:
            print()
    finally:
        stop(server)


def compiled_like_an_install(env: dict[str, str]) -> None:
    """Our package's bytecode next to its sources, as ``pip install`` writes it (the official CLI's venv
    has its own).

    A checkout installed in editable mode, run where ``PYTHONDONTWRITEBYTECODE`` is set (this
    machine's shells set it), would otherwise compile every module of ours from source in every run:
    0.2-0.5 s the official CLI, whose modules pip compiled, never pays. (``env`` has no
    ``PYTHONPYCACHEPREFIX``: with one, both clients would look for every module's bytecode, the
    standard library's and the official CLI's included, in that folder only.)
    """
    import isicarchive

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(isicarchive.__file__).parent)], check=True,
                   stdout=subprocess.DEVNULL, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each client per comparison (best counts)")
    parser.add_argument("--min-bytes", type=int, default=300_000)
    parser.add_argument("--max-bytes", type=int, default=1_500_000)
    parser.add_argument("--bandwidth", type=float, help="bytes per second per connection the archive sends at most")
    parser.add_argument("--total-bandwidth", type=float,
                        help="bytes per second the archive sends at most over all connections together")
    parser.add_argument("--only", choices=["search", "ids"], help="run only one of the two comparisons")
    parser.add_argument("--all", action="store_true", help="also the resume and the 429 storm")
    args = parser.parse_args()
    isic = official_cli()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}, "ISIC_DEV": "1",
           "HOME": tempfile.mkdtemp(prefix="isic-home-")}
    compiled_like_an_install(env)
    n = args.images
    tmp = Path(tempfile.mkdtemp(prefix="isic-bench-"))
    cap = f", archive capped at {args.bandwidth / 1e6:g} MB/s per connection" if args.bandwidth else ""
    if args.total_bandwidth:
        cap += f", archive capped at {args.total_bandwidth / 1e6:g} MB/s in all"
    print(f"{n} images of {args.min_bytes / 1e6:g}-{args.max_bytes / 1e6:g} MB, {args.latency * 1000:g} ms "
          f"per response{cap}")
    try:
        server = serve(n, args.latency, (args.min_bytes, args.max_bytes), [], args.bandwidth, args.total_bandwidth)
        try:
            if args.only in (None, "search"):
                compare("from a search", [sys.executable, "-c", OURS_SEARCH], isic, n, args.rounds, env, tmp, server)
            if args.only in (None, "ids"):
                compare("from a list of ids", [sys.executable, "-c", OURS_IDS], isic, n, args.rounds, env, tmp,
                        server)
        finally:
            stop(server)
        if args.all:
            resume_and_storm(isic, n, args, env, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(env["HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
