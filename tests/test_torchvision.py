"""torchvision's ImageFolder and decode_image over the imagefolder export, where a virtualenv with
torchvision has been made.

torchvision from the package index does not import beside the CPU torch 2.13.0 of tests/test_torch.py; the
pair that works here (torch 2.14.1 + torchvision 0.29.1) is a CUDA build of 5.5 GB, too much to make
inside a test run.  ``python benchmarks/training.py`` makes it (once, in the test cache); these checks run
where it exists and skip elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tool_venvs import TEST_CACHE

ROOT = Path(__file__).resolve().parents[1]
#: name and packages of the virtualenv (benchmarks/training.py makes it with the same list)
TORCHVISION_VENV = ("torchvision-0.29.1", ["torch==2.14.1", "torchvision==0.29.1", "webdataset>=1.0", "requests>=2.31",
                                          "urllib3>=2.0", "numpy>=1.24", "imageio>=2.31", "pillow>=10.0",
                                          "keyring>=24", "tqdm>=4.66", "filelock>=3.12", "orjson>=3.9",
                                          "pyparsing>=3.1"])

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = TEST_CACHE / TORCHVISION_VENV[0]
    if not (folder / ".ready").exists():
        pytest.skip(f"no virtualenv with torchvision at {folder} (python benchmarks/training.py makes it)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISICARCHIVE_NO_PROMPT": "1"}
    done = subprocess.run([str(folder / "bin" / "python"), str(ROOT / "tests" / "torchvision_checks.py"),
                           str(tmp_path_factory.mktemp("torchvision"))], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_imagefolder_reads_the_export_as_our_dataset_does(found: dict[str, Any]) -> None:
    folder = found["imagefolder"]
    assert folder["classes"] == folder["ours"] == folder["exported"] and folder["class_to_idx"]
    assert folder["len"] == folder["of"] > 0
    # every sample: the same class, and the same tensor as torchvision's PIL loader and decode_image give
    assert folder["same_target"] == folder["same_pixels"] == folder["same_decode"] == folder["len"]


def test_a_splits_parts_are_imagefolders(found: dict[str, Any]) -> None:
    assert all(read == expected > 0 for read, expected in found["split"].values())


def test_torchvision_transforms_take_the_tensors(found: dict[str, Any]) -> None:
    assert found["transform"]["shape"] == [8, 3, 32, 32] and found["transform"]["dtype"] == "torch.float32"
    assert 0 < found["transform"]["max"] <= 1.0
