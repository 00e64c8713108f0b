"""Every ISIC challenge release as a named dataset: 2016–2020, 2024 and HAM10000, with the official
splits, masks and scores.

>>> session = isicarchive.releases.open("isic2018-task1", "/data/isic2018")     # doctest: +SKIP
>>> by_split = isicarchive.releases.splits(session)                             # doctest: +SKIP
>>> mask = isicarchive.releases.mask(session, "ISIC_0000000")                   # doctest: +SKIP
>>> isicarchive.releases.score("isic2018-task1", predicted, session)            # doctest: +SKIP

A release is read in place — from its folder, its zips as downloaded, or
both — by the archive-on-disk backend, so the session is an ordinary
:class:`~isicarchive.IsicApi` on a ``file://`` host: ``select_images``,
``search_images``, exports and downloads work as on any archive on disk.
Each record carries ``metadata.challenge``: ``release``, ``split``
(``train`` / ``validation`` / ``test``) and the release's own ``label``;
labels are mapped onto today's diagnosis hierarchy (``diagnosis_1..``).
See docs/releases.md for the table of releases, their files, splits,
counts and metrics.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import extras
from ..errors import IsicError
from . import files, sample
from .catalog import RELEASES, Part, Release
from .files import ReleaseFiles
from .reader import MissingFilesError, ReleaseCountWarning, read_mask
from .scoring import ReleaseScore, ScoringError, partial_auc_above_tpr
from .session import ReleaseChoice, requested

if TYPE_CHECKING:
    from ..api import IsicApi
    from ..selection import Splits
    from .session import OpenedRelease

__all__ = ["RELEASES", "MissingFilesError", "Part", "Release", "ReleaseCountWarning", "ReleaseScore",
           "ScoringError", "files", "list", "mask", "masks", "open", "partial_auc_above_tpr", "release", "sample",
           "score", "splits", "truth"]


def release(name: str) -> Release:
    """The release of that name (``isic2016-task1`` … ``isic2024``, ``ham10000``).

    Raises
    ------
    IsicError
        An unknown name, listing the known ones.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in RELEASES:
        raise IsicError(f"no challenge release is called {name!r}; known: {', '.join(RELEASES)}")
    return RELEASES[key]


