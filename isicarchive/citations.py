"""What to cite for a selection of images: the archive, the challenges and datasets, the DOIs, the attributions.

:func:`cite` answers in BibTeX, APA or CSL-JSON; :func:`write_citation_cff`
writes the ``CITATION.cff`` an export carries beside ``attribution.txt``.

Which papers apply is read from the images and from how they were chosen:

* a challenge's collection or tag (``Challenge 2018: Task 3: Training``,
  ``ISBI 2016: Test``) → that challenge's paper (2019: the three papers
  its organisers ask for; 2018: its paper and HAM10000's);
* the attribution → the dataset's descriptor (the ViDIR Group of the
  Medical University of Vienna: HAM10000; the Hospital Clínic de
  Barcelona: BCN20000);
* 3D total-body-photography tiles (``image_type: TBP tile…``) → SLICE-3D;
* the DOI of a collection the images were taken from → that DOI, as a
  dataset reference.

The references were checked against the papers' own pages (arXiv, Nature
Scientific Data); long author lists end in "and others", as BibTeX allows.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import QueryError
from .grouping import field_of
from .licenses import attribution_of

__all__ = ["REFERENCES", "Reference", "cite", "references_for", "write_citation_cff"]

ARCHIVE_URL = "https://www.isic-archive.com"


@dataclass(frozen=True)
class Reference:
    """One work to cite."""

    key: str
    kind: str  # "article", "preprint", "dataset"
    title: str
    authors: tuple[str, ...]  # "Family, Given"; "others" last when the list is cut
    year: int
    journal: str | None = None
    volume: str | None = None
    number: str | None = None
    pages: str | None = None
    doi: str | None = None
    arxiv: str | None = None
    url: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


REFERENCES: dict[str, Reference] = {r.key: r for r in [
    Reference("isic_archive", "dataset", "The International Skin Imaging Collaboration (ISIC) Archive",
              ("International Skin Imaging Collaboration",), 2016, url=ARCHIVE_URL),
    Reference("gutman2016", "preprint",
              "Skin Lesion Analysis toward Melanoma Detection: A Challenge at the International Symposium on "
              "Biomedical Imaging (ISBI) 2016, hosted by the International Skin Imaging Collaboration (ISIC)",
              ("Gutman, David", "Codella, Noel C. F.", "Celebi, Emre", "Helba, Brian", "Marchetti, Michael",
               "Mishra, Nabin", "Halpern, Allan"), 2016, arxiv="1605.01397"),
    Reference("codella2017", "preprint",
              "Skin Lesion Analysis Toward Melanoma Detection: A Challenge at the 2017 International Symposium on "
              "Biomedical Imaging (ISBI), Hosted by the International Skin Imaging Collaboration (ISIC)",
              ("Codella, Noel C. F.", "Gutman, David", "Celebi, M. Emre", "Helba, Brian", "Marchetti, Michael A.",
               "Dusza, Stephen W.", "Kalloo, Aadi", "Liopyris, Konstantinos", "Mishra, Nabin", "Kittler, Harald",
               "Halpern, Allan"), 2017, arxiv="1710.05006"),
    Reference("codella2018", "preprint",
              "Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the International Skin "
              "Imaging Collaboration (ISIC)",
              ("Codella, Noel", "Rotemberg, Veronica", "Tschandl, Philipp", "Celebi, M. Emre", "Dusza, Stephen",
               "Gutman, David", "Helba, Brian", "Kalloo, Aadi", "Liopyris, Konstantinos", "Marchetti, Michael",
               "Kittler, Harald", "Halpern, Allan"), 2019, arxiv="1902.03368"),
    Reference("tschandl2018", "article",
              "The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common pigmented "
              "skin lesions", ("Tschandl, Philipp", "Rosendahl, Cliff", "Kittler, Harald"), 2018,
              journal="Scientific Data", volume="5", pages="180161", doi="10.1038/sdata.2018.161"),
    Reference("combalia2019", "preprint", "BCN20000: Dermoscopic Lesions in the Wild",
              ("Combalia, Marc", "Codella, Noel C. F.", "Rotemberg, Veronica", "Helba, Brian", "Vilaplana, Veronica",
               "Reiter, Ofer", "others"), 2019, arxiv="1908.02288"),
    Reference("hernandezperez2024", "article", "BCN20000: Dermoscopic Lesions in the Wild",
              ("Hernández-Pérez, Carlos", "others"), 2024, journal="Scientific Data", volume="11", pages="641",
              doi="10.1038/s41597-024-03387-w"),
    Reference("rotemberg2021", "article",
              "A patient-centric dataset of images and metadata for identifying melanomas using clinical context",
              ("Rotemberg, Veronica", "others"), 2021, journal="Scientific Data", volume="8", pages="34",
              doi="10.1038/s41597-021-00815-z"),
    Reference("kurtansky2024", "article",
              "The SLICE-3D dataset: 400,000 skin lesion image crops extracted from 3D TBP for skin cancer detection",
              ("Kurtansky, Nicholas R.", "D'Alessandro, Brian M.", "Gillis, Maura C.", "Betz-Stablein, Brigid",
               "others", ), 2024, journal="Scientific Data", volume="11", pages="884",
              doi="10.1038/s41597-024-03743-w"),
]}

#: a challenge year → the papers its organisers ask to cite
CHALLENGES: dict[str, tuple[str, ...]] = {
    "2016": ("gutman2016",), "2017": ("codella2017",), "2018": ("codella2018", "tschandl2018"),
    "2019": ("tschandl2018", "codella2017", "combalia2019"), "2020": ("rotemberg2021",),
    "2024": ("kurtansky2024",),
}
_CHALLENGE_NAME = re.compile(r"\b(?:challenge|isbi|isic)\b.*?\b(2016|2017|2018|2019|2020|2024)\b|"
                             r"\b(2016|2017|2018|2019|2020|2024)\b.*?\bchallenge\b", re.IGNORECASE)
#: attributions → the descriptor of the dataset they contributed
_ATTRIBUTIONS = ((re.compile(r"vidir|medical university of vienna", re.IGNORECASE), ("tschandl2018",)),
                 (re.compile(r"hospital cl[ií]nic", re.IGNORECASE), ("combalia2019", "hernandezperez2024")))


def _challenge_keys(name: str) -> tuple[str, ...]:
    match = _CHALLENGE_NAME.search(name or "")
    return CHALLENGES[match.group(1) or match.group(2)] if match else ()


def references_for(records: Iterable[dict], collection_names: Iterable[str] = ()) -> list[Reference]:
    """The papers that apply to these images (the archive first, then by year)."""
    keys: dict[str, None] = {"isic_archive": None}
    for name in collection_names:
        keys.update(dict.fromkeys(_challenge_keys(name)))
    for record in records:
        for tag in (record.get("notes") or {}).get("tags") or ():
            keys.update(dict.fromkeys(_challenge_keys(str(tag))))
        dataset = (record.get("dataset") or {}).get("name") or ""
        keys.update(dict.fromkeys(_challenge_keys(str(dataset))))
        if "HAM10000" in str(dataset):
            keys["tschandl2018"] = None
        who = attribution_of(record) or ""
        for pattern, found in _ATTRIBUTIONS:
            if pattern.search(who):
                keys.update(dict.fromkeys(found))
        if str(field_of(record, "image_type") or "").lower().startswith("tbp tile"):
            keys["kurtansky2024"] = None
    chosen = [REFERENCES[k] for k in keys]
    return chosen[:1] + sorted(chosen[1:], key=lambda r: (r.year, r.key))


def _attributions(records: Iterable[dict]) -> list[tuple[str, int]]:
    counts = Counter(a for r in records if (a := attribution_of(r)))
    return sorted(counts.items(), key=lambda item: (item[0] == "Anonymous", -item[1], item[0]))


def _collections(origin: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Names of the collections a selection came from, and (DOI, name) of those that have one."""
    if origin is None:
        return [], []
    names: list[str] = []
    dois: list[tuple[str, str]] = []
    session = getattr(origin, "session", None)
    wanted = list(getattr(origin, "collections", None) or [])
    if session is not None and wanted:
        from .collections import collection_records

        try:
            for collection in collection_records(session, wanted):
                names.append(str(collection.get("name") or ""))
                if collection.get("doi"):
                    dois.append((str(collection["doi"]), str(collection.get("name") or "")))
        except Exception:  # noqa: BLE001 - a citation without collection names beats none
            pass
    doi = getattr(origin, "doi", None)
    if doi and all(d != doi for d, _ in dois):
        dois.append((doi, getattr(origin, "collection_name", None) or f"ISIC Archive collection {doi}"))
    return names, dois


