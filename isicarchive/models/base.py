"""What every model shares: built from the API's JSON, keeps it, shows it."""

from __future__ import annotations

import copy
import html
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..api import IsicApi
    from ..context import SessionContext

__all__ = ["Model"]


class Model:
    """A thin object over one archive record.

    Subclasses list ``FIELDS``: (attribute, record key, default).  Every
    field becomes an attribute; :meth:`as_json` returns the full record.
    """

    FIELDS: ClassVar[tuple[tuple[str, str, Any], ...]] = ()
    KIND: ClassVar[str] = "object"
    SUMMARY: ClassVar[tuple[str, ...]] = ("id", "name")

    def __init__(self, record: dict | None = None, api: IsicApi | None = None) -> None:
        self._record: dict = dict(record or {})
        self._api = api
        for attribute, key, default in self.FIELDS:
            value = self._record.get(key, default)
            if isinstance(default, (list, dict)) and value is not None and not isinstance(value, type(default)):
                # a list or object of the record that is text or a number: refused as it enters, not
                # an AttributeError far away in whatever reads it
                from ..errors import ArchiveResponseError

                wanted = "a list" if isinstance(default, list) else "an object"
                raise ArchiveResponseError(f"the archive sent a {self.KIND} whose {key!r} is a JSON "
                                           f"{type(value).__name__}, not {wanted}")
            setattr(self, attribute, copy.copy(value) if isinstance(default, (list, dict)) else value)

    def as_json(self) -> dict:
        """The record as the archive sent it (a deep copy)."""
        return copy.deepcopy(self._record)

    def _require_api(self) -> IsicApi:
        if self._api is None:
            from ..errors import IsicError

            raise IsicError(f"this {self.KIND} is not attached to an IsicApi session; "
                            f"get it through api.{self.KIND}(...) to load data")
        return self._api

    def _context(self) -> SessionContext:
        """The session's parts this object loads through (:mod:`isicarchive.context`)."""
        return self._require_api().context

    def _summary(self) -> dict[str, Any]:
        return {name: getattr(self, name, None) for name in self.SUMMARY}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self._summary().items() if v not in (None, ""))
        return f"{type(self).__name__}({parts})"

    def __str__(self) -> str:
        lines = [f"ISIC {self.KIND} {getattr(self, 'name', '') or getattr(self, 'id', '')}"]
        lines += [f"  {k}: {v}" for k, v in self._summary().items() if v not in (None, "")]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in self._summary().items() if v not in (None, ""))
        return (f"<div><b>ISIC {html.escape(self.KIND)}</b>{self._html_extra()}"
                f"<table>{rows}</table></div>")

    def _html_extra(self) -> str:
        return ""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and getattr(other, "id", None) == getattr(self, "id", None)

    def __hash__(self) -> int:
        return hash((type(self).__name__, getattr(self, "id", None)))
