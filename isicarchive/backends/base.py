"""What a backend answers.  The facade (:class:`~isicarchive.IsicApi`) and the
models only call these methods; they never build URLs, and never ask which
backend or API version they have: each backend answers for itself, through
its capability attributes (:attr:`Backend.local`, :attr:`Backend.token_sign_in`)
and methods that raise :class:`~isicarchive.errors.UnsupportedError` where it
offers nothing (as requests' ``Session`` delegates to its mounted adapters).

Records are plain dicts.  v1 records are passed through unchanged; the v2
backend maps its records onto the same keys the models read (see
:mod:`isicarchive.backends.v2`).  A feature an API lacks raises
:class:`~isicarchive.errors.UnsupportedError` naming the API that has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, UnsupportedError
from ..oauth import OAuthToken
from ..records import RecordStore
from ..transport import Transport

__all__ = ["Backend", "ProgressHook"]

#: called with the number of records just received
ProgressHook = Callable[[int], None]


class Backend:
    """Base class: every method the facade may call, unsupported by default."""

    version: int = 0
    #: reads its files itself (an archive on disk): no transfers, no download cache
    local: bool = False
    #: the header that carries the session token
    auth_header: str = "Authorization"
    #: the layout of an archive on disk (see :mod:`isicarchive.disk.layouts`); None for an archive online
    layout: str | None = None
    #: what was found wrong with the archive while reading it (skipped rows, unsafe paths)
    problems: Sequence[str] = ()

    def __init__(self, transport: Transport) -> None:
        self.http = transport

    def _unsupported(self, what: str, where: str = "the legacy v1 API") -> UnsupportedError:
        return UnsupportedError(f"{what} is not offered by API v{self.version}; it exists in {where}.")

    #: people sign in once (a web page, ``isicarchive --api v2 login``) and sessions reuse the
    #: stored, renewable token, rather than sending a password each time
    token_sign_in: bool = False
    #: the session's OAuth token, for a backend that speaks OAuth
    oauth_token: OAuthToken | None = None
    #: told about every renewed token (the facade keeps the keyring current)
    on_token_renewed: Callable[[OAuthToken], None] | None = None
    #: the token as stored now (the keyring), which another process may have renewed
    load_stored_token: Callable[[], OAuthToken | None] | None = None

    @property
    def kind(self) -> str:
        """What a session talks to, for people: ``API v1``, ``API v2``, ``an archive on disk``."""
        return f"API v{self.version}"

    # auth
    def use_token(self, token: str | OAuthToken) -> None:
        """Send ``token`` (a ready token instead of a password) from now on."""
        self.http.set_token(token.access_token if isinstance(token, OAuthToken) else token)

    def sign_in(self, **prompts: Any) -> OAuthToken:
        """The browser sign-in (see :func:`isicarchive.oauth.sign_in`)."""
        raise self._unsupported("signing in through the archive's web page (sign_in)",
                                "the current v2 API; v1 logs in with a password: login()")

    def revoke(self, token: OAuthToken) -> None:
        """Ask the archive to forget an OAuth token and its refresh token."""
        raise self._unsupported("revoking OAuth tokens", "the current v2 API; v1 sessions end with logout()")

    def login(self, username: str, password: str) -> tuple[str, dict]:
        """Exchange credentials for a token; returns (token, user record)."""
        raise self._unsupported("password login")

    def logout(self) -> None:
        pass

    def me(self) -> dict | None:
        raise self._unsupported("the current user")

    # images
    def is_id(self, value: str) -> bool:
        raise NotImplementedError

    def image(self, image_id: str) -> dict:
        raise NotImplementedError

    def image_by_name(self, name: str) -> dict:
        raise NotImplementedError

    def images(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        raise NotImplementedError

    def images_by_key(self, keys: list[str], workers: int = 8) -> dict[str, dict]:
        """The records of many images, by id or name, fetched concurrently.

        Returns key → record for the keys found; keys the archive does not
        have (or will not show) are left out.  This default looks each key up
        on its own through a bounded pool of threads; a backend with a
        bulk query overrides it.
        """
        from concurrent.futures import ThreadPoolExecutor

        def one(key: str) -> tuple[str, dict | None]:
            try:
                return key, self.image(key) if self.is_id(key) else self.image_by_name(key)
            except NotFoundError:
                return key, None

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
            return {key: record for key, record in pool.map(one, keys) if record is not None}

    def sync_images(self, known: Mapping[str, dict], progress: ProgressHook | None = None,
                    checkpoint: Callable[[str], Any] | None = None,
                    on_total: Callable[[int], None] | None = None) -> tuple[Iterable[dict] | RecordStore, bool]:
        """Records missing from ``known`` (a list, or a :class:`~isicarchive.records.RecordStore` id -> record);
        second value True when ``known`` must be replaced."""
        raise NotImplementedError

    def image_file(self, record: dict) -> str:
        """The endpoint or URL of the image's bytes."""
        raise NotImplementedError

    def read_image(self, record: dict) -> bytes:
        """The image's bytes, for a backend that reads its own files (:attr:`local`)."""
        raise NotImplementedError

    def local_path(self, record: dict) -> Path | None:
        """The image file itself, for a backend that reads its own files (None: not a file of its own)."""
        return None

    def image_file_renewer(self, record: dict) -> Callable[[], str] | None:
        """How to get a fresh file URL once the record's has expired (None: URLs do not expire)."""
        return None

    def image_record_name(self, record: dict) -> str:
        return str(record.get("name") or record.get("isic_id") or record.get("_id"))

    #: the archive's licences and their legal texts
    LICENSE_URLS = {
        "CC-0": "https://creativecommons.org/publicdomain/zero/1.0/legalcode",
        "CC-BY": "https://creativecommons.org/licenses/by/4.0/legalcode",
        "CC-BY-NC": "https://creativecommons.org/licenses/by-nc/4.0/legalcode",
    }

    def license_text(self, name: str) -> str:
        """What ``licenses/<name>.txt`` of a folder download holds (the archive's own text on v2)."""
        url = self.LICENSE_URLS.get(name)
        return f"{name}\n\nThe full legal text: {url}\n" if url else f"{name}\n"

    def metadata_csv(self, query: str = "", collections: Any = None) -> str:
        raise self._unsupported("the archive's own metadata file", "the current v2 API")

    def collection_by_doi(self, doi: str) -> dict:
        """The collection the archive minted this DOI for."""
        raise self._unsupported("collections with DOIs", "the current v2 API")

    def collection_images(self, collection_id: int, limit: int | None = None) -> list[dict]:
        raise self._unsupported("collections", "the current v2 API")

    def metadata_file(self, query: str = "", collections: Any = None) -> str:
        """The metadata CSV of a search: the archive's own, else one built from the paged search."""
        raise self._unsupported("the archive's own metadata file", "the current v2 API")

    def check_criteria(self, criteria: list[tuple[str, str, Any]], values_of: Callable[[str], Any]) -> None:
        """Refuse (:class:`~isicarchive.errors.QueryError`) criteria these records cannot answer;
        ``values_of(field)`` gives the values the records hold.  Every criterion passes by default."""

    def lesion(self, lesion_id: str) -> dict:
        raise self._unsupported("lesions", "the current v2 API")

    def search_images(self, query: str, collections: Any = None, limit: int | None = None) -> list[dict]:
        raise self._unsupported("server-side search", "the current v2 API (use select_images with v1)")

    def superpixels_endpoint(self, image_id: str) -> str:
        raise self._unsupported("archive superpixels", "the legacy v1 API (compute them locally for v2)")

    def superpixels_png(self, image_id: str) -> bytes:
        raise self._unsupported("archive superpixels", "the legacy v1 API (compute them locally for v2)")

    # datasets
    def datasets(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        raise NotImplementedError

    def dataset(self, dataset_id: str) -> dict:
        raise NotImplementedError

    def dataset_extra(self, dataset_id: str, what: str) -> Any:
        raise self._unsupported(f"dataset {what}")

    # studies and annotations
    def studies(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        raise self._unsupported("studies")

    def study(self, study_id: str) -> dict:
        raise self._unsupported("studies")

    def annotations(self, study_id: str, params: dict[str, Any] | None = None) -> list[dict]:
        raise self._unsupported("annotations")

    def annotation(self, annotation_id: str) -> dict:
        raise self._unsupported("annotations")

    def markup_values(self, annotation_id: str, feature_id: str) -> list[float]:
        raise self._unsupported("superpixel feature markups")

    # segmentations
    def segmentations(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        raise self._unsupported("segmentations")

    def segmentation(self, segmentation_id: str) -> dict:
        raise self._unsupported("segmentations")

    def segmentation_mask(self, segmentation_id: str) -> bytes:
        raise self._unsupported("segmentations")