# ----------------------------------------------------------------- formats
def _bibtex_authors(authors: tuple[str, ...]) -> str:
    return " and ".join(authors)


def _bibtex(ref: Reference) -> str:
    fields: list[tuple[str, str]] = [("title", "{" + ref.title + "}"), ("author", _bibtex_authors(ref.authors)),
                                     ("year", str(ref.year))]
    if ref.kind == "article":
        kind = "article"
        fields += [("journal", ref.journal or ""), ("volume", ref.volume or ""), ("pages", ref.pages or "")]
    else:
        kind = "misc"
    if ref.arxiv:
        fields += [("eprint", ref.arxiv), ("archivePrefix", "arXiv")]
    if ref.doi:
        fields.append(("doi", ref.doi))
    if ref.url:
        fields.append(("url", ref.url))
    if ref.note:
        fields.append(("note", ref.note))
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
    return f"@{kind}{{{ref.key},\n{body}\n}}"


def _apa_name(author: str) -> str:
    if author == "others":
        return "et al."
    family, _, given = author.partition(", ")
    if not given:
        return family
    initials = " ".join(part[0] + "." for part in re.split(r"[\s.]+", given) if part)
    return f"{family}, {initials}"


def _apa(ref: Reference) -> str:
    names = [_apa_name(a) for a in ref.authors]
    if names and names[-1] == "et al.":
        authors = ", ".join(names[:-1]) + ", et al."
    elif len(names) > 1:
        authors = ", ".join(names[:-1]) + ", & " + names[-1]
    else:
        authors = names[0] if names else ""
    text = f"{authors} ({ref.year}). {ref.title}."
    if ref.journal:
        text += f" {ref.journal}, {ref.volume}, {ref.pages}."
    if ref.arxiv:
        text += f" arXiv:{ref.arxiv}."
    if ref.doi:
        text += f" https://doi.org/{ref.doi}"
    elif ref.url:
        text += f" {ref.url}"
    return text


