"""Every client operation x every fault the local archive injects.

Transient faults (they fire twice, then stop): the operation completes with a
result identical to a fault-free run.  Persistent faults: a clear
ArchiveUnavailableError within bounded time, and the cache left valid.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_kinds import FAULTS  # type: ignore[import-not-found]
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import ArchiveUnavailableError, IsicApi
from isicarchive.testing import ArchiveConfig, LocalArchive

READ_TIMEOUT = 0.5
#: the read timeout of the "slow past timeout" tests: every answer they wait out costs it (twice a test), and the
#: archive holds its answers 1.5 s, six times as long; the answers after a transient fault must still come
#: within it, with two retries to spare for a starved server thread
SLOW_READ_TIMEOUT = 0.25


def digest(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return hashlib.sha1(value.tobytes() + str(value.shape).encode()).hexdigest()
    return hashlib.sha1(repr(value).encode()).hexdigest()


# operation: (setup before faults, the operation) -> comparable result
def op_lookup(api: IsicApi, ctx: dict) -> Any:
    return api.image(ctx["name"]).as_json()


def op_listing(api: IsicApi, ctx: dict) -> Any:
    return [r["_id"] for r in api.image_list()]


def op_cache_images(api: IsicApi, ctx: dict) -> Any:
    return sorted(api.cache_images())


def op_image(api: IsicApi, ctx: dict) -> Any:
    image = ctx["image"](api)
    image.load_imagedata()
    return digest(image.data)


def op_superpixels(api: IsicApi, ctx: dict) -> Any:
    image = ctx["image"](api)
    image.load_superpixels()
    return digest(image.superpixels["idx"])


def op_annotations(api: IsicApi, ctx: dict) -> Any:
    study = ctx["study"](api)
    return sorted((a.id, sorted(a.features.items(), key=str)) for a in study.load_annotations())


def op_download(api: IsicApi, ctx: dict) -> Any:
    result = api.download_images(ctx["names"], folder=ctx["folder"])
    if result.failed:
        raise ArchiveUnavailableError(str(result.failed))
    return sorted((p.name, p.read_bytes()) for p in ctx["folder"].glob("ISIC_*"))


OPERATIONS: dict[str, Callable[[IsicApi, dict], Any]] = {
    "look-up": op_lookup, "listing": op_listing, "cache_images": op_cache_images, "image load": op_image,
    "superpixel load": op_superpixels, "study annotations": op_annotations, "bulk download": op_download,
}


@pytest.fixture(scope="module")
def server() -> LocalArchive:
    with LocalArchive(seed=31, config=ArchiveConfig(images=30, study_images=3)) as archive:
        yield archive


def make_api(server: LocalArchive, folder: Path, retries: int = 4, read_timeout: float = READ_TIMEOUT) -> IsicApi:
    return IsicApi(hostname=server.url, api_version=1, cache_folder=folder, progress=False, backoff=0.001,
                   retries=retries, timeout=(2.0, read_timeout), workers=4)


def context(server: LocalArchive, tmp_path: Path) -> dict:
    from isicarchive import Image, Study

    image_record = server.data.visible_images(None)[0]
    study_record = next(s for s in server.data.studies if s["public"])
    return {
        "name": image_record["name"],
        "names": [im["name"] for im in server.data.visible_images(None)[:4]],
        "image": lambda api: Image(image_record, api),
        "study": lambda api: Study(study_record, api),
        "folder": tmp_path / "out",
    }


@pytest.fixture(scope="module")
def clean_results(server: LocalArchive, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = {}
    for name, operation in OPERATIONS.items():
        folder = tmp_path_factory.mktemp("clean")
        results[name] = operation(make_api(server, folder / "cache"), context(server, folder))
    return results


def cache_is_valid(folder: Path) -> bool:
    if not folder.exists():
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in folder.rglob("*"):
            if not path.is_file() or path.name.startswith(".isicarchive"):
                continue
            if path.name.endswith(".tmp"):
                return False
            if path.name.endswith(".json.gz"):
                import gzip
                import json

                json.loads(gzip.decompress(path.read_bytes()))
            elif path.suffix in (".png", ".jpg"):
                import imageio.v3 as iio

                iio.imread(path)
    return True


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_transient_fault(server: LocalArchive, clean_results: dict, tmp_path: Path, operation: str,
                         fault: str) -> None:
    settings = dict(FAULTS[fault])
    kind = settings.pop("kind")
    api = make_api(server, tmp_path / "cache", read_timeout=SLOW_READ_TIMEOUT if kind == "latency" else READ_TIMEOUT)
    ctx = context(server, tmp_path)
    server.faults.clear()
    rule = server.faults.add(kind, r"^/api/v1/", times=2, **settings)
    try:
        result = OPERATIONS[operation](api, ctx)
    finally:
        server.faults.clear()
    assert result == clean_results[operation]
    assert cache_is_valid(tmp_path / "cache")
    record("transient faults", operation, fault,
           f"identical to a fault-free run ({rule.fired} faults absorbed)" if rule.fired else
           "identical to a fault-free run (fault does not apply to these responses)")


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "malformed JSON"] + ["malformed JSON"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_persistent_fault(server: LocalArchive, clean_results: dict, tmp_path: Path, operation: str,
                          fault: str) -> None:
    settings = dict(FAULTS[fault])
    kind = settings.pop("kind")
    # one retry: the fault is still there when it comes (a second one only cost another read timeout)
    api = make_api(server, tmp_path / "cache", retries=1,
                   read_timeout=SLOW_READ_TIMEOUT if kind == "latency" else READ_TIMEOUT)
    ctx = context(server, tmp_path)
    server.faults.clear()
    server.faults.add(kind, r"^/api/v1/", **settings)
    started = time.monotonic()
    try:
        try:
            result = OPERATIONS[operation](api, ctx)
        except ArchiveUnavailableError as exc:
            outcome = "ArchiveUnavailableError"
            assert "retries" in str(exc) or "times" in str(exc) or "failed" in str(exc)
        else:
            # only a fault that cannot touch these responses (malformed JSON on binary files) lets it through
            assert kind == "malformed" and result == clean_results[operation]
            outcome = "completes (binary responses are not JSON)"
    finally:
        server.faults.clear()
    took = time.monotonic() - started
    assert took < 60
    assert cache_is_valid(tmp_path / "cache")
    record("persistent faults", operation, fault, f"{outcome} after bounded retries ({took:.1f} s); cache valid")
