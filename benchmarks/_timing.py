"""Best-of-N timing shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(call: Callable[[], Any], repeat: int = 1, before: Callable[[], Any] | None = None) -> tuple[float, Any]:
    """The fastest of ``repeat`` runs of ``call`` (``before`` runs untimed ahead of each), and its last result."""
    fastest, value = float("inf"), None
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        value = call()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest, value