def _csl(ref: Reference) -> dict[str, Any]:
    authors = []
    for author in ref.authors:
        if author == "others":
            authors.append({"literal": "others"})
        elif ", " in author:
            family, given = author.split(", ", 1)
            authors.append({"family": family, "given": given})
        else:
            authors.append({"literal": author})
    item: dict[str, Any] = {"id": ref.key, "type": {"article": "article-journal", "preprint": "article",
                                                    "dataset": "dataset"}[ref.kind],
                            "title": ref.title, "author": authors, "issued": {"date-parts": [[ref.year]]}}
    if ref.journal:
        item.update({"container-title": ref.journal, "volume": ref.volume, "page": ref.pages})
    if ref.arxiv:
        item.update({"number": f"arXiv:{ref.arxiv}", "URL": f"https://arxiv.org/abs/{ref.arxiv}"})
    if ref.doi:
        item["DOI"] = ref.doi
    if ref.url:
        item["URL"] = ref.url
    if ref.note:
        item["note"] = ref.note
    return item


def _doi_reference(doi: str, name: str) -> Reference:
    key = "isic_doi_" + re.sub(r"[^0-9A-Za-z]+", "_", doi)
    return Reference(key, "dataset", name, ("International Skin Imaging Collaboration",), 0, doi=doi)


