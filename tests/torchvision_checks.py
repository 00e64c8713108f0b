"""torchvision's readers over our exports, run by tests/test_torchvision.py in a virtualenv with torchvision.

Run as ``python torchvision_checks.py FOLDER``: exports a local archive's images as ``imagefolder`` (a
selection, and a split's parts), reads them with torchvision's ``ImageFolder`` and compares every sample
with :class:`isicarchive.torch.IsicDataset`; prints one JSON object of findings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.io import decode_image
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from isicarchive import IsicApi
from isicarchive.testing import ArchiveConfig, LocalArchive
from isicarchive.torch import IsicDataset


def main(folder: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with LocalArchive(seed=20, config=ArchiveConfig(images=30)) as server:
        api = IsicApi(hostname=server.url, api_version=2, cache_folder=folder / "cache", progress=False)
        selection = api.select_images([["isic_id", "not is None"]])
        result = selection.export(folder / "out", layout="imagefolder", target="diagnosis_1")
        ours = IsicDataset(selection, target="diagnosis_1")
        theirs = ImageFolder(str(folder / "out"))
        position = {stem: i for i, stem in enumerate(ours.samples.ids)}
        same_pixels = same_decode = same_target = 0
        for path, target in theirs.samples:
            image, label = ours[position[Path(path).stem]]
            same_pixels += torch.equal(pil_to_tensor(theirs.loader(path)), image)
            same_decode += torch.equal(decode_image(path), image)
            same_target += label == target
        found["imagefolder"] = {"classes": theirs.classes, "ours": ours.classes, "exported": result.classes,
                                "class_to_idx": theirs.class_to_idx == ours.class_to_idx, "len": len(theirs),
                                "of": len(ours), "same_pixels": same_pixels, "same_decode": same_decode,
                                "same_target": same_target}
        parts = selection.split({"train": 0.7, "test": 0.3}, by="patient_id", seed=2)
        parts.export(folder / "split", layout="imagefolder", target="diagnosis_1")
        found["split"] = {name: [len(ImageFolder(str(folder / "split" / name))), len(part)]
                          for name, part in parts.items()}
        # torchvision's v2 transforms take the tensors as they come, in loader workers
        resized = IsicDataset(parts["train"], target="diagnosis_1",
                              transform=v2.Compose([v2.Resize((32, 32)), v2.ToDtype(torch.float32, scale=True)]))
        images, labels = next(iter(DataLoader(resized, batch_size=8, num_workers=2, shuffle=True)))
        found["transform"] = {"shape": list(images.shape), "dtype": str(images.dtype), "max": float(images.max())}
    return found


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
