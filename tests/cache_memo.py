"""Results the tests remember in the test cache under digests of their inputs (a JSON file of key -> value)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from tool_venvs import TEST_CACHE


class Memo:
    """``name``'s remembered values: :meth:`get` answers from them or computes; :meth:`save` writes back what
    this run used with the ``keep`` newest others, atomically (a test cache that cannot be read or written
    computes again next time)."""

    def __init__(self, name: str, keep: int) -> None:
        self.path = TEST_CACHE / name
        self.keep = keep
        try:
            self.known: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.used: dict[str, Any] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        value = self.known.get(key)
        self.used[key] = value if value is not None else compute()
        return self.used[key]

    def save(self) -> None:
        if self.used.keys() <= self.known.keys():
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}")
            partial.write_text(json.dumps({**dict(list(self.known.items())[-self.keep:]), **self.used}))
            partial.replace(self.path)