def cite(selection: Mapping[str, dict], style: str = "bibtex") -> str:
    """The references for a selection's images in ``style`` (``bibtex``, ``apa``, ``csl-json``).

    The attribution list (institution, number of images) closes the BibTeX
    and APA text; in CSL-JSON it is the archive item's ``note``.

    Raises
    ------
    QueryError
        An unknown style.
    """
    if style not in ("bibtex", "apa", "csl-json"):
        raise QueryError(f"citation style {style!r}: choose 'bibtex', 'apa' or 'csl-json'")
    records = list(selection.values())
    origin = getattr(selection, "origin", None)
    names, dois = _collections(origin)
    refs = references_for(records, names)
    attributions = _attributions(records)
    listed = "; ".join(f"{who} ({n} image{'s' if n != 1 else ''})" for who, n in attributions)
    archive = refs[0]
    refs[0] = Reference(archive.key, archive.kind, archive.title, archive.authors, archive.year, url=archive.url,
                        note=f"Images attributed to: {listed}" if listed else None)
    refs += [_doi_reference(doi, name) for doi, name in dois]
    if style == "csl-json":
        items = [_csl(r) for r in refs]
        for item, ref in zip(items, refs, strict=True):
            if ref.year == 0:
                item.pop("issued")
        return json.dumps(items, indent=2, ensure_ascii=False)
    if style == "bibtex":
        entries = [_bibtex(r).replace("  year = {0},\n", "") for r in refs]
        return "\n\n".join(entries) + "\n"
    lines = [_apa(r).replace(" (0).", " (n.d.).") for r in refs]
    if listed:
        lines.append(f"Image attributions: {listed}.")
    return "\n\n".join(lines) + "\n"


# ------------------------------------------------------------ CITATION.cff
def _yaml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def write_citation_cff(folder: Path, records: list[dict], *, origin: Any = None, archive: str = ARCHIVE_URL) -> Path:
    """Write ``CITATION.cff`` (Citation File Format 1.2.0) for an exported folder of images."""
    import datetime as _dt

    names, dois = _collections(origin) if origin is not None else ([], [])
    refs = references_for(records, names)[1:]
    attributions = _attributions(records) or [("International Skin Imaging Collaboration", 0)]
    lines = ["cff-version: 1.2.0",
             "message: If you use these images, cite them as below, and the references that apply.",
             'type: dataset',
             f"title: {_yaml(f'Images from the ISIC Archive ({len(records)} images)')}",
             f"date-released: {_dt.date.today().isoformat()}",
             f"url: {_yaml(archive if archive.startswith('http') else ARCHIVE_URL)}",
             "authors:"]
    lines += [f"  - name: {_yaml(who)}" for who, _ in attributions]
    if dois:
        lines.append("identifiers:")
        for doi, name in dois:
            lines += ["  - type: doi", f"    value: {_yaml(doi)}", f"    description: {_yaml(name)}"]
    if refs:
        lines.append("references:")
    for ref in refs:
        lines.append(f"  - type: {'article' if ref.kind == 'article' else 'generic'}")
        lines.append(f"    title: {_yaml(ref.title)}")
        lines.append("    authors:")
        for author in ref.authors:
            if author == "others":
                lines.append('      - name: "others"')
            else:
                family, _, given = author.partition(", ")
                lines.append(f"      - family-names: {_yaml(family)}")
                if given:
                    lines.append(f"        given-names: {_yaml(given)}")
        lines.append(f"    year: {ref.year}")
        if ref.journal:
            lines.append(f"    journal: {_yaml(ref.journal)}")
        if ref.doi:
            lines.append(f"    doi: {_yaml(ref.doi)}")
        if ref.arxiv:
            lines.append(f"    url: {_yaml('https://arxiv.org/abs/' + ref.arxiv)}")
    path = folder / "CITATION.cff"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
