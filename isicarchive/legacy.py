"""The original package's vocabulary on today's records: legacy diagnosis terms, benign/malignant and
general anatomic sites, mapped to and from the v2 hierarchies.

The legacy v1 archive described a lesion with one ``diagnosis`` term (its
``legacy_dx`` vocabulary: ``melanoma``, ``nevus``, …), ``benign_malignant``
and ``anatom_site_general``; today's archive uses the hierarchies
``diagnosis_1..5`` and ``anatom_site_1..5`` of isic-metadata.  The tables
below say which node of a hierarchy each legacy value is.  v2 records gain the
legacy fields from them (:func:`legacy_clinical`), so the original's criteria
(``['meta.clinical.diagnosis', '==', 'melanoma']``) select the same kind of
images on v2; the local archive uses the same tables the other way round to
give its v1 content a v2 form.  The full table is in docs/api-versions.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import QueryError

__all__ = ["LEGACY_DIAGNOSES", "LEGACY_SITES", "V2_DIAGNOSIS_PATHS", "check_legacy_terms", "legacy_clinical"]

#: legacy_dx term -> the full diagnosis path of the node it names (isic-metadata's hierarchy)
V2_DIAGNOSIS_PATHS: dict[str, tuple[str, ...]] = {
    "nevus": ("Benign", "Benign melanocytic proliferations", "Nevus"),
    "lentigo simplex": ("Benign", "Benign melanocytic proliferations", "Lentigo simplex"),
    "melanoma": ("Malignant", "Malignant melanocytic proliferations (Melanoma)"),
    "melanoma metastasis": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma metastasis"),
    "AIMP": ("Indeterminate", "Indeterminate melanocytic proliferations",
             "Atypical intraepithelial melanocytic proliferation"),
    "atypical spitz tumor": ("Indeterminate", "Indeterminate melanocytic proliferations", "Atypical Spitz tumor"),
    "atypical melanocytic proliferation": ("Indeterminate", "Indeterminate melanocytic proliferations"),
    "pigmented benign keratosis": ("Benign", "Benign epidermal proliferations", "Pigmented benign keratosis"),
    "seborrheic keratosis": ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis"),
    "solar lentigo": ("Benign", "Benign epidermal proliferations", "Solar lentigo"),
    "clear cell acanthoma": ("Benign", "Benign epidermal proliferations", "Clear cell acanthoma"),
    "epidermal nevus": ("Benign", "Benign epidermal proliferations", "Epidermal nevus"),
    "lentigo NOS": ("Benign", "Flat melanotic pigmentations - not melanocytic nevus", "Lentigo NOS"),
    "ephelis": ("Benign", "Flat melanotic pigmentations - not melanocytic nevus", "Ephelis"),
    "cafe-au-lait macule": ("Benign", "Flat melanotic pigmentations - not melanocytic nevus",
                            "Cafe au lait macule or patch"),
    "mucosal melanosis": ("Benign", "Flat melanotic pigmentations - not melanocytic nevus",
                          "Mucosal melanotic macule"),
    "actinic keratosis": ("Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis"),
    "basal cell carcinoma": ("Malignant", "Malignant adnexal epithelial proliferations - Follicular",
                             "Basal cell carcinoma"),
    "squamous cell carcinoma": ("Malignant", "Malignant epidermal proliferations"),
    "merkel cell carcinoma": ("Malignant", "Merkel cell proliferation"),
    "dermatofibroma": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma"),
    "angiofibroma or fibrous papule": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic",
                                       "Angiofibroma"),
    "scar": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Scar"),
    "neurofibroma": ("Benign", "Benign soft tissue proliferations - Neural", "Neurofibroma"),
    "angioma": ("Benign", "Benign soft tissue proliferations - Vascular", "Hemangioma"),
    "angiokeratoma": ("Benign", "Benign soft tissue proliferations - Vascular", "Angiokeratoma"),
    "pyogenic granuloma": ("Benign", "Benign soft tissue proliferations - Vascular", "Pyogenic granuloma"),
    "vascular lesion": ("Benign", "Benign soft tissue proliferations - Vascular"),
    "sebaceous adenoma": ("Benign", "Benign adnexal epithelial proliferations - Sebaceous", "Sebaceous adenoma"),
    "sebaceous hyperplasia": ("Benign", "Benign adnexal epithelial proliferations - Sebaceous",
                              "Sebaceous hyperplasia"),
    "verruca": ("Benign", "Inflammatory or infectious diseases", "Verruca"),
}
#: (level, value) of a node -> the legacy term; a record's most specific known node names its term
LEGACY_DIAGNOSES: dict[tuple[int, str], str] = {
    (len(path), path[-1]): term for term, path in V2_DIAGNOSIS_PATHS.items()}

#: legacy anatom_site_general -> today's anatom_site path (a path of None: an anatom_site_special value)
V2_SITE_PATHS: dict[str, tuple[str, ...]] = {
    "posterior torso": ("Trunk", "Posterior trunk"), "anterior torso": ("Trunk", "Anterior trunk"),
    "lateral torso": ("Trunk", "Lateral trunk"), "upper extremity": ("Upper extremity",),
    "lower extremity": ("Lower extremity",), "head/neck": ("Head and neck",), "oral/genital": ("Anogenital region",),
}
#: legacy anatom_site_general -> today's anatom_site_special
V2_SPECIAL_SITES = {"palms/soles": "acral palms or soles", "oral/genital": "oral or genital"}
LEGACY_SITES: dict[tuple[int, str], str] = {(len(path), path[-1]): site for site, path in V2_SITE_PATHS.items()}
_LEGACY_SPECIAL = {special: site for site, special in V2_SPECIAL_SITES.items()}
_BENIGN_MALIGNANT = {"Benign": "benign", "Malignant": "malignant", "Indeterminate": "indeterminate"}


#: (level, key) of a hierarchy's fields, most specific first (made once: legacy_clinical runs on every v2 record)
_LEVELS = {field: tuple((level, f"{field}_{level}") for level in range(5, 0, -1))
           for field in ("diagnosis", "anatom_site")}


def legacy_term(clinical: dict, field: str, table: dict[tuple[int, str], str]) -> str | None:
    """The legacy value of the most specific node of ``field_1..5`` the table knows."""
    levels = _LEVELS.get(field) or tuple((level, f"{field}_{level}") for level in range(5, 0, -1))
    for level, key in levels:
        value = clinical.get(key)
        if isinstance(value, str):  # the table's nodes are text: a list or an object from the JSON is none
            term = table.get((level, value))
            if term is not None:
                return term
    return None


def legacy_clinical(clinical: dict) -> dict[str, Any]:
    """The legacy fields of a v2 record's clinical metadata (only those it has a value for).

    ``diagnosis`` is the legacy term of the most specific diagnosis node the
    table knows, else the most specific ``diagnosis_N`` itself (so nothing is
    lost for nodes the legacy vocabulary had no word for);
    ``benign_malignant`` comes from ``diagnosis_1``; ``anatom_site_general``
    from ``anatom_site_1..`` or ``anatom_site_special``.
    """
    out: dict[str, Any] = {}
    diagnosis = legacy_term(clinical, "diagnosis", LEGACY_DIAGNOSES)
    if diagnosis is None:
        diagnosis = next((clinical[key] for _, key in _LEVELS["diagnosis"] if clinical.get(key)), None)
    if diagnosis is not None:
        out["diagnosis"] = diagnosis
    # the fields are text; a list or an object from the JSON names nothing (and is no key of a dict)
    top = clinical.get("diagnosis_1")
    if isinstance(top, str) and top in _BENIGN_MALIGNANT:
        out["benign_malignant"] = _BENIGN_MALIGNANT[top]
    special = clinical.get("anatom_site_special")
    site = legacy_term(clinical, "anatom_site", LEGACY_SITES) or (
        _LEGACY_SPECIAL.get(special) if isinstance(special, str) else None)
    if site is not None:
        out["anatom_site_general"] = site
    return out


def check_legacy_terms(criteria: list[tuple[str, str, Any]], values_of: Callable[[str], Iterable[Any]]) -> None:
    """On v2 records a legacy diagnosis term must be one the legacy table knows (or a value records have)."""
    for field, op, test in criteria:
        if field != "meta.clinical.diagnosis" or op not in ("==", "!=", "in", "not in"):
            continue
        asked = [test] if op in ("==", "!=") else list(test) if isinstance(test, (list, tuple, set)) else []
        known = set(V2_DIAGNOSIS_PATHS) | set(values_of(field))
        unknown = [value for value in asked if isinstance(value, str) and value not in known]
        if unknown:
            raise QueryError(f"{', '.join(map(repr, unknown))} is not a diagnosis of the legacy vocabulary or of "
                             f"these records; legacy terms: {', '.join(sorted(V2_DIAGNOSIS_PATHS))} "
                             "(or use metadata.clinical.diagnosis_1..5 with today's hierarchy)")
