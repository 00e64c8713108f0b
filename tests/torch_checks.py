"""The torch adapter's checks, run by tests/test_torch.py inside a virtualenv that has torch.

Run as ``python torch_checks.py CACHE_FOLDER``: serves a local archive, checks the datasets and
data loaders (fork and spawn workers, workers x ranks, a missing target, credentials in workers,
masks, a warm epoch without requests), torchvision's readers over the exports where torchvision
imports, runs the Training page's PyTorch loop, and prints one JSON object of findings.

One interpreter for all of it: importing torch costs some 3 s of CPU (torchvision and torch's
optimisers, which import torch._dynamo, as much again), and each interpreter pays it.
"""

# ruff: noqa: E402  (the imports follow gc.disable(), below)
from __future__ import annotations

import gc

# Importing torch makes some 180,000 objects that live as long as the process: the collector, left on, walks
# them again and again while they are made, then at every full collection and once more at exit (0.6 s of CPU
# in each interpreter that imports torch: this one and the spawned loader workers, which import this module
# again). Once imported, they are put out of its reach (gc.freeze).
gc.disable()

import atexit
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any


def _leave_at_once() -> None:
    """End a spawned loader worker without tearing torch down (~0.25 s of CPU for nothing). Its samples, or its
    exception, went back through the loader's queues already; a worker that died before is noticed by the loader
    all the same (it is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__mp_main__":  # a spawned loader worker, which runs this module again as its main
    # registered before torch is imported: atexit runs the last registered first, so torch's own handlers still run
    atexit.register(_leave_at_once)

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from isicarchive import IsicApi
from isicarchive.errors import MissingTargetError
from isicarchive.torch import IsicDataset, IsicIterableDataset

gc.freeze()
gc.enable()


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.contiguous().numpy().tobytes()).hexdigest()


def loader_digests(dataset: Any, context: str | None, workers: int = 2) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, multiprocessing_context=context)
    return [digest(image) for image, _ in loader]


def main(folder: Path) -> dict[str, Any]:
    # imported here, not with the module: spawned loader workers import this module again, and need no archive
    from isicarchive.testing import ArchiveConfig, LocalArchive

    found: dict[str, Any] = {}
    with LocalArchive(seed=20, config=ArchiveConfig(images=16)) as server:
        api = IsicApi(hostname=server.url, api_version=2, cache_folder=folder / "cache", progress=False)
        selection = api.select_images([["isic_id", "not is None"]])
        dataset = IsicDataset(selection, target="diagnosis_1")
        image, target = dataset[0]
        cached = api.context.store.image_path(dataset.samples.records[0])
        decoded = torch.from_numpy(np.array(PILImage.open(io.BytesIO(cached.read_bytes())))).permute(2, 0, 1)
        found["first"] = {"dtype": str(image.dtype), "shape": list(image.shape), "target": target,
                          "equal_to_file": bool(torch.equal(image, decoded)), "classes": dataset.classes,
                          "class_to_idx": dataset.class_to_idx, "targets": dataset.targets,
                          "weights": dataset.class_weights().tolist(), "len": len(dataset),
                          "record_id": dataset.record(0)["isic_id"]}
        serial = [digest(dataset[i][0]) for i in range(len(dataset))]
        # forked workers read the warm cache, run the transforms, and their samples collate (one loader for all
        # of it: each loader forks two workers, ~0.12 s of CPU)
        scaled = IsicDataset(selection, target="diagnosis_1", transform=lambda t: t.float(),
                             target_transform=lambda t: t * 10)
        server.clear_log()
        batches = list(DataLoader(scaled, batch_size=4, num_workers=2, multiprocessing_context="fork"))
        found["warm_epoch_requests"] = len(server.log)  # the loader's workers read a warm cache
        found["fork"] = [digest(image.to(torch.uint8)) for images, _ in batches for image in images] == serial
        found["batch"] = {"shape": list(batches[0][0].shape), "dtype": str(batches[0][0].dtype),
                          "targets": [t for _, targets in batches for t in targets.tolist()],
                          "expected": [t * 10 for t in scaled.targets]}
        # streaming: two ranks of two workers each deal every sample once, in a seeded order
        streamed = []
        for rank in (0, 1):
            shard = IsicIterableDataset(selection, target="diagnosis_1", seed=7, rank=rank, world_size=2)
            shard.set_epoch(1)
            streamed.append(loader_digests(shard, "fork"))
        found["ranks"] = {"sizes": [len(s) for s in streamed], "all": sorted(streamed[0] + streamed[1]),
                          "serial": sorted(serial)}
        again = IsicIterableDataset(selection, target="diagnosis_1", seed=7, rank=0, world_size=2)
        again.set_epoch(2)
        second = loader_digests(again, "fork")
        found["ranks"]["other_epoch_differs"] = second != streamed[0]
        # workers kept from epoch to epoch follow set_epoch as new ones do; their first epoch, of a new dataset
        # with the same seed, is dealt as rank 0's was
        kept = DataLoader(again, batch_size=None, num_workers=2, multiprocessing_context="fork",
                          persistent_workers=True)
        orders = []
        for epoch in (1, 2):
            again.set_epoch(epoch)
            orders.append([digest(image) for image, _ in kept])
        found["ranks"]["same_order"] = orders[0] == streamed[0]
        found["ranks"]["persistent_workers_follow_the_epoch"] = orders == [streamed[0], second]
        # a missing target field
        try:
            IsicDataset(selection, target="sex")
            found["missing"] = "no error"
        except MissingTargetError as exc:
            found["missing"] = {"message": str(exc), "count": exc.count, "total": exc.total}
        kept = IsicDataset(selection, target="sex", missing="keep")
        found["missing_kept"] = sorted(set(kept.targets))[:1]
        found["missing_expected"] = sum(not r["metadata"]["clinical"].get("sex") for r in selection.values())

        # a cold cache streams: the files arrive with parallel transfers while the loader consumes
        # (over the records in hand: a second metadata sync would show nothing more)
        cold = IsicApi(hostname=server.url, api_version=2, cache_folder=folder / "cold", progress=False)
        stream = IsicIterableDataset(list(selection.values()), api=cold, target="diagnosis_1")
        found["cold_stream"] = sorted(loader_digests(stream, "fork")) == sorted(serial)

        # credentials reach the workers: a spawned worker of a signed-in v1 session fetches private images
        # into a cold cache. One worker: a spawned worker imports torch afresh (~3 s of CPU), and a second one
        # would unpickle the same dataset the same way (a map-style dataset does nothing by worker; the loaders
        # under fork above and the streams run two workers each)
        token = server.token_for("alice")
        alice = IsicApi(hostname=server.url, api_version=1, token=token, progress=False,
                        cache_folder=folder / "alice")
        private = [r for r in alice.cache_images().values()
                   if not server.data.dataset_public(r["dataset"]["_id"])]
        secret = IsicDataset(private[:4], target="benign_malignant", api=alice, missing="keep")
        server.clear_log()
        spawned = loader_digests(secret, "spawn", workers=1)
        fetched = len(server.requests("download"))
        server.clear_log()
        mine = [digest(secret[i][0]) for i in range(len(secret))]  # from the cache the workers filled
        found["spawn"] = spawned == mine
        found["credentials"] = {"private": len(private), "spawn": spawned == mine, "fetched_in_workers": fetched,
                                "then_requests": len(server.log),
                                "token_in_repr": token in repr(secret.samples.session)}
        nocache = IsicApi(hostname=server.url, api_version=1, token=token, progress=False)
        forked = IsicDataset(private[:4], target="benign_malignant", api=nocache, missing="keep")
        found["credentials"]["fork"] = loader_digests(forked, "fork") == mine
        anonymous = IsicApi(hostname=server.url, api_version=1, progress=False)
        try:
            IsicDataset(private[:1], api=anonymous, target="benign_malignant", missing="keep")[0]
            found["credentials"]["anonymous"] = "read a private image"
        except Exception as exc:  # noqa: BLE001
            found["credentials"]["anonymous"] = type(exc).__name__

        # masks: v1 segmentations, cached, so a second epoch asks nothing
        v1 = IsicApi(hostname=server.url, api_version=1, cache_folder=folder / "v1", progress=False)
        every = list(v1.cache_images().values())
        masks = IsicDataset(every, api=v1, target="mask", missing="drop")
        image, mask = masks[0]
        first = [digest(masks[i][1]) for i in range(len(masks))]
        server.clear_log()
        found["masks"] = {"len": len(masks), "of": len(every), "shape": list(mask.shape),
                          "image_shape": list(image.shape), "dtype": str(mask.dtype),
                          "values": sorted(torch.unique(mask).tolist()),
                          "epoch": loader_digests(masks, "fork") == [digest(masks[i][0]) for i in range(len(masks))],
                          "again": [digest(masks[i][1]) for i in range(len(masks))] == first,
                          "warm_requests": len(server.log)}
        torchvision = torchvision_checks(selection, folder)
        if torchvision is not None:
            found["torchvision"] = torchvision
    return found


def torchvision_checks(selection: Any, folder: Path) -> dict[str, Any] | None:
    """torchvision's ImageFolder and decode_image over the imagefolder export (a selection, a split's parts),
    every sample compared with IsicDataset; None where torchvision does not import."""
    # imported here: spawned loader workers import this module again, and need no torchvision
    gc.disable()  # torchvision imports torch._dynamo and sympy: as many objects again, for good (see above)
    try:
        from torchvision.datasets import ImageFolder
        from torchvision.io import decode_image
        from torchvision.transforms import v2
        from torchvision.transforms.functional import pil_to_tensor
    except ImportError:
        return None
    finally:
        gc.freeze()
        gc.enable()
    found: dict[str, Any] = {}
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
    resized = IsicDataset(selection, target="diagnosis_1",
                          transform=v2.Compose([v2.Resize((32, 32)), v2.ToDtype(torch.float32, scale=True)]))
    images, labels = next(iter(DataLoader(resized, batch_size=8, num_workers=2, shuffle=True)))
    found["transform"] = {"shape": list(images.shape), "dtype": str(images.dtype), "max": float(images.max())}
    return found


def docs_blocks(work: Path) -> dict[str, Any]:
    """The Training page's PyTorch code (its ``py`` blocks, after the page's first block), run as written."""
    import contextlib
    import re
    import tempfile

    # the page makes its folders with tempfile.mkdtemp(), as a reader would: here in the test's folder, which
    # pytest removes (they were left in /tmp, one a run)
    tempfile.tempdir = str(work)

    docs = Path(__file__).resolve().parents[1] / "docs"
    python = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
    torch_code = re.compile(r"^```py\n(.*?)^```", re.S | re.M)
    page = (docs / "training.md").read_text(encoding="utf-8")
    blocks = [python.findall((docs / "index.md").read_text(encoding="utf-8"))[0], python.findall(page)[0],
              *torch_code.findall(page)]
    namespace: dict[str, Any] = {"__name__": "docs"}
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            for number, block in enumerate(blocks):
                exec(compile(block, f"training.md:block{number}", "exec"), namespace)
    finally:
        if "archive" in namespace:
            namespace["archive"].stop()
    return {"blocks": len(blocks) - 2, "output": output.getvalue()}


if __name__ == "__main__":
    findings = main(Path(sys.argv[1]))
    findings["docs"] = docs_blocks(Path(sys.argv[1]))
    print(json.dumps(findings), flush=True)
    # every loader, worker and server has stopped: tearing torch, torch._dynamo and sympy down at exit would cost
    # ~0.5 s of CPU for nothing
    os._exit(0)
