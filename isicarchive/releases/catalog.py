"""The challenge releases this library knows: their files, official splits, published counts and metrics.

Every name, column and count below comes from the challenge site's own
source (``ImageMarkup/stade``: ``templates/data/*.html`` and
``templates/landing/*``), the official scorer's history
(``ImageMarkup/isic-challenge-scoring``) and public loaders that read the
files; the research, with its sources, is kept in the project's report
``releases-layouts.md`` and summarised in docs/releases.md.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RELEASES", "ATTRIBUTES_2018", "Part", "Release"]

TRAIN, VALIDATION, TEST = "train", "validation", "test"

#: the five dermoscopic attributes of 2018 task 2 (mask ``ISIC_<id>_attribute_<name>.png``)
ATTRIBUTES_2018 = ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks")


@dataclass(frozen=True)
class Part:
    """One official split of a release and the files that make it.

    Each field lists the names accepted for one file or folder (the first
    present is used); folders may also be zips of the same name, unzipped or
    not, at any depth under the root.
    """

    split: str
    images: tuple[str, ...] = ()
    #: further image folders the split needs as well (HAM10000's second part)
    also_images: tuple[str, ...] = ()
    truth: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    #: optional extras (lesion groupings, the duplicates list): never required
    extras: tuple[str, ...] = ()
    hdf5: tuple[str, ...] = ()
    #: the published number of images of the split
    count: int | None = None

    def needed(self) -> list[tuple[str, tuple[str, ...]]]:
        """(what, accepted names) of every file the split cannot do without."""
        out: list[tuple[str, tuple[str, ...]]] = []
        if self.hdf5:
            out.append(("images (HDF5, or the folder)", self.hdf5 + self.images))
        elif self.images:
            out.append(("images folder or zip", self.images))
        out += [("images folder or zip", (folder,)) for folder in self.also_images]
        if self.truth:
            out.append(("ground truth", self.truth))
        if self.masks:
            out.append(("masks folder or zip", self.masks))
        return out


@dataclass(frozen=True)
class Release:
    """A challenge release: what it is, its splits, how it is read and scored."""

    name: str
    title: str
    task: str
    reader: str
    parts: tuple[Part, ...]
    metric: str
    #: the classes of the truth, in the order of its columns (classification)
    classes: tuple[str, ...] = ()
    mask_suffix: str = ""
    attributes: tuple[str, ...] = ()
    licence: str = ""
    notes: str = ""

    @property
    def splits(self) -> list[str]:
        return [part.split for part in self.parts]

    def part(self, split: str) -> Part:
        for part in self.parts:
            if part.split == split:
                return part
        raise KeyError(split)


_2016_SEGMENTATION = Release(
    name="isic2016-task1", title="ISIC 2016 (ISBI) Part 1: lesion segmentation", task="segmentation",
    reader="segmentation", mask_suffix="_Segmentation.png", licence="CC-0",
    metric="Jaccard index, mean over images (the 2016 ranking); the package's other measures alongside",
    parts=(Part(TRAIN, images=("ISBI2016_ISIC_Part1_Training_Data",),
                masks=("ISBI2016_ISIC_Part1_Training_GroundTruth",), count=900),
           Part(TEST, images=("ISBI2016_ISIC_Part1_Test_Data",),
                masks=("ISBI2016_ISIC_Part1_Test_GroundTruth",), count=379)),
    notes="masks are ISIC_<id>_Segmentation.png (capital S), 0/255")

_2016_CLASSIFICATION = Release(
    name="isic2016-task3", title="ISIC 2016 (ISBI) Part 3: melanoma classification", task="classification",
    reader="isic2016-task3", classes=("malignant",), licence="CC-0",
    metric="average precision of 'malignant' (the 2016 ranking)",
    parts=(Part(TRAIN, images=("ISBI2016_ISIC_Part3_Training_Data",),
                truth=("ISBI2016_ISIC_Part3_Training_GroundTruth.csv",), count=900),
           Part(TEST, images=("ISBI2016_ISIC_Part3_Test_Data",),
                truth=("ISBI2016_ISIC_Part3_Test_GroundTruth.csv",), count=379)),
    notes="truth CSVs have no header: ISIC_<id>,benign|malignant (training) and ISIC_<id>,0.0|1.0 (test)")

_2017_SPLITS = ((TRAIN, "Training", 2000), (VALIDATION, "Validation", 150), (TEST, "Test_v2", 600))

_2017_SEGMENTATION = Release(
    name="isic2017-task1", title="ISIC 2017 (ISBI) Part 1: lesion segmentation", task="segmentation",
    reader="segmentation", mask_suffix="_segmentation.png", licence="CC-0",
    metric="Jaccard index, mean over images (the 2017 ranking)",
    parts=tuple(Part(split, images=(f"ISIC-2017_{stem}_Data",), masks=(f"ISIC-2017_{stem}_Part1_GroundTruth",),
                     metadata=(f"ISIC-2017_{stem}_Data_metadata.csv",), count=count)
                for split, stem, count in _2017_SPLITS),
    notes="ISIC_<id>_superpixels.png lie beside the images and are not images; masks are _segmentation.png")

_2017_CLASSIFICATION = Release(
    name="isic2017-task3", title="ISIC 2017 (ISBI) Part 3: melanoma and seborrheic keratosis",
    task="classification", reader="isic2017-task3", classes=("melanoma", "seborrheic_keratosis"),
    licence="CC-0", metric="AUC, mean of melanoma and seborrheic keratosis (the 2017 ranking)",
    parts=tuple(Part(split, images=(f"ISIC-2017_{stem}_Data",), truth=(f"ISIC-2017_{stem}_Part3_GroundTruth.csv",),
                     metadata=(f"ISIC-2017_{stem}_Data_metadata.csv",), count=count)
                for split, stem, count in _2017_SPLITS),
    notes="truth image_id,melanoma,seborrheic_keratosis (0/1, nevus: both 0); metadata "
          "image_id,age_approximate,sex inside the images folder")

_2018_SPLITS = ((TRAIN, "Training", 2594), (VALIDATION, "Validation", 100), (TEST, "Test", 1000))

_2018_SEGMENTATION = Release(
    name="isic2018-task1", title="ISIC 2018 Task 1: lesion segmentation", task="segmentation",
    reader="segmentation", mask_suffix="_segmentation.png", licence="CC-0",
    metric="thresholded Jaccard index (per image 0 below 0.65), mean over images",
    parts=tuple(Part(split, images=(f"ISIC2018_Task1-2_{stem}_Input",),
                     masks=(f"ISIC2018_Task1_{stem}_GroundTruth",), count=count)
                for split, stem, count in _2018_SPLITS))

_2018_ATTRIBUTES = Release(
    name="isic2018-task2", title="ISIC 2018 Task 2: dermoscopic attribute detection", task="attributes",
    reader="segmentation", attributes=ATTRIBUTES_2018, licence="CC-0",
    metric="Jaccard index over all pixels of the set, per attribute, micro-averaged (the package's task 2)",
    parts=tuple(Part(split, images=(f"ISIC2018_Task1-2_{stem}_Input",),
                     masks=(f"ISIC2018_Task2_{stem}_GroundTruth_v3", f"ISIC2018_Task2_{stem}_GroundTruth"),
                     count=count)
                for split, stem, count in _2018_SPLITS),
    notes="masks ISIC_<id>_attribute_<globules|milia_like_cyst|negative_network|pigment_network|streaks>.png")

_2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

_2018_CLASSIFICATION = Release(
    name="isic2018-task3", title="ISIC 2018 Task 3: lesion diagnosis (HAM10000)", task="classification",
    reader="one-hot", classes=_2018_CLASSES, licence="CC-BY-NC",
    metric="balanced multi-class accuracy (the 2018 ranking)",
    parts=(Part(TRAIN, images=("ISIC2018_Task3_Training_Input",), truth=("ISIC2018_Task3_Training_GroundTruth.csv",),
                extras=("ISIC2018_Task3_Training_LesionGroupings.csv",), count=10015),
           Part(VALIDATION, images=("ISIC2018_Task3_Validation_Input",),
                truth=("ISIC2018_Task3_Validation_GroundTruth.csv",), count=193),
           Part(TEST, images=("ISIC2018_Task3_Test_Input",), truth=("ISIC2018_Task3_Test_GroundTruth.csv",),
                count=1512)),
    notes="each GroundTruth zip unpacks to a folder of its own name holding the CSV; one-hot "
          "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC; lesion groupings image,lesion_id,diagnosis_confirm_type")

_2019 = Release(
    name="isic2019", title="ISIC 2019: lesion diagnosis", task="classification", reader="one-hot",
    classes=("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"), licence="CC-BY-NC",
    metric="balanced multi-class accuracy, with the test truth's score weights",
    parts=(Part(TRAIN, images=("ISIC_2019_Training_Input",), truth=("ISIC_2019_Training_GroundTruth.csv",),
                metadata=("ISIC_2019_Training_Metadata.csv",), count=25331),
           Part(TEST, images=("ISIC_2019_Test_Input",), truth=("ISIC_2019_Test_GroundTruth.csv",),
                metadata=("ISIC_2019_Test_Metadata.csv",), count=8238)),
    notes="some images are named ISIC_<id>_downsampled.jpg; the test truth adds score_weight, validation_weight")

_2020 = Release(
    name="isic2020", title="SIIM-ISIC 2020: melanoma classification", task="classification", reader="isic2020",
    classes=("target",), licence="CC-BY-NC", metric="AUC of target (malignant), the 2020 ranking",
    parts=(Part(TRAIN, images=("train", "ISIC_2020_Training_JPEG"),
                truth=("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv"),
                extras=("ISIC_2020_Training_Duplicates.csv",), count=33126),
           Part(TEST, images=("ISIC_2020_Test_Input", "test", "ISIC_2020_Test_JPEG"),
                metadata=("ISIC_2020_Test_Metadata.csv",), count=10982)),
    notes="ISIC_2020_Training_JPEG.zip unpacks to train/; the duplicates list (image_name_1,image_name_2, "
          "425 pairs) marks the second image of each pair; the test truth was never published")

_2024 = Release(
    name="isic2024", title="ISIC 2024 (SLICE-3D, Kaggle): malignancy from 3D-TBP tiles", task="classification",
    reader="isic2024", classes=("target",), licence="CC-BY-NC",
    metric="partial AUC above 80% TPR, in [0, 0.2] (the Kaggle ISIC 2024 metric)",
    parts=(Part(TRAIN, hdf5=("train-image.hdf5",), images=("train-image",), truth=("train-metadata.csv",),
                count=401059),
           Part(TEST, hdf5=("test-image.hdf5",), images=("test-image",), metadata=("test-metadata.csv",))),
    notes="train-image.hdf5 holds one JPEG per isic_id (read through the optional h5py); iddx_1..5 are "
          "today's diagnosis_1..5")

_HAM10000 = Release(
    name="ham10000", title="HAM10000 (ViDIR): the ISIC 2018 task 3 training images with lesion ids",
    task="classification", reader="ham10000", classes=_2018_CLASSES, licence="CC-BY-NC",
    metric="balanced multi-class accuracy (as 2018 task 3)",
    parts=(Part(TRAIN, images=("HAM10000_images_part_1",), also_images=("HAM10000_images_part_2",),
                truth=("HAM10000_metadata.csv", "HAM10000_metadata"), count=10015),),
    notes="one split: HAM10000 is the 2018 task 3 training set; its test images are isic2018-task3's")

#: name → release, in the order of the docs' table
RELEASES: dict[str, Release] = {r.name: r for r in (
    _2016_SEGMENTATION, _2016_CLASSIFICATION, _2017_SEGMENTATION, _2017_CLASSIFICATION, _2018_SEGMENTATION,
    _2018_ATTRIBUTES, _2018_CLASSIFICATION, _2019, _2020, _2024, _HAM10000)}
