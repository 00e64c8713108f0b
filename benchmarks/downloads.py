"""Bulk downloads: our engine against the official isic CLI, same local archive (v2), same run.

The archive runs in its own process (``isicarchive serve --port 8000``) with
injected latency; both clients download the same N images into empty folders.
Runs: plain throughput, a resume (interrupted at ~50% of the bytes, then
completed: bytes transferred by the second run), and a 429 storm.
The official CLI (package ``isic-cli``) lives in benchmarks/.venv-isic-cli.

A further run starts from a list of ISIC ids (a paper's list, the common
case): ours gets ``download_images(list_of_ids)``, the official CLI
``image download -l N`` (it has no list-of-ids option) over the same images.

    python benchmarks/downloads.py [--images 500] [--latency 0.05] [--only ids]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI_VENV = HERE / ".venv-isic-cli"
PORT = 8000
OURS = r"""
import sys
from isicarchive import IsicApi
api = IsicApi(hostname="http://127.0.0.1:8000", api_version=2, progress=False, retries=15)
selection = api.search_images("", limit=int(sys.argv[2]))
result = api.download_images(selection, folder=sys.argv[1])
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
    exe = CLI_VENV / "bin" / "isic"
    if not exe.exists():
        # the newest isic-cli needs Python >= 3.12; an older interpreter would get an older release
        newer = shutil.which("python3.13") or shutil.which("python3.12")
        if newer:
            subprocess.run([newer, "-m", "venv", "--clear", str(CLI_VENV)], check=True,
                           env={**os.environ, "PYENV_VERSION": "3.13.0:3.12.1"})
        else:
            venv.EnvBuilder(with_pip=True, clear=True).create(CLI_VENV)
        done = subprocess.run([str(CLI_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "isic-cli"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print("isic-cli could not be installed (offline?); baseline skipped", file=sys.stderr)
            return None
    return exe


def serve(images: int, latency: float, sizes: tuple[int, int], faults: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "isicarchive.cli", "serve", "--port", str(PORT), "--images", str(images),
            "--datasets", "1", "--latency", str(latency), "--image-bytes", str(sizes[0]), str(sizes[1])]
    for fault in faults:
        args += ["--fault", fault]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None and "Local ISIC archive" in server.stdout.readline()
    return server


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file())


def ours_cmd(out: Path, n: int) -> list[str]:
    return [sys.executable, "-c", OURS, str(out), str(n)]


def cli_cmd(isic: Path, out: Path, n: int) -> list[str]:
    return [str(isic), "--no-version-check", "image", "download", "-l", str(n), str(out)]


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1500:])
    return time.monotonic() - started, done.stdout


def interrupted(cmd: list[str], env: dict, out: Path, stop_at: int) -> None:
    """Start a download and kill it once ``stop_at`` bytes are on disk (partial files included)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and (not out.exists() or sum(
            p.stat().st_size for p in out.glob("*") if p.is_file()) + sum(
            p.stat().st_size for p in out.glob(".*") if p.is_file()) < stop_at):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def from_ids(isic: Path | None, n: int, latency: float, sizes: tuple[int, int], env: dict, tmp: Path) -> None:
    """``download_images(list of n ids)`` against the official CLI's ``image download -l n``."""
    server = serve(n, latency, sizes, [])
    try:
        # the archive renders each image on first request: both clients run twice, alternating, into
        # fresh folders, and each one's best run counts (so neither pays for the other's warm-up)
        ours_runs, cli_runs = [], []
        for attempt in range(2):
            ours_runs.append(run([sys.executable, "-c", OURS_IDS, str(tmp / f"ids-ours-{attempt}"), str(n)], env)[0])
            if isic:
                cli_runs.append(run(cli_cmd(isic, tmp / f"ids-cli-{attempt}", n), env)[0])
        ours_t = min(ours_runs)
        print(f"from a list of {n} ids: ours {ours_t:.2f} s", end="")
        if isic:
            cli_t = min(cli_runs)
            print(f", official CLI (-l {n}) {cli_t:.2f} s, ratio {cli_t / ours_t:.2f}x (best of 2 each)")
        else:
            print()
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--min-bytes", type=int, default=300_000)
    parser.add_argument("--max-bytes", type=int, default=1_500_000)
    parser.add_argument("--only", choices=["ids"], help="run only the list-of-ids comparison")
    args = parser.parse_args()
    isic = official_cli()
    env = {**os.environ, "ISIC_DEV": "1", "HOME": tempfile.mkdtemp(prefix="isic-home-")}
    sizes = (args.min_bytes, args.max_bytes)
    n = args.images
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="isic-bench-"))
    if args.only == "ids":
        try:
            from_ids(isic, n, args.latency, sizes, env, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        from_ids(isic, min(n, 200), args.latency, sizes, env, tmp)
        server = serve(n, args.latency, sizes, [])
        try:
            ours_t, _ = run(ours_cmd(tmp / "ours", n), env)
            total = folder_bytes(tmp / "ours")
            results["ours_s"] = ours_t
            print(f"ours:         {n} images, {total / 1e6:.0f} MB in {ours_t:.1f} s ({total / ours_t / 1e6:.1f} MB/s)")
            if isic:
                cli_t, _ = run(cli_cmd(isic, tmp / "cli", n), env)
                print(f"official CLI: {n} images in {cli_t:.1f} s ({folder_bytes(tmp / 'cli') / cli_t / 1e6:.1f} MB/s)")
                print(f"  throughput ratio (ours / official): {cli_t / ours_t:.2f}x")
            # resume: interrupt at ~50% of the bytes, then complete
            for label, make in (("ours", lambda out: ours_cmd(out, n)),
                                ("official CLI", (lambda out: cli_cmd(isic, out, n)) if isic else None)):
                if make is None:
                    continue
                out = tmp / f"resume-{label.replace(' ', '-')}"
                interrupted(make(out), env, out, total // 2)
                on_disk = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
                complete = sum(p.stat().st_size for p in out.glob("ISIC_*.jpg"))
                _, stdout = run(make(out), env)
                # ours reports the bytes it transferred; the official CLI re-fetches every incomplete file
                second = int(stdout.strip().splitlines()[-1]) if label == "ours" else total - complete
                print(f"resume {label:13}: killed with {on_disk / total:.0%} of the bytes on disk; the second run "
                      f"transferred {second / total:.0%} of a full download")
        finally:
            server.terminate()
            server.wait()
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
            ok = folder_bytes(tmp / "storm-ours") > 0
            print(f"  every file intact (ours): {ok}")
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
