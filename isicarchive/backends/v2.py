"""The current v2 API: ``/api/v2``, ISIC ids, cursor pagination, bearer tokens.

v2 records are normalised for the models and for ``select_images``: the
record keeps every v2 key (``isic_id``, ``files``, ``metadata``, ``public``,
``copyright_license``, ``attribution``) and gains the v1 names the models
read: ``_id`` and ``name`` (both the ISIC id), ``meta.acquisition`` with
``pixelsX``/``pixelsY`` next to the v2 keys, ``meta.clinical`` (the v2
clinical fields, plus the legacy ``diagnosis``, ``benign_malignant`` and
``anatom_site_general`` of :mod:`isicarchive.legacy`),
``dataset`` (``{"name": attribution, "license": copyright_license}``) and
``notes`` (empty tags).  Collections take the place of datasets.
The archive sends its decimal metadata (``clin_size_long_diam_mm``,
``mel_thick_mm``) as JSON strings such as ``"24.10"``; both ``metadata``
and ``meta`` hold them as float numbers (``24.1``), so comparisons,
DataFrames and exports treat them as numbers.

Login: the archive uses OAuth 2 (authorization code with PKCE, in a
browser, as the official ``isic`` CLI does; :mod:`isicarchive.oauth`).
Tokens expire; a refreshable one is renewed before use and after a 401.
The password grant works only where the server offers it (the local
archive does; see :mod:`isicarchive.testing`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import _json
from ..errors import (
    ArchiveResponseError,
    AuthenticationError,
    IsicError,
    NotFoundError,
    QueryError,
    UnsupportedError,
)
from ..legacy import LEGACY_DIAGNOSES, check_legacy_terms, legacy_clinical, legacy_term
from ..metadata_sync import SyncCheckpoint, SyncedRecords
from ..oauth import OAuthClient, OAuthToken, sign_in
from ..records import RecordStore
from ..search import DECIMAL_FIELDS, as_number
from ..search import parse as explain
from ..transport import Transport, checked_record
from .base import Backend, ProgressHook

__all__ = ["V2Backend", "normalise"]

log = logging.getLogger("isicarchive.auth")

_ISIC_ID = re.compile(r"^ISIC_\d{7}$")
PAGE = 100


def _section(value: Any, isic_id: Any, where: str) -> dict:
    """A record's mapping (``metadata`` and its sections), checked as it enters: absent is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArchiveResponseError(f"the archive sent image {str(isic_id)[:40]!r} with its {where} as a JSON "
                                   f"{type(value).__name__}, not an object")
    return value


def normalise(record: dict) -> dict:
    """A v2 image record with the v1-style keys the models and selections read."""
    return _normalised(record)[0]


def _normalised(record: dict) -> tuple[dict, bool]:
    """:func:`normalise`'s record, and whether JSON holds it exactly (a record decoded from JSON just now).

    Only the decimals made numbers here can break that (``"1e999"`` is an
    infinity JSON cannot hold), so the answer costs no walk over the record.
    """
    # a shallow copy: the record was just decoded for this call, and copying every nested level of
    # hundreds of thousands of records cost more time than the whole page walk
    out = dict(record)
    isic_id = out.get("isic_id")
    metadata = out.get("metadata")
    if type(metadata) is not dict:
        metadata = _section(metadata, isic_id, "metadata")
    acquisition = metadata.get("acquisition")
    acquisition = dict(acquisition) if type(acquisition) is dict else \
        dict(_section(acquisition, isic_id, "metadata.acquisition"))
    clinical = metadata.get("clinical")
    clinical = dict(clinical) if type(clinical) is dict else dict(_section(clinical, isic_id, "metadata.clinical"))
    exact = True
    # the archive sends its decimal columns as JSON strings ("24.10"): numbers here, in both views (two fields
    # looked up, rather than every clinical field tested: this runs on every record of a sync)
    decimals = None
    for key in _DECIMAL_ORDER:
        value = clinical.get(key)
        if isinstance(value, str) and (number := _decimal(value)) is not None:
            decimals = decimals or {}
            decimals[key] = number
    if decimals:
        clinical.update(decimals)
        out["metadata"] = {**metadata, "clinical": {**metadata["clinical"], **decimals}}
        exact = all(type(v) is not float or v - v == 0.0 for v in decimals.values())
    if "pixels_x" in acquisition:
        acquisition.setdefault("pixelsX", acquisition["pixels_x"])
    if "pixels_y" in acquisition:
        acquisition.setdefault("pixelsY", acquisition["pixels_y"])
    # the original's vocabulary (diagnosis, benign_malignant, anatom_site_general) from the hierarchies
    _add_legacy(clinical)
    out.update(_id=isic_id, name=isic_id,
               meta={"acquisition": acquisition, "clinical": clinical, "unstructured": {}},
               dataset={"name": out.get("attribution"), "license": out.get("copyright_license")},
               notes={"tags": []})
    return out, exact


