"""An epoch number shared with data-loader worker processes (:class:`SharedEpoch`, used by
:mod:`isicarchive.training` and :mod:`isicarchive.torch`).

A module of its own, with nothing but :mod:`multiprocessing` to import: a spawned process it is pickled
into imports this and the package's lazy ``__init__``, not the training module with numpy and the HTTP
transport (~0.5 s of CPU).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

__all__ = ["SharedEpoch"]


class SharedEpoch:
    """An epoch number a dataset shares with its copies in data-loader worker processes.

    A loader's workers take a copy of the dataset when they start: forked, or
    pickled into a spawned process.  Workers kept from epoch to epoch (PyTorch's
    ``persistent_workers=True``) would go on dealing the first epoch's order
    from a copy holding a plain number.  This one lives in shared memory: a
    worker started from it, forked or spawned, reads what the parent set last.
    Pickled anywhere else (saved, copied, sent to another machine), it travels
    as the plain number and becomes a cell of its own.
    """

    def __init__(self, epoch: int = 0) -> None:
        # no lock: one writer (the parent, between epochs), and a lock made in one start method's context
        # cannot travel to a process of another (a loader may spawn while the default context forks)
        self._cell = multiprocessing.Value("q", int(epoch), lock=False)

    @property
    def value(self) -> int:
        return int(self._cell.value)

    @value.setter
    def value(self, epoch: int) -> None:
        self._cell.value = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        # the shared memory itself only travels to a process being started (multiprocessing refuses it otherwise)
        from multiprocessing.context import get_spawning_popen

        return {"cell": self._cell} if get_spawning_popen() is not None else {"epoch": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cell = state["cell"] if "cell" in state else multiprocessing.Value("q", int(state["epoch"]), lock=False)

    def __repr__(self) -> str:
        return f"SharedEpoch({self.value})"
