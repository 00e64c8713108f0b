"""Use the local archive in your own tests: run with ``python -m pytest examples/test_my_pipeline.py``.

Your pipeline talks to an ``IsicApi``; in tests, point it at a ``LocalArchive``
(real HTTP, no internet) and inject the faults you want to survive.
"""

import pytest

from isicarchive import IsicApi
from isicarchive.testing import ArchiveConfig, LocalArchive


def count_melanomas(api: IsicApi) -> int:
    """The code under test: whatever your pipeline does with the archive."""
    return len(api.select_images(["meta.clinical.diagnosis", "==", "melanoma"]))


@pytest.fixture
def archive():
    with LocalArchive(seed=1, config=ArchiveConfig(images=80)) as local:
        yield local


def test_counts_melanomas(archive):
    api = IsicApi(hostname=archive.url, progress=False)
    expected = sum(1 for im in archive.data.visible_images(None)
                   if im["meta"]["clinical"].get("diagnosis") == "melanoma")
    assert count_melanomas(api) == expected


def test_survives_a_flaky_archive(archive):
    archive.faults.add("status", r"/api/v1/image$", probability=0.5, status=503)
    api = IsicApi(hostname=archive.url, progress=False, backoff=0.01, retries=10)
    assert count_melanomas(api) >= 0
    assert archive.faults.rules[0].fired >= 1