def list() -> dict[str, dict[str, Any]]:  # noqa: A001  (the name the issue asks for: releases.list())
    """What each release needs on disk: per split, the files (each with the names accepted for it), the
    published count; and the task, the metric and the licence.

    ``list()['isic2019']['splits']['train']['count']`` is 25331, the published number of 2019's
    training images.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, item in RELEASES.items():
        out[name] = {
            "title": item.title, "task": item.task, "metric": item.metric, "licence": item.licence,
            "notes": item.notes,
            "splits": {part.split: {"files": {what: builtins.list(names) for what, names in part.needed()},
                                    "optional": builtins.list(part.metadata + part.extras), "count": part.count}
                       for part in item.parts}}
    return out


def open(name: str, root: str | os.PathLike[str], *, splits: Any = None, check_counts: bool = True,
         cache_folder: str | os.PathLike[str] | None = None, progress: bool = False) -> IsicApi:  # noqa: A001
    """An archive-on-disk session over a challenge release, its records carrying the official split.

    Parameters
    ----------
    name : str
        The release (see :func:`list`).
    root : path
        The folder holding the release's files — unzipped, or the zips as
        downloaded, at any depth — or one of its zips.
    splits : list of str, optional
        The splits wanted (``["train"]``); by default every split that is there.
    check_counts : bool
        Compare each split's number of images with the published one; a
        difference is a :class:`ReleaseCountWarning` naming it.
    cache_folder, progress
        As for :class:`~isicarchive.IsicApi`.

    Raises
    ------
    MissingFilesError
        Listing each missing file and the names accepted for it.
    """
    from ..api import IsicApi

    item = release(name)
    wanted = None if splits is None else tuple([splits] if isinstance(splits, str) else splits)
    unknown = [s for s in wanted or () if s not in item.splits]
    if unknown:
        raise IsicError(f"{item.name} has the splits {item.splits}, not {unknown}")
    location = Path(root).expanduser().resolve()
    if not location.exists():
        raise MissingFilesError(f"{location} does not exist; {item.name} needs: " + "; ".join(
            f"{part.split} {what}: {' or '.join(names)}" for part in item.parts for what, names in part.needed()))
    with requested(ReleaseChoice(item, wanted, check_counts), location):
        return IsicApi(hostname=location.as_uri(), cache_folder=cache_folder, progress=progress)


# ----------------------------------------------------------------- helpers
def _opened(session: Any) -> OpenedRelease:
    context = getattr(session, "context", None)
    opened = getattr(getattr(context, "backend", None), "release", None)
    if opened is None:
        raise IsicError("this session is not a challenge release: open one with isicarchive.releases.open(name, root)")
    return opened


def splits(session_or_selection: Any) -> Splits:
    """The official split: ``{'train': Selection, 'validation': …, 'test': …}`` (the splits that are there).

    Takes a release session (all its images) or a selection of its images,
    and gives the :class:`~isicarchive.selection.Splits` that
    :meth:`Selection.split <isicarchive.selection.Selection.split>` gives for
    a split of one's own: each part carries the session, and
    ``splits(…).export(folder, layout=…)`` writes a training set with the
    release's own split.
    """
    from ..selection import Selection, Splits

    if isinstance(session_or_selection, Mapping):
        items = builtins.list(session_or_selection.items())
        session = getattr(session_or_selection, "session", None)
    else:
        _opened(session_or_selection)
        session = session_or_selection
        items = builtins.list(session.cache_images().items())
    parts: dict[str, builtins.list[tuple[str, dict]]] = {}
    for key, record in items:
        split = ((record.get("metadata") or {}).get("challenge") or {}).get("split")
        if split is None:
            raise IsicError(f"{key} carries no official split (metadata.challenge.split): not from a release")
        parts.setdefault(split, []).append((key, record))
    order = ("train", "validation", "test")
    return Splits({name: Selection(parts[name], session=session)
                   for name in sorted(parts, key=lambda s: (order + (s,)).index(s))})


def masks(session: Any, isic_id: str) -> dict[str, np.ndarray]:
    """The masks of an image: ``{'lesion': array}``, or one per attribute for 2018 task 2
    (``{'globules': array, …}``) — each as the release has it (0/255), checked to be binary."""
    opened = _opened(session)
    for contents in opened.parts.values():
        found = contents.masks.get(isic_id)
        if found is None:
            continue
        if isinstance(found, Mapping):
            return {attribute: read_mask(opened.files, name) for attribute, name in sorted(found.items())}
        return {"lesion": read_mask(opened.files, found)}
    if not opened.release.mask_suffix and not opened.release.attributes:
        raise IsicError(f"{opened.release.name} has no masks (it is a {opened.release.task} task)")
    raise IsicError(f"{isic_id} has no mask in {opened.release.name} at {opened.files.root}")


def mask(session: Any, isic_id: str, attribute: str | None = None) -> np.ndarray:
    """One mask of an image (the lesion; or the named attribute for 2018 task 2), 0/255 as released."""
    found = masks(session, isic_id)
    key = attribute or ("lesion" if "lesion" in found else None)
    if key is None or key not in found:
        raise IsicError(f"{isic_id}: no {attribute or 'lesion'} mask (it has {sorted(found)})")
    return found[key]


# ------------------------------------------------------------------ truth
def truth(session: Any, split: str | None = None) -> Any:
    """The ground truth of a split in the form the scorer takes.

    Classification: a DataFrame indexed by image with one column per class
    (plus ``score_weight``, ``validation_weight`` when the release has them);
    segmentation: ``{isic_id: mask}``; 2018 task 2: ``{(isic_id, attribute): mask}``.
    The default split is ``test``, else the last split that has truth.
    """
    opened = _opened(session)
    return _truth(opened, _split_with_truth(opened, split))


def _split_with_truth(opened: OpenedRelease, split: str | None) -> str:
    item = opened.release
    if split is not None:
        if split not in opened.parts:
            raise IsicError(f"{item.name}: the {split} split is not there (there: {sorted(opened.parts)})")
        return split
    with_truth = [s for s in opened.parts if item.part(s).truth or item.part(s).masks]
    if not with_truth:
        raise IsicError(f"{item.name} at {opened.files.root}: no split with ground truth is there")
    return "test" if "test" in with_truth else with_truth[-1]


def _truth(opened: OpenedRelease, split: str) -> Any:
    pd = extras.require("pandas", "a release's ground truth", extra="releases")

    item = opened.release
    contents = opened.parts[split]
    if item.task == "segmentation":
        return {isic_id: read_mask(opened.files, name) for isic_id, name in sorted(contents.masks.items())}
    if item.task == "attributes":
        return {(isic_id, attribute): read_mask(opened.files, name)
                for isic_id, found in sorted(contents.masks.items()) for attribute, name in sorted(found.items())}
    if not item.part(split).truth:
        raise IsicError(f"{item.name}: the {split} split has no published ground truth")
    rows = {}
    for isic_id, label in contents.labels.items():
        if item.reader == "isic2017-task3":
            rows[isic_id] = {c: float(label == c) for c in item.classes}  # nevus: both 0
        elif item.reader in ("one-hot", "ham10000"):
            rows[isic_id] = {c: float(label == c) for c in item.classes}
        else:
            if label is None:
                raise IsicError(f"{item.name}: {isic_id} has no label in the {split} truth")
            rows[isic_id] = {item.classes[0]: float(label)}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=builtins.list(item.classes))
    frame.index.name = "image"
    if item.reader == "one-hot" and contents.truth_file:
        # the truth as the official scorer reads it: its own values (2019's UNK rows are all zeros), its score and
        # validation weights, and the weights it corrects itself
        try:
            from isic_challenge_scoring.load_csv import parse_truth_csv
        except ImportError:
            parse_truth_csv = None
        if parse_truth_csv is not None:
            probabilities, weights = parse_truth_csv(_stream(opened.files, contents.truth_file))
            probabilities.index = probabilities.index.astype(str)
            weights.index = probabilities.index
            for column in item.classes:
                if column not in probabilities.columns:
                    probabilities[column] = 0.0
            frame = probabilities[builtins.list(item.classes)].astype(float).join(weights.astype(float))
            frame.index.name = "image"
    return frame


def _stream(files: ReleaseFiles, name: str) -> Any:
    import io

    return io.StringIO(files.text(name))


# ------------------------------------------------------------------ scores
#: release → (how it is scored, the figure it was ranked by)
_RANKED_BY = {
    "isic2016-task1": ("segmentation", "jaccard"), "isic2017-task1": ("segmentation", "jaccard"),
    "isic2018-task1": ("segmentation", "threshold_jaccard"), "isic2018-task2": ("attributes", "jaccard"),
    "isic2016-task3": ("classification", "ap"), "isic2017-task3": ("classification", "auc"),
    "isic2018-task3": ("classification", "balanced_accuracy"), "isic2019": ("classification", "balanced_accuracy"),
    "ham10000": ("classification", "balanced_accuracy"), "isic2020": ("classification", "auc"),
    "isic2024": ("pauc", "pauc_above_tpr_0.80"),
}


def score(name: str, predictions: Any, truth: Any = None, *, split: str | None = None) -> ReleaseScore:
    """Score predictions as the challenge did, with the official ``isic-challenge-scoring`` package.

    Parameters
    ----------
    name : str
        The release.
    predictions
        Classification: a DataFrame (index or ``image`` / ``isic_id`` column =
        image id, one column per class as in the release's truth), a CSV path
        in the submission format, or a mapping image id → probability (one
        class) or → ``{class: probability}``.  Segmentation: a mapping image id
        → mask (0/1, 0/255 or boolean), or a folder of PNGs; 2018 task 2:
        image id → ``{attribute: mask}``.
    truth
        The release session (its test split, or ``split``), or the truth
        itself in the form :func:`truth` gives.
    split : str, optional
        Which split of the session to score against.

    Returns
    -------
    ReleaseScore
        ``value`` is the figure the challenge ranked by; ``details`` the package's whole result.
    """
    from . import scoring

    pd = extras.require("pandas", "scores", extra="scoring")

    item = release(name)
    if truth is None:
        raise ScoringError(f"score({item.name!r}, …) needs the truth: the session of the release "
                           f"(isicarchive.releases.open) or its truth table")
    if hasattr(truth, "context"):  # a session
        opened = _opened(truth)
        if opened.release.name != item.name:
            raise ScoringError(f"the session is {opened.release.name}, not {item.name}")
        split = _split_with_truth(opened, split)
        table = _truth(opened, split)
    else:
        table, split = truth, split or "given"
    kind, figure = _RANKED_BY[item.name]
    if kind == "segmentation":
        return scoring.score_segmentation(item, split, table, predictions, figure)
    if kind == "attributes":
        return scoring.score_attributes(item, split, table, predictions)
    frame = table if isinstance(table, pd.DataFrame) else scoring._frame(table, builtins.list(item.classes),
                                                                          "the truth")
    if kind == "pauc":
        return scoring.score_2024(item, split, frame, predictions)
    weights = pd.DataFrame({"score_weight": frame.get("score_weight", 1.0),
                            "validation_weight": frame.get("validation_weight", 1.0)}, index=frame.index)
    probabilities = frame[builtins.list(item.classes)]
    # the figure ranked by is the package's ClassificationMetric of the same name (ap, auc, balanced_accuracy)
    return scoring.score_classification(item, split, probabilities, weights, predictions, figure)
