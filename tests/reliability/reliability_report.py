"""Rows of docs/reliability.md, collected while the reliability tests run."""

from __future__ import annotations

from pathlib import Path

ROWS: list[tuple[str, str, str, str]] = []
REPORT = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def record(area: str, case: str, condition: str, outcome: str) -> None:
    """A row of docs/reliability.md (written when ISICARCHIVE_WRITE_RELIABILITY=1)."""
    ROWS.append((area, case, condition, outcome))
