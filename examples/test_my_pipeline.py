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
    archive.faults.add("status", r"/api/v2/images/", probability=0.5, status=503)
    api = IsicApi(hostname=archive.url, progress=False, backoff=0.01, retries=10)
    assert count_melanomas(api) >= 0
    assert archive.faults.rules[0].fired >= 1


def test_signed_in_pipeline_sees_private_images(archive):
    # code that calls api.sign_in() (v2, OAuth) is testable offline: the local archive plays the web page
    api = IsicApi(hostname=archive.url, api_version=2, progress=False)
    shown = []
    api.sign_in("alice", store=False, say=shown.append, open_browser=False,
                ask=lambda prompt: archive.sign_in_code(shown[-1], "alice"))
    public = IsicApi(hostname=archive.url, api_version=2, progress=False)
    assert len(list(api.image_list())) > len(list(public.image_list()))
