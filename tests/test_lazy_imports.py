"""numpy is imported where first used: a session, a search and a download never load it, an array does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from isicarchive._lazy import lazy_module
from isicarchive.testing import ArchiveConfig, LocalArchive


def test_the_stand_in_imports_the_module_on_first_use_and_replaces_itself() -> None:
    namespace: dict = {}
    namespace["json_module"] = lazy_module("json", namespace, "json_module")
    assert "imported on first use" in repr(namespace["json_module"])
    assert namespace["json_module"].dumps([1]) == "[1]"
    import json

    assert namespace["json_module"] is json  # later look-ups are of the module itself


def test_a_download_from_a_search_and_from_ids_never_imports_numpy_and_a_selection_query_does(tmp_path: Path) -> None:
    probe = textwrap.dedent("""
        import sys
        from isicarchive import IsicApi
        url, tmp = sys.argv[1:3]
        api = IsicApi(hostname=url, api_version=2, progress=False, cache_folder=tmp + "/cache")
        found = api.search_images("", limit=4)
        api.download_images(found, folder=tmp + "/a", strict=True)
        api.download_images([next(iter(found))], folder=tmp + "/b", strict=True)
        print("numpy" in sys.modules)
        from isicarchive import selection
        chosen = selection.ImageIndex(dict(found.items())).select([["isic_id", "==", next(iter(found))]])
        print(len(chosen) == 1, "numpy" in sys.modules, selection.np is sys.modules.get("numpy"))
    """)
    config = ArchiveConfig(images=6, image_size=(16, 12), image_bytes=(2000, 3000), studies=1)
    with LocalArchive(seed=3, config=config) as archive:  # in this process: the probe's own modules are counted
        done = subprocess.run([sys.executable, "-c", probe, archive.url, str(tmp_path)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "True", "True"]
    assert len(list((tmp_path / "a").glob("ISIC_*.jpg"))) == 4
