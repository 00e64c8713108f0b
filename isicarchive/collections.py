"""DOI'd collections: a collection the archive minted a DOI for, as a :class:`~isicarchive.selection.Selection`.

The archive mints DataCite DOIs (prefix ``10.34970``) for collections, and
minting locks them: the images of a DOI'd collection no longer change, which
makes it the firmest thing a paper can name.  ``api.collection(doi=...)``
finds the collection through the backend (v2) and returns its images with
the DOI in the selection's origin, so that the selection can be locked
(:meth:`~isicarchive.selection.Selection.lock`) and cited
(:meth:`~isicarchive.selection.Selection.cite`).

Staff of the archive mint DOIs; :func:`request_doi` and :func:`publish_doi`
send the archive's own requests (``POST doi/``, ``POST doi/{slug}/publish/``),
as its web pages do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import QueryError
from .lockfile import Origin
from .selection import Selection
from .transport import record_id

__all__ = ["collection_by_doi", "collection_records", "normalise_doi", "publish_doi", "request_doi"]

_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


def normalise_doi(doi: str) -> str:
    """A bare DOI (``10.34970/123456``) from one written as a URL or with ``doi:``.

    Raises
    ------
    QueryError
        Text that is no DOI.
    """
    if not isinstance(doi, str):
        raise QueryError(f"a DOI is a string such as '10.34970/123456', not {doi!r}")
    text = re.sub(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", "", doi.strip(), flags=re.IGNORECASE)
    if not _DOI.match(text):
        raise QueryError(f"{doi!r} is not a DOI (they look like 10.34970/123456)")
    return text


def collection_by_doi(session: Any, doi: str) -> Selection:
    """The images of the collection with this DOI, as a selection that remembers the DOI.

    Raises
    ------
    NotFoundError
        No collection this session may see has the DOI.
    UnsupportedError
        A backend without collections (v1, an archive on disk).
    """
    doi = normalise_doi(doi)
    collection = session.context.backend.collection_by_doi(doi)
    records = session.context.backend.collection_images(int(collection["id"]))
    selection = Selection({record_id(r): r for r in records}, session=session)
    selection.origin = Origin(session, collections=[int(collection["id"])], doi=doi,
                              collection_name=str(collection.get("name") or ""))
    return selection


def collection_records(session: Any, ids: Iterable[int]) -> list[dict]:
    """The collections of these ids (name, DOI, lock state), through the backend."""
    return [session.context.backend.dataset(str(int(cid))) for cid in ids]


def request_doi(session: Any, collection_id: int, description: str,
                related_identifiers: Iterable[dict[str, str]] = ()) -> str:
    """Ask the archive for a draft DOI of a collection (staff only); returns the draft's slug.

    The archive locks the collection when it creates the draft.
    """
    answer = session.context.transport.request("POST", "doi/", json_body={
        "collection_id": int(collection_id), "description": description, "supplemental_files": [],
        "related_identifiers": list(related_identifiers)})
    return str(answer.json()["slug"])


def publish_doi(session: Any, slug: str) -> None:
    """Publish a draft DOI (staff only): the collection becomes public and carries the DOI."""
    session.context.transport.request("POST", f"doi/{slug}/publish/", json_body={})
