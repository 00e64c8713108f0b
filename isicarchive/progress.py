"""Progress for every long operation: a bar when someone is watching, periodic log lines when not,
nothing when switched off.

In Jupyter the bar is tqdm's widget when ipywidgets is installed (the
``notebook`` extra) and tqdm's plain text bar otherwise, never
``tqdm.auto``'s "IProgress not found" warning; in a terminal, tqdm's text bar.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["progress"]

log = logging.getLogger("isicarchive.progress")


def _watching() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _LogProgress:
    """The tqdm methods we use, reported as a log line every ``interval`` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, interval: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.postfix = ""
        self._started = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._report()

    def refresh(self) -> None:
        """Nothing to redraw (tqdm's bars redraw here)."""

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _report(self) -> None:
        took = max(1e-9, time.monotonic() - self._started)
        of = f"/{self.total}" if self.total is not None else ""
        log.info("%s: %d%s %s (%.1f %s/s) %s", self.desc, self.n, of, self.unit, self.n / took, self.unit,
                 self.postfix)

    def close(self) -> None:
        self._report()

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoProgress(_LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kw: Any) -> Any:
    """A progress reporter with ``update(n)``, ``set_postfix_str`` and ``close``."""
    if not enabled:
        return _NoProgress(total, desc, unit)
    if not _watching():
        return _LogProgress(total, desc, unit)
    return _bar_class()(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True, **kw)


def _bar_class() -> Any:
    """tqdm's widget in a notebook that can show one, its text bar everywhere else."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401  (what the widget needs; without it tqdm.auto warns)
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm as widget

            return widget
    from tqdm.std import tqdm as text

    return text