_DECIMAL_ORDER = tuple(sorted(DECIMAL_FIELDS))
#: what normalise worked out before, by its input: an archive's records repeat a few thousand decimal texts
#: ("0.80") and hierarchy paths, and a sync normalises every record (up to this many answers are kept)
_REMEMBERED = 20_000
_decimals: dict[str, float | int | None] = {}
_legacies: dict[tuple, tuple[dict[str, Any], str | None]] = {}
#: the clinical fields legacy_clinical reads
_LEGACY_INPUTS = tuple(f"{field}_{level}" for field in ("diagnosis", "anatom_site") for level in range(1, 6)) + \
    ("anatom_site_special",)


def _decimal(text: str) -> float | int | None:
    """:func:`~isicarchive.search.as_number` of a decimal column's text, remembered."""
    number = _decimals.get(text, _decimals)
    if number is _decimals:
        number = as_number(text)
        if len(_decimals) < _REMEMBERED:
            _decimals[text] = number
    return number  # type: ignore[return-value]


def _add_legacy(clinical: dict) -> None:
    """Add :func:`~isicarchive.legacy.legacy_clinical`'s fields to a record's clinical metadata (those it has
    not), remembered by the fields it reads."""
    inputs = tuple(map(clinical.get, _LEGACY_INPUTS))
    try:
        found = _legacies.get(inputs)
    except TypeError:  # a list or an object from the JSON: no key of a dict
        found = _legacy_of(clinical)
    if found is None:
        found = _legacy_of(clinical)
        if len(_legacies) < _REMEMBERED:
            _legacies[inputs] = found
    answer, own = found
    for key, value in answer.items():
        # a diagnosis that is the record's own value (no legacy term) is read from the record: 1, 1.0 and True
        # are one key of a dict, but each record keeps its own
        clinical.setdefault(key, clinical[own] if own is not None and key == "diagnosis" else value)


def _legacy_of(clinical: dict) -> tuple[dict[str, Any], str | None]:
    """legacy_clinical's answer, and the field its diagnosis is the value of (None: a legacy term)."""
    answer = legacy_clinical(clinical)
    own = None
    if "diagnosis" in answer and legacy_term(clinical, "diagnosis", LEGACY_DIAGNOSES) is None:
        own = next(key for key in _DIAGNOSIS_FIELDS if clinical.get(key))
    return answer, own


_DIAGNOSIS_FIELDS = tuple(f"diagnosis_{level}" for level in range(5, 0, -1))


def _kept(records: Iterable[dict], prefix: str = "") -> RecordStore:
    """Records as the archive sent them, normalised and kept as JSON (:class:`~isicarchive.records.RecordStore`);
    those whose id does not start with ``prefix`` are left out."""
    store = RecordStore()
    put, held = store.put, store._held
    for record in records:
        out, exact = _normalised(record)
        isic_id = out["_id"]
        key = isic_id if type(isic_id) is str else str(isic_id)  # record_id's answer, without the call
        if key.startswith(prefix):
            put(key, out, checked=exact)
            if exact and type(held[key]) is not bytes:
                # JSON's own types that do not encode: nested deeper than any reader of the records takes
                raise ArchiveResponseError(f"the archive sent image {key[:40]!r} nested deeper than "
                                           f"{_json.MAX_DEPTH} levels")
    return store


