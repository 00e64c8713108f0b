"""Challenge releases as named datasets (isicarchive.releases).

Each layout is built here from small generated data with the release's real
file names, folder names, column names and CSV quirks (written out literally,
as the research in the project's reports found them: no header in 2016,
one-hot 2018/2019, a ground-truth CSV inside a folder of its own name, the
2017 superpixels beside the images, 2019's ``_downsampled`` names, the 2024
HDF5 written with h5py), as folders and as the zips of the download.  The
expected labels are the v2 hierarchy written out, not looked up; scores are
compared with the official package called directly on files the test
writes itself.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import isicarchive.limits
import isicarchive.releases as releases
from isicarchive import IsicApi, IsicError
from isicarchive.disk.layouts import LayoutError
from isicarchive.errors import ImageTooLargeError
from isicarchive.releases import MissingFilesError, ReleaseCountWarning, ScoringError

pytest.importorskip("pyarrow")

SIZE = 16
MELANOMA = ("Malignant", "Malignant melanocytic proliferations (Melanoma)")
NEVUS = ("Benign", "Benign melanocytic proliferations", "Nevus")
KERATOSIS = ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis")
BCC = ("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma")


# ------------------------------------------------------------------ builders
def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    return bytes(iio.imwrite("<bytes>", pixels, extension=".jpg"))


def disc(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    cy, cx, r = rng.integers(5, 11), rng.integers(5, 11), rng.integers(3, 6)
    return (((y - cy) ** 2 + (x - cx) ** 2) <= r * r).astype(np.uint8) * 255


def png(array: np.ndarray) -> bytes:
    return bytes(iio.imwrite("<bytes>", array, extension=".png"))


class Tree:
    """Files of a release, written as folders or as the zips of the download."""

    def __init__(self, root: Path, zipped: bool = False) -> None:
        self.root, self.zipped = root, zipped
        self.folders: dict[str, dict[str, bytes]] = {}

    def add(self, path: str, data: bytes | str) -> None:
        folder, _, name = path.rpartition("/")
        self.folders.setdefault(folder, {})[name] = data.encode() if isinstance(data, str) else data

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for folder, members in self.folders.items():
            top = folder.split("/")[0]
            if folder and self.zipped:
                with zipfile.ZipFile(self.root / f"{top}.zip", "a") as archive:
                    for name, data in members.items():
                        archive.writestr(f"{folder}/{name}", data)
                continue
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            for name, data in members.items():
                (self.root / folder / name).write_bytes(data)
        return self.root


def ids(start: int, count: int) -> list[str]:
    return [f"ISIC_{n:07d}" for n in range(start, start + count)]


def build_2016_task1(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    splits = {"train": ids(0, 3), "test": ids(3, 2)}
    for split, stem in (("train", "Training"), ("test", "Test")):
        for n, i in enumerate(splits[split]):
            tree.add(f"ISBI2016_ISIC_Part1_{stem}_Data/{i}.jpg", jpeg(n))
            tree.add(f"ISBI2016_ISIC_Part1_{stem}_GroundTruth/{i}_Segmentation.png", png(disc(n)))
    tree.write()
    return splits


def build_2016_task3(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    train, test = ids(0, 4), ids(10, 4)
    for n, i in enumerate(train):
        tree.add(f"ISBI2016_ISIC_Part3_Training_Data/{i}.jpg", jpeg(n))
    for n, i in enumerate(test):
        tree.add(f"ISBI2016_ISIC_Part3_Test_Data/{i}.jpg", jpeg(n))
    # no header: the training truth says benign/malignant, the test truth 0.0/1.0
    tree.add("ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
             "ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\nISIC_0000003,benign\n")
    tree.add("ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
             "ISIC_0000010,0.0\nISIC_0000011,1.0\nISIC_0000012,1.0\nISIC_0000013,0.0\n")
    tree.write()
    return {"train": train, "test": test}


def build_2017(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    splits = {"train": ids(0, 3), "validation": ids(3, 3), "test": ids(6, 3)}
    for split, stem in (("train", "Training"), ("validation", "Validation"), ("test", "Test_v2")):
        members = splits[split]
        for n, i in enumerate(members):
            tree.add(f"ISIC-2017_{stem}_Data/{i}.jpg", jpeg(n))
            # superpixels lie beside the images: not images of the release
            tree.add(f"ISIC-2017_{stem}_Data/{i}_superpixels.png", png(np.full((SIZE, SIZE, 3), n, np.uint8)))
            tree.add(f"ISIC-2017_{stem}_Part1_GroundTruth/{i}_segmentation.png", png(disc(n)))
        tree.add(f"ISIC-2017_{stem}_Data/ISIC-2017_{stem}_Data_metadata.csv",
                 "image_id,age_approximate,sex\n" + f"{members[0]},55,female\n{members[1]},unknown,unknown\n"
                 f"{members[2]},70,male\n")
        tree.add(f"ISIC-2017_{stem}_Part3_GroundTruth.csv", "image_id,melanoma,seborrheic_keratosis\n"
                 f"{members[0]},1.0,0.0\n{members[1]},0.0,1.0\n{members[2]},0.0,0.0\n")
    tree.write()
    return splits


def build_2018_tasks12(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    splits = {"train": ids(0, 2), "validation": ids(2, 2), "test": ids(4, 2)}
    attributes = ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks")
    for split, stem, task2 in (("train", "Training", "ISIC2018_Task2_Training_GroundTruth_v3"),
                               ("validation", "Validation", "ISIC2018_Task2_Validation_GroundTruth"),
                               ("test", "Test", "ISIC2018_Task2_Test_GroundTruth")):
        for n, i in enumerate(splits[split]):
            tree.add(f"ISIC2018_Task1-2_{stem}_Input/{i}.jpg", jpeg(n))
            tree.add(f"ISIC2018_Task1_{stem}_GroundTruth/{i}_segmentation.png", png(disc(n)))
            for k, attribute in enumerate(attributes):
                tree.add(f"{task2}/{i}_attribute_{attribute}.png", png(disc(10 * n + k)))
        tree.add(f"ISIC2018_Task1-2_{stem}_Input/ATTRIBUTION.txt", "attribution")
        tree.add(f"ISIC2018_Task1_{stem}_GroundTruth/LICENSE.txt", "licence")
    tree.write()
    return splits


def build_2018_task3(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
    splits = {"train": ids(24306, 3), "validation": ids(34321, 2), "test": ids(34524, 2)}
    onehot = ("1.0,0.0,0.0,0.0,0.0,0.0,0.0", "0.0,1.0,0.0,0.0,0.0,0.0,0.0", "0.0,0.0,1.0,0.0,0.0,0.0,0.0")
    for split, stem in (("train", "Training"), ("validation", "Validation"), ("test", "Test")):
        members = splits[split]
        for n, i in enumerate(members):
            tree.add(f"ISIC2018_Task3_{stem}_Input/{i}.jpg", jpeg(n))
        # the ground-truth zip unpacks to a folder of its own name holding the CSV
        name = f"ISIC2018_Task3_{stem}_GroundTruth"
        tree.add(f"{name}/{name}.csv", header + "".join(f"{i},{onehot[n]}\n" for n, i in enumerate(members)))
        tree.add(f"{name}/ATTRIBUTION.txt", "HAM10000")
    tree.add("ISIC2018_Task3_Training_LesionGroupings.csv", "image,lesion_id,diagnosis_confirm_type\n"
             "ISIC_0024306,HAM_0000118,histopathology\nISIC_0024307,HAM_0000118,histopathology\n"
             "ISIC_0024308,HAM_0002730,single image expert consensus\n")
    tree.write()
    return splits


def build_2019(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    classes = "MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
    train, test = ids(0, 3), ids(10, 9)
    tree.add(f"ISIC_2019_Training_Input/{train[0]}.jpg", jpeg(0))
    tree.add(f"ISIC_2019_Training_Input/{train[1]}_downsampled.jpg", jpeg(1))  # an MSK image's name
    tree.add(f"ISIC_2019_Training_Input/{train[2]}.jpg", jpeg(2))
    tree.add("ISIC_2019_Training_GroundTruth.csv", f"image,{classes}\n"
             f"{train[0]},1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n{train[1]}_downsampled,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
             f"{train[2]},0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    tree.add("ISIC_2019_Training_Metadata.csv", "image,age_approx,anatom_site_general,lesion_id,sex\n"
             f"{train[0]},55.0,anterior torso,BCN_0000001,male\n{train[1]}_downsampled,,,,\n"
             f"{train[2]},30.0,head/neck,HAM_0000002,female\n")
    for n, i in enumerate(test):
        tree.add(f"ISIC_2019_Test_Input/{i}.jpg", jpeg(n))
    # the test truth: one image of each class (UNK included), with the score and validation weights
    tree.add("ISIC_2019_Test_GroundTruth.csv", f"image,{classes},score_weight,validation_weight\n" + "".join(
        f"{i},{','.join('1.0' if k == n else '0.0' for k in range(9))},1.0,{0.0 if n == 0 else 1.0}\n"
        for n, i in enumerate(test)))
    tree.write()
    return {"train": train, "test": test}


def build_2020(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    train = ids(2637011, 4)
    for n, i in enumerate(train):
        tree.add(f"train/{i}.jpg", jpeg(n))  # ISIC_2020_Training_JPEG.zip unpacks to train/
    tree.add("ISIC_2020_Training_GroundTruth_v2.csv", "image_name,patient_id,lesion_id,sex,age_approx,"
             "anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
             f"{train[0]},IP_7279968,IL_7972535,male,45.0,head/neck,unknown,benign,0\n"
             f"{train[1]},IP_3075186,IL_4649854,female,45.0,upper extremity,melanoma,malignant,1\n"
             f"{train[2]},IP_2842074,IL_9087444,female,50.0,lower extremity,nevus,benign,0\n"
             f"{train[3]},IP_2842074,IL_9087444,female,50.0,lower extremity,nevus,benign,0\n")
    tree.add("ISIC_2020_Training_Duplicates.csv", f"image_name_1,image_name_2\n{train[2]},{train[3]}\n")
    tree.write()
    return {"train": train}


def build_2024(root: Path, zipped: bool) -> dict[str, list[str]]:
    h5py = pytest.importorskip("h5py")
    root.mkdir(parents=True, exist_ok=True)
    train = ids(15670, 4)
    with h5py.File(root / "train-image.hdf5", "w") as store:  # one JPEG per isic_id, as on Kaggle
        for n, i in enumerate(train):
            store.create_dataset(i, data=np.bytes_(jpeg(n)))
    (root / "train-metadata.csv").write_text(
        "isic_id,target,patient_id,age_approx,sex,anatom_site_general,clin_size_long_diam_mm,image_type,"
        "tbp_tile_type,attribution,copyright_license,lesion_id,iddx_full,iddx_1,iddx_2,iddx_3,iddx_4,iddx_5\n"
        f"{train[0]},0,IP_1235828,60.0,male,lower extremity,3.04,TBP tile: close-up,3D: white,"
        "Memorial Sloan Kettering Cancer Center,CC-BY,,Benign,Benign,,,,\n"
        f"{train[1]},1,IP_8170065,60.0,male,head/neck,1.10,TBP tile: close-up,3D: XP,"
        "ACEMID MIA,CC-0,IL_8910080,\"Malignant::Malignant adnexal epithelial proliferations - Follicular::"
        "Basal cell carcinoma::Basal cell carcinoma, Superficial\",Malignant,"
        "Malignant adnexal epithelial proliferations - Follicular,Basal cell carcinoma,"
        "\"Basal cell carcinoma, Superficial\",\n"
        f"{train[2]},0,IP_1235828,60.0,male,posterior torso,2.10,TBP tile: close-up,3D: white,"
        "Memorial Sloan Kettering Cancer Center,CC-BY,,Benign,Benign,,,,\n"
        f"{train[3]},1,IP_1235828,60.0,male,anterior torso,4.00,TBP tile: close-up,3D: white,"
        "Memorial Sloan Kettering Cancer Center,CC-BY,IL_0000001,Malignant::Malignant melanocytic "
        "proliferations (Melanoma),Malignant,Malignant melanocytic proliferations (Melanoma),,,\n")
    return {"train": train}


def build_ham10000(root: Path, zipped: bool) -> dict[str, list[str]]:
    tree = Tree(root, zipped)
    train = ids(27419, 4)
    tree.add(f"HAM10000_images_part_1/{train[0]}.jpg", jpeg(0))
    tree.add(f"HAM10000_images_part_1/{train[1]}.jpg", jpeg(1))
    tree.add(f"HAM10000_images_part_2/{train[2]}.jpg", jpeg(2))
    tree.add(f"HAM10000_images_part_2/{train[3]}.jpg", jpeg(3))
    tree.add("HAM10000_metadata.csv", "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
             f"HAM_0000118,{train[0]},bkl,histo,80.0,male,scalp\nHAM_0000118,{train[1]},bkl,histo,80.0,male,scalp\n"
             f"HAM_0002730,{train[2]},mel,histo,60.0,female,back\nHAM_0001466,{train[3]},nv,follow_up,50.0,male,ear\n")
    tree.write()
    return {"train": train}


BUILDERS = {"isic2016-task1": build_2016_task1, "isic2016-task3": build_2016_task3, "isic2017-task1": build_2017,
            "isic2017-task3": build_2017, "isic2018-task1": build_2018_tasks12, "isic2018-task2": build_2018_tasks12,
            "isic2018-task3": build_2018_task3, "isic2019": build_2019, "isic2020": build_2020,
            "isic2024": build_2024, "ham10000": build_ham10000}

#: release → image → the v2 diagnosis path its label means (written out, not looked up)
EXPECTED_DIAGNOSES = {
    "isic2016-task3": {"ISIC_0000000": ("Benign",), "ISIC_0000001": ("Malignant",), "ISIC_0000011": ("Malignant",),
                       "ISIC_0000013": ("Benign",)},
    "isic2017-task3": {"ISIC_0000000": MELANOMA, "ISIC_0000001": KERATOSIS, "ISIC_0000002": NEVUS},
    "isic2018-task3": {"ISIC_0024306": MELANOMA, "ISIC_0024307": NEVUS, "ISIC_0024308": BCC},
    "isic2019": {"ISIC_0000000": MELANOMA, "ISIC_0000001": NEVUS, "ISIC_0000002": BCC, "ISIC_0000018": ()},
    "isic2020": {"ISIC_2637011": ("Benign",), "ISIC_2637012": MELANOMA, "ISIC_2637013": NEVUS},
    "isic2024": {"ISIC_0015670": ("Benign",), "ISIC_0015671": (*BCC, "Basal cell carcinoma, Superficial"),
                 "ISIC_0015673": MELANOMA},
    "ham10000": {"ISIC_0027419": ("Benign", "Benign epidermal proliferations", "Pigmented benign keratosis"),
                 "ISIC_0027421": MELANOMA, "ISIC_0027422": NEVUS},
}


def open_quietly(name: str, root: Path, **kwargs: object) -> IsicApi:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseCountWarning)  # generated data is smaller than the release
        return releases.open(name, root, **kwargs)  # type: ignore[arg-type]


def diagnosis_path(record: dict) -> tuple[str, ...]:
    clinical = record["metadata"]["clinical"]
    return tuple(clinical[f"diagnosis_{n}"] for n in range(1, 6) if clinical.get(f"diagnosis_{n}"))


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("zipped", [False, True], ids=["folders", "zips"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_records_splits_and_labels(tmp_path: Path, name: str, zipped: bool) -> None:
    expected = BUILDERS[name](tmp_path / "release", zipped)
    session = open_quietly(name, tmp_path / "release")
    try:
        parts = releases.splits(session)
        assert {split: sorted(selection) for split, selection in parts.items()} == expected
        records = session.cache_images()
        for isic_id, path in EXPECTED_DIAGNOSES.get(name, {}).items():
            assert diagnosis_path(records[isic_id]) == path, isic_id
        # every image's pixels are read from the folder, the zip or the HDF5 store
        for isic_id in expected[next(iter(expected))]:
            assert session.context.backend.read_image(records[isic_id])[:2] == b"\xff\xd8"
        # the split is a field of the selection, as any other
        first = next(iter(expected))
        chosen = session.select_images(["metadata.challenge.split", "==", first])
        assert sorted(chosen) == expected[first]
    finally:
        session.close()


def test_quirks_are_read_as_released(tmp_path: Path) -> None:
    build_2017(tmp_path / "r2017", zipped=False)
    session = open_quietly("isic2017-task3", tmp_path / "r2017")
    records = session.cache_images()
    assert len(records) == 9  # superpixel PNGs are not images
    assert records["ISIC_0000000"]["metadata"]["clinical"]["age_approx"] == 55
    assert "age_approx" not in records["ISIC_0000001"]["metadata"]["clinical"]  # "unknown"
    assert records["ISIC_0000001"]["meta"]["clinical"]["diagnosis"] == "seborrheic keratosis"
    session.close()

    build_2019(tmp_path / "r2019", zipped=True)
    session = open_quietly("isic2019", tmp_path / "r2019")
    records = session.cache_images()
    assert session.context.backend.image_file(records["ISIC_0000001"]).endswith("ISIC_0000001_downsampled.jpg")
    clinical = records["ISIC_0000000"]["metadata"]["clinical"]
    assert (clinical["anatom_site_1"], clinical["anatom_site_2"], clinical["lesion_id"]) == (
        "Trunk", "Anterior trunk", "BCN_0000001")
    assert records["ISIC_0000018"]["metadata"]["challenge"]["label"] == "UNK"
    session.close()

    build_2018_task3(tmp_path / "r2018", zipped=False)
    session = open_quietly("isic2018-task3", tmp_path / "r2018")
    records = session.cache_images()
    assert records["ISIC_0024307"]["metadata"]["clinical"]["lesion_id"] == "HAM_0000118"
    assert records["ISIC_0024308"]["metadata"]["clinical"]["diagnosis_confirm_type"] == \
        "single image expert consensus"
    session.close()

    build_2020(tmp_path / "r2020", zipped=False)
    session = open_quietly("isic2020", tmp_path / "r2020")
    challenge = session.cache_images()["ISIC_2637014"]["metadata"]["challenge"]
    assert challenge["duplicate_of"] == "ISIC_2637013"
    session.close()


@pytest.mark.parametrize("name", ["isic2016-task1", "isic2017-task1", "isic2018-task1", "isic2018-task2"])
def test_masks_are_binary_as_released(tmp_path: Path, name: str) -> None:
    expected = BUILDERS[name](tmp_path / "release", zipped=True)
    session = open_quietly(name, tmp_path / "release")
    for split, members in expected.items():
        for n, isic_id in enumerate(members):
            found = releases.masks(session, isic_id)
            if name == "isic2018-task2":
                assert sorted(found) == ["globules", "milia_like_cyst", "negative_network", "pigment_network",
                                         "streaks"]
                assert np.array_equal(found["streaks"], disc(10 * n + 4))
            else:
                assert np.array_equal(releases.mask(session, isic_id), disc(n)), (split, isic_id)
            for array in found.values():
                assert array.dtype == np.uint8 and set(np.unique(array)) <= {0, 255}
    session.close()


def test_a_mask_that_is_not_binary_is_refused(tmp_path: Path) -> None:
    build_2018_tasks12(tmp_path / "r", zipped=False)
    blurred = disc(0).astype(np.uint8)
    blurred[blurred == 255] = 200
    blurred[0, 0] = 37  # what resizing with interpolation leaves
    (tmp_path / "r/ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png").write_bytes(png(blurred))
    session = open_quietly("isic2018-task1", tmp_path / "r")
    with pytest.raises(LayoutError, match="not a binary mask: values \\[0, 37, 200\\]"):
        releases.mask(session, "ISIC_0000000")
    session.close()


def test_missing_files_are_listed(tmp_path: Path) -> None:
    build_2018_tasks12(tmp_path / "r", zipped=False)
    for folder in ("ISIC2018_Task1_Validation_GroundTruth", "ISIC2018_Task1_Test_GroundTruth"):
        for file in (tmp_path / "r" / folder).iterdir():
            file.unlink()
        (tmp_path / "r" / folder).rmdir()
    with pytest.raises(MissingFilesError) as caught:
        open_quietly("isic2018-task1", tmp_path / "r")
    message = str(caught.value)
    assert "validation masks folder or zip: ISIC2018_Task1_Validation_GroundTruth" in message
    assert "test masks folder or zip: ISIC2018_Task1_Test_GroundTruth" in message
    assert "train" not in message.split("—", 1)[1]
    # the splits asked for are the ones checked
    session = open_quietly("isic2018-task1", tmp_path / "r", splits=["train"])
    assert sorted(releases.splits(session)) == ["train"]
    session.close()
    with pytest.raises(MissingFilesError, match="ISBI2016_ISIC_Part3_Training_GroundTruth.csv"):
        open_quietly("isic2016-task3", tmp_path / "r")
    with pytest.raises(IsicError, match="no challenge release is called 'isic2015'"):
        releases.open("isic2015", tmp_path)


def test_count_mismatch_warns_with_the_difference(tmp_path: Path) -> None:
    build_2016_task3(tmp_path / "r", zipped=False)
    with pytest.warns(ReleaseCountWarning) as caught:
        session = releases.open("isic2016-task3", tmp_path / "r")
    session.close()
    messages = sorted(str(w.message) for w in caught)
    assert messages == ["isic2016-task3 test: 4 images, the published release has 379 (375 fewer)",
                        "isic2016-task3 train: 4 images, the published release has 900 (896 fewer)"]


def test_a_missing_optional_module_is_named_with_the_releases_extra(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    BUILDERS["isic2016-task3"](tmp_path / "release", zipped=False)
    session = open_quietly("isic2016-task3", tmp_path / "release")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"ground truth needs pandas: pip install 'isicarchive\[releases\]'"):
        releases.truth(session)
    session.close()


def test_list_says_what_each_release_needs() -> None:
    listed = releases.list()
    assert set(listed) == set(BUILDERS)
    assert listed["isic2019"]["splits"]["train"]["count"] == 25331
    assert listed["isic2020"]["splits"]["train"]["count"] == 33126
    assert listed["isic2018-task3"]["splits"]["train"]["count"] == 10015
    assert listed["isic2024"]["splits"]["train"]["count"] == 401059
    assert listed["isic2016-task3"]["splits"]["test"]["files"]["ground truth"] == [
        "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"]
    assert listed["ham10000"]["splits"]["train"]["files"]["images folder or zip"] == ["HAM10000_images_part_2"]


def test_untrusted_files_stay_inside_the_root(tmp_path: Path) -> None:
    build_2016_task3(tmp_path / "r", zipped=False)
    outside = tmp_path / "secret.csv"
    outside.write_text("ISIC_0000000,malignant\n")
    csv = tmp_path / "r/ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    csv.unlink()
    csv.symlink_to(outside)  # a link out of the release is not followed
    with zipfile.ZipFile(tmp_path / "r/extra.zip", "w") as archive:
        archive.writestr("../../ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "ISIC_0000000,malignant\n")
    with pytest.raises(MissingFilesError, match="train ground truth"):
        open_quietly("isic2016-task3", tmp_path / "r")
    files = releases.files.ReleaseFiles(tmp_path / "r")
    assert any("link leading out" in p for p in files.problems)
    assert any("unsafe path" in p for p in files.problems)
    files.close()


def test_a_release_folder_opens_without_naming_it(tmp_path: Path) -> None:
    build_2016_task3(tmp_path / "r", zipped=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseCountWarning)
        session = IsicApi(hostname=(tmp_path / "r").as_uri(), progress=False)
    assert session.layout == "isic2016-task3"
    assert len(session.cache_images()) == 8
    session.close()
    (tmp_path / "neither").mkdir()
    (tmp_path / "neither/notes.txt").write_text("no release here")
    with pytest.raises(LayoutError, match="nor is it a challenge release \\(isicarchive.releases.list\\(\\)"):
        IsicApi(hostname=(tmp_path / "neither").as_uri(), progress=False)
    build_2018_tasks12(tmp_path / "both", zipped=False)
    with pytest.raises(LayoutError, match="several challenge releases \\(isic2018-task1, isic2018-task2\\)"):
        IsicApi(hostname=(tmp_path / "both").as_uri(), progress=False)


# -------------------------------------------------------------------- scores
def package() -> object:
    return pytest.importorskip("isic_challenge_scoring")


def write_masks(folder: Path, masks: dict[str, np.ndarray], suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in masks.items():
        (folder / f"{name}{suffix}").write_bytes(png(array))
    return folder


@pytest.mark.parametrize("name, figure", [("isic2016-task1", "jaccard"), ("isic2017-task1", "jaccard"),
                                          ("isic2018-task1", "threshold_jaccard")])
def test_segmentation_score_is_the_packages(tmp_path: Path, name: str, figure: str) -> None:
    scorer = package()
    expected = BUILDERS[name](tmp_path / "release", zipped=True)
    session = open_quietly(name, tmp_path / "release")
    test_ids = expected["test"]
    suffix = "_Segmentation.png" if name == "isic2016-task1" else "_segmentation.png"
    truth = {i: disc(n) for n, i in enumerate(test_ids)}
    planted = {i: np.roll(mask, shift=k + 1, axis=1) for k, (i, mask) in enumerate(truth.items())}
    official = scorer.SegmentationScore.from_dir(write_masks(tmp_path / "truth", truth, suffix),
                                                 write_masks(tmp_path / "pred", planted, "_prediction.png"))
    got = releases.score(name, {i: m // 255 for i, m in planted.items()}, session)  # 0/1 masks are accepted
    assert got.split == "test" and got.metric == figure
    assert got.value == pytest.approx(official.macro_average[figure], abs=1e-12)
    assert 0 < got.value < 1
    # a folder of predicted PNGs scores the same
    assert releases.score(name, tmp_path / "pred", session).value == pytest.approx(got.value, abs=1e-12)
    with pytest.raises(ScoringError, match=f"no predicted mask for {test_ids[-1]}"):
        releases.score(name, {i: planted[i] for i in test_ids[:-1]}, session)
    session.close()


def test_predicted_mask_files_are_read_within_the_limits(tmp_path: Path) -> None:
    package()
    build_2016_task1 = BUILDERS["isic2016-task1"]
    test_ids = build_2016_task1(tmp_path / "release", zipped=False)["test"]
    session = open_quietly("isic2016-task1", tmp_path / "release")
    large = {i: np.kron(disc(n), np.ones((4, 4), np.uint8)) for n, i in enumerate(test_ids)}  # 16x the pixels
    predictions = write_masks(tmp_path / "pred", large, "_prediction.png")
    limit = 4 * disc(0).size  # the truth's masks are within it, the predicted ones are not
    previous = isicarchive.limits.configure(max_pixels=limit)
    try:
        with pytest.raises(ImageTooLargeError, match="predicted mask ISIC_"):
            releases.score("isic2016-task1", predictions, session)
    finally:
        isicarchive.limits.configure(**vars(previous))
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png(disc(0)))
    first = sorted(predictions.iterdir())[0]
    first.unlink()
    first.symlink_to(outside)
    with pytest.raises(ScoringError, match="not a regular file"):
        releases.score("isic2016-task1", predictions, session)
    session.close()


def test_attribute_score_is_the_packages(tmp_path: Path) -> None:
    package()
    from isic_challenge_scoring import task2

    build_2018_tasks12(tmp_path / "release", zipped=False)
    session = open_quietly("isic2018-task2", tmp_path / "release")
    attributes = ("globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks")
    truth_dir, prediction_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    prediction_dir.mkdir()
    planted: dict[str, dict[str, np.ndarray]] = {}
    for n, isic_id in enumerate(["ISIC_0000004", "ISIC_0000005"]):
        for k, attribute in enumerate(attributes):
            truth = disc(10 * n + k)
            guess = np.roll(truth, k, axis=0) if k % 2 else truth
            planted.setdefault(isic_id, {})[attribute] = guess
            (truth_dir / f"{isic_id}_attribute_{attribute}.png").write_bytes(png(truth))
            (prediction_dir / f"{isic_id}_attribute_{attribute}.png").write_bytes(png(guess))
    official = task2.score(truth_dir, prediction_dir)
    got = releases.score("isic2018-task2", planted, session)
    assert got.value == pytest.approx(official["overall"], abs=1e-12) and 0 < got.value < 1
    session.close()


def test_classification_scores_are_the_packages(tmp_path: Path) -> None:
    scorer = package()
    import pandas as pd
    from sklearn.metrics import average_precision_score

    # 2016: average precision of 'malignant' on the test truth (0.0/1.0, no header)
    build_2016_task3(tmp_path / "r2016", zipped=False)
    session = open_quietly("isic2016-task3", tmp_path / "r2016")
    planted = {"ISIC_0000010": 0.7, "ISIC_0000011": 0.8, "ISIC_0000012": 0.2, "ISIC_0000013": 0.1}
    got = releases.score("isic2016-task3", planted, session)
    assert got.metric == "ap"
    assert got.value == pytest.approx(average_precision_score([0, 1, 1, 0], [0.7, 0.8, 0.2, 0.1]), abs=1e-12)
    session.close()

    # 2019: balanced accuracy with the test truth's weights, against the package fed the CSV's own rows
    build_2019(tmp_path / "r2019", zipped=False)
    session = open_quietly("isic2019", tmp_path / "r2019")
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    test_ids = [f"ISIC_{n:07d}" for n in range(10, 19)]
    guesses = np.eye(9) * 0.8 + 0.01
    guesses[1] = guesses[0]  # NV called MEL
    guesses[8, 8], guesses[8, 1] = 0.3, 0.6  # UNK called NV
    predictions = pd.DataFrame(guesses, columns=classes, index=pd.Index(test_ids, name="image"))
    truth_csv = (tmp_path / "r2019/ISIC_2019_Test_GroundTruth.csv").read_text()
    truth, weights = scorer.load_csv.parse_truth_csv(io.StringIO(truth_csv))
    official = scorer.ClassificationScore(truth, predictions.loc[truth.index], weights,
                                          scorer.ClassificationMetric.BALANCED_ACCURACY)
    got = releases.score("isic2019", predictions.reset_index(), session)  # an 'image' column is the index
    assert got.value == pytest.approx(official.overall, abs=1e-12)
    assert got.details["aggregate"]["balanced_accuracy"] == pytest.approx(official.overall, abs=1e-12)
    assert got.value == pytest.approx(7 / 9)  # two of nine classes missed, each class weighs the same
    with pytest.raises(ScoringError, match="Missing images in CSV: \\['ISIC_0000018'\\]"):
        releases.score("isic2019", predictions.iloc[:8], session)
    with pytest.raises(ScoringError, match="outside \\[0, 1\\]"):
        releases.score("isic2019", predictions * 2, session)
    # the training truth has no UNK image (nor AK … in this small copy): the package cannot score it
    train = releases.truth(session, "train")
    with pytest.raises(ScoringError, match="no positive \\(or no negative\\) image of \\['AK',"):
        releases.score("isic2019", train[classes], session, split="train")
    session.close()

    # 2017: mean AUC of melanoma and seborrheic keratosis
    build_2017(tmp_path / "r2017", zipped=True)
    session = open_quietly("isic2017-task3", tmp_path / "r2017")
    planted_2017 = {"ISIC_0000006": {"melanoma": 0.4, "seborrheic_keratosis": 0.2},
                    "ISIC_0000007": {"melanoma": 0.3, "seborrheic_keratosis": 0.6},
                    "ISIC_0000008": {"melanoma": 0.5, "seborrheic_keratosis": 0.1}}
    truth_2017 = pd.DataFrame({"melanoma": [1.0, 0.0, 0.0], "seborrheic_keratosis": [0.0, 1.0, 0.0]},
                              index=pd.Index(["ISIC_0000006", "ISIC_0000007", "ISIC_0000008"], name="image"))
    official = scorer.ClassificationScore(
        truth_2017, pd.DataFrame.from_dict(planted_2017, orient="index")[list(truth_2017.columns)],
        pd.DataFrame({"score_weight": 1.0, "validation_weight": 1.0}, index=truth_2017.index),
        scorer.ClassificationMetric.AUC)
    got = releases.score("isic2017-task3", planted_2017, session)
    assert got.value == pytest.approx(official.overall, abs=1e-12) and got.value == pytest.approx(0.75)
    session.close()


# ------------------------------------------------------------ the 2024 metric
def test_2024_partial_auc_worked_values() -> None:
    pauc = releases.partial_auc_above_tpr
    truth = np.array([1, 1, 0, 0, 0])
    # worked by hand: the curve reaches TPR 1 at FPR 1/3 (and TPR 0.5 below it), so the area right of the
    # curve and above TPR 0.8 is 0.2 × (1 − 1/3)
    assert pauc(truth, [0.9, 0.4, 0.5, 0.3, 0.1]) == pytest.approx(0.2 * 2 / 3, abs=1e-12)
    assert pauc(truth, [0.9, 0.8, 0.5, 0.3, 0.1]) == pytest.approx(0.2)  # perfect: the top of the range
    assert pauc(truth, [0.1, 0.2, 0.5, 0.6, 0.9]) == pytest.approx(0.0)  # every malignant lesion ranked last
    assert pauc(truth, [0.5] * 5) == pytest.approx(0.02)  # chance: the triangle under the diagonal


def test_2024_partial_auc_matches_the_published_equivalent_and_the_package() -> None:
    package()
    import pandas as pd
    from isic_challenge_scoring.metrics import auc_above_sensitivity
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(7)
    truth = (rng.random(400) < 0.1).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.3 * truth, 0.2), 0, 1)
    got = releases.partial_auc_above_tpr(truth, scores)
    # the metric's published "equivalent code": scikit-learn's McClish-corrected AUC up to max_fpr, unscaled
    max_fpr = 0.2
    scaled = roc_auc_score(np.abs(truth - 1), 1.0 - scores, max_fpr=max_fpr)
    assert got == pytest.approx(0.5 * max_fpr ** 2 + (max_fpr - 0.5 * max_fpr ** 2) / 0.5 * (scaled - 0.5), abs=1e-9)
    # the package's auc_sens_80 is the area under the curve right of TPR 0.8, rectangle below 0.8 included
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    fpr_at = float(np.interp(0.8, tpr, fpr))
    below = auc_above_sensitivity(pd.Series(truth), pd.Series(scores), pd.Series(np.ones(len(truth))), 0.8)
    assert got == pytest.approx(below - 0.8 * (1 - fpr_at), abs=1e-9)


def test_2024_scores_through_the_session(tmp_path: Path) -> None:
    build_2024(tmp_path / "r", zipped=False)
    session = open_quietly("isic2024", tmp_path / "r")
    planted = {"ISIC_0015670": 0.2, "ISIC_0015671": 0.9, "ISIC_0015672": 0.6, "ISIC_0015673": 0.4}
    got = releases.score("isic2024", planted, session)
    assert got.split == "train" and got.metric == "pauc_above_tpr_0.80"
    # malignant: 0.9 and 0.4; benign: 0.2 and 0.6 → TPR reaches 1 at FPR 0.5: 0.2 × 0.5
    assert got.value == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ScoringError, match="miss the images \\['ISIC_0015673'\\]"):
        releases.score("isic2024", {k: v for k, v in planted.items() if k != "ISIC_0015673"}, session)
    session.close()


def test_sample_releases_open_and_score(tmp_path: Path) -> None:
    """The generator the documentation's examples use writes releases that open (as folders and zips)."""
    pytest.importorskip("h5py")
    for n, name in enumerate(releases.RELEASES):
        root = releases.sample.write(name, tmp_path / name, images=4, zipped=bool(n % 2))
        session = open_quietly(name, root)
        assert sum(len(s) for s in releases.splits(session).values()) == 4 * len(releases.release(name).parts)
        session.close()


