"""Scores of a release's task: the official ``isic-challenge-scoring`` package wherever it covers the task,
the published 2024 formula where it does not.

The package (the ``scoring`` extra) scores segmentation (2016–2018 task 1),
the 2018 attributes (task 2) and classification (2016 part 3 to 2020 and
HAM10000).  This module only puts predictions and the release's truth into
the form the package takes and picks the figure each challenge ranked by; it
computes none of those figures itself.

The 2024 challenge (Kaggle) ranked by the partial area under the ROC curve
above 80% true-positive rate, which the package does not compute (its
``auc_sens_80`` is the area under the curve to the right of the point where
TPR reaches 0.8, rectangle below TPR 0.8 included).  :func:`partial_auc_above_tpr`
implements the published formula (``ISIC-Research/Challenge-2024-Metrics``,
``PrimaryMetric-pAUC.py``): labels and scores flipped, the ROC curve of
scikit-learn, one point interpolated at FPR = 1 − min_tpr, the trapezoidal
area of the curve up to it; scores lie in [0, 1 − min_tpr].
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits, pixels
from ..errors import ScoringError

__all__ = ["ReleaseScore", "ScoringError", "partial_auc_above_tpr"]


@dataclass
class ReleaseScore:
    """A score of predictions on a release: the figure the challenge ranked by, and the package's others."""

    release: str
    split: str
    metric: str
    value: float
    #: the package's full result (``to_dict()``) or the 2024 metric's inputs
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"ReleaseScore({self.release} {self.split}: {self.metric} = {self.value:.6f})"


def _package() -> Any:
    try:
        import isic_challenge_scoring
    except ImportError:
        raise ImportError("scores use the official ISIC scorer: pip install 'isicarchive[scoring]' "
                          "(isic-challenge-scoring)") from None
    return isic_challenge_scoring


# ------------------------------------------------------------ the 2024 metric
def partial_auc_above_tpr(truth: Any, scores: Any, min_tpr: float = 0.80) -> float:
    """The partial AUC above ``min_tpr`` true-positive rate (the ISIC 2024 metric at 0.80).

    Parameters
    ----------
    truth : array-like of 0/1
        1 = malignant.
    scores : array-like of float
        Predicted malignancy, higher = more likely malignant.
    min_tpr : float
        The lowest sensitivity that counts; scores lie in ``[0, 1 - min_tpr]``.

    Raises
    ------
    ScoringError
        Truth of one class only, sizes that differ, ``min_tpr`` outside [0, 1).
    """
    from sklearn.metrics import auc, roc_curve

    truth = np.asarray(truth, dtype=float).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    if truth.shape != scores.shape:
        raise ScoringError(f"{truth.size} truth values but {scores.size} scores")
    if len(np.unique(truth)) != 2:
        raise ScoringError("the partial AUC needs both classes in the truth (only one is there)")
    if not 0 <= min_tpr < 1:
        raise ScoringError(f"min_tpr must lie in [0, 1), not {min_tpr!r}")
    max_fpr = 1 - min_tpr
    # the published formula: swap the classes and turn the scores round, so that "TPR above min_tpr" of the
    # original curve is "FPR below max_fpr" of this one
    fpr, tpr, _ = roc_curve(np.abs(truth - 1), -scores)
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    if stop >= len(fpr):  # the curve reaches FPR = max_fpr only at its end
        return float(auc(fpr, tpr))
    tpr_at = np.interp(max_fpr, fpr[stop - 1: stop + 1], tpr[stop - 1: stop + 1])
    return float(auc(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], tpr_at)))


