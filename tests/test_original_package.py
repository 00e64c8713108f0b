"""The original package (isicarchive 0.4.11) runs its documented walk-through against `isicarchive serve --https`,
anonymous and logged in, and our logged-in session reads the caches it wrote.

The original lives in an isolated virtualenv with its old pins (numpy 1.23.5, numba 0.58.1, llvmlite
0.41.1, scipy<1.12), made once in the test cache; the test is skipped cleanly where the package index
cannot be reached.  Nothing of the original is copied here: it is only driven through a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tool_venvs import TEST_CACHE, tool_venv

from isicarchive import IsicApi
from isicarchive.testing import ArchiveConfig, ArchiveData

PINS = ["isicarchive==0.4.11", "numpy==1.23.5", "numba==0.58.1", "llvmlite==0.41.1", "scipy<1.12"]
IMAGES = 30

# the walk-through of the original's README, step by step; prints what it saw as JSON
WALK = r"""
import functools, json, sys
import numba
# the original's kernels are compiled once into the test cache (NUMBA_CACHE_DIR), not again in every run:
# numba keys its cache by the kernel's source file, its signature and this CPU, so the machine code is the same
numba.jit = functools.partial(numba.jit, cache=True)
from isicarchive.api import IsicApi

def walk(host, user, password, cache):
    seen = {}
    api = IsicApi(user, password, hostname=host, cache_folder=cache)
    seen["logged_in"] = bool(api._auth_token)
    api.cache_images()
    seen["images"] = sorted(r["name"] for r in api.image_cache.values())
    image = api.image(seen["images"][0])
    image.load_image_data()
    image.load_superpixels()
    image.map_superpixels()
    spmap = image.superpixels["map"]
    seen["image_shape"] = list(image.data.shape)
    seen["superpixels"] = int(spmap.shape[0])
    seen["superpixel_pixels"] = int(spmap[:, -1].sum())
    study = api.study(sorted(api.studies)[0])
    study.cache_image_data()
    seen["study_images"] = len(study.images)
    if api._auth_token:  # the original reads the study users' logins: only those who may read them get them
        study.load_annotations()
        seen["annotations"] = len(study.annotations)
        complete = next(i for i, a in enumerate(study.annotations) if a.get("state") == "complete")
        annotation = study.annotation(complete)
        annotation.load_data()
        annotation.compute_areas()
        seen["annotation_features"] = sorted(annotation.features)
    dataset = api.dataset(sorted(api.datasets)[0])
    seen["dataset"] = dataset.name
    for record in api.image_cache.values():
        found = [s for s in api.segmentation_list(params={"image_id": record["_id"]}) if not s["failed"]]
        if found:
            segmentation = api.segmentation(found[0]["_id"])
            segmentation.load_mask_data()
            seen["mask_shape"] = list(segmentation.mask.shape)
            break
    seen["melanomas"] = sorted(api.select_images([["meta.clinical.diagnosis", "==", "melanoma"]]))
    return seen

# one process for every run: the original compiles its numba kernels once
runs = json.loads(sys.argv[1])
print(json.dumps([walk(*run) for run in runs]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Any:
    python = tool_venv("original", PINS)
    if python is None:
        pytest.skip("the original package could not be installed (package index unreachable)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "isicarchive.cli", "serve", "--https", "--port", str(port),
                               "--images", str(IMAGES)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = server.stdout.readline()
            assert line, banner
            banner += line
        ca = re.search(r"REQUESTS_CA_BUNDLE=(\S+?)\)", banner).group(1)  # type: ignore[union-attr]
        accounts = dict(re.findall(r"account (\S+) / (\S+)", banner))
        yield python, f"https://127.0.0.1:{port}", ca, accounts
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def walks(served: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """The walk-through anonymously and as the admin, each into a fresh cache folder."""
    python, url, ca, accounts = served
    folders = {who: tmp_path_factory.mktemp(f"original-{who or 'anonymous'}") for who in ("", "admin")}
    runs = [[url, who, accounts.get(who, ""), str(folder)] for who, folder in folders.items()]
    done = subprocess.run([str(python), "-c", WALK, json.dumps(runs)], capture_output=True, text=True, timeout=600,
                          cwd=folders[""], env={**os.environ, "REQUESTS_CA_BUNDLE": ca,
                                                     "NUMBA_CACHE_DIR": str(TEST_CACHE / "original-numba")})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {who: (seen, folders[who]) for who, seen in zip(folders, results, strict=True)}


def expected(user: str | None) -> ArchiveData:
    # the archive `serve` generates (seed 0, four datasets of which one private), rebuilt here to know its content
    return ArchiveData(seed=0, config=ArchiveConfig(images=IMAGES, datasets=4, private_datasets=1))


@pytest.mark.network
@pytest.mark.slow
def test_original_walkthrough_anonymous(walks: dict[str, tuple[dict, Path]]) -> None:
    seen, _ = walks[""]
    data = expected(None)
    public = [im for im in data.images if data.dataset_public(im["dataset"]["_id"])]
    assert not seen["logged_in"]
    assert seen["images"] == sorted(im["name"] for im in public)
    first = data.images_by_name[seen["images"][0]]
    assert seen["superpixels"] == data.superpixel_count(first["_id"])
    height, width = seen["image_shape"][:2]
    assert seen["superpixel_pixels"] == height * width  # every pixel in exactly one superpixel
    assert seen["mask_shape"] == [height, width]
    assert seen["melanomas"] == sorted(im["_id"] for im in public if im["meta"]["clinical"].get("diagnosis")
                                       == "melanoma")


@pytest.mark.network
@pytest.mark.slow
def test_original_walkthrough_logged_in_and_its_caches_serve_our_session(
        served: Any, walks: dict[str, tuple[dict, Path]]) -> None:
    seen, cache = walks["admin"]
    data = expected("admin")
    assert seen["logged_in"] and seen["images"] == sorted(im["name"] for im in data.images)
    study = min((s for s in data.studies), key=lambda s: s["name"])
    assert seen["annotations"] == sum(1 for a in data.annotations if a["studyId"] == study["_id"])
    assert seen["annotation_features"]
    # the original wrote imcache_…_admin.json.gz and stann_<id>_admin.json.gz: our admin session reads them
    assert list(cache.rglob("imcache_*_admin.json.gz")) and list(cache.rglob(f"stann_{study['_id']}_admin.json.gz"))
    _, url, ca, accounts = served
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    try:
        ours = IsicApi("admin", accounts["admin"], hostname=url, api_version=1, cache_folder=cache, progress=False)
        before = ours.request_count
        records = ours.cache_images()
        assert sorted(r["name"] for r in records.values()) == seen["images"]
        assert ours.request_count - before == 1  # one request to confirm nothing is new, none to page
        mine = ours.study(study["_id"])
        before = ours.request_count
        mine.load_annotations()
        # the original's file holds every markup but no annotation details: the listing and the details
        # are asked for, not one markup
        assert ours.request_count - before == 1 + seen["annotations"]
        assert len(mine.annotations) == seen["annotations"]
        again = IsicApi("admin", accounts["admin"], hostname=url, api_version=1, cache_folder=cache, progress=False)
        before = again.request_count
        again.study(study["_id"]).load_annotations()
        assert again.request_count - before == 2  # the study and the listing: everything else from the cache
    finally:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
