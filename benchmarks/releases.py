"""Opening a challenge release (``isicarchive.releases.open``) at the release's own scale.

1. ISIC 2019 training as downloaded: ``ISIC_2019_Training_Input.zip`` (N
   images, default the release's 25,331; tiny JPEGs, stored), the ground
   truth and metadata CSVs. Timed: ``releases.open`` (zip listed, CSVs read,
   index built) and ``cache_images`` (every record) — against what the public
   loaders do by hand with the same files (pandas ``read_csv`` of both CSVs,
   a merge, the zip's name list), measured in the same run.
2. ISIC 2024 (Kaggle): ``train-metadata.csv`` with the release's columns and
   ``train-image.hdf5`` (M rows, default 100,000 of the 401,059; one tiny
   JPEG per isic_id), opened the same way against pandas ``read_csv`` plus
   h5py's key listing.

Each is opened twice (the second reads the index the first kept). Each open runs in a
process of its own, which reports its peak memory.

    python benchmarks/releases.py [--images 25331] [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OPEN = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
started = time.perf_counter()
import isicarchive.releases as releases
session = releases.open(sys.argv[1], sys.argv[2])
opened = time.perf_counter() - started
records = session.cache_images()
total = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"open": opened, "with_records": total, "records": len(records), "peak_mb": peak / 1024}))
"""

BY_HAND_2019 = r"""
import json, sys, time, zipfile
started = time.perf_counter()
import pandas as pd
root = sys.argv[1]
truth = pd.read_csv(f"{root}/ISIC_2019_Training_GroundTruth.csv")
meta = pd.read_csv(f"{root}/ISIC_2019_Training_Metadata.csv")
table = truth.merge(meta, on="image")
names = zipfile.ZipFile(f"{root}/ISIC_2019_Training_Input.zip").namelist()
table["label"] = table[["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]].idxmax(axis=1)
elapsed = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "rows": len(table), "files": len(names), "peak_mb": peak / 1024}))
"""

BY_HAND_2024 = r"""
import json, sys, time
started = time.perf_counter()
import h5py
import pandas as pd
root = sys.argv[1]
table = pd.read_csv(f"{root}/train-metadata.csv", low_memory=False)
with h5py.File(f"{root}/train-image.hdf5", "r") as store:
    keys = list(store.keys())
elapsed = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "rows": len(table), "keys": len(keys), "peak_mb": peak / 1024}))
"""

JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200 + b"\xff\xd9")
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
SITES = ["anterior torso", "posterior torso", "head/neck", "upper extremity", "lower extremity", ""]
TBP = [f"tbp_lv_{name}" for name in (
    "A", "Aext", "B", "Bext", "C", "Cext", "H", "Hext", "L", "Lext", "areaMM2", "area_perim_ratio",
    "color_std_mean", "deltaA", "deltaB", "deltaL", "deltaLB", "deltaLBnorm", "eccentricity", "location",
    "location_simple", "minorAxisMM", "nevi_confidence", "norm_border", "norm_color", "perimeterMM",
    "radial_color_std_max", "stdL", "stdLExt", "symm_2axis", "symm_2axis_angle", "x", "y", "z")]


def write_2019(images: int, root: Path) -> None:
    root.mkdir(parents=True)
    ids = [f"ISIC_{n:07d}" for n in range(images)]
    with zipfile.ZipFile(root / "ISIC_2019_Training_Input.zip", "w", zipfile.ZIP_STORED) as archive:
        for n, isic_id in enumerate(ids):
            suffix = "_downsampled" if n % 5 == 0 else ""
            archive.writestr(f"ISIC_2019_Training_Input/{isic_id}{suffix}.jpg", JPEG)
    with open(root / "ISIC_2019_Training_GroundTruth.csv", "w") as fh:
        fh.write("image," + ",".join(CLASSES) + "\n")
        for n, isic_id in enumerate(ids):
            fh.write(isic_id + "," + ",".join("1.0" if k == n % 8 else "0.0" for k in range(9)) + "\n")
    with open(root / "ISIC_2019_Training_Metadata.csv", "w") as fh:
        fh.write("image,age_approx,anatom_site_general,lesion_id,sex\n")
        for n, isic_id in enumerate(ids):
            sex = "male" if n % 2 else "female"
            fh.write(f"{isic_id},{30 + 5 * (n % 10)}.0,{SITES[n % 6]},BCN_{n // 3:07d},{sex}\n")


