"""PyTorch datasets over any selection (the ``torch`` extra): a thin layer over :mod:`isicarchive.training`.

>>> from isicarchive.torch import IsicDataset                          # doctest: +SKIP
>>> parts = api.select_images([...]).split({"train": 0.8, "test": 0.2})  # doctest: +SKIP
>>> train = IsicDataset(parts["train"], target="diagnosis_1")         # doctest: +SKIP
>>> image, label = train[0]      # uint8 tensor C x H x W, class index  # doctest: +SKIP

:class:`IsicDataset` is map-style (use it with a ``DataLoader``, a sampler
and ``num_workers``); :class:`IsicIterableDataset` streams: it reads ahead
with the download engine's parallel transfers while the model consumes, and
deals its samples to the loader's workers and to the ``torch.distributed``
ranks itself (none twice, none missed, in an order fixed by ``seed`` and
:meth:`IsicIterableDataset.set_epoch`).

Images come as torchvision's ``decode_image`` gives them: ``torch.uint8``,
channels × height × width; ``transform`` then does what it will (torchvision's
v2 transforms take such tensors).  Targets are class indices of the
``target`` field (:attr:`~IsicDataset.classes`, ``class_to_idx`` and
``targets`` as torchvision's datasets have them), or with ``target="mask"``
the segmentation mask as a ``uint8`` tensor 1 × height × width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .training import MASK, Samples, SharedEpoch, shard_indices

if TYPE_CHECKING:
    from .api import IsicApi

__all__ = ["IsicDataset", "IsicIterableDataset", "to_tensor"]


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``uint8`` height × width × channels pixels as a channels × height × width tensor (no copy)."""
    return torch.from_numpy(pixels).permute(2, 0, 1) if pixels.ndim == 3 else torch.from_numpy(pixels)[None]


class _Common:
    samples: Samples
    transform: Callable[[Any], Any] | None
    target_transform: Callable[[Any], Any] | None

    def _setup(self, images: Any, target: str, transform: Callable[[Any], Any] | None,
               target_transform: Callable[[Any], Any] | None, classes: Sequence[Any] | None, api: IsicApi | None,
               missing: str) -> None:
        self.samples = Samples(images, target=target, classes=classes, api=api, missing=missing)
        self.transform = transform
        self.target_transform = target_transform

    @property
    def classes(self) -> list[Any]:
        """The classes in index order."""
        return self.samples.classes

    @property
    def class_to_idx(self) -> dict[Any, int]:
        return self.samples.class_to_idx

    @property
    def targets(self) -> list[int]:
        """Every sample's class index, in order (``-1``: kept without a class)."""
        return self.samples.targets

    @property
    def target(self) -> str:
        return self.samples.target

    def record(self, index: int) -> dict:
        """The metadata record of sample ``index``."""
        return self.samples.record(index)

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency class weights (``CrossEntropyLoss(weight=...)``)."""
        return torch.tensor(self.samples.class_weights(), dtype=torch.float32)

    def _sample(self, index: int, pixels: np.ndarray) -> tuple[Any, Any]:
        image: Any = to_tensor(pixels)
        target: Any = to_tensor(self.samples.mask(index)) if self.samples.target == MASK else \
            self.samples.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class IsicDataset(_Common, Dataset):
    """A map-style dataset: ``ds[i]`` is ``(image, target)``.

    Parameters
    ----------
    images : Selection, or list of ids, names, records or Images
        A selection of any backend (v1, v2, an archive on disk), a part of
        ``Selection.split``; a list needs ``api``.
    target : str
        The field the class comes from (``diagnosis_1`` …, legacy names on v1
        records), or ``"mask"``.
    transform, target_transform : callable, optional
        Applied to the image tensor and to the target.
    classes : sequence, optional
        The classes in index order (default: the sorted values).
    api : IsicApi, optional
        The session (default: the selection's).
    missing : {"error", "keep", "drop"}
        Images without a value of ``target``: an error saying how many
        (:class:`~isicarchive.errors.MissingTargetError`), kept with target
        ``-1``, or left out.
    """

    def __init__(self, images: Any, *, target: str = "diagnosis_1", transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None, classes: Sequence[Any] | None = None,
                 api: IsicApi | None = None, missing: str = "error") -> None:
        self._setup(images, target, transform, target_transform, classes, api, missing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index %= len(self)
        return self._sample(index, self.samples.pixels(index))

    def __repr__(self) -> str:
        return f"IsicDataset({self.samples!r})"


class IsicIterableDataset(_Common, IterableDataset):
    """A streaming dataset: each worker of each rank yields its share of an epoch as the files arrive.

    Same parameters as :class:`IsicDataset`, and:

    Parameters
    ----------
    seed : int
        Fixes the order of every epoch (with :meth:`set_epoch`).
    shuffle : bool
        False: the selection's order.
    rank, world_size : int, optional
        This process's place among distributed ranks; by default
        ``torch.distributed``'s when it is initialised, else one rank.
    ahead : int, optional
        Images read ahead of the consumer per worker (default: twice the
        session's download workers).
    """

    def __init__(self, images: Any, *, target: str = "diagnosis_1", transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None, classes: Sequence[Any] | None = None,
                 api: IsicApi | None = None, missing: str = "error", seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, ahead: int | None = None) -> None:
        self._setup(images, target, transform, target_transform, classes, api, missing)
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = SharedEpoch()  # seen by persistent loader workers too
        self.rank = rank
        self.world_size = world_size
        self.ahead = ahead

    @property
    def epoch(self) -> int:
        """The epoch whose order the next iteration follows."""
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration follows (as ``DistributedSampler.set_epoch``).

        Call it before each epoch's ``iter(loader)``: the loader's workers follow
        it, also those kept from epoch to epoch (``persistent_workers=True``).
        """
        self._epoch.value = epoch

    def _place(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            return int(self.rank or 0), int(self.world_size or 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def indices(self) -> list[int]:
        """The sample indices this worker of this rank yields in the current epoch, in order."""
        rank, world_size = self._place()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return shard_indices(len(self.samples), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, rank=rank,
                             world_size=world_size, worker=worker, num_workers=num_workers)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for index, pixels in self.samples.stream(self.indices(), ahead=self.ahead):
            yield self._sample(index, pixels)

    def __len__(self) -> int:
        """Samples this rank yields in an epoch (over all of its loader's workers)."""
        rank, world_size = self._place()
        return len(range(rank, len(self.samples), world_size))

    def __repr__(self) -> str:
        return f"IsicIterableDataset({self.samples!r}, seed={self.seed}, epoch={self.epoch})"
