"""The PyTorch adapter (isicarchive.torch) and torchvision's readers of the exports, checked inside a
virtualenv with torch built once in the test cache.

torch is never part of the package's default install or its test extra (its wheels from the package index
bring several GB of CUDA libraries): the checks run in one interpreter of a virtualenv of the test cache
(tests/tool_venvs.py: ``torchvision-0.29.1`` where ``python benchmarks/training.py`` has made it, else
``torch-2.13.0``, CPU torch 2.13.0 and webdataset, made on first use) with this checkout on ``PYTHONPATH``,
and skip where no such virtualenv can be made; torchvision's checks skip where it is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tool_venvs import TEST_CACHE, TORCHVISION_VENV, torch_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    made = torch_python()
    if made is None:
        pytest.skip("no virtualenv with torch could be made (no package index, or no torch wheel for this Python)")
    python, with_torchvision = made
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISICARCHIVE_NO_PROMPT": "1", "PYTHONWARNINGS": "error::UserWarning",
           # torch's OpenMP threads spin-wait between operations (the page's CNN steps cost twice the CPU on two
           # cores); these checks are about data, not speed (data-loader workers take one thread anyway)
           "OMP_NUM_THREADS": "1"}
    # 26-37 s at loads of 10-15 here, 153 s once at 16 in a whole suite (the bound was 300 s for each of the two
    # interpreters this one replaces)
    done = subprocess.run([str(python), str(ROOT / "tests" / "torch_checks.py"), str(tmp_path_factory.mktemp("torch"))],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    findings: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert ("torchvision" in findings) == with_torchvision  # torchvision's checks ran wherever it is installed
    return findings


@pytest.fixture
def torchvision(found: dict[str, Any]) -> dict[str, Any]:
    if "torchvision" not in found:
        pytest.skip(f"no virtualenv with torchvision at {TEST_CACHE / TORCHVISION_VENV[0]} "
                    "(python benchmarks/training.py makes it)")
    return found["torchvision"]


pytestmark = pytest.mark.slow


def test_samples_are_uint8_tensors_with_torchvision_labels(found: dict[str, Any]) -> None:
    first = found["first"]
    assert first["dtype"] == "torch.uint8" and first["shape"] == [3, 120, 160]
    assert first["equal_to_file"]  # the tensor is the cached file, decoded
    assert first["classes"] == sorted(first["class_to_idx"]) == ["Benign", "Malignant"]
    assert first["len"] == len(first["targets"]) == 12
    counts = [first["targets"].count(c) for c in range(2)]
    assert [w * n for w, n in zip(first["weights"], counts, strict=True)] == pytest.approx([6.0, 6.0])
    assert first["target"] == first["targets"][0] and first["record_id"] == "ISIC_0000000"
    # a transform and a target transform ran in forked workers, and the samples collated
    assert found["batch"] == {"shape": [4, 3, 120, 160], "dtype": "torch.float32",
                              "targets": found["batch"]["expected"], "expected": found["batch"]["expected"]}


def test_workers_under_fork_and_spawn_read_a_warm_cache_without_requests(found: dict[str, Any]) -> None:
    assert found["fork"] and found["spawn"]
    assert found["warm_epoch_requests"] == 0


def test_two_workers_on_two_ranks_deal_every_sample_once(found: dict[str, Any]) -> None:
    ranks = found["ranks"]
    assert ranks["all"] == ranks["serial"]  # no duplicate, no gap
    assert ranks["sizes"] == [6, 6] and ranks["same_order"] and ranks["other_epoch_differs"]
    assert ranks["persistent_workers_follow_the_epoch"]
    assert found["cold_stream"]


def test_a_missing_target_field(found: dict[str, Any]) -> None:
    missing = found["missing"]
    assert isinstance(missing, dict), missing
    count = found["missing_expected"]
    assert missing["count"] == count > 0 and missing["total"] == 12
    assert f"{count} of 12 images have no sex" in missing["message"] and "missing='drop'" in missing["message"]
    assert found["missing_kept"] == [-1]


def test_a_signed_in_sessions_credentials_reach_the_workers(found: dict[str, Any]) -> None:
    credentials = found["credentials"]
    assert credentials["private"] > 0 and credentials["spawn"] and credentials["fork"]
    # the spawned worker fetched the private images itself, into the cache the session then reads
    assert credentials["fetched_in_workers"] == 4 and credentials["then_requests"] == 0
    assert credentials["anonymous"] == "AuthenticationError" and not credentials["token_in_repr"]


def test_masks_from_v1_segmentations(found: dict[str, Any]) -> None:
    masks = found["masks"]
    assert 0 < masks["len"] < masks["of"]  # images without a segmentation were dropped, as asked
    assert masks["shape"] == [1] + masks["image_shape"][1:] and masks["dtype"] == "torch.uint8"
    assert masks["values"] == [0, 255] and masks["epoch"] and masks["again"]
    assert masks["warm_requests"] == 0


def test_the_training_pages_pytorch_loop_runs(found: dict[str, Any]) -> None:
    docs = found["docs"]
    assert docs["blocks"] == 2
    assert "epoch 1: loss" in docs["output"] and "batches an epoch" in docs["output"]


# ------------------------------------------------------------- torchvision
def test_imagefolder_reads_the_export_as_our_dataset_does(torchvision: dict[str, Any]) -> None:
    folder = torchvision["imagefolder"]
    assert folder["classes"] == folder["ours"] == folder["exported"] and folder["class_to_idx"]
    assert folder["len"] == folder["of"] > 0
    # every sample: the same class, and the same tensor as torchvision's PIL loader and decode_image give
    assert folder["same_target"] == folder["same_pixels"] == folder["same_decode"] == folder["len"]


def test_a_splits_parts_are_imagefolders(torchvision: dict[str, Any]) -> None:
    assert all(read == expected > 0 for read, expected in torchvision["split"].values())


def test_torchvision_transforms_take_the_tensors(torchvision: dict[str, Any]) -> None:
    assert torchvision["transform"]["shape"] == [8, 3, 32, 32] and torchvision["transform"]["dtype"] == "torch.float32"
    assert 0 < torchvision["transform"]["max"] <= 1.0
