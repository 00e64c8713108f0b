"""Deterministic archive content for :class:`~isicarchive.testing.LocalArchive`.

Everything is derived from a seed: users, datasets (public and private),
image records in the v1 detail form, segmentations, studies with features,
questions and annotations.  Pixel content (JPEG images, superpixel PNGs,
segmentation masks) is rendered on demand from the image's own seed, so a
25,000-image archive starts as fast as a 50-image one.

The same content can be seeded from a real metadata dump instead (the
``imcache_…json.gz`` files the original package writes), keeping the real
records and generating only pixels.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import hashlib
import io
import json
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .. import superpixels as _sp
from ..legacy import V2_DIAGNOSIS_PATHS, V2_SITE_PATHS, V2_SPECIAL_SITES
from .v2framework import decimal_text

__all__ = ["ArchiveConfig", "ArchiveData", "User", "object_id", "superpixel_labels"]

_EPOCH = _dt.datetime(2015, 1, 1, tzinfo=_dt.UTC)

DIAGNOSES = [
    ("nevus", True, "benign", 0.70),
    ("melanoma", True, "malignant", 0.10),
    ("pigmented benign keratosis", False, "benign", 0.06),
    ("basal cell carcinoma", False, "malignant", 0.04),
    ("seborrheic keratosis", False, "benign", 0.03),
    ("squamous cell carcinoma", False, "malignant", 0.02),
    ("vascular lesion", False, "benign", 0.02),
    ("actinic keratosis", False, "malignant", 0.02),
    ("dermatofibroma", False, "benign", 0.01),
]
#: the first images of the first (public) dataset, whatever the seed: every diagnosis, melanomas
#: invasive (one to the fourth level of today's hierarchy) and in situ, aged 50-70 where malignant, so
#: that the examples of the README and the docs select something from an archive of the default size
SHOWCASE: list[dict[str, Any]] = [
    {"diagnosis": "melanoma", "mel_class": "invasive melanoma", "mel_type": "superficial spreading melanoma",
     "age_approx": 55},
    {"diagnosis": "melanoma", "mel_class": "invasive melanoma", "age_approx": 65},
    {"diagnosis": "melanoma", "mel_class": "melanoma in situ", "age_approx": 60},
    *({"diagnosis": term, "age_approx": 55 if benign_malignant == "malignant" else 40}
      for term, _, benign_malignant, _ in DIAGNOSES if term not in ("melanoma", "actinic keratosis")),
    # today's hierarchy puts it under Indeterminate, which the legacy benign_malignant then says too
    {"diagnosis": "actinic keratosis", "benign_malignant": "indeterminate", "age_approx": 65},
]
SITES = ["posterior torso", "lower extremity", "anterior torso", "upper extremity",
         "head/neck", "lateral torso", "palms/soles", None]
CONFIRM = ["single image expert consensus", "histopathology",
           "serial imaging showing no change", "confocal microscopy with consensus dermoscopy", None]
TAGS = ["ISBI 2016: Training", "ISBI 2016: Test", "ISBI 2017: Training", "ISBI 2017: Validation",
        "ISBI 2017: Test", "Challenge 2018: Task 1-2: Training", "Challenge 2018: Task 3: Training",
        "Challenge 2019: Training"]
LICENSES = ["CC-0", "CC-BY", "CC-BY-NC"]
FEATURES = [
    "Globules / Clods : Regular", "Globules / Clods : Irregular", "Network : Typical pigment network",
    "Network : Atypical pigment network", "Dots : Regular", "Dots : Irregular",
    "Structureless : Blue whitish veil", "Regression structures : Scar-like depigmentation",
    "Vessels : Dotted", "Streaks : Regular",
]
#: v1 diagnosis -> v2 hierarchical diagnosis_1..n (the client's legacy table, with the level below for melanoma)
V2_DIAGNOSES = {term: V2_DIAGNOSIS_PATHS[term] for term, *_ in DIAGNOSES}
V2_DIAGNOSES["melanoma"] = V2_DIAGNOSIS_PATHS["melanoma"] + ("Melanoma, NOS",)
V2_DIAGNOSES["squamous cell carcinoma"] = V2_DIAGNOSIS_PATHS["squamous cell carcinoma"] + (
    "Squamous cell carcinoma, NOS",)
#: v1 image types -> today's (isic-metadata ImageTypeEnum)
V2_IMAGE_TYPES = {"clinical": "clinical: close-up", "overview": "clinical: overview"}
#: clinical fields published under the same name and values in v1 and today
V2_CLINICAL_KEPT = ("age_approx", "sex", "diagnosis_confirm_type", "melanocytic", "personal_hx_mm", "family_hx_mm",
                    "clin_size_long_diam_mm", "mel_thick_mm")
#: AccessionMetadata's DecimalFields (isic/ingest/models/accession.py), sent as JSON strings ("24.10")
V2_DECIMAL_FIELDS = ("clin_size_long_diam_mm", "mel_thick_mm")
QUESTIONS = [
    ("Diagnosis", ["benign", "malignant", "indeterminate"]),
    ("Image quality", ["good", "acceptable", "poor"]),
    ("Pattern", ["reticular", "globular", "homogeneous", "multicomponent"]),
]


def object_id(kind: int, number: int, seed: int) -> str:
    """A MongoDB-like 24-hex id: increasing timestamp, then stable pseudo-random bytes.

    Ids of one kind sort in creation order, as real ObjectIds do.
    """
    timestamp = 0x54000000 + kind * 0x01000000 + number * 37
    tail = hashlib.blake2b(f"{seed}:{kind}:{number}".encode(), digest_size=8).hexdigest()
    return f"{timestamp:08x}{tail}"


def _iso(seconds: float) -> str:
    return (_EPOCH + _dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


@dataclass
class User:
    """A local archive account."""

    id: str
    login: str
    password: str
    first_name: str
    last_name: str
    admin: bool = False
    #: ``True`` when the user may see every private dataset (reviewers, admins).
    sees_private: bool = False

    def summary(self, reveal: bool = False) -> dict:
        """The v1 user summary (the Girder plugin's ``User.filterSummary``).

        ``name`` is "User " and the first four characters of the base32 of the
        SHA-256 of the login; callers who may read the user (``reveal``) also
        get ``login``, ``firstName`` and ``lastName``.
        """
        digest = base64.b32encode(hashlib.sha256(self.login.encode()).digest()).decode()
        summary = {"_id": self.id, "name": "User " + digest[:4]}
        if reveal:
            summary.update(login=self.login, firstName=self.first_name, lastName=self.last_name)
        return summary

    def may_read(self, other_id: str) -> bool:
        """Whether this user sees another's login and real name (site admins and the user themself)."""
        return self.admin or self.id == other_id


@dataclass
class ArchiveConfig:
    """Sizes of generated content.

    Attributes
    ----------
    images : int
        Number of images (25,000 works; the default is small for tests).
    datasets, private_datasets : int
        Datasets in all, and how many of them are private.
    studies : int
        Number of studies (one of them private).
    study_images : int
        Images per study.
    image_size : (int, int)
        Width and height of generated pixels; ``None`` uses each record's
        ``pixelsX``/``pixelsY`` (real sizes, slower to render).
    superpixels : int
        Approximate number of superpixels per image.
    jpeg_quality : int
        JPEG quality of generated images (larger files at higher quality).
    image_bytes : (int, int), optional
        Range of image file sizes (e.g. ``(300_000, 5_000_000)`` for
        realistic downloads of small rendered images).
    """

    images: int = 60
    datasets: int = 4
    private_datasets: int = 1
    studies: int = 2
    study_images: int = 6
    image_size: tuple[int, int] | None = (160, 120)
    superpixels: int = 1000
    jpeg_quality: int = 85
    segmentations_per_image: float = 0.5
    #: (min, max) bytes of an image file; JPEGs are padded with comment
    #: segments to a size drawn from the image's seed, so that file sizes are
    #: known without rendering (None: about 1.5-2 bytes per pixel).
    image_bytes: tuple[int, int] | None = None


def superpixel_labels(width: int, height: int, n_segments: int, seed: int) -> np.ndarray:
    """About ``n_segments`` compact superpixels: the Voronoi cells of a jittered grid.

    Returns an ``int32`` label image whose labels are exactly 0..n-1 in
    row-major cell order, every label present, covering every pixel.
    """
    if width < 1 or height < 1:
        raise ValueError("superpixel images need at least one pixel")
    n_segments = max(1, min(n_segments, width * height))
    cols = max(1, int(round(np.sqrt(n_segments * width / height))))
    rows = max(1, min(height, int(round(n_segments / cols))))
    cols = min(cols, width)
    rng = np.random.default_rng(seed)
    cell_h, cell_w = height / rows, width / cols
    jitter = rng.uniform(-0.35, 0.35, size=(rows, cols, 2))
    centre_y = np.clip(((np.arange(rows)[:, None] + 0.5 + jitter[:, :, 0]) * cell_h), 0, height - 1)
    centre_x = np.clip(((np.arange(cols)[None, :] + 0.5 + jitter[:, :, 1]) * cell_w), 0, width - 1)
    # snap seeds to pixel centres so each seed's own pixel is strictly nearest to it
    centre_y = np.floor(centre_y).astype(np.int64)
    centre_x = np.floor(centre_x).astype(np.int64)
    # each pixel takes the nearest seed of the 3x3 cells around its own, the first of equals in the order
    # below; all rows at once (one row at a time took 60 ms an image of 160x120, most of a test archive's work)
    # (in int32, in place: the distances are exact integers either way; a pixel's seed row is gathered once per dy)
    xs = np.arange(width, dtype=np.int32)
    ys = np.arange(height, dtype=np.int32)
    cell_x = np.minimum((np.arange(width) / cell_w).astype(np.int64), cols - 1)
    cell_y = np.minimum((np.arange(height) / cell_h).astype(np.int64), rows - 1)
    seed_y, seed_x = centre_y.astype(np.int32), centre_x.astype(np.int32)
    beyond = np.iinfo(np.int32).max  # a cell outside the grid: never nearer than what is already best
    best: np.ndarray = np.full((height, width), beyond, dtype=np.int32)
    best_label: np.ndarray = np.zeros((height, width), dtype=np.int32)
    dist = np.empty((height, width), dtype=np.int32)
    other = np.empty((height, width), dtype=np.int32)
    better = np.empty((height, width), dtype=bool)
    for dy in (-1, 0, 1):
        ry = cell_y + dy
        ryc = np.clip(ry, 0, rows - 1)
        rows_out = (ry < 0) | (ry >= rows)
        seed_y_rows, seed_x_rows = seed_y[ryc], seed_x[ryc]  # (height, cols)
        for dx in (-1, 0, 1):
            rx = cell_x + dx
            rxc = np.clip(rx, 0, cols - 1)
            np.take(seed_y_rows, rxc, axis=1, out=dist)
            dist -= ys[:, None]
            dist *= dist
            np.take(seed_x_rows, rxc, axis=1, out=other)
            other -= xs[None, :]
            other *= other
            dist += other
            dist[rows_out, :] = beyond
            dist[:, (rx < 0) | (rx >= cols)] = beyond
            np.less(dist, best, out=better)
            np.copyto(best, dist, where=better)
            np.copyto(best_label, (ryc * cols).astype(np.int32)[:, None] + rxc.astype(np.int32)[None, :], where=better)
    labels = best_label  # (int32 already: its own array, changed in place below)
    seeds = np.zeros((height, width), dtype=bool)
    seeds[centre_y.ravel(), centre_x.ravel()] = True
    return _make_contiguous(labels, seeds)


def _shifted_pairs() -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """(destination, source) slices of the four 4-neighbour shifts."""
    s, e, a_ = slice(1, None), slice(None, -1), slice(None)
    return [((s, a_), (e, a_)), ((e, a_), (s, a_)), ((a_, s), (a_, e)), ((a_, e), (a_, s))]


def _make_contiguous(labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Keep each label's patch that holds its seed; give stray fragments to a neighbour.

    A discrete Voronoi cell can touch another part of itself only diagonally;
    the archive's superpixels are 4-connected patches, so ours are too.
    """
    reached = seeds.copy()
    shifts = _shifted_pairs()
    while True:  # grow each seed through pixels of its own label
        grown = reached.copy()
        for dst, src in shifts:
            grown[dst] |= reached[src] & (labels[src] == labels[dst])
        if np.array_equal(grown, reached):
            break
        reached = grown
    while not reached.all():  # stray pixels join a reached neighbour's label
        for dst, src in shifts:
            take = ~reached[dst] & reached[src]
            labels[dst][take] = labels[src][take]
            reached[dst] |= take
    return labels


#: bytes of finished image files an archive keeps in memory: a file served again costs a look-up
#: instead of a render and a fresh copy of its padding (about 1 ms of the server's CPU for a file of
#: 1 MB, which a benchmark's client on the same cores would pay for)
SERVED_FILE_BYTES = 256 * 1024**2


class ArchiveData:
    """All content of a local archive.

    Parameters
    ----------
    seed : int
        Everything is a pure function of the seed and the configuration.
    config : ArchiveConfig, optional
    records : dict, optional
        Real v1 image records (id → record) to serve instead of generated ones.
    segmentation_records : dict, optional
        Real v1 segmentation records to serve with them.
    """

    def __init__(
        self,
        seed: int = 0,
        config: ArchiveConfig | None = None,
        records: dict[str, dict] | None = None,
        segmentation_records: dict[str, dict] | None = None,
    ) -> None:
        self.seed = seed
        self.config = config or ArchiveConfig()
        self._lock = threading.Lock()
        # finished image files, most recently served last (see SERVED_FILE_BYTES)
        self._files: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._files_bytes = 0
        self._files_lock = threading.Lock()
        self.users = self._make_users()
        self.users_by_id = {u.id: u for u in self.users}
        self.users_by_login = {u.login: u for u in self.users}
        if records is not None:
            self._adopt_records(records)
        else:
            self.datasets = self._make_datasets()
            self.images = self._make_images(self.config.images)
        self.segmentations = (
            self._adopt_segmentations(segmentation_records)
            if segmentation_records is not None
            else self._make_segmentations()
        )
        self.studies = self._make_studies()
        self.annotations = self._make_annotations()
        self._index()

    # ------------------------------------------------------------------ build
    @classmethod
    def from_dump(cls, imcache: str | os.PathLike, sgcache: str | os.PathLike | None = None,
                  seed: int = 0, config: ArchiveConfig | None = None, limit: int | None = None) -> ArchiveData:
        """Seed the archive from a real metadata dump (``imcache_…json.gz``)."""
        with gzip.open(imcache, "rb") as fh:
            records = json.loads(fh.read())
        if limit is not None:
            records = dict(sorted(records.items())[:limit])
        segs = None
        if sgcache is not None:
            with gzip.open(sgcache, "rb") as fh:
                segs = json.loads(fh.read())
            segs = {k: v for k, v in segs.items() if v.get("imageId") in records}
        return cls(seed=seed, config=config, records=records, segmentation_records=segs)

    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(f"{self.seed}:" + ":".join(map(str, parts)))

    def _make_users(self) -> list[User]:
        people = [("admin", "Ada", "Admin", True, True), ("alice", "Alice", "Reviewer", False, True),
                  ("bob", "Bob", "Reader", False, False), ("carol", "Carol", "Annotator", False, False)]
        return [User(object_id(1, i, self.seed), login, f"{login}-pw-{self.seed}", first, last, admin, private)
                for i, (login, first, last, admin, private) in enumerate(people)]

    def _make_datasets(self) -> list[dict]:
        names = ["UDA-1", "MSK-1", "HAM10000", "SONIC", "MSK-2", "UDA-2", "MSK-3", "MSK-4"]
        out = []
        n = max(1, self.config.datasets)
        for i in range(n):
            rng = self._rng("dataset", i)
            private = i >= n - self.config.private_datasets
            name = names[i] if i < len(names) else f"Dataset {i}"
            if private:
                name = f"Private {name}"
            out.append(self._dataset_record(i, name, private, rng))
        return out

    def _dataset_record(self, i: int, name: str, private: bool, rng: random.Random) -> dict:
        owner = self.users[0]
        return {
            "_id": object_id(2, i, self.seed),
            "_modelType": "dataset",
            "name": name,
            "description": f"{name}: dermoscopic images of moles and melanomas.",
            "license": rng.choice(LICENSES),
            "attribution": rng.choice(["Anonymous", "Memorial Sloan Kettering", "ViDIR Group"]),
            "created": _iso(i * 86400),
            "updated": _iso(i * 86400 + 3600),
            "creator": owner.summary(),
            "owner": owner.summary(),
            "public": not private,
            # users with explicit access (besides those who see everything private)
            "access_users": [self.users_by_login["alice"].id] if private else [],
            "metadataFiles": [{"fileId": object_id(9, i, self.seed), "time": _iso(i * 86400 + 60)}],
        }

    def _make_images(self, count: int, start: int = 0) -> list[dict]:
        return [self._image_record(i) for i in range(start, start + count)]

    def _image_record(self, i: int) -> dict:
        rng = self._rng("image", i)
        dataset = self.datasets[i % len(self.datasets)]
        pick = rng.random()
        acc = 0.0
        for diagnosis, melanocytic, benign_malignant, share in DIAGNOSES:  # noqa: B007 (used after the break)
            acc += share
            if pick <= acc:
                break
        shown = self._showcase(i)
        if shown:
            diagnosis, melanocytic, benign_malignant, _ = next(d for d in DIAGNOSES if d[0] == shown["diagnosis"])
        width, height = self.config.image_size or (1022, 767)
        clinical: dict[str, Any] = {
            "age_approx": rng.choice([None] + list(range(5, 90, 5))),
            "anatom_site_general": rng.choice(SITES),
            "benign_malignant": benign_malignant,
            "diagnosis": diagnosis if rng.random() > 0.01 else None,
            "diagnosis_confirm_type": rng.choice(CONFIRM),
            "melanocytic": melanocytic if rng.random() > 0.005 else None,
            "sex": rng.choice(["male", "male", "female", "female", None]),
        }
        if rng.random() < 0.1:
            clinical.update(
                clin_size_long_diam_mm=round(rng.uniform(1.0, 25.0), 1),
                family_hx_mm=rng.choice([True, False, False, None]),
                personal_hx_mm=rng.choice([True, False, False]),
            )
        if diagnosis == "melanoma" and rng.random() < 0.3:
            clinical.update(mel_class=rng.choice(["invasive melanoma", "melanoma in situ"]),
                            mel_thick_mm=round(rng.uniform(0.1, 4.0), 2))
        if shown:
            clinical.update(shown)
            if "mel_class" in shown:
                clinical.setdefault("mel_thick_mm", 0.8)
        if diagnosis == "nevus" and rng.random() < 0.1:
            clinical["nevus_type"] = rng.choice(["nevus NOS", "blue", "halo", None])
        acquisition: dict[str, Any] = {
            "image_type": "dermoscopic" if rng.random() > 0.01 else "clinical",
            "pixelsX": width if self.config.image_size else rng.choice([1022, 2048, 4288, 6000]),
            "pixelsY": height if self.config.image_size else rng.choice([767, 1536, 2848, 4000]),
        }
        if rng.random() < 0.1:
            acquisition["dermoscopic_type"] = rng.choice(["contact non-polarized", "contact polarized", None])
        unstructured: dict[str, Any] = {"localization": rng.choice(["Abdomen", "Back", "Leg", "Arm", "Face"])}
        if rng.random() < 0.3:
            unstructured["biopsy done"] = rng.choice(["Y", "N"])
            unstructured["clinical diagnosis/impression"] = rng.choice(["nevus", "melanoma", "other"])
        if rng.random() < 0.4:
            unstructured["lesion_id"] = f"IL_{rng.randrange(10**7):07d}"
        tags = sorted({rng.choice(TAGS) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))})
        created = i * 600.0 + 3 * 86400
        image_id = object_id(3, i, self.seed)
        return {
            "_id": image_id,
            "_modelType": "image",
            "created": _iso(created),
            "creator": self.users[0].summary(),
            "dataset": {k: dataset[k] for k in ("_id", "name", "description", "license", "updated")}
            | {"_accessLevel": 0},
            "meta": {"acquisition": acquisition, "clinical": clinical,
                     "unstructured": unstructured, "unstructuredExif": {}},
            "name": f"ISIC_{i:07d}",
            "notes": {"reviewed": {"accepted": True, "time": _iso(created + 3600), "userId": self.users[1].id},
                      "tags": tags},
            "updated": _iso(created + 7200),
        }

    def _showcase(self, i: int) -> dict[str, Any] | None:
        """What :data:`SHOWCASE` sets for image ``i`` (None: a random image)."""
        datasets = len(self.datasets)
        if not datasets or i % datasets or self.datasets[0].get("public") is False:
            return None
        k = i // datasets
        return SHOWCASE[k] if k < len(SHOWCASE) else None

    def _adopt_records(self, records: dict[str, dict]) -> None:
        by_dataset: dict[Any, dict] = {}
        for rec in records.values():
            ds = rec.get("dataset") or {}
            by_dataset.setdefault(ds.get("_id"), ds)
        self.datasets = []
        for i, (ds_id, ds) in enumerate(sorted(by_dataset.items(), key=lambda kv: str(kv[0]))):
            rec = self._dataset_record(i, ds.get("name") or f"Dataset {i}", False, self._rng("dataset", i))
            rec.update({k: ds[k] for k in ("description", "license", "updated") if k in ds})
            rec["_id"] = ds_id
            self.datasets.append(rec)
        self.images = [records[k] for k in sorted(records)]

    def _make_segmentations(self) -> list[dict]:
        out = []
        number = 0
        for i, img in enumerate(self.images):
            rng = self._rng("segmentation", i)
            while rng.random() < self.config.segmentations_per_image / (1 + number % 2):
                created = _iso(i * 600.0 + 3 * 86400 + 4000 + number)
                skill = rng.choice(["novice", "expert"])
                out.append({
                    "_id": object_id(4, number, self.seed), "imageId": img["_id"], "created": created,
                    "creator": self.users[3].summary(), "failed": rng.random() < 0.05, "skill": skill,
                    "reviews": [{"approved": True, "skill": skill, "time": created, "userId": self.users[1].id}],
                    "meta": {"source": rng.choice(["autofill", "manual pointlist"]),
                             "startTime": created, "stopTime": created},
                })
                number += 1
                if number % 2 == 0:
                    break
        return out

    def _adopt_segmentations(self, records: dict[str, dict]) -> list[dict]:
        return [records[k] for k in sorted(records)]

    def _make_studies(self) -> list[dict]:
        out = []
        public_images = [im for im in self.images if self.dataset_public(im["dataset"]["_id"])]
        private_images = [im for im in self.images if not self.dataset_public(im["dataset"]["_id"])]
        for s in range(self.config.studies):
            rng = self._rng("study", s)
            private = s == self.config.studies - 1 and self.config.studies > 1
            pool = public_images + (private_images if private else [])
            chosen = sorted(rng.sample(pool, min(self.config.study_images, len(pool))), key=lambda r: r["name"])
            features = rng.sample(FEATURES, 4)
            participants = [self.users_by_login["alice"], self.users_by_login["carol"]]
            out.append({
                "_id": object_id(5, s, self.seed), "_modelType": "study",
                "name": f"Private study {s}" if private else f"ISIC Annotation Study {s}",
                "description": "Expert annotation of dermoscopic features.",
                "created": _iso(s * 86400 * 30), "updated": _iso(s * 86400 * 30 + 60),
                "creator": self.users[0].summary(),
                "public": not private,
                "users": [u.summary() for u in participants],
                "images": [{"_id": im["_id"], "name": im["name"], "updated": im["updated"]} for im in chosen],
                "questions": [{"id": q, "type": "select", "choices": list(c)} for q, c in QUESTIONS],
                "features": [{"id": f, "name": [p.strip() for p in f.split(":")]} for f in features],
                "participationRequests": [],
                "userCompletion": {},
            })
        return out

    def _make_annotations(self) -> list[dict]:
        out = []
        number = 0
        for study in self.studies:
            completion: dict[str, int] = {}
            for user_summary in study["users"]:
                for j, image in enumerate(study["images"]):
                    rng = self._rng("annotation", study["_id"], user_summary["_id"], j)
                    complete = rng.random() < 0.8
                    rec: dict[str, Any] = {
                        "_id": object_id(6, number, self.seed), "_modelType": "annotation",
                        "studyId": study["_id"], "image": dict(image), "user": dict(user_summary),
                        "state": "complete" if complete else "active",
                    }
                    number += 1
                    if complete:
                        completion[user_summary["_id"]] = completion.get(user_summary["_id"], 0) + 1
                        start = 86400 * 200 + number * 300
                        present = [f["id"] for f in study["features"] if rng.random() < 0.5]
                        rec.update(
                            status="ok", startTime=_iso(start), stopTime=_iso(start + rng.randint(30, 600)),
                            responses={q: rng.choice(c) for q, c in QUESTIONS},
                            markups={f["id"]: f["id"] in present for f in study["features"]},
                            log=[{"type": "loaded", "time": _iso(start)}],
                        )
                    out.append(rec)
            study["userCompletion"] = completion
        return out

    # ------------------------------------------------------------------ v2
    def _make_collections(self) -> None:
        """Collections for v2: one per dataset (its visibility) and one per challenge tag (public, pinned)."""
        collections: list[dict] = []
        members: dict[int, set[str]] = {}
        for i, ds in enumerate(self.datasets):
            cid = i + 1
            collections.append({"id": cid, "name": ds["name"], "description": ds["description"],
                                "public": ds["public"], "pinned": False, "locked": True, "doi": None,
                                "doi_url": None, "created": ds["created"], "updated": ds["updated"],
                                "dataset_id": ds["_id"]})
            members[cid] = {im["_id"] for im in self.images if im["dataset"]["_id"] == ds["_id"]}
        for j, tag in enumerate(TAGS):
            cid = len(self.datasets) + j + 1
            collections.append({"id": cid, "name": tag, "description": f"Images of {tag}.", "public": True,
                                "pinned": True, "locked": True, "doi": f"10.34970/{100000 + cid}",
                                "doi_url": f"https://doi.org/10.34970/{100000 + cid}",
                                "created": _iso(cid * 3600), "updated": _iso(cid * 3600)})
            members[cid] = {im["_id"] for im in self.images if tag in (im.get("notes") or {}).get("tags", [])}
        self.collections = collections
        self.collections_by_id = {c["id"]: c for c in collections}
        self.collection_members = members

    def v2_metadata(self, image: dict) -> dict:
        """The v2 ``metadata`` of an image as the archive publishes it today.

        Field names, sections and values follow isic-metadata 6.x: the
        hierarchical ``diagnosis_1..5`` and ``anatom_site_1..5``, image types
        such as ``clinical: close-up``, lesion and patient ids (several images
        per lesion, several lesions per patient), and no key without a value.
        """
        meta = image.get("meta") or {}
        acq = meta.get("acquisition") or {}
        clinical_v1 = meta.get("clinical") or {}
        acquisition: dict[str, Any] = {"pixels_x": acq.get("pixelsX"), "pixels_y": acq.get("pixelsY"),
                                       "image_type": V2_IMAGE_TYPES.get(acq.get("image_type") or "",
                                                                        acq.get("image_type")),
                                       "dermoscopic_type": acq.get("dermoscopic_type")}
        if acquisition["image_type"] != "dermoscopic":
            acquisition.pop("dermoscopic_type")
        clinical: dict[str, Any] = {key: clinical_v1.get(key) for key in V2_CLINICAL_KEPT}
        diagnosis = clinical_v1.get("diagnosis")
        levels: tuple[str, ...] = V2_DIAGNOSES.get(diagnosis or "", ())
        if diagnosis == "melanoma" and clinical_v1.get("mel_class"):
            levels = levels[:2] + (("Melanoma Invasive",) if clinical_v1["mel_class"] == "invasive melanoma"
                                   else ("Melanoma in situ",))
            if levels[2] == "Melanoma Invasive" and clinical_v1.get("mel_type") == "superficial spreading melanoma":
                levels += ("Melanoma Invasive, Superficial spreading",)
        for n, level in enumerate(levels, start=1):
            clinical[f"diagnosis_{n}"] = level
        if levels[:1] != ("Malignant",) or levels[2:3] == ("Melanoma in situ",):
            clinical.pop("mel_thick_mm", None)
        site = clinical_v1.get("anatom_site_general")
        if site in V2_SPECIAL_SITES:
            clinical["anatom_site_special"] = V2_SPECIAL_SITES[site]
        for n, level in enumerate(V2_SITE_PATHS.get(site or "", ()), start=1):
            clinical[f"anatom_site_{n}"] = level
        clinical.update(self.lesion_and_patient(image))
        for name in V2_DECIMAL_FIELDS:
            # the archive's DecimalField(max_digits=5, decimal_places=2): a JSON string such as "24.10"
            if clinical.get(name) is not None:
                clinical[name] = decimal_text(clinical[name])
        return {"acquisition": {k: v for k, v in acquisition.items() if v is not None},
                "clinical": {k: v for k, v in clinical.items() if v is not None}}

    def lesion_and_patient(self, image: dict) -> dict[str, Any]:
        """``lesion_id``, ``patient_id`` (and for lesions followed over time ``acquisition_day``) of an image.

        About three images a lesion, two lesions a patient.

        Consecutive images share a lesion (a lesion followed over time has
        several), and one lesion always belongs to one patient, as the
        archive's metadata batch requires.  One image in ten has neither.
        """
        number = self.image_numbers.get(image["_id"], 0)
        rng = self._rng("lesion", number)
        if rng.random() < 0.1:
            return {}
        lesion = number // 3
        patient = lesion // 2
        # multiplying by a number prime to 10**7 spreads the ids and keeps them distinct
        found: dict[str, Any] = {"lesion_id": f"IL_{(lesion * 7919 + self.seed * 104729) % 10**7:07d}",
                                 "patient_id": f"IP_{(patient * 6007 + self.seed * 15485863) % 10**7:07d}"}
        if lesion % 4 == 0:
            # one lesion in four is followed over time: its images were taken on different days
            found["acquisition_day"] = (number % 3) * 91
        return found

    def v2_record(self, image: dict, base_url: str, expires: int | None = None, key: int = 0) -> dict:
        """An image as the v2 API presents it; file URLs point to the storage host.

        A public image's URLs are permanent and unsigned, as the archive's
        public bucket serves them; a private image's are pre-signed: with
        ``expires`` (Unix time) they stop working then, and every URL signed
        with an older ``key`` is refused.
        """
        known = self.search_record(image)  # the parts that do not change between requests, kept
        isic_id = known["isic_id"]
        storage = _storage_url(base_url)
        if known["public"]:
            query = ""
        else:
            signed = f"expires={expires}&sig=" if expires is not None else "sig="
            query = "?" + signed + self.storage_signature(isic_id, expires, key)
        return {
            "isic_id": isic_id,
            "public": known["public"],
            "copyright_license": known["copyright_license"],
            "attribution": known["attribution"],
            "files": {
                "full": {"url": f"{storage}/storage/images/{isic_id}.jpg{query}", "size": known["full_size"]},
                "thumbnail_256": {"url": f"{storage}/storage/thumbnails/{isic_id}.jpg{query}",
                                  "size": known["thumbnail_size"]},
            },
            "metadata": known["metadata"],
        }

    def search_record(self, image: dict) -> dict:
        """What the search language reads of an image (its v2 record without file URLs), kept per generation.

        Callers must not change it (v2 records share its ``metadata``).
        """
        records = self.view(("search records",), dict)  # type: ignore[arg-type]
        found = records.get(image["_id"])
        if found is None:
            ds = self.datasets_by_id.get(image["dataset"]["_id"]) or {}
            found = records[image["_id"]] = {
                "isic_id": image["name"], "public": bool(ds.get("public", True)),
                "copyright_license": ds.get("license", "CC-0"), "attribution": ds.get("attribution", "Anonymous"),
                "metadata": self.v2_metadata(image), "full_size": self.image_file_size(image["_id"]),
                "thumbnail_size": self.thumbnail_file_size(image["_id"])}
        return found

    def storage_signature(self, isic_id: str, expires: int | None = None, key: int = 0) -> str:
        """A pre-signed URL's signature (storage needs no token, as object storage does not)."""
        text = f"{self.seed}:storage:{key}:{isic_id}:{expires}"
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def _index(self) -> None:
        self.images_by_id = {im["_id"]: im for im in self.images}
        self.images_by_name = {im["name"]: im for im in self.images}
        self.datasets_by_id = {d["_id"]: d for d in self.datasets}
        self.studies_by_id = {s["_id"]: s for s in self.studies}
        self.annotations_by_id = {a["_id"]: a for a in self.annotations}
        self.segmentations_by_id = {s["_id"]: s for s in self.segmentations}
        self.image_numbers = {im["_id"]: n for n, im in enumerate(self.images)}
        self._make_collections()
        self._views: dict[tuple, list] = {}

    #: derived views kept at most (the oldest is dropped first)
    view_limit = 1024

    def changed(self) -> None:
        """Say the content changed in place (e.g. a collection's members): derived views are rebuilt."""
        self._views.clear()

    def view(self, key: tuple, build: Any) -> Any:
        """A derived list (filtered, sorted, searched) computed once per content generation.

        Paging through N records asks for the same ordered list N / page-size
        times; rebuilding it per page made listing quadratic.  Every mutation
        goes through :meth:`_index`, which drops the views.  Callers must not
        modify the list they get.
        """
        views = self._views
        found = views.get(key)
        if found is None:
            found = build()
            if len(views) >= self.view_limit:  # bounded: many distinct searches must not grow without end
                views.pop(next(iter(views)))
            views[key] = found
        return found

    def visibility(self, user: User | None) -> Any:
        """A key equal for all users who see the same images."""
        if user is not None and user.sees_private:
            return "all"
        return frozenset(d["_id"] for d in self.datasets if self.can_read_dataset(user, d))

    # ------------------------------------------------------------- mutations
    def add_images(self, count: int) -> list[dict]:
        """Append ``count`` new images (as if contributors uploaded them)."""
        with self._lock:
            new = self._make_images(count, start=len(self.images))
            self.images.extend(new)
            self._index()
        return new

    # ----------------------------------------------------------- permissions
    def dataset_public(self, dataset_id: str) -> bool:
        ds = self.datasets_by_id.get(dataset_id) if hasattr(self, "datasets_by_id") else None
        if ds is None:
            ds = next((d for d in self.datasets if d["_id"] == dataset_id), None)
        return bool(ds and ds["public"])

    def can_read_dataset(self, user: User | None, dataset: dict) -> bool:
        if dataset["public"]:
            return True
        return user is not None and (user.sees_private or user.id in dataset["access_users"])

    def access_level(self, user: User | None, dataset: dict) -> int:
        """The caller's level on a dataset: -1 none, 0 read, 1 write, 2 admin."""
        if user is not None and user.admin:
            return 2
        if user is not None and user.login == "alice":
            return 1
        return 0 if self.can_read_dataset(user, dataset) else -1

    def can_read_image(self, user: User | None, image: dict) -> bool:
        ds = self.datasets_by_id.get(image["dataset"]["_id"])
        return ds is None or self.can_read_dataset(user, ds)

    def can_read_study(self, user: User | None, study: dict) -> bool:
        if study["public"]:
            return True
        return user is not None and (user.admin or any(u["_id"] == user.id for u in study["users"]))

    def visible_images(self, user: User | None) -> list[dict]:
        readable = self.visibility(user)
        if readable == "all":
            return self.images
        return self.view(("visible", readable),
                         lambda: [im for im in self.images if im["dataset"]["_id"] in readable])

    # ---------------------------------------------------------------- pixels
    def image_size(self, image: dict) -> tuple[int, int]:
        if self.config.image_size:
            return self.config.image_size
        acq = image.get("meta", {}).get("acquisition", {})
        return int(acq.get("pixelsX") or 1022), int(acq.get("pixelsY") or 767)

    def image_seed(self, image_id: str) -> int:
        return int(hashlib.blake2b(f"{self.seed}:{image_id}".encode(), digest_size=4).hexdigest(), 16)

    def superpixel_count(self, image_id: str) -> int:
        """Number of superpixels of an image, without rendering it."""
        return int(self.superpixel_index(image_id).max()) + 1

    def superpixel_index(self, image_id: str) -> np.ndarray:
        width, height = self.image_size(self.images_by_id[image_id])
        return _labels_cached(width, height, self.config.superpixels, self.image_seed(image_id))

    def superpixel_png(self, image_id: str) -> bytes:
        return _png(_sp.encode(self.superpixel_index(image_id)))

    def image_pixels(self, image_id: str) -> np.ndarray:
        width, height = self.image_size(self.images_by_id[image_id])
        return _render_lesion(width, height, self.image_seed(image_id))

    def image_file_size(self, image_id: str) -> int:
        """Bytes of the image's file, known without rendering it."""
        width, height = self.image_size(self.images_by_id[image_id])
        floor = width * height * 3 // 2 + 4096  # above any JPEG of our images at quality <= 95
        low, high = self.config.image_bytes or (floor, floor + floor // 3)
        low = max(low, floor)
        high = max(high, low)
        return low + self.image_seed(image_id) % (high - low + 1)

    def image_jpeg(self, image_id: str) -> bytes:
        """The image's file: rendered, encoded and padded to its size once, then served from memory
        (up to :data:`SERVED_FILE_BYTES` of files, the least recently served dropped first)."""
        width, height = self.image_size(self.images_by_id[image_id])
        size = self.image_file_size(image_id)
        key = (image_id, width, height, size)
        with self._files_lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
                return data
        natural = _jpeg_cached(width, height, self.image_seed(image_id), self.config.jpeg_quality)
        data = _pad_jpeg(natural, size)
        with self._files_lock:
            if key not in self._files and len(data) <= SERVED_FILE_BYTES:
                self._files[key] = data
                self._files_bytes += len(data)
                while self._files_bytes > SERVED_FILE_BYTES:
                    _, dropped = self._files.popitem(last=False)
                    self._files_bytes -= len(dropped)
        return data

    def thumbnail_file_size(self, image_id: str) -> int:
        """Bytes of the 256-pixel thumbnail (as the archive's, tens of kilobytes), known without rendering."""
        return 24_000 + self.image_seed(image_id) % 16_000

    def thumbnail_jpeg(self, image_id: str, width: int = 256) -> bytes:
        pixels = self.image_pixels(image_id)
        step = max(1, int(np.ceil(pixels.shape[1] / max(1, width))))
        natural = _encode(pixels[::step, ::step], ".jpg", quality=80)
        return _pad_jpeg(natural, self.thumbnail_file_size(image_id)) if width == 256 else natural

    def segmentation_mask(self, seg_id: str) -> bytes:
        seg = self.segmentations_by_id[seg_id]
        width, height = self.image_size(self.images_by_id[seg["imageId"]])
        return _png(_lesion_mask(width, height, self.image_seed(seg["imageId"])).astype(np.uint8) * 255)

    def markup_values(self, annotation: dict, feature_id: str) -> list[float]:
        """Per-superpixel values (0, 0.5, 1) of one feature of a complete annotation."""
        image_id = annotation["image"]["_id"]
        idx = self.superpixel_index(image_id)
        n = int(idx.max()) + 1
        values = np.zeros(n)
        if annotation.get("markups", {}).get(feature_id):
            rng = np.random.default_rng(self.image_seed(annotation["_id"] + feature_id))
            mask = _lesion_mask(idx.shape[1], idx.shape[0], self.image_seed(image_id))
            inside = np.unique(idx[mask])
            if inside.size:
                chosen = rng.choice(inside, size=max(1, inside.size // 3), replace=False)
                values[chosen] = rng.choice([0.5, 1.0], size=chosen.size)
        return values.tolist()


def _storage_url(base_url: str) -> str:
    """The "object storage" origin: the same server under another host name.

    A different origin, as in production, so that clients must not send
    their token along with file downloads.
    """
    return base_url.replace("://127.0.0.1", "://localhost", 1)


@lru_cache(maxsize=64)
def _labels_cached(width: int, height: int, n_segments: int, seed: int) -> np.ndarray:
    labels = superpixel_labels(width, height, n_segments, seed)
    labels.setflags(write=False)
    return labels


def _lesion_mask(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6)
    ry, rx = height * rng.uniform(0.15, 0.3), width * rng.uniform(0.15, 0.3)
    y, x = np.ogrid[:height, :width]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _render_lesion(width: int, height: int, seed: int) -> np.ndarray:
    """A skin-coloured background with a darker, textured lesion."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:height, :width]
    base = np.array([214, 170, 150], dtype=np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = base
    mask = _lesion_mask(width, height, seed)
    lesion = np.array([110, 70, 55], dtype=np.float32) + rng.normal(0, 10, 3).astype(np.float32)
    texture = (np.sin(x / (3 + 5 * rng.random())) * np.cos(y / (3 + 5 * rng.random())) * 18).astype(np.float32)
    img[mask] = lesion + np.broadcast_to(texture, mask.shape)[mask][:, None]
    img += rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pad_jpeg(data: bytes, size: int) -> bytes:
    """Grow a JPEG to exactly ``size`` bytes with comment (COM) segments after SOI."""
    pad = size - len(data)
    if pad <= 0:
        return data
    if pad < 4:
        raise ValueError("cannot pad a JPEG by fewer than 4 bytes")
    segments = []
    while pad > 0:
        payload = pad - 4 if pad <= 65537 else min(65533, pad - 8)
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + bytes(payload))
        pad -= payload + 4
    return data[:2] + b"".join(segments) + data[2:]


_PILLOW_FORMATS = {".jpg": "JPEG", ".png": "PNG"}


def _encode(pixels: np.ndarray, extension: str, **kwargs: Any) -> bytes:
    # Pillow itself, not imageio.v3.imwrite: the same encoder and bytes, without imageio's plugin look-up, which
    # cost 0.4 ms of the 0.5 ms an image of the local archive took to encode (every image served is encoded once)
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=_PILLOW_FORMATS[extension], **kwargs)
    return out.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    return _encode(pixels, ".png")


@lru_cache(maxsize=256)
def _jpeg_cached(width: int, height: int, seed: int, quality: int) -> bytes:
    return _encode(_render_lesion(width, height, seed), ".jpg", quality=quality)
