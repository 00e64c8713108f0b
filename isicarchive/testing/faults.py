"""Fault injection for the local archive, switchable at run time.

A :class:`FaultInjector` holds rules; each request asks it which fault (if
any) applies.  A rule matches a request path by regular expression and fires
with a probability and/or a fixed number of times, drawn from its own seeded
random generator so that a test run is repeatable.

Fault kinds
-----------
``status``     answer ``status`` (429, 500, 502, 503, 504…) with a JSON error,
               and ``Retry-After: retry_after`` when given.
``html``       answer ``status`` (default 502) with an HTML error page, as a
               proxy in front of the archive would.
``reset``      send the headers and part of the body, then reset the
               connection (TCP RST).
``truncate``   announce the full ``Content-Length`` but close the connection
               after part of the body.
``malformed``  answer 200 with a body that is not valid JSON.
``latency``    wait ``seconds`` before answering (normally).
``redirect``   answer 302 to ``location`` (e.g. another host).
``wrong_type`` answer 200 with ``body`` (default a JSON array) and
               ``content_type`` of the rule's choosing.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_KINDS", "Fault", "FaultInjector"]

FAULT_KINDS = ("status", "html", "reset", "truncate", "malformed", "latency", "redirect", "wrong_type")


ALL_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "HEAD")

@dataclass
class Fault:
    """One fault rule.

    Attributes
    ----------
    kind : str
        One of :data:`FAULT_KINDS`.
    pattern : str
        Regular expression searched in the request path (``/api/v1/image/…``).
    probability : float
        Chance that a matching request gets the fault.
    times : int or None
        Fire at most this many times (``None``: no limit).
    params : dict
        Kind-specific settings: ``status``, ``retry_after``, ``seconds``,
        ``fraction`` (of the body sent before a reset/truncation),
        ``location``, ``body``, ``content_type``.
    methods : tuple of str
        HTTP methods the rule applies to.
    query : str, optional
        A regular expression the request's decoded query string must also
        contain (e.g. one partition of a search).
    """

    kind: str
    pattern: str = ".*"
    probability: float = 1.0
    times: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ALL_METHODS
    fired: int = 0
    seed: int = 0
    query: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose from {FAULT_KINDS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must lie in 0 .. 1")
        self._regex = re.compile(self.pattern)
        self._random = random.Random(self.seed)

    def _draw(self, method: str, path: str, query: str = "") -> bool:
        if method not in self.methods or not self._regex.search(path):
            return False
        if self.query is not None and not re.search(self.query, query):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.probability < 1.0 and self._random.random() >= self.probability:
            return False
        self.fired += 1
        return True


class FaultInjector:
    """The set of active fault rules of one local archive (thread-safe)."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()
        self._seed = seed

    def add(self, kind: str, pattern: str = ".*", probability: float = 1.0, times: int | None = None,
            methods: tuple[str, ...] | None = None, query: str | None = None, **params: Any) -> Fault:
        """Add a rule and return it (its ``fired`` attribute counts hits).

        Examples
        --------
        >>> archive.faults.add("status", r"/image$", probability=0.3, status=503)  # doctest: +SKIP
        >>> archive.faults.add("status", status=429, retry_after=1, times=5)  # doctest: +SKIP
        >>> archive.faults.add("reset", r"/download$", fraction=0.5, times=1)  # doctest: +SKIP
        """
        with self._lock:
            rule = Fault(kind, pattern, probability, times, params,
                         methods or ALL_METHODS,
                         seed=self._seed + len(self._rules), query=query)
            self._rules.append(rule)
        return rule

    def remove(self, rule: Fault) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules = []

    @property
    def rules(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, path: str, query: str = "") -> Fault | None:
        """The first rule that fires for this request (``query``: its decoded query string), if any."""
        with self._lock:
            for rule in self._rules:
                if rule._draw(method, path, query):
                    return rule
        return None
