"""Small generated copies of the challenge releases, with their real file names and CSV shapes: for the
documentation's examples and for trying code before the real download is there.

>>> isicarchive.releases.sample.write("isic2016-task3", "/tmp/isic2016")   # doctest: +SKIP

The images are tiny JPEGs of noise, the masks discs; nothing in them is
medical data.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import ATTRIBUTES_2018, Release

__all__ = ["write"]


def _jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    import imageio.v3 as iio

    return bytes(iio.imwrite("<bytes>", rng.integers(0, 255, (size, size, 3), dtype=np.uint8), extension=".jpg"))


def _png(array: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return bytes(iio.imwrite("<bytes>", array, extension=".png"))


def _disc(rng: np.random.Generator, size: int = 24) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(8, 16), rng.integers(8, 16), rng.integers(4, 8)
    return (((y - cy) ** 2 + (x - cx) ** 2) <= r * r).astype(np.uint8) * 255


def _csv(rows: Sequence[Sequence[Any]]) -> bytes:
    stream = io.StringIO()
    csv.writer(stream, lineterminator="\n").writerows(rows)
    return stream.getvalue().encode()


def write(name: str, folder: str | os.PathLike[str], images: int = 6, *, zipped: bool = False,
          seed: int = 0) -> Path:
    """Write a small copy of a release into ``folder``; returns the folder.

    Parameters
    ----------
    name : str
        The release (see :func:`isicarchive.releases.list`).
    images : int
        Images per split (at least 2: each class of a binary task appears).
    zipped : bool
        Write the folders as the zips of the download (``<folder>.zip``) instead.
    """
    from . import release

    item: Release = release(name)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    number = 1
    for part in item.parts:
        out: dict[str, dict[str, bytes]] = {}  # folder → {file: bytes}; "" = the root
        ids = [f"ISIC_{number + n:07d}" for n in range(images)]
        number += images
        kinds = 3 if item.reader == "isic2017-task3" else max(2, len(item.classes))  # 2017: nevus as well
        labels = [n % kinds for n in range(images)]
        image_folder = part.images[0]
        if part.hdf5:
            _hdf5(root / part.hdf5[0], {i: _jpeg(rng) for i in ids})
        else:
            folders = [image_folder, *part.also_images]
            for n, isic_id in enumerate(ids):
                target = folders[n % len(folders)]
                out.setdefault(target, {})[f"{isic_id}.jpg"] = _jpeg(rng)
                if name.startswith("isic2017"):
                    out[target][f"{isic_id}_superpixels.png"] = _png(rng.integers(0, 255, (24, 24, 3), np.uint8))
        if part.masks:
            masks = out.setdefault(part.masks[0], {})
            for isic_id in ids:
                if item.attributes:
                    for attribute in ATTRIBUTES_2018:
                        masks[f"{isic_id}_attribute_{attribute}.png"] = _png(_disc(rng))
                else:
                    masks[f"{isic_id}{item.mask_suffix}"] = _png(_disc(rng))
        if part.metadata and name.startswith("isic2017"):
            out.setdefault(image_folder, {})[part.metadata[0]] = _csv(
                [["image_id", "age_approximate", "sex"]] + [[i, 55, "female"] for i in ids])
        truth = _truth(item, part.split, ids, labels)
        if truth is not None and part.truth:
            if item.reader == "one-hot" and item.name == "isic2018-task3":
                out.setdefault(Path(part.truth[0]).stem, {})[part.truth[0]] = truth  # unzips into its own folder
            else:
                out.setdefault("", {})[part.truth[0]] = truth
        if part.metadata and item.reader == "isic2024":
            out.setdefault("", {})[part.metadata[0]] = _csv([["isic_id", "patient_id"]] + [[i, "IP_0000001"]
                                                                                           for i in ids])
        for target, members in out.items():
            if target and zipped:
                with zipfile.ZipFile(root / f"{target}.zip", "w") as archive:
                    for member, data in members.items():
                        archive.writestr(f"{target}/{member}", data)
                continue
            (root / target).mkdir(parents=True, exist_ok=True)
            for member, data in members.items():
                (root / target / member).write_bytes(data)
    return root


def _truth(item: Release, split: str, ids: list[str], labels: list[int]) -> bytes | None:
    if item.reader == "isic2016-task3":
        words = ("benign", "malignant") if split == "train" else ("0.0", "1.0")
        return _csv([[i, words[label % 2]] for i, label in zip(ids, labels, strict=True)])  # no header
    if item.reader == "isic2017-task3":
        return _csv([["image_id", "melanoma", "seborrheic_keratosis"]] +
                    [[i, float(label % 3 == 1), float(label % 3 == 2)] for i, label in zip(ids, labels, strict=True)])
    if item.reader == "one-hot":
        return _csv([["image", *item.classes]] +
                    [[i, *(float(c == label % len(item.classes)) for c in range(len(item.classes)))]
                     for i, label in zip(ids, labels, strict=True)])
    if item.reader == "isic2020":
        return _csv([["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
                      "benign_malignant", "target"]] +
                    [[i, "IP_0000001", "male", 45, "torso", "melanoma" if label % 2 else "nevus",
                      "malignant" if label % 2 else "benign", label % 2] for i, label in zip(ids, labels, strict=True)])
    if item.reader == "isic2024":
        return _csv([["isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general", "iddx_full",
                      "iddx_1", "iddx_2"]] +
                    [[i, label % 2, "IP_0000001", 60, "male", "posterior torso",
                      "Malignant::Malignant melanocytic proliferations (Melanoma)" if label % 2 else "Benign",
                      "Malignant" if label % 2 else "Benign",
                      "Malignant melanocytic proliferations (Melanoma)" if label % 2 else ""]
                     for i, label in zip(ids, labels, strict=True)])
    if item.reader == "ham10000":
        codes = [c.lower() for c in item.classes]
        return _csv([["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]] +
                    [[f"HAM_{n:07d}", i, codes[label % len(codes)], "histo", 50.0, "male", "back"]
                     for n, (i, label) in enumerate(zip(ids, labels, strict=True))])
    return None


def _hdf5(path: Path, images: dict[str, bytes]) -> None:
    import h5py

    with h5py.File(path, "w") as store:
        for isic_id, data in images.items():
            store.create_dataset(isic_id, data=np.void(data))
