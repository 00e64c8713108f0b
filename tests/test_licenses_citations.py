"""Licences counted and filtered (a property test over generated mixes), exports that keep out CC-BY-NC,
citations in three styles, CITATION.cff beside attribution.txt."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isicarchive import IsicApi
from isicarchive.citations import REFERENCES, references_for
from isicarchive.errors import QueryError
from isicarchive.licenses import query
from isicarchive.selection import Selection
from isicarchive.testing import ArchiveConfig, LocalArchive

SPELLINGS = {"CC-0": ["CC-0", "CC0", "cc-0"], "CC-BY": ["CC-BY", "cc by"], "CC-BY-NC": ["CC-BY-NC", "cc_by_nc"]}


def _record(n: int, licence: str | None, v1: bool) -> dict:
    isic_id = f"ISIC_{n:07d}"
    if v1:  # the legacy API names the licence on the image's dataset
        return {"_id": f"{n:024x}", "name": isic_id, "dataset": {"name": "d", "license": licence}}
    return {"isic_id": isic_id, "copyright_license": licence, "attribution": "Anonymous"}


mixes = st.lists(st.tuples(st.sampled_from(["CC-0", "CC-BY", "CC-BY-NC", None]), st.integers(0, 2), st.booleans()),
                 max_size=60)


@settings(max_examples=150, deadline=None)
@given(mixes)
def test_licence_filters_keep_exactly_the_allowed_licences(mix: list[tuple[str | None, int, bool]]) -> None:
    records = {}
    for n, (licence, spelling, v1) in enumerate(mix):
        written = None if licence is None else SPELLINGS[licence][spelling % len(SPELLINGS[licence])]
        records[f"ISIC_{n:07d}"] = _record(n, written, v1)
    truth = {f"ISIC_{n:07d}": licence for n, (licence, _, _) in enumerate(mix)}
    selection = Selection(records)
    counts = Counter(licence or "unknown" for licence in truth.values())
    assert selection.licenses() == dict(counts)
    commercial = selection.licensed(commercial=True)
    assert set(commercial) == {k for k, lic in truth.items() if lic in ("CC-0", "CC-BY")}
    only_nc = selection.licensed(["CC-BY-NC"])
    assert set(only_nc) == {k for k, lic in truth.items() if lic == "CC-BY-NC"}
    # commercial narrows any chosen licences further; no licence at all is never allowed
    assert set(selection.licensed(["CC-BY", "CC-BY-NC"], commercial=True)) == \
           {k for k, lic in truth.items() if lic == "CC-BY"}
    assert set(selection.licensed()) == set(truth)


def test_unknown_licence_names_are_refused() -> None:
    with pytest.raises(QueryError, match="unknown licence"):
        Selection({}).licensed(["CC-BY-SA"])
    assert query(commercial=True) == "(copyright_license:CC-0 OR copyright_license:CC-BY)"


@pytest.fixture(scope="module")
def server() -> LocalArchive:
    # six datasets drawing their licences at random: every licence is in use
    with LocalArchive(seed=30, config=ArchiveConfig(images=36, datasets=6, private_datasets=0,
                                                   image_size=(32, 24))) as archive:
        yield archive


def test_commercial_search_and_export_never_write_a_cc_by_nc_image(server: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001)
    everything = api.search_images("")
    assert everything.licenses().get("CC-BY-NC", 0) > 0  # otherwise the test proves nothing
    result = everything.export(tmp_path / "out", commercial=True)
    written = {p.stem for p in (tmp_path / "out").glob("ISIC_*")}
    allowed = {k for k, r in everything.items() if r["copyright_license"] in ("CC-0", "CC-BY")}
    assert written == allowed and not result.failed
    assert not (tmp_path / "out" / "licenses" / "CC-BY-NC.txt").exists()
    assert "CC-BY-NC" not in (tmp_path / "out" / "metadata.csv").read_text()
    card = tmp_path / "out" / "README.md"
    assert not card.exists() or "CC-BY-NC" not in card.read_text()
    parts = everything.split({"train": 0.5, "test": 0.5})
    parts.export(tmp_path / "split", commercial=True)
    written = {p.stem for p in (tmp_path / "split").glob("*/ISIC_*")}
    assert written == allowed
    searched = api.search_images(query(commercial=True))  # the archive's own search filters too
    assert set(searched) == allowed


def test_cli_export_commercial_writes_no_cc_by_nc_image(server: LocalArchive, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from isicarchive.cli import main

    assert main(["--host", server.url, "--api", "v2", "--json", "images", "export", "-s", "sex:*", "--to",
                 str(tmp_path / "out"), "--commercial"]) == 0
    capsys.readouterr()
    records = {k: r for k, r in IsicApi(hostname=server.url, api_version=2, progress=False).search_images(
        "sex:*").items()}
    written = {p.stem for p in (tmp_path / "out").glob("ISIC_*")}
    assert written == {k for k, r in records.items() if r["copyright_license"] != "CC-BY-NC"}
    assert len(written) < len(records)


def test_exports_write_citation_cff_beside_attribution(server: LocalArchive, tmp_path: Path) -> None:
    api = IsicApi(hostname=server.url, api_version=2, progress=False, backoff=0.001)
    selection = api.search_images("sex:female")
    selection.export(tmp_path / "out")
    cff = (tmp_path / "out" / "CITATION.cff").read_text()
    assert (tmp_path / "out" / "attribution.txt").exists()
    assert cff.startswith("cff-version: 1.2.0\n") and "type: dataset" in cff
    for who in {r["attribution"] for r in selection.values()}:
        assert f'  - name: "{who}"' in cff


def test_challenge_papers_follow_the_images_tags_attributions_and_collections() -> None:
    keys = [r.key for r in references_for([{"notes": {"tags": ["ISBI 2016: Training"]}}])]
    assert keys == ["isic_archive", "gutman2016"]
    keys = [r.key for r in references_for([{"attribution": "ViDIR Group, Department of Dermatology, Medical "
                                                          "University of Vienna"}],
                                          ["Challenge 2019: Training"])]
    assert keys == ["isic_archive", "codella2017", "tschandl2018", "combalia2019"]
    keys = [r.key for r in references_for([{"metadata": {"acquisition": {"image_type": "TBP tile: close-up"}}}])]
    assert keys == ["isic_archive", "kurtansky2024"]
    assert REFERENCES["rotemberg2021"].doi == "10.1038/s41597-021-00815-z"
    assert REFERENCES["codella2018"].arxiv == "1902.03368"


def test_cite_in_bibtex_apa_and_csl_json() -> None:
    selection = Selection({"ISIC_0000001": {"isic_id": "ISIC_0000001", "attribution": "Hospital Clínic de Barcelona",
                                            "copyright_license": "CC-BY-NC"},
                           "ISIC_0000002": {"isic_id": "ISIC_0000002", "attribution": "Anonymous",
                                            "copyright_license": "CC-0", "notes": {"tags": ["ISBI 2017: Test"]}}})
    bibtex = selection.cite("bibtex")
    assert "@misc{combalia2019," in bibtex and "eprint = {1908.02288}" in bibtex
    assert "@misc{codella2017," in bibtex and "Hospital Clínic de Barcelona (1 image)" in bibtex
    apa = selection.cite("apa")
    assert "Codella, N. C. F., Gutman, D., Celebi, M. E." in apa and "arXiv:1710.05006" in apa
    assert "Image attributions: Hospital Clínic de Barcelona (1 image); Anonymous (1 image)." in apa
    items = json.loads(selection.cite("csl-json"))
    by_id = {item["id"]: item for item in items}
    assert by_id["hernandezperez2024"]["DOI"] == "10.1038/s41597-024-03387-w"
    assert by_id["isic_archive"]["type"] == "dataset"
    with pytest.raises(QueryError, match="citation style"):
        selection.cite("mla")
