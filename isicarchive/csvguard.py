"""CSV files a spreadsheet opens safely: every CSV this library writes goes through :func:`write_csv`.

Cells (header names included) that a spreadsheet would take for a formula start with a tab, as the
archive's own ``metadata.csv`` does; every cell holding a line break (``\\n`` or a lone ``\\r``) is
quoted, so that no value can start a row of its own.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import IO, Any

__all__ = ["FORMULA_STARTS", "cell", "csv_text", "write_csv"]

#: a cell starting with one of these is a formula to a spreadsheet
FORMULA_STARTS = ("=", "+", "-", "@")


def cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading tab before what would start a formula."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str | int | float | bool):
        value = str(value)
    return "\t" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(fh: IO[str], header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> None:
    """Write a guarded header and rows.  The rows end in ``\\r\\n``: Python's writer then quotes any
    cell holding ``\\r`` or ``\\n`` (with ``\\n`` alone, a cell's lone ``\\r`` went out unquoted and
    spreadsheets began a new row there)."""
    writer = csv.writer(fh, lineterminator="\r\n")
    writer.writerow([cell(name) for name in header])
    writer.writerows([cell(value) for value in row] for row in rows)


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """:func:`write_csv` into a string."""
    out = io.StringIO()
    write_csv(out, header, rows)
    return out.getvalue()