def test_hdf5_images_are_capped(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "train-image.hdf5", "w") as store:
        store.create_dataset("ISIC_0000001", data=np.void(b"x" * 2048))
    files = releases.files.ReleaseFiles(tmp_path)
    assert files.read("train-image.hdf5/ISIC_0000001") == b"x" * 2048
    with pytest.raises(LayoutError, match="at most 1,024 bytes"):
        files.read("train-image.hdf5/ISIC_0000001", limit=1024)
    files.close()
    assert os.path.exists(tmp_path / "train-image.hdf5")


def test_the_official_split_hands_over_to_training(tmp_path: Path) -> None:
    from isicarchive.selection import Splits
    from isicarchive.training import Samples

    expected = build_2018_tasks12(tmp_path / "r", zipped=True)
    session = open_quietly("isic2018-task1", tmp_path / "r")
    parts = releases.splits(session)
    assert isinstance(parts, Splits) and list(parts) == ["train", "validation", "test"]
    assert all(part.session is session for part in parts.values())
    # a selection of the release splits the same way
    assert sorted(releases.splits(parts["test"])) == ["test"]
    samples = Samples(parts["train"], target="mask")
    assert [samples.ids[n] for n in range(len(samples))] == expected["train"]
    for n in range(len(samples)):
        assert np.array_equal(samples.mask(n), disc(n))
        assert samples.pixels(n).shape == (SIZE, SIZE, 3)
    session.close()


