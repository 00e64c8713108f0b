"""Superpixel decode + map: ours against the original package, in the same run.

Baselines (isicarchive 0.4.11 in benchmarks/.venv-original, via subprocess):
  * pure Python: the original algorithm (``jitfunc.superpixel_map.py_func``),
  * numba steady state (``jitfunc.superpixel_decode`` + ``superpixel_map``, warmed up),
  * numba first map in a fresh process (import + decode + map, compile included).
Ours: ``isicarchive.superpixels.decode`` + ``superpixel_map``, steady state and
first map in a fresh process.  The arrays are checked identical (dtype, shape,
values) and peak memory is reported (tracemalloc for ours).

    python benchmarks/superpixels.py            # all three sizes
    python benchmarks/superpixels.py --quick    # pure Python only at 767x1022
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import imageio.v3 as iio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _original  # noqa: E402

from isicarchive import superpixels as sp  # noqa: E402
from isicarchive.testing.generator import superpixel_labels  # noqa: E402

SIZES = [(767, 1022), (3000, 4000), (4000, 6000)]

BASELINE = r"""
import sys, time, json, numpy, imageio
t0 = time.perf_counter()
from isicarchive import jitfunc
png, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
rgb = imageio.imread(png)
result = {}
if mode == "first":
    t = time.perf_counter(); idx = jitfunc.superpixel_decode(rgb); m = jitfunc.superpixel_map(idx)
    result["first"] = time.perf_counter() - t0
elif mode == "steady":
    idx = jitfunc.superpixel_decode(rgb); m = jitfunc.superpixel_map(idx)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); idx = jitfunc.superpixel_decode(rgb); m = jitfunc.superpixel_map(idx)
        best = min(best, time.perf_counter() - t)
    result["steady"] = best
    numpy.save(out, m)
else:
    idx = jitfunc.superpixel_decode.py_func(rgb) if rgb.shape[0] < 1000 else jitfunc.superpixel_decode(rgb)
    t = time.perf_counter(); m = jitfunc.superpixel_map.py_func(idx); result["python"] = time.perf_counter() - t
    numpy.save(out, m)
print(json.dumps(result))
"""

OURS_FIRST = r"""
import sys, time
t0 = time.perf_counter()
import imageio.v3 as iio
from isicarchive import superpixels as sp
rgb = iio.imread(sys.argv[1])
m = sp.superpixel_map(sp.decode(rgb))
print(time.perf_counter() - t0)
"""


def labels(height: int, width: int) -> np.ndarray:
    base = superpixel_labels(1022, 767, 1000, seed=4)
    ys = np.arange(height) * base.shape[0] // height
    xs = np.arange(width) * base.shape[1] // width
    return base[ys[:, None], xs[None, :]]


def ours_steady(rgb: np.ndarray) -> tuple[float, np.ndarray]:
    best = 1e9
    sp.superpixel_map(sp.decode(rgb))
    for _ in range(5):
        t = time.perf_counter()
        m = sp.superpixel_map(sp.decode(rgb))
        best = min(best, time.perf_counter() - t)
    return best, m


def ours_peak(rgb: np.ndarray) -> tuple[int, int, int]:
    tracemalloc.start()
    idx = sp.decode(rgb)
    m = sp.superpixel_map(idx)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, m.nbytes, idx.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pure-Python baseline only at the smallest size")
    args = parser.parse_args()
    have_baseline = _original.python() is not None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for height, width in SIZES:
            idx = labels(height, width)
            rgb = sp.encode(idx)
            png = Path(tmp) / f"sp_{height}x{width}.png"
            iio.imwrite(png, rgb)
            rgb = np.asarray(iio.imread(png))
            steady, ours_map = ours_steady(rgb)
            first = min(float(subprocess.run([sys.executable, "-c", OURS_FIRST, str(png)], capture_output=True,
                                             text=True, check=True).stdout) for _ in range(3))
            peak, out_bytes, idx_bytes = ours_peak(rgb)
            row = {"size": f"{width}x{height}", "ours_steady_s": steady, "ours_first_s": first,
                   "ours_peak_extra_MB": (peak - out_bytes) / 1e6, "index_MB": idx_bytes / 1e6,
                   "map_MB": out_bytes / 1e6}
            if have_baseline:
                out = Path(tmp) / "m.npy"
                nb = json.loads(_original.run(BASELINE, str(png), str(out), "steady"))
                numba_map = np.load(out)
                row["identical_to_numba"] = bool(numba_map.dtype == ours_map.dtype and numba_map.shape == ours_map.shape
                                                 and np.array_equal(numba_map, ours_map))
                row["numba_steady_s"] = nb["steady"]
                row["numba_first_s"] = min(json.loads(_original.run(BASELINE, str(png), str(out), "first"))["first"]
                                           for _ in range(2))
                if not args.quick or height < 1000:
                    py = json.loads(_original.run(BASELINE, str(png), str(out), "python"))
                    row["python_s"] = py["python"]
                    row["identical_to_python"] = bool(np.array_equal(np.load(out), ours_map))
                    row["x_vs_python"] = py["python"] / steady
                row["x_vs_numba_steady"] = nb["steady"] / steady
                row["x_vs_numba_first"] = row["numba_first_s"] / first
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\nsize        vs-python  vs-numba(steady)  vs-numba(first)  identical  peak-extra/index")
    for r in rows:
        print(f"{r['size']:11} {r.get('x_vs_python', float('nan')):9.1f}x "
              f"{r.get('x_vs_numba_steady', float('nan')):15.2f}x "
              f"{r.get('x_vs_numba_first', float('nan')):15.1f}x  "
              f"{str(r.get('identical_to_numba', '?')):9}  {r['ours_peak_extra_MB'] / r['index_MB']:.1f} index copies")


if __name__ == "__main__":
    main()