# ----------------------------------------------------- classification tables
def _frame(predictions: Any, categories: list[str], what: str) -> Any:
    """Predictions (a DataFrame, a CSV path, {id: p} or {id: {class: p}}) as a DataFrame indexed by image."""
    import pandas as pd

    if isinstance(predictions, (str, Path)):
        frame = pd.read_csv(predictions)
    elif isinstance(predictions, pd.Series):
        frame = predictions.to_frame(categories[0] if len(categories) == 1 else predictions.name)
    elif isinstance(predictions, pd.DataFrame):
        frame = predictions.copy()
    elif isinstance(predictions, Mapping):
        rows = {key: (dict(value) if isinstance(value, Mapping) else {categories[0]: value})
                for key, value in predictions.items()}
        frame = pd.DataFrame.from_dict(rows, orient="index")
    else:
        raise ScoringError(f"{what} must be a DataFrame, a CSV path or a mapping image id → probability "
                           f"(or → {{class: probability}}), not {type(predictions).__name__}")
    for column in ("image", "isic_id", "image_name", "image_id"):
        if column in frame.columns:
            frame = frame.set_index(column)
            break
    frame.index = frame.index.astype(str).str.replace(r"\.jpg$", "", case=False, regex=True)
    frame.index.name = "image"
    if not frame.index.is_unique:
        raise ScoringError(f"{what} name some images twice: {sorted(set(frame.index[frame.index.duplicated()]))[:10]}")
    absent = [c for c in categories if c not in frame.columns]
    if absent:
        raise ScoringError(f"{what} lack the column(s) {absent} (they have {list(frame.columns)[:12]})")
    frame = frame[categories]
    try:
        frame = frame.astype(float)
    except (TypeError, ValueError):
        raise ScoringError(f"{what} hold values that are not numbers") from None
    if frame.isna().any().any():
        raise ScoringError(f"{what} miss values for {list(frame.index[frame.isna().any(axis=1)])[:10]}")
    outside = frame.index[((frame < 0) | (frame > 1)).any(axis=1)]
    if len(outside):
        raise ScoringError(f"{what} hold values outside [0, 1] for {list(outside)[:10]}")
    return frame


def score_classification(release: Any, split: str, truth: Any, weights: Any, predictions: Any,
                         metric: str) -> ReleaseScore:
    """The package's classification score; ``metric`` names the :class:`ClassificationMetric` ranked by."""
    package = _package()
    from isic_challenge_scoring.load_csv import sort_rows, validate_rows

    categories = list(truth.columns)
    frame = _frame(predictions, categories, "the predictions")
    try:
        validate_rows(truth, frame)
    except package.ScoreError as exc:
        raise ScoringError(str(exc)) from None
    truth, weights = truth.copy(), weights.sort_index()
    sort_rows(truth)
    sort_rows(frame)
    absent = [c for c in categories if not (truth[c] > 0.5).any() or (truth[c] > 0.5).all()]
    if absent:
        # the package scores every class (its AUC and partial AUC per class) and fails on one without both
        # positive and negative images, as 2019's UNK in the training truth
        raise ScoringError(f"the truth of {release.name} {split} has no positive (or no negative) image of "
                           f"{absent}: the official scorer cannot score such a class; score another split")
    with warnings.catch_warnings():
        # one-class releases (2016, 2020): the package's balanced accuracy asks scikit-learn for a confusion
        # matrix of a single label, which it warns about; that figure is not the one these releases ranked by
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        result = package.ClassificationScore(truth, frame, weights, package.ClassificationMetric(metric))
    return ReleaseScore(release.name, split, metric, float(result.overall), result.to_dict(rocs=False))


def score_2024(release: Any, split: str, truth: Any, predictions: Any) -> ReleaseScore:
    frame = _frame(predictions, ["target"], "the predictions")
    missing = truth.index.difference(frame.index)
    extra = frame.index.difference(truth.index)
    if len(missing) or len(extra):
        raise ScoringError(f"the predictions miss {list(missing)[:10]} and name unknown images {list(extra)[:10]}"
                           if len(missing) and len(extra) else
                           f"the predictions miss the images {list(missing)[:10]}" if len(missing) else
                           f"the predictions name images not in the truth: {list(extra)[:10]}")
    frame = frame.loc[truth.index]
    value = partial_auc_above_tpr(truth["target"].to_numpy(), frame["target"].to_numpy(), 0.80)
    return ReleaseScore(release.name, split, "pauc_above_tpr_0.80", value,
                        {"images": int(len(truth)), "malignant": int(truth["target"].sum()), "min_tpr": 0.80})


# -------------------------------------------------------------- segmentation
def _prediction_masks(predictions: Any, ids: list[str], attributes: tuple[str, ...]) -> dict[Any, np.ndarray]:
    """Predicted masks by image id (or (id, attribute)): from a mapping of arrays or a folder of PNGs."""
    out: dict[Any, np.ndarray] = {}
    if isinstance(predictions, (str, Path)):
        folder = Path(predictions)
        if not folder.is_dir():
            raise ScoringError(f"{folder} is not a folder of predicted masks")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        for isic_id in ids:
            number = isic_id.split("_")[1]
            keys = [(isic_id, a) for a in attributes] if attributes else [isic_id]
            for key in keys:
                found = [p for p in files if number in p.stem and (not attributes or key[1] in p.stem)]
                if len(found) != 1:
                    raise ScoringError(f"{len(found)} predicted masks in {folder} match {key} (one expected)")
                out[key] = _read_mask(found[0])
        return out
    if not isinstance(predictions, Mapping):
        raise ScoringError("predicted masks must be a mapping image id → array (2018 task 2: id → {attribute: "
                           f"array}}) or a folder of PNGs, not {type(predictions).__name__}")
    for key, value in predictions.items():
        if attributes and isinstance(value, Mapping):
            out.update({(str(key), str(a)): np.asarray(v) for a, v in value.items()})
        else:
            out[key if isinstance(key, tuple) else str(key)] = np.asarray(value)
    return out


