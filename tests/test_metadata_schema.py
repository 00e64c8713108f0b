"""The local archive's v2 metadata and the search fields against the archive's own schema package.

isic-metadata (6.x) needs Python 3.12 or newer; the check runs in a virtualenv of
its own (made once, kept in the test cache) and is skipped cleanly where no such
Python or no package index is at hand.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tool_venvs import tool_venv

from isicarchive import search
from isicarchive.testing import ArchiveConfig, ArchiveData

CHECK = r"""
import json, sys
from isic_metadata import FIELD_REGISTRY
from isic_metadata.metadata import MetadataBatch, MetadataRow

payload = json.load(open(sys.argv[1]))
problems = []
rows = []
for isic_id, metadata in payload["records"].items():
    values = {**metadata["acquisition"], **metadata["clinical"]}
    values.pop("pixels_x", None), values.pop("pixels_y", None)  # the image's own size, not metadata
    if "age_approx" in values:
        values["age"] = values.pop("age_approx")  # published rounded as age_approx, given as age
    try:
        row = MetadataRow.model_validate(values)
    except Exception as exc:
        problems.append(f"{isic_id}: {exc}")
        continue
    if row.unstructured:
        problems.append(f"{isic_id}: fields the schema does not know: {sorted(row.unstructured)}")
    for level in range(1, 6):
        for field in ("diagnosis", "anatom_site"):
            key = f"{field}_{level}"
            if getattr(row, key) != metadata["clinical"].get(key):
                problems.append(f"{isic_id}: {key} {metadata['clinical'].get(key)!r} reads as {getattr(row, key)!r}")
    rows.append(row)
try:
    MetadataBatch(items=rows)
except Exception as exc:
    problems.append(f"batch: {exc}")
searchable = sorted(k for k, f in FIELD_REGISTRY.items() if f.search) + ["age_approx", "copyright_license",
                                                                          "isic_id", "public"]
print(json.dumps({"problems": problems[:20], "searchable": sorted(searchable), "rows": len(rows)}))
"""


@pytest.mark.network
def test_generated_metadata_validates_against_isic_metadata(tmp_path: Path) -> None:
    python = tool_venv("isic-metadata", ["isic-metadata>=6,<7"], minimum=(3, 12))
    if python is None:
        pytest.skip("isic-metadata needs Python >= 3.12 and the package index; neither is at hand")
    data = ArchiveData(seed=3, config=ArchiveConfig(images=400))
    records = {im["name"]: data.v2_metadata(im) for im in data.images}
    (tmp_path / "records.json").write_text(json.dumps({"records": records}))
    done = subprocess.run([str(python), "-c", CHECK, str(tmp_path / "records.json")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["problems"] == [] and result["rows"] == len(records)
    # the search language's fields are exactly the archive's: reserved ones plus the registry's searchable
    assert result["searchable"] == sorted(search.FIELDS)
