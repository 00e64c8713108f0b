"""The faults the reliability tests inject, by the name the report shows."""

from __future__ import annotations

from typing import Any

#: faults the archive answers with before it handles a request
EARLY_FAULTS: dict[str, dict[str, Any]] = {
    "429 + Retry-After": {"kind": "status", "status": 429, "retry_after": 0},
    "500": {"kind": "status", "status": 500},
    "502 (HTML page)": {"kind": "html", "status": 502},
    "503": {"kind": "status", "status": 503},
    "504": {"kind": "status", "status": 504},
}

#: every fault: the early ones, and those that strike while the answer travels
FAULTS: dict[str, dict[str, Any]] = {
    **EARLY_FAULTS,
    "reset mid-body": {"kind": "reset", "fraction": 0.5},
    "truncated body": {"kind": "truncate", "fraction": 0.5},
    "malformed JSON": {"kind": "malformed"},
    "slow past timeout": {"kind": "latency", "seconds": 1.5},
}
