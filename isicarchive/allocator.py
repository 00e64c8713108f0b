"""glibc's allocator thresholds, set inside a running worker process (``mallopt`` through ctypes).

Per-image work allocates and frees arrays of megabytes, image after image.
With glibc's defaults (and with Dask's ``MALLOC_TRIM_THRESHOLD_=65536``, which
every Dask worker gets in its environment) each freed array goes back to the
system and the next image's is faulted in again, page by page: about 3,500
page faults a 640x480 image, and a worker process slower than a plain loop
(docs/benchmarks.md).  :data:`THRESHOLDS` keep up to 128 MB of freed memory in
the process and serve blocks under 64 MB from the heap.

Environment variables (``MALLOC_TRIM_THRESHOLD_`` …) only act when a process
starts, and only the library's own clusters start their workers
(:func:`isicarchive.scaleout.worker_settings`).  ``mallopt`` changes the same
settings in a process that is already running, so :func:`apply` works in any
worker: :func:`isicarchive.scaleout.map_images` registers
:class:`AllocatorPlugin` on the cluster it is given (new workers get it when
they join) and each task applies the settings too, once per process, where
glibc is the C library (elsewhere nothing happens).  ``ISICARCHIVE_MALLOPT=0``
in the workers' environment turns this off.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

__all__ = ["THRESHOLDS", "AllocatorPlugin", "applied", "apply"]

#: mallopt parameters (glibc's malloc.h) and their values; the same as WORKER_CONFIG's environment
THRESHOLDS: dict[str, tuple[int, int]] = {
    "M_TRIM_THRESHOLD": (-1, 128 << 20),
    "M_MMAP_THRESHOLD": (-3, 64 << 20),
}

_applied: dict[str, bool] | None = None
_lock = threading.Lock()


def apply() -> dict[str, bool]:
    """Set :data:`THRESHOLDS` in this process (once); which of them glibc took (empty: not glibc, or off)."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _set_thresholds()
        return dict(_applied)


def applied() -> dict[str, bool] | None:
    """What :func:`apply` did in this process (None: it has not run here)."""
    return None if _applied is None else dict(_applied)


def _set_thresholds() -> dict[str, bool]:
    if os.environ.get("ISICARCHIVE_MALLOPT", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a static or unusual build: leave the allocator alone
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return {name: mallopt(param, value) == 1 for name, (param, value) in THRESHOLDS.items()}


def in_dask_worker() -> bool:
    """Whether this code runs in a task of a ``distributed`` worker (not in the caller's own process)."""
    import sys

    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - the dask extra is not installed: nothing registers the plugin
    _WorkerPlugin = object  # type: ignore[misc,assignment]


class AllocatorPlugin(_WorkerPlugin):  # type: ignore[misc,valid-type]
    """A ``distributed`` worker plugin that runs :func:`apply` in every worker, present and future."""

    name = "isicarchive-allocator"

    def setup(self, worker: object) -> None:
        apply()