def test_a_session_opened_again_reads_the_same_release(tmp_path: Path) -> None:
    """A worker's session (SessionSpec, a forked data-loader worker) opens the release by name again, without
    warning again, where detection alone would find two releases in the folder."""
    from isicarchive.scaleout import SessionSpec

    build_2018_tasks12(tmp_path / "r", zipped=False)
    session = open_quietly("isic2018-task2", tmp_path / "r", splits=["validation", "test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReleaseCountWarning)
        again = SessionSpec.of(session)._open()
    assert again.layout == "isic2018-task2"
    assert list(releases.splits(again)) == ["validation", "test"]
    again.close()
    session.close()


def test_the_index_is_kept_and_built_again_when_the_truth_changes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from isicarchive.releases import reader

    build_2017(tmp_path / "r", zipped=True)
    session = open_quietly("isic2017-task3", tmp_path / "r")
    first = {k: v["metadata"] for k, v in session.cache_images().items()}
    session.close()
    kept = list((tmp_path / "disk-indexes").glob("*.isic2017-task3.parquet"))
    assert len(kept) == 1

    readers = dict(reader._READERS)
    monkeypatch.setattr(reader, "_READERS", {})  # a second open that parsed a CSV would fail
    session = open_quietly("isic2017-task3", tmp_path / "r")
    assert {k: v["metadata"] for k, v in session.cache_images().items()} == first
    assert releases.truth(session, "validation").loc["ISIC_0000004", "seborrheic_keratosis"] == 1.0
    session.close()

    monkeypatch.setattr(reader, "_READERS", readers)
    (tmp_path / "r/ISIC-2017_Test_v2_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\nISIC_0000006,0.0,1.0\nISIC_0000007,0.0,1.0\nISIC_0000008,0.0,0.0\n")
    session = open_quietly("isic2017-task3", tmp_path / "r")
    assert session.cache_images()["ISIC_0000006"]["metadata"]["challenge"]["label"] == "seborrheic_keratosis"
    session.close()


def test_a_spawned_process_opens_the_same_release(tmp_path: Path) -> None:
    """A session pickled to a fresh process (a spawned data-loader worker, a Dask worker) carries the release's
    name and splits: the folder holds two releases, so detection alone would refuse it."""
    import pickle
    import subprocess
    import sys

    build_2018_tasks12(tmp_path / "r", zipped=True)
    session = open_quietly("isic2018-task2", tmp_path / "r", splits=["test"])
    script = ("import pickle, sys, warnings\n"
              "warnings.simplefilter('error')\n"
              "import isicarchive.releases as releases\n"
              "api = pickle.loads(sys.stdin.buffer.read())\n"
              "print(api.layout, sorted(releases.splits(api)['test']), sorted(releases.masks(api, 'ISIC_0000004')))\n")
    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(session), capture_output=True,
                          timeout=120, check=False)
    session.close()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split("\n")[0] == (
        "isic2018-task2 ['ISIC_0000004', 'ISIC_0000005'] "
        "['globules', 'milia_like_cyst', 'negative_network', 'pigment_network', 'streaks']")