def write_2024(rows: int, root: Path) -> None:
    import h5py
    import numpy as np

    root.mkdir(parents=True)
    ids = [f"ISIC_{n:07d}" for n in range(rows)]
    header = ["isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general",
              "clin_size_long_diam_mm", "image_type", "tbp_tile_type", *TBP, "attribution", "copyright_license",
              "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index",
              "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
    with open(root / "train-metadata.csv", "w") as fh:
        fh.write(",".join(header) + "\n")
        for n, isic_id in enumerate(ids):
            malignant = n % 1000 == 0
            lesion = f"IL_{n:07d}" if malignant else ""
            tbp = ",".join(f"{(n * 7 + k) % 997 / 10:.4f}" if not name.startswith("tbp_lv_location") else
                           "Torso Back" for k, name in enumerate(TBP))
            fh.write(f"{isic_id},{int(malignant)},IP_{n // 400:07d},{40 + n % 40}.0,male,{SITES[n % 5]},"
                     f"{2 + n % 5}.5,TBP tile: close-up,3D: white,{tbp},Memorial Sloan Kettering Cancer Center,"
                     f"CC-BY,{lesion},"
                     f"{'Malignant::Malignant melanocytic proliferations (Melanoma)' if malignant else 'Benign'},"
                     f"{'Malignant' if malignant else 'Benign'},"
                     f"{'Malignant melanocytic proliferations (Melanoma)' if malignant else ''},,,,,,97.5\n")
    with h5py.File(root / "train-image.hdf5", "w") as store:
        for isic_id in ids:
            store.create_dataset(isic_id, data=np.bytes_(JPEG))


def run(script: str, *args: str, index_folder: Path | None = None) -> dict:
    env = {**os.environ, **({"ISICARCHIVE_INDEX_FOLDER": str(index_folder)} if index_folder else {})}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=25331)
    parser.add_argument("--rows", type=int, default=100000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isic-releases-bench-") as temporary:
        root = Path(temporary)
        write_2019(args.images, root / "isic2019")
        ours = run(OPEN, "isic2019", str(root / "isic2019"), index_folder=root / "indexes")
        again = run(OPEN, "isic2019", str(root / "isic2019"), index_folder=root / "indexes")
        by_hand = run(BY_HAND_2019, str(root / "isic2019"))
        print(f"isic2019, {args.images:,} images in the zip as downloaded")
        print(f"  releases.open            {ours['open']:7.2f} s   peak {ours['peak_mb']:6.0f} MB")
        print(f"  + every record           {ours['with_records']:7.2f} s   ({ours['records']:,} records)")
        print(f"  opened again (index kept){again['open']:7.2f} s   peak {again['peak_mb']:6.0f} MB")
        print(f"  pandas + zip names       {by_hand['seconds']:7.2f} s   peak {by_hand['peak_mb']:6.0f} MB")
        print(f"  ratio open / by hand     {ours['open'] / by_hand['seconds']:7.2f}x, "
              f"opened again {again['open'] / by_hand['seconds']:.2f}x")
        write_2024(args.rows, root / "isic2024")
        ours = run(OPEN, "isic2024", str(root / "isic2024"), index_folder=root / "indexes")
        again = run(OPEN, "isic2024", str(root / "isic2024"), index_folder=root / "indexes")
        by_hand = run(BY_HAND_2024, str(root / "isic2024"))
        print(f"isic2024, {args.rows:,} rows of {59} columns, one JPEG per id in train-image.hdf5")
        print(f"  releases.open            {ours['open']:7.2f} s   peak {ours['peak_mb']:6.0f} MB")
        print(f"  + every record           {ours['with_records']:7.2f} s   ({ours['records']:,} records)")
        print(f"  opened again (index kept){again['open']:7.2f} s   peak {again['peak_mb']:6.0f} MB")
        print(f"  pandas + h5py keys       {by_hand['seconds']:7.2f} s   peak {by_hand['peak_mb']:6.0f} MB")
        print(f"  ratio open / by hand     {ours['open'] / by_hand['seconds']:7.2f}x, "
              f"opened again {again['open'] / by_hand['seconds']:.2f}x")


if __name__ == "__main__":
    main()