def _read_mask(path: Path) -> np.ndarray:
    """A predicted mask file's pixels: a regular file, its bytes and pixels within the limits."""
    if path.is_symlink() or not path.is_file():
        raise ScoringError(f"{path} is not a regular file")
    largest = limits.current().archive_file_bytes
    with path.open("rb") as handle:
        data = handle.read(largest + 1)
    if len(data) > largest:
        raise ScoringError(f"{path} is larger than {largest:,} bytes "
                           "(isicarchive.limits.configure(archive_file_bytes=…) raises the limit)")
    return np.asarray(pixels.decode(data, f"predicted mask {path.name}", ".png"))


def _as_8bit(mask: np.ndarray, where: str) -> np.ndarray:
    """A mask as the package compares it (greyscale, foreground above 128): 0/1 and boolean masks become 0/255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ScoringError(f"{where} is not a single-channel mask (shape {mask.shape})")
    if mask.dtype == bool or (mask.size and mask.max() <= 1):
        return (mask > 0).astype(np.uint8) * 255
    return mask.astype(np.uint8)


def score_segmentation(release: Any, split: str, truth: dict[str, np.ndarray], predictions: Any,
                       figure: str) -> ReleaseScore:
    """The package's SegmentationScore; ``figure`` is the macro average the challenge ranked by."""
    package = _package()
    from isic_challenge_scoring.load_image import ImagePair

    ids = sorted(truth)
    predicted = _prediction_masks(predictions, ids, ())
    extra = sorted(set(map(str, predicted)) - set(ids))
    if extra:
        raise ScoringError(f"predicted masks for images not in the truth: {extra[:10]}")
    pairs = []
    for isic_id in ids:
        if isic_id not in predicted:
            raise ScoringError(f"no predicted mask for {isic_id}")
        pair = ImagePair(truth_file=Path(f"{isic_id}{release.mask_suffix}"))
        pair.image_id = isic_id
        pair.truth_image = _as_8bit(truth[isic_id], f"the truth of {isic_id}")
        pair.prediction_image = _as_8bit(predicted[isic_id], f"the predicted mask of {isic_id}")
        if pair.prediction_image.shape != pair.truth_image.shape:
            raise ScoringError(f"the predicted mask of {isic_id} is {pair.prediction_image.shape}, its truth "
                               f"{pair.truth_image.shape}")
        pairs.append(pair)
    result = package.SegmentationScore(pairs)
    return ReleaseScore(release.name, split, figure, float(result.macro_average[figure]), result.to_dict())


def score_attributes(release: Any, split: str, truth: dict[tuple[str, str], np.ndarray], predictions: Any
                     ) -> ReleaseScore:
    """The package's task 2 score: it reads folders, so the truth and predictions are written as PNGs first."""
    _package()
    import imageio.v3 as iio
    from isic_challenge_scoring import task2

    ids = sorted({key[0] for key in truth})
    predicted = _prediction_masks(predictions, ids, release.attributes)
    with tempfile.TemporaryDirectory(prefix="isic-task2-") as temporary:
        truth_dir, prediction_dir = Path(temporary, "truth"), Path(temporary, "prediction")
        truth_dir.mkdir()
        prediction_dir.mkdir()
        for (isic_id, attribute), mask in sorted(truth.items()):
            key = (isic_id, attribute)
            if key not in predicted:
                raise ScoringError(f"no predicted {attribute} mask for {isic_id}")
            iio.imwrite(truth_dir / f"{isic_id}_attribute_{attribute}.png", _as_8bit(mask, f"{key}"))
            iio.imwrite(prediction_dir / f"{isic_id}_attribute_{attribute}.png",
                        _as_8bit(predicted[key], f"the predicted {key}"))
        try:
            result = task2.score(truth_dir, prediction_dir)
        except _package().ScoreError as exc:
            raise ScoringError(str(exc)) from None
    return ReleaseScore(release.name, split, "jaccard", float(result["overall"]), result)
