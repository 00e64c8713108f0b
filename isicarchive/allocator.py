"""What a running Dask worker needs for per-image work: glibc's allocator thresholds (``mallopt``
through ctypes) and a slower statistical profiler.

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

The worker's statistical profiler samples the stacks of its threads every
10 ms (Dask's default), on the worker's event loop with the GIL held: about 7%
of a worker's CPU time on per-image work (docs/benchmarks.md), for the
dashboard's "Profile" page alone.  Only a process's start can turn it off
(``WORKER_CONFIG``), but its period can change at any time: the plugin samples
every :data:`PROFILE_INTERVAL_MS` instead (the page still works, with fewer
samples) and puts the period back when it is removed.
``ISICARCHIVE_WORKER_PROFILE=keep`` in the workers' environment leaves it alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from typing import Any

__all__ = ["PROFILE_INTERVAL_MS", "THRESHOLDS", "AllocatorPlugin", "applied", "apply", "slow_profiler"]

#: mallopt parameters (glibc's malloc.h) and their values; the same as WORKER_CONFIG's environment
THRESHOLDS: dict[str, tuple[int, int]] = {
    "M_TRIM_THRESHOLD": (-1, 128 << 20),
    "M_MMAP_THRESHOLD": (-3, 64 << 20),
}

#: the worker profiler's sampling period the plugin sets, in milliseconds (Dask's default: 10)
PROFILE_INTERVAL_MS = 100

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


def _profile_sampler(worker: object) -> Any:
    """The worker's periodic callback that samples for its profiler (None: started without one)."""
    return (getattr(worker, "periodic_callbacks", None) or {}).get("profile")


def slow_profiler(worker: object) -> float | None:
    """Sample the worker's profiler every :data:`PROFILE_INTERVAL_MS` at most; the period it had (None: no change).

    Runs on the worker's event loop (a plugin's ``setup``), where Dask's periodic callbacks run: the new
    period takes effect from the next sample on.
    """
    if os.environ.get("ISICARCHIVE_WORKER_PROFILE", "") == "keep":
        return None
    sampler = _profile_sampler(worker)
    period = getattr(sampler, "callback_time", None)
    if not isinstance(period, (int, float)) or period >= PROFILE_INTERVAL_MS:
        return None  # the profiler is off (started without it) or already slow enough
    sampler.callback_time = PROFILE_INTERVAL_MS  # type: ignore[union-attr]
    return period


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


_worker_prepared = False


def prepare_this_worker() -> None:
    """From a task: :func:`apply`, and :func:`slow_profiler` on the worker's event loop (once per process;
    a cluster that refused the plugin, or ``map_images(compute=False)`` computed on a user's client)."""
    global _worker_prepared
    apply()
    with _lock:
        if _worker_prepared:
            return
        _worker_prepared = True
    from distributed import get_worker

    worker = get_worker()
    worker.loop.add_callback(slow_profiler, worker)


class AllocatorPlugin(_WorkerPlugin):  # type: ignore[misc,valid-type]
    """A ``distributed`` worker plugin for every worker, present and future: :func:`apply` and
    :func:`slow_profiler` (whose period :meth:`teardown` puts back)."""

    name = "isicarchive-allocator"

    def setup(self, worker: object) -> None:
        apply()
        self.profile_period = slow_profiler(worker)

    def teardown(self, worker: object) -> None:
        period = getattr(self, "profile_period", None)
        sampler = _profile_sampler(worker)
        if period is not None and sampler is not None:
            sampler.callback_time = period
