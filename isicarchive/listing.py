"""``Listing``: the records of a listing (studies, datasets), as a list that shows what it holds."""

from __future__ import annotations

import html
from collections.abc import Iterable

__all__ = ["Listing"]


class Listing(list):
    """A list of records (dicts) whose ``repr`` names them instead of printing every field.

    ``Listing('study', records)`` shows as ``<2 studies: 'ISIC Annotation
    Study 0' (id 5900…), …>``; it is a plain ``list`` in every other way.
    """

    def __init__(self, kind: str, records: Iterable[dict] = ()) -> None:
        super().__init__(records)
        self.kind = kind

    def _label(self, record: object) -> str:
        if not isinstance(record, dict):
            return repr(record)
        name = record.get("name")
        key = record.get("_id") or record.get("id")
        return f"{name!r} (id {key})" if name is not None else f"id {key}"

    def _plural(self) -> str:
        if len(self) == 1:
            return self.kind
        return self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"

    def __repr__(self) -> str:
        shown = ", ".join(self._label(r) for r in self[:5]) + (", …" if len(self) > 5 else "")
        return f"<{len(self)} {self._plural()}" + (f": {shown}>" if self else ">")

    def _repr_html_(self) -> str:
        rows = "".join(f"<li>{html.escape(self._label(r))}</li>" for r in self[:50])
        more = f"<li>… and {len(self) - 50} more</li>" if len(self) > 50 else ""
        return f"<div><b>{len(self)} {html.escape(self._plural())}</b><ul>{rows}{more}</ul></div>"
