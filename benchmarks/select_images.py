"""select_images: our columnar index against the original per-record evaluation, same run.

Baseline: the original package's ``func.select_from`` (isicarchive 0.4.11 in
benchmarks/.venv-original, via subprocess, on the same records).  Data: the
real 23,906-record dump (../shared/fixtures) when present, and a generated
400,000-record cache.  Prints per-query ratios, index build time and memory.

    python benchmarks/select_images.py [--records 400000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _original  # noqa: E402

from isicarchive.selection import ImageIndex  # noqa: E402
from isicarchive.testing import ArchiveConfig, ArchiveData  # noqa: E402

DUMP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "imcache_000000000000000000000000.json.gz"

QUERIES = {
    "large dermoscopic non-nevi": [["meta.acquisition.pixelsX", ">=", 2048],
                                   ["meta.acquisition.image_type", "==", "dermoscopic"],
                                   ["meta.clinical.diagnosis", "!=", "nevus"]],
    "tag in list": ["notes.tags", "ni", "ISBI 2017: Training"],
    "spaces in key": ["meta.unstructured.biopsy done", "==", "Y"],
    "is True": ["meta.clinical.melanocytic", "is", True],
    "age range": [["meta.clinical.age_approx", ">=", 40], ["meta.clinical.age_approx", "<", 60]],
    "regex": ["meta.clinical.diagnosis", "match", "^(mel|bas)"],
    "in list": ["meta.clinical.anatom_site_general", "in", ["head/neck", "palms/soles"]],
    "missing is None": ["meta.clinical.age_approx", "is None", None],
    "name equality": ["name", "==", "ISIC_0001234"],
}

BASELINE = r"""
import sys, json, gzip, time
from isicarchive import func
records = json.loads(gzip.open(sys.argv[1]).read())
queries = json.loads(sys.argv[2]); repeat = int(sys.argv[3])
out = {}
for name, criteria in queries.items():
    best = 1e9
    for _ in range(repeat):
        t = time.perf_counter(); sel = func.select_from(records, criteria); best = min(best, time.perf_counter() - t)
    out[name] = {"seconds": best, "ids": sorted(sel)}
print(json.dumps(out))
"""


def bench(records: dict, label: str, repeat: int) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    index = ImageIndex(records)
    build = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\n== {label}: {len(records)} records; index built in {build:.2f} s, peak {peak / 1e9:.2f} GB (tracemalloc)")
    print(f"   process peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    ours = {}
    for name, criteria in QUERIES.items():
        best = best_dict = 1e9
        for _ in range(repeat):
            t = time.perf_counter()
            sel = index.select(criteria)
            best = min(best, time.perf_counter() - t)
            t = time.perf_counter()
            dict(index.select(criteria).items())  # the selection made into a plain dict, as the original returns
            best_dict = min(best_dict, time.perf_counter() - t)
        ours[name] = (best, sorted(sel), best_dict)
    baseline = None
    if _original.python() is not None:
        with tempfile.NamedTemporaryFile(suffix=".json.gz") as tmp:
            tmp.write(gzip.compress(json.dumps(records).encode()))
            tmp.flush()
            baseline = json.loads(_original.run(BASELINE, tmp.name, json.dumps(QUERIES), str(max(1, repeat // 3))))
    print(f"{'query':28} {'matches':>8} {'ours ms':>9} {'as dict ms':>11} {'original ms':>12} {'ratio':>7} "
          f"{'ratio(dict)':>11}  same")
    for name, (seconds, ids, as_dict) in ours.items():
        if baseline:
            base = baseline[name]
            print(f"{name:28} {len(ids):8d} {seconds * 1e3:9.2f} {as_dict * 1e3:11.2f} {base['seconds'] * 1e3:12.1f} "
                  f"{base['seconds'] / seconds:6.0f}x {base['seconds'] / as_dict:10.0f}x  {base['ids'] == ids}")
        else:
            print(f"{name:28} {len(ids):8d} {seconds * 1e3:9.2f} {as_dict * 1e3:11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000, help="size of the generated cache")
    args = parser.parse_args()
    if DUMP.exists():
        bench(json.loads(gzip.open(DUMP).read()), "real dump", repeat=10)
    else:
        print("(real dump not present: ../shared/fixtures)")
    started = time.perf_counter()
    data = ArchiveData(seed=1, config=ArchiveConfig(images=args.records, studies=0))
    print(f"\n(generated {args.records} records in {time.perf_counter() - started:.1f} s)")
    bench({r["_id"]: r for r in data.images}, "generated", repeat=5)


if __name__ == "__main__":
    main()
