"""Start-up cost: `import isicarchive`, `from isicarchive import IsicApi` and `isicarchive --help`,
each against `python -c pass` measured in the same run (median of N fresh processes).

    python benchmarks/imports.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    cli = shutil.which("isicarchive") or f"{python} -m isicarchive.cli"
    baseline = median_seconds([python, "-c", "pass"], args.runs)
    print(f"python -c pass: {baseline * 1e3:.0f} ms (baseline)")
    for label, command in (("import isicarchive", [python, "-c", "import isicarchive"]),
                           ("from isicarchive import IsicApi", [python, "-c", "from isicarchive import IsicApi"]),
                           ("isicarchive --help", [*cli.split(), "--help"])):
        spent = median_seconds(command, args.runs)
        print(f"{label:34} +{(spent - baseline) * 1e3:4.0f} ms over the baseline")


if __name__ == "__main__":
    main()