class V2Backend(Backend):
    """``/api/v2`` backend."""

    version = 2
    auth_header = "Authorization"
    token_sign_in = True

    def is_id(self, value: str) -> bool:
        return bool(_ISIC_ID.match(value)) or value.isdigit()

    def _get(self, endpoint: str, params: dict[str, Any] | None = None, what: str | None = None,
             check_depth: bool = True) -> Any:
        try:
            return self.http.get_json(endpoint, params=params, expect=dict, check_depth=check_depth)
        except NotFoundError as exc:
            raise NotFoundError(f"{what or endpoint} not found (or you may not see it)",
                                status=exc.status, url=exc.url) from None

    def _cursor_pages(self, endpoint: str, params: dict[str, Any] | None = None,
                      limit: int | None = None, progress: ProgressHook | None = None) -> Iterator[dict]:
        """Follow ``next`` links; ``limit`` caps the number of records."""
        query = {**(params or {}), "limit": min(PAGE, limit) if limit else PAGE}
        seen = 0
        key = "isic_id" if endpoint.startswith("images/") else "id"
        for results in self._walk(self._get(endpoint, query), key):
            if progress:
                progress(len(results))
            for item in results:
                yield item
                seen += 1
                if limit and seen >= limit:
                    return

    def _walk(self, page: dict, key: str = "isic_id", check_depth: bool = True) -> Iterator[list[dict]]:
        """The pages of records of a cursor walk from its first page, checked as they enter.

        A page without a list of records, a ``next`` that is not an address,
        a cursor seen before or more records than the first page announced
        end the walk with :class:`ArchiveResponseError` instead of looping on.
        ``check_depth=False``: the caller checks the records' nesting (see
        :func:`_kept`).
        """
        cursors: set[str] = set()
        announced = page.get("count")
        received = 0
        while True:
            results = page.get("results")
            results = [] if results is None else results
            if not isinstance(results, list):
                raise ArchiveResponseError(f"the archive's page holds a JSON {type(results).__name__} "
                                           "where the list of records belongs")
            for item in results:
                checked_record(item, key)
            received += len(results)
            yield results
            cursor = page.get("next")
            if not cursor:
                return
            if not isinstance(cursor, str):
                raise ArchiveResponseError(f"the archive's 'next' is a JSON {type(cursor).__name__}, not an address")
            if cursor in cursors or not results:
                raise ArchiveResponseError("the archive's 'next' link leads back to a page already read; "
                                           "stopped instead of looping")
            if isinstance(announced, int) and received > announced:
                raise ArchiveResponseError(f"the listing went on past the {announced} records it announced; "
                                           "stopped instead of looping")
            cursors.add(cursor)
            page = self._get(cursor, check_depth=check_depth)

    # ----------------------------------------------------------------- auth
    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.oauth = OAuthClient(transport, transport.base_url.rsplit("/api/", 1)[0] + "/oauth")
        self.oauth_token: OAuthToken | None = None
        #: told about every renewed token (the facade keeps the keyring current)
        self.on_token_renewed: Callable[[OAuthToken], None] | None = None
        #: the token as stored now (the keyring), which another process may have renewed
        self.load_stored_token: Callable[[], OAuthToken | None] | None = None
        self._renew_lock = threading.Lock()
        self._unrenewable: str | None = None
        transport.token_renewer = self._renew

    def use_token(self, token: str | OAuthToken) -> None:
        """Send ``token`` from now on; an expired one is renewed first when it can be."""
        if not isinstance(token, OAuthToken):
            token = OAuthToken(token)
        if token.expired() and token.refresh_token:
            self._install(self.oauth.refresh(token), renewed=True)
        else:
            self._install(token, renewed=False)

    def _install(self, token: OAuthToken, renewed: bool) -> None:
        self.oauth_token = token
        self.http.set_token(token.access_token, token.expires_at)
        if renewed and self.on_token_renewed:
            self.on_token_renewed(token)

    def _renew(self, refused: str) -> str | None:
        # many download threads may meet the expiry at once: the first renews, the rest reuse it
        with self._renew_lock:
            current = self.oauth_token
            if current is None:
                return None
            if current.access_token != refused:
                return current.access_token
            if not current.refresh_token or self._unrenewable == current.access_token:
                return None
            renewed: OAuthToken | None
            try:
                renewed = self.oauth.refresh(current)  # the token endpoint needs no bearer: no recursion
            except AuthenticationError as exc:
                renewed = self._renewed_elsewhere(current)
                if renewed is None:
                    log.warning("the access token expired and could not be renewed (%s); sign in again",
                                str(exc).split(": ", 1)[-1])
                    self._unrenewable = current.access_token  # do not ask again on every request
                    return None
            self._install(renewed, renewed=True)
            return renewed.access_token

    def _renewed_elsewhere(self, current: OAuthToken) -> OAuthToken | None:
        # another process sharing the stored token may have renewed it first (spending the refresh
        # token this session holds); its renewal is in the keyring
        stored = self.load_stored_token() if self.load_stored_token else None
        if stored is None or stored.access_token == current.access_token:
            return None
        if not stored.expired():
            return stored
        if stored.refresh_token and stored.refresh_token != current.refresh_token:
            try:
                return self.oauth.refresh(stored)
            except AuthenticationError:
                return None
        return None

    def login(self, username: str, password: str) -> tuple[str, dict]:
        """The password grant: offered by the local archive, not by the real one."""
        try:
            token = self.oauth.password_grant(username, password)
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"login of {username!r} refused: {str(exc).split(': ', 1)[-1]}. The ISIC Archive signs people in "
                "through its web page: run `isicarchive --api v2 login`, call IsicApi.sign_in(), or pass "
                "IsicApi(token=...)") from None
        self.use_token(token)
        return token.access_token, self.me() or {}

    def sign_in(self, **prompts: Any) -> OAuthToken:
        """The browser sign-in (see :func:`isicarchive.oauth.sign_in`)."""
        token = sign_in(self.oauth, **prompts)
        self.use_token(token)
        return token

    def revoke(self, token: OAuthToken) -> None:
        """Ask the archive to forget a token and its refresh token (best effort, logged on failure)."""
        self.oauth.revoke(token)

    def logout(self) -> None:
        if self.oauth_token is not None:
            self.oauth.revoke(self.oauth_token)
        self.oauth_token = None

    def me(self) -> dict | None:
        return self.http.get_json("users/me/", expect=dict)

    # --------------------------------------------------------------- images
    def image(self, image_id: str) -> dict:
        record = self._get(f"images/{image_id}/", what=f"image {image_id!r}")
        checked_record(record, "isic_id")
        return normalise(record)

    def image_by_name(self, name: str) -> dict:
        if not _ISIC_ID.match(name):
            raise NotFoundError(f"no image named {name!r}: v2 images are named by ISIC id (ISIC_0000000)")
        return self.image(name)

    def images(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        params = dict(params or {})
        limit = params.pop("limit", None)
        params.pop("detail", None)
        return (normalise(r) for r in self._cursor_pages("images/", params, limit=int(limit) if limit else None))

    def search_images(self, query: str, collections: Iterable[int] | None = None,
                      limit: int | None = None) -> list[dict]:
        """Records matching a query in the archive's search language (server-side)."""
        params = {"query": query}
        if collections:
            params["collections"] = ",".join(str(int(c)) for c in collections)
        try:
            return [normalise(r) for r in self._cursor_pages("images/search/", params, limit=limit)]
        except QueryError:
            # the archive says only "Could not parse search query."; the same grammar here says what and where
            explain(query)
            raise

    def images_by_key(self, keys: list[str], workers: int = 8) -> dict[str, dict]:
        """Many records in few requests: ``isic_id:A OR isic_id:B …`` searches of up to 100 ids, in parallel.

        Keys that are not ISIC ids cannot be in such a search and are left
        out, as are ids the archive does not have or will not show.
        """
        from concurrent.futures import ThreadPoolExecutor

        ids = sorted({key for key in keys if _ISIC_ID.match(key)})
        batches = [ids[i:i + PAGE] for i in range(0, len(ids), PAGE)]
        if not batches:
            return {}

        def one(batch: list[str]) -> list[dict]:
            return self.search_images(" OR ".join(f"isic_id:{isic_id}" for isic_id in batch))

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches)))) as pool:
            return {record["isic_id"]: record for found in pool.map(one, batches) for record in found}

    def metadata_csv(self, query: str = "", collections: Iterable[int] | None = None) -> str:
        """The archive's own metadata CSV of a search, through its zip-download flow.

        ``zip-download/url/`` answers the zip service's address with a signed
        token; the same token opens ``zip-download/metadata-file/`` (the CSV
        the archive puts in its zips and that the official CLI writes).
        """
        body = {"query": query or None, "collections": [int(c) for c in collections] if collections else None}
        answer = self.http.request("POST", "zip-download/url/", json_body=body)
        try:
            url = answer.json()
        except ValueError:
            url = None
        token = parse_qs(urlsplit(url).query).get("zsid", [None])[0] if isinstance(url, str) else None
        if not token:
            raise ArchiveResponseError(f"zip-download/url/ answered no download token ({str(url)[:80]!r})")
        data, _ = self.http.get_bytes("zip-download/metadata-file/", params={"token": token})
        return data.decode("utf-8")

    def metadata_file(self, query: str = "", collections: Iterable[int] | None = None) -> str:
        """The archive's metadata CSV of a search; where its zip flow is not offered, the same rows built
        from the paged search (with the image size columns, which the archive's file leaves out)."""
        try:
            return self.metadata_csv(query, collections)
        except (NotFoundError, UnsupportedError, ArchiveResponseError) as exc:
            log.info("no metadata file from the archive (%s); building it from the paged search", exc)
        from ..csvguard import csv_text
        from ..export import metadata_rows

        columns, rows = metadata_rows(self.search_images(query, collections=collections))
        rows.sort(key=lambda row: str(row.get("isic_id")))
        return csv_text(columns, ([row.get(key) for key in columns] for row in rows))  # guarded as the archive's

    def check_criteria(self, criteria: list[tuple[str, str, Any]], values_of: Callable[[str], Any]) -> None:
        check_legacy_terms(criteria, values_of)

    def license_text(self, name: str) -> str:
        """The archive's own licence text (as its zips and the official CLI have it).

        Only for the licences the archive uses: a name from a record goes into the request's path, and
        ``../../users/me`` would fetch (and save) something else with the session's token."""
        from ..licenses import LICENSES

        if name not in LICENSES:
            log.info("licence %r is none the archive uses: its text is not asked for", name[:40])
            return super().license_text(name)
        try:
            data, _ = self.http.get_bytes(f"zip-download/license-file/{name}/")
            return data.decode("utf-8")
        except (IsicError, UnicodeDecodeError) as exc:
            log.info("no licence text for %s from the archive (%s)", name, exc)
            return super().license_text(name)

    def lesion(self, lesion_id: str) -> dict:
        record = self._get(f"lesions/{lesion_id}/", what=f"lesion {lesion_id!r}")
        return {**record, "images": [normalise(r) for r in record.get("images") or []]}

    def search_size(self, query: str = "", collections: Iterable[int] | None = None) -> int:
        params = {"query": query, "collections": ",".join(str(int(c)) for c in collections or [])}
        return int(self._get("images/search/size/", params)["size"])

    def sync_images(self, known: Mapping[str, dict], progress: ProgressHook | None = None,
                    checkpoint: Callable[[str], Any] | None = None,
                    on_total: Callable[[int], None] | None = None) -> tuple[RecordStore, bool]:
        """One request (the first page, which carries the count) when nothing is new.

        v2 pages with opaque cursors, so new images cannot be fetched alone:
        when the count changed, the whole list is read again: with one
        cursor when it fills at most :attr:`sync_single_walk_pages` pages, else as disjoint
        searches (``isic_id:ISIC_00*`` … ``isic_id:ISIC_99*``) whose cursors
        are walked in parallel by :attr:`sync_workers` threads (24; set it on
        ``api.context.backend`` to be gentler or bolder).  With a
        ``checkpoint`` (the count → a :class:`~isicarchive.metadata_sync.SyncCheckpoint`)
        each finished partition is kept, so an interrupted sync resumes where
        it stopped; when all records are returned, as a
        :class:`~isicarchive.metadata_sync.SyncedRecords`, the partitions are
        the pieces the image cache file is written from, and the store
        forgets them once it is written.  If the partitions do not add up to
        the count (ids of another form), a plain walk of ``images/`` is done
        instead.  Only unknown records are returned (all of them, replacing
        the cache, if some disappeared).
        """
        first = self._get("images/", {"limit": 1})
        count = first.get("count")
        if known and count == len(known):
            return RecordStore(), False
        if on_total is not None and isinstance(count, int):
            on_total(count)
        saved = None
        records: RecordStore | None = None
        # a few pages: one cursor walk asks less (and waits no longer) than a hundred prefix searches
        if not (isinstance(count, int) and count <= self.sync_single_walk_pages * PAGE):
            saved = checkpoint(f"v2-count-{count}") if checkpoint is not None and isinstance(count, int) else None
            records = self._partitioned(progress, saved)
            if isinstance(count, int) and len(records) != count:
                log.info("the partitioned walk did not add up to the archive's count; walking images/ instead")
                records = None
        if records is None:
            records = _kept(self._cursor_pages("images/", progress=progress))
        if not known or not known.keys() <= records.keys():
            if saved is not None and not isinstance(records, SyncedRecords):
                saved.finish()
            # else the partitions become the image cache file, and are forgotten once it is written
            return records, True
        if saved is not None:
            saved.finish()
        return records.subset(key for key in records if key not in known), False

    #: parallel cursor walks of a metadata sync: the same requests whatever the number, more of them at once
    #: (downloads run 32 at a time); on 2 cores shared with the local archive, 100,000 records at 50 ms
    #: latency took 6.7x the serial walk's time as a whole process with 16, 8.2x with 24, 8.7x with 32
    sync_workers = 24
    #: a partition with more records than this is split in ten by the next digit of the id
    sync_partition_size = 2000
    #: an archive of at most this many pages is walked with one cursor, not as 100 prefix searches (which
    #: take ~5 rounds of 24 parallel requests whatever the archive holds)
    sync_single_walk_pages = 5

    def _partitioned(self, progress: ProgressHook | None, saved: SyncCheckpoint | None) -> SyncedRecords:
        """Every record, read as disjoint ``isic_id`` prefix searches walked in parallel.

        A partition whose first page announces more than
        :attr:`sync_partition_size` records is split by the next digit (old,
        sequential ids crowd into ``ISIC_00*``), so the work spreads over the
        workers whatever the ids look like.
        """
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        digits = len("ISIC_0000000")

        def walk(prefix: str) -> tuple[RecordStore, list[str], int]:
            done = saved.load(prefix) if saved is not None else None
            if done is not None:
                if progress:
                    progress(len(done))
                return done, [], len(done)
            params = {"query": f"isic_id:{prefix}*", "limit": PAGE}
            # the pages' nesting is checked where their records are encoded (_kept), not by encoding each page too
            first = self._get("images/search/", params, check_depth=False)
            count = first.get("count")
            count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0
            if count > 10 ** (digits - len(prefix)):
                raise ArchiveResponseError(f"the archive announced {count} images with ids {prefix}…, more than such "
                                           "ids can number; the partitioned sync stopped instead of splitting on")
            if count > self.sync_partition_size and len(prefix) < digits:
                return RecordStore(), [prefix + str(digit) for digit in range(10)], count
            found: list[dict] = []
            for results in self._walk(first, check_depth=False):
                found += results
                if progress:
                    progress(len(results))
            # kept as JSON here, in the walk's own thread: the archive's records never exist as dicts all at once;
            # an id outside the prefix is no part of this partition (the count check then says something is off)
            kept = _kept(found, prefix)
            del found
            if saved is not None:
                saved.save(prefix, kept)  # compressed here too, where zlib leaves the other walks the interpreter
            return kept, [], count

        parts: dict[str, RecordStore] = {}
        # a split partition's announced count, and what its parts have announced so far: the parts of
        # disjoint prefixes cannot announce more than the whole (a server that ignores the query, or
        # lies, would otherwise make the split go on down to single ids: millions of requests)
        budget: dict[str, list[int]] = {}
        pool = ThreadPoolExecutor(max_workers=self.sync_workers, thread_name_prefix="isic-sync")
        try:
            pending: dict[Future, str] = {pool.submit(walk, f"ISIC_{n:02d}"): f"ISIC_{n:02d}" for n in range(100)}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    prefix = pending.pop(future)
                    found, split, count = future.result()
                    parent = budget.get(prefix[:-1])
                    if parent is not None:
                        parent[1] += count
                        if parent[1] > parent[0]:
                            raise ArchiveResponseError(
                                f"the archive announced more images in the ten parts of {prefix[:-1]}… than in the "
                                f"whole ({parent[1]} > {parent[0]}); the partitioned sync stopped instead of going on")
                    parts[prefix] = found
                    if split:
                        budget[prefix] = [count, 0]
                    for sub in split:
                        pending[pool.submit(walk, sub)] = sub
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # disjoint prefixes in order are ids in order: the partitions with records, joined, are the cache file
        records = SyncedRecords(saved, [prefix for prefix in sorted(parts) if parts[prefix]])
        for prefix in sorted(parts):
            records.update(parts.pop(prefix))
        return records

    def image_file(self, record: dict) -> str:
        files = record.get("files") or {}
        url = (files.get("full") or {}).get("url")
        if not url:
            raise NotFoundError(f"image {record.get('isic_id')!r} has no downloadable file")
        return url

    def image_file_renewer(self, record: dict) -> Callable[[], str]:
        # file URLs are pre-signed and expire; a record from the cache may hold a stale one
        isic_id = str(record.get("isic_id") or record.get("_id"))
        return lambda: self.image_file(self.image(isic_id))

    # ---------------------------------------------------------- collections
    def datasets(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        params = dict(params or {})
        params.pop("detail", None)
        limit = params.pop("limit", None)
        for c in self._cursor_pages("collections/", params, limit=int(limit) if limit else None):
            yield _collection(c)

    def dataset(self, dataset_id: str) -> dict:
        return _collection(self._get(f"collections/{dataset_id}/", what=f"collection {dataset_id!r}"))

    def dataset_extra(self, dataset_id: str, what: str) -> Any:
        # v2 collections have no access list, metadata files or review queue
        return None

    def collection_images(self, collection_id: int, limit: int | None = None) -> list[dict]:
        return self.search_images("", collections=[collection_id], limit=limit)

    def collection_by_doi(self, doi: str) -> dict:
        """The collection whose ``doi`` is this one (the archive has no look-up by DOI: its list is read)."""
        wanted = doi.lower()
        for collection in self.datasets():
            if str(collection.get("doi") or "").lower() == wanted:
                return collection
        raise NotFoundError(f"no collection with the DOI {doi} (or you may not see it)")

    # -------------------------------------------------------------- studies
    def _staff_only(self, exc: AuthenticationError) -> AuthenticationError:
        """The archive answers 401 to a signed-in user who is not staff, as to a stranger (isic/auth.py
        ``is_staff``): say which it was."""
        if self.oauth_token is None:
            return exc
        return AuthenticationError(f"{exc} Studies are for staff accounts only: this session is signed in, "
                                   "and the archive declines its account here.", status=exc.status, url=exc.url)

    def studies(self, params: dict[str, Any] | None = None) -> Iterator[dict]:
        params = dict(params or {})
        params.pop("detail", None)
        try:
            for s in self._cursor_pages("studies/", params):
                yield {**s, "_id": str(s["id"])}
        except AuthenticationError as exc:
            raise self._staff_only(exc) from None

    def study(self, study_id: str) -> dict:
        try:
            s = self._get(f"studies/{study_id}/", what=f"study {study_id!r}")
        except AuthenticationError as exc:
            raise self._staff_only(exc) from None
        questions = [{"id": q.get("prompt"), "type": q.get("type", "select"),
                      "choices": [c.get("text") if isinstance(c, dict) else c for c in q.get("choices", [])]}
                     for q in s.get("questions", [])]
        features = [{"id": " : ".join(f["name"]) if isinstance(f.get("name"), list) else f.get("name"),
                     "name": f.get("name")} for f in s.get("features", [])]
        return {**s, "_id": str(s["id"]), "questions": questions, "features": features, "images": [], "users": []}

    def annotations(self, study_id: str, params: dict[str, Any] | None = None) -> list[dict]:
        raise self._unsupported("annotation superpixel markups")


def _collection(c: dict) -> dict:
    """A v2 collection in the shape of a v1 dataset."""
    return {**c, "_id": str(c["id"]), "license": None, "_accessLevel": 0 if c.get("public") else None}
