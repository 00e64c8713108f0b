"""``IsicApi``: the session object users hold.

It wires transport, credentials, cache, the backend of the chosen API
version, the store and the selection index, owns the session's state
(name → id maps, ``image_cache``, ``image_selection``) and hands out models.
"""

from __future__ import annotations

import html
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from ._gc import collector_paused
from .account import Account
from .backends.base import Backend
from .backends.v1 import V1Backend
from .backends.v2 import V2Backend
from .cache import Cache
from .context import SessionContext
from .downloads import DEFAULT_WORKERS, DownloadResult
from .errors import (
    IsicError,
    NotFoundError,
    QueryError,
    UnsupportedError,
)
from .hosts import DEFAULTS, OFFICIAL_HOSTS, disk_location, normalise_host, split_api_address, version_of
from .listing import Listing
from .lockfile import Origin
from .models import Annotation, Dataset, Image, Lesion, Segmentation, Study
from .oauth import OAuthToken
from .progress import progress as _progress
from .records import RecordStore, names_of
from .selection import ImageIndex, Selection, normalise_criteria
from .store import Store
from .transport import RetryPolicy, Transport, record_id

__all__ = ["DEFAULTS", "OFFICIAL_HOSTS", "IsicApi"]

log = logging.getLogger("isicarchive")

#: API version → the backend that speaks it
BACKENDS: dict[int, type[Backend]] = {1: V1Backend, 2: V2Backend}


def _shown_path(folder: str | None) -> str:
    """A folder as a notebook shows it: relative to the working folder or ``~`` where it lies inside them
    (what the user typed, and no home folder's name on a shared screenshot)."""
    if folder is None:
        return "none"
    path = Path(folder)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
    return folder


def _images_not_found(absent: list[str], asked: int) -> NotFoundError:
    listed = ", ".join(absent[:10]) + (" …" if len(absent) > 10 else "")
    return NotFoundError(f"{len(absent)} of {asked} images not found (or you may not see them): {listed}")


def _remember_names(names: dict, records: Iterable[dict]) -> None:  # ids: strings (v1, v2 images), numbers (v2)
    for rec in records:
        if rec.get("name") is not None:
            names[rec["name"]] = rec.get("_id") or rec.get("id")


def _is_full_record(item: Any) -> bool:
    """An image record with its metadata (not a bare id or a summary): it makes an Image as it is."""
    return isinstance(item, dict) and bool(item.get("_id") or item.get("isic_id")) and (
        "meta" in item or "metadata" in item)


M = TypeVar("M", Study, Dataset)


class IsicApi:
    """A session with the ISIC Archive.

    Parameters
    ----------
    username : str, optional
        Log in as this user; the password is resolved from ``password``, the
        keyring, ``~/.netrc`` or an interactive prompt (see
        :mod:`isicarchive.credentials`).  For v2, a token stored under this
        name (``isicarchive --api v2 login``) comes first, renewed when it
        has expired; with no token and no password, a person at the keyboard
        is asked to sign in through the archive's web page (:meth:`sign_in`).
    password : str, optional
    hostname : str, optional
        Archive host, or an API address as ``isicarchive serve`` prints it
        (``http://127.0.0.1:8000/api/v2``).  A name without a scheme gets
        ``http://`` on the loopback and ``https://`` elsewhere.  Defaults to
        the official host of the chosen API version.
    api_uri : str, optional
        API path, ``/api/v1`` (legacy) or ``/api/v2`` (current).
    cache_folder : str, optional
        Folder for the on-disk cache (created if missing).
    api_version : {1, 2}, optional
        Chosen explicitly; otherwise the one ``api_uri`` (or a pasted API
        address) names; otherwise 2, today's API, unless the host serves only
        the legacy v1 API (asked once: see :mod:`isicarchive.hosts`).
    token : str or OAuthToken, optional
        A ready token (v1 Girder token, v2 OAuth bearer token) instead of a password.
    debug : bool
        Log every request (without secrets) on the ``isicarchive.http`` logger.
    timeout : float or (float, float)
        Connect/read timeouts in seconds.
    retries : int
        Retries for transient faults (429, 5xx, resets).
    backoff : float
        Base of the exponential backoff in seconds.
    workers : int
        Parallel downloads.
    progress : bool
        Progress bars for long operations.
    verify : bool or str, optional
        TLS verification, or a CA bundle path (e.g. ``LocalArchive(https=True).ca_file``).
    store_password : bool
        After a successful login, save the password in the system keyring.
    deadline : float
        Longest wall-clock time of one exchange with the archive in seconds
        (headers and body; timeouts bound only each read, which a server
        sending a byte at a time never trips).  Downloads add the time their
        size needs at 100 kB/s.

    Examples
    --------
    >>> api = IsicApi()                                           # doctest: +SKIP
    >>> api = IsicApi('me@example.org', cache_folder='~/isic')    # doctest: +SKIP
    >>> image = api.image('ISIC_0000000')                         # doctest: +SKIP
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        hostname: str | None = None,
        api_uri: str | None = None,
        cache_folder: str | os.PathLike[str] | None = None,
        *,
        api_version: int | None = None,
        token: str | OAuthToken | None = None,
        debug: bool = False,
        timeout: float | tuple[float, float] = (5.0, 60.0),
        retries: int = 6,
        backoff: float = 0.5,
        workers: int = DEFAULT_WORKERS,
        progress: bool = True,
        verify: bool | str | None = None,
        store_password: bool = False,
        deadline: float = 300.0,
    ) -> None:
        if username is not None and not isinstance(username, str):
            raise IsicError(f"username must be a string, not {type(username).__name__}")
        if password is not None and not isinstance(password, str):
            raise IsicError("password must be a string")
        hostname, api_uri = split_api_address(hostname, api_uri)  # a pasted …/api/v2 address
        self.api_version = version_of(api_uri, api_version, hostname, verify)
        default_host, default_uri = DEFAULTS[self.api_version]
        self.hostname = normalise_host(hostname or default_host)
        self.api_uri = "/" + (api_uri or default_uri).strip("/")
        self.base_url = self.hostname + self.api_uri
        disk = disk_location(self.hostname)
        if disk is not None:
            if self.api_version != 2:
                raise IsicError("an archive on disk has today's (v2) records: leave api_version out")
            if username is not None or password is not None or token is not None:
                raise UnsupportedError("an archive on disk is read without signing in; leave out username, "
                                       "password and token")
            self.base_url = self.hostname  # the cache marker names the folder or zip itself
        self.debug = debug
        self.progress = progress
        self.workers = workers
        backend_class = BACKENDS[self.api_version]
        # connections for the transfer workers, and for the record look-ups that run twice as many
        pool_size = max(16, min(2 * workers, 64))
        self._http = Transport(self.base_url, timeout=timeout, policy=RetryPolicy(retries=retries, backoff=backoff),
                               pool_size=pool_size, auth_header=backend_class.auth_header, debug=debug,
                               verify=verify, deadline=deadline)
        if disk is None:
            self._backend: Backend = backend_class(self._http)
            self._account = Account(self.base_url, self._http, self._backend, on_change=self._identity_changed)
            self._account.authenticate(username, password, token, store_password)
        self.cache_folder: str | None = None
        self._cache: Cache | None = None
        if cache_folder is not None:
            self._cache = Cache(cache_folder, self.base_url, identity=None if disk else self._account.cache_identity(),
                                login=None if disk else self._account.archive_login())
            self.cache_folder = str(self._cache.root)
        if disk is not None:
            from .backends.disk import DiskBackend

            # its index lives in the cache folder, or in the user's when there is none (never in the archive)
            self._backend = DiskBackend(self._http, disk, self._cache.root if self._cache else None)
            self._account = Account(self.base_url, self._http, self._backend, on_change=self._identity_changed)
        self._store = Store(self._backend, self._http, self._cache, workers=workers, progress=progress)
        self.images: dict[str, str] = {}
        self.studies: dict[str, str] = {}
        self.datasets: dict[str, str] = {}
        self.image_cache: MutableMapping[str, dict] = RecordStore()
        self.image_selection: Selection = Selection({})
        self._index: ImageIndex | None = None
        # the Image a caller still holds is handed out again; released ones (with their
        # pixel arrays) are not kept alive by the session
        self._image_objects: weakref.WeakValueDictionary[str, Image] = weakref.WeakValueDictionary()
        self._names_loaded: set[str] = set()
        self._context = self._new_context()

    # ------------------------------------------------------------- session
    @property
    def username(self) -> str | None:
        """The name the session signed in under (``token`` for a bare token), None when anonymous."""
        return self._account.username

    @property
    def user(self) -> dict | None:
        """The archive's record of the signed-in account (``users/me``), None when anonymous."""
        return self._account.user

    def login(self, username: str, password: str | None = None, *, store_password: bool = False) -> None:
        """Log in; the password is resolved as described in :mod:`isicarchive.credentials`."""
        self._account.login(username, password, store_password=store_password)

    def sign_in(self, username: str | None = None, *, store: bool = True, ask: Callable[[str], str] | None = None,
                say: Callable[[str], None] | None = None, open_browser: bool | None = None) -> None:
        """Sign in through the archive's web page (v2; OAuth with PKCE, as the official CLI).

        Shows (and, where there is a display, opens) the sign-in address,
        then asks for the code the page shows.  The token, with its refresh
        token, is stored in the keyring under ``username`` (default: the
        account's e-mail), so ``IsicApi(username, api_version=2)`` reuses it.

        Parameters
        ----------
        username : str, optional
            The keyring label; default the account's e-mail address.
        store : bool
            Keep the token in the system keyring.
        ask, say
            How to read the code and show the address (``input``/``print``).
        open_browser : bool, optional
            Open a web browser; by default only where there is a display.
        """
        self._account.sign_in(username, store=store, ask=ask, say=say, open_browser=open_browser)

    def revoke(self, token: OAuthToken) -> None:
        """Ask the archive to forget a v2 token and its refresh token (best effort, logged on failure)."""
        self._account.revoke(token)

    @property
    def oauth_token(self) -> OAuthToken | None:
        """The v2 session's current OAuth token (its ``repr`` shows no secret), or None."""
        return self._account.oauth_token

    def logout(self) -> None:
        """End the session's login (the server forgets the token)."""
        self._account.logout()

    def _identity_changed(self) -> None:
        """After a login or logout the cache layer and what is held in memory follow the new identity.

        Records one person could see must not stay in another's session, nor
        be written where anonymous sessions read.
        """
        if "_store" not in self.__dict__:  # still in __init__: nothing built yet
            return
        if self._cache is not None:
            self._cache = Cache(self._cache.root, self.base_url, identity=self._account.cache_identity(),
                                login=self._account.archive_login())
            self._store.cache = self._cache
        self._context = self._new_context()
        self.image_cache = RecordStore()
        self.image_selection = Selection({})
        self._index = None
        for names in (self.images, self.studies, self.datasets):
            names.clear()
        self._names_loaded.clear()
        self._image_objects.clear()

    def _new_context(self) -> SessionContext:
        return SessionContext(self.base_url, self.api_version, self._http, self._backend, self._store, self._cache,
                              self._image_object, self._records_for, self.workers, self.progress)

    @property
    def context(self) -> SessionContext:
        """The parts of this session that models, scale-out and other modules work with
        (see :mod:`isicarchive.context`); a new one after a login or logout."""
        return self._context

    @property
    def layout(self) -> str | None:
        """The layout of an archive on disk (``official``, ``challenge-2020``, …); None for one online."""
        return self._backend.layout

    @property
    def problems(self) -> list[str]:
        """What was found wrong with an archive on disk while indexing it (also logged); empty online."""
        return list(self._backend.problems)

    @property
    def authenticated(self) -> bool:
        return self._http.authenticated

    @property
    def request_count(self) -> int:
        """HTTP requests this session has sent (retries included)."""
        return self._http.request_count

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IsicApi:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled into another process (a spawned data-loader worker), the session travels as its
        archive, cache folder, policy and credential and opens its own connections there."""
        from .scaleout import SessionSpec

        return (SessionSpec.session, (SessionSpec.of(self),))

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        who = f"username={self.username!r}" if self.username else "anonymous"
        cache = f", cache_folder={self.cache_folder!r}" if self.cache_folder else ""
        return f"IsicApi({self.base_url!r}, {who}{cache})"

    def __str__(self) -> str:
        return (f"ISIC Archive session at {self.base_url} ({self._backend.kind}), "
                f"{'user ' + self.username if self.username else 'anonymous'}; "
                f"{len(self.image_cache)} image records cached, {len(self.image_selection)} selected")

    def _repr_html_(self) -> str:
        rows = [("archive", self.base_url), ("API", f"v{self.api_version}"),
                ("user", self.username or "anonymous"), ("cache folder", _shown_path(self.cache_folder)),
                ("image records", len(self.image_cache)), ("selected", len(self.image_selection))]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<div><b>IsicApi</b><table>{body}</table></div>"

    # ------------------------------------------------------------- look-ups
    @staticmethod
    def _key(value: Any, kind: str) -> str:
        if isinstance(value, dict):
            value = value.get("_id") or value.get("isic_id") or value.get("id")
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise QueryError(f"a {kind} is named by its id or name (a string), not {value!r}")
        return str(value)

    @overload
    def image(self, object_id: str | dict, *, params: Mapping[str, Any] | None = None) -> Image: ...

    @overload
    def image(self, object_id: None = None, *, params: Mapping[str, Any] | None = None
              ) -> list[dict]: ...

    def image(self, object_id: str | dict | None = None, *, params: Mapping[str, Any] | None = None
              ) -> Image | list[dict]:
        """An :class:`Image` by id or name; with no argument, a list of image records.

        Raises
        ------
        NotFoundError
            No such image (or not visible to this session).
        """
        if object_id is None:
            return list(self._backend.images(dict(params or {"limit": 50})))
        key = self._key(object_id, "image")
        if key in self._image_objects:
            return self._image_objects[key]
        if _is_full_record(object_id):  # a record in hand costs no request
            return self._image_object(object_id)  # type: ignore[arg-type]
        image_id = key if self._backend.is_id(key) else self.images.get(key)
        record = self.image_cache.get(image_id) if image_id else None
        if record is None:
            record = self._backend.image(image_id) if image_id else self._backend.image_by_name(key)
        return self._image_object(record)

    def _image_object(self, record: dict) -> Image:
        obj = Image(record, self)
        self.images[obj.name] = obj.id
        self._image_objects[obj.id] = obj
        self._image_objects[obj.name] = obj
        return obj

    def lesion(self, lesion_id: str) -> Lesion:
        """A :class:`Lesion` of the current archive (v2): its images, index image, follow-up and outcome.

        Raises
        ------
        NotFoundError
            No such lesion (or none of its images is visible to this session).
        UnsupportedError
            On the legacy v1 API, which has no lesions.
        """
        if not isinstance(lesion_id, str) or not lesion_id:
            raise QueryError(f"a lesion id is a string such as 'IL_0000123', not {lesion_id!r}")
        return Lesion(self._backend.lesion(lesion_id), self)

    def images_for(self, keys: Iterable[str | dict]) -> list[Image]:
        """:class:`Image` objects for many ids, names or records at once, in the order given.

        Records already known (this session's objects, the image cache) are
        used as they are; the rest are fetched in bulk (v2: searches of 100
        ids at a time, in parallel; v1: concurrent look-ups), so a list of
        thousands of ids costs tens of requests, not thousands in a row.

        Raises
        ------
        NotFoundError
            Some keys name no image this session may see (all of them are listed).
        """
        items: list[Any] = list(keys)
        wanted = [self._key(k, "image") for k in items]
        in_hand: dict[str, dict] = {key: item for key, item in zip(wanted, items, strict=True) if _is_full_record(item)}
        records = {**self._image_records([k for k in wanted if k not in in_hand]), **in_hand}
        return [self._image_objects.get(k) or self._image_object(records[k]) for k in wanted]

    def _image_records(self, keys: list[str], unknown: list[str] | None = None) -> dict[str, dict]:
        """key → record for every key: known ones first, the rest in bulk (keys that name no image go
        into ``unknown`` when it is given, instead of raising).

        Raises
        ------
        NotFoundError
            Naming every key that names no image this session may see.
        """
        found: dict[str, dict] = {}
        missing: list[str] = []
        if keys and not self.image_cache:
            self.image_cache = self._store.load_image_cache()
        for key in dict.fromkeys(keys):
            obj = self._image_objects.get(key)
            image_id = key if self._backend.is_id(key) else self.images.get(key)
            record = obj.as_json() if obj is not None else self.image_cache.get(image_id) if image_id else None
            if record is None:
                missing.append(key)
            else:
                found[key] = record
        if missing:
            # record look-ups are small answers that wait on latency: twice the transfer workers, still bounded
            fetched = self._backend.images_by_key(missing, workers=min(2 * self.workers, 64))
            for record in fetched.values():
                if record.get("name"):
                    self.images[record["name"]] = record_id(record)
            found.update(fetched)
        absent = [k for k in keys if k not in found]
        if absent and unknown is not None:
            unknown.extend(dict.fromkeys(absent))
        elif absent:
            raise _images_not_found(absent, len(keys))
        return found

    def image_list(self, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every image record (summary form unless ``params`` says otherwise), page by page."""
        return self._backend.images(dict(params or {}))

    def _resolve(self, key: str, kind: str, names: dict[str, str], lister: Any) -> str:
        if self._backend.is_id(key):
            return key
        if key not in names and kind not in self._names_loaded:
            _remember_names(names, lister({"detail": "false"}))
            self._names_loaded.add(kind)
        if key not in names:
            raise NotFoundError(f"no {kind} named {key!r} (or you may not see it); known: "
                                f"{', '.join(sorted(map(str, names))[:10]) or 'none'}")
        return str(names[key])

    def _listed(self, lister: Callable[[dict], Iterable[dict]], names: dict[str, str],
                params: Mapping[str, Any] | None) -> list[dict]:
        """Every record ``lister`` gives, their names remembered in ``names``."""
        found = list(lister(dict(params or {})))
        _remember_names(names, found)
        return found

    def _named(self, object_id: str | dict, kind: str, names: dict[str, str],
               lister: Callable[[dict], Iterable[dict]], fetch: Callable[[str], dict], model: type[M]) -> M:
        """The ``model`` for an id or a name (names resolved through ``lister``), its name remembered."""
        found = model(fetch(self._resolve(self._key(object_id, kind), kind, names, lister)), self)
        names[found.name] = found.id
        return found

    @overload
    def study(self, object_id: str | dict, *, params: Mapping[str, Any] | None = None) -> Study: ...

    @overload
    def study(self, object_id: None = None, *, params: Mapping[str, Any] | None = None
              ) -> list[dict]: ...

    def study(self, object_id: str | dict | None = None, *, params: Mapping[str, Any] | None = None
              ) -> Study | list[dict]:
        """A :class:`Study` by id or name; with no argument, the list of studies."""
        if object_id is None:
            return self._listed(self._backend.studies, self.studies, params)
        return self._named(object_id, "study", self.studies, self._backend.studies, self._backend.study, Study)

    def study_list(self, params: Mapping[str, Any] | None = None) -> Listing:
        """Every study record (``params``: the archive's listing parameters), as a list that shows their names."""
        return Listing("study", self._backend.studies(dict(params or {})))

    @overload
    def dataset(self, object_id: str | dict, *, params: Mapping[str, Any] | None = None,
                load: bool = True) -> Dataset: ...

    @overload
    def dataset(self, object_id: None = None, *, params: Mapping[str, Any] | None = None, load: bool = True
              ) -> list[dict]: ...

    def dataset(self, object_id: str | dict | None = None, *, params: Mapping[str, Any] | None = None,
                load: bool = True) -> Dataset | list[dict]:
        """A :class:`Dataset` (v2: collection) by id or name, with its access list,
        metadata and review queue where permitted; with no argument, the list."""
        if object_id is None:
            return self._listed(self._backend.datasets, self.datasets, params)
        dataset = self._named(object_id, "dataset", self.datasets, self._backend.datasets, self._backend.dataset,
                              Dataset)
        return dataset.load() if load else dataset

    def dataset_list(self, params: Mapping[str, Any] | None = None) -> Listing:
        """Every dataset (v2: collection) record, as a list that shows their names."""
        return Listing("dataset", self._backend.datasets(dict(params or {})))

    def annotation(self, object_id: str | dict) -> Annotation:
        """An :class:`Annotation` by id."""
        key = self._key(object_id, "annotation")
        if not self._backend.is_id(key):
            raise NotFoundError(f"{key!r} is not an annotation id (annotations have no names)")
        return Annotation(self._backend.annotation(key), self)

    @overload
    def segmentation(self, object_id: str | dict, *, params: Mapping[str, Any] | None = None) -> Segmentation: ...

    @overload
    def segmentation(self, object_id: None = None, *, params: Mapping[str, Any] | None = None
              ) -> list[dict]: ...

    def segmentation(self, object_id: str | dict | None = None, *, params: Mapping[str, Any] | None = None
                     ) -> Segmentation | list[dict]:
        """A :class:`Segmentation` by id; with no argument, a list (``params``, e.g. ``imageId``)."""
        if object_id is None:
            return list(self._backend.segmentations(dict(params or {})))
        key = self._key(object_id, "segmentation")
        if not self._backend.is_id(key):
            raise NotFoundError(f"{key!r} is not a segmentation id (segmentations have no names)")
        return Segmentation(self._backend.segmentation(key), self)

    def segmentation_list(self, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        return self._backend.segmentations(dict(params or {}))

    # ----------------------------------------------------------- image cache
    def cache_images(self, progress: bool | None = None) -> MutableMapping[str, dict]:
        """Fill :attr:`image_cache` with every image record the session may see.

        The first run pages through all of them (with a progress bar; on v2
        as disjoint searches walked in parallel, resumable after an
        interruption when there is a cache folder); later runs load the cache
        file and send one request to confirm nothing is new, fetching only
        what is.
        """
        with collector_paused():  # millions of fresh, acyclic dicts: see isicarchive/_gc.py
            return self._cache_images(progress)

    def _cache_images(self, progress: bool | None) -> MutableMapping[str, dict]:
        if not self.image_cache:
            self.image_cache = self._store.load_image_cache()
        show = self.progress if progress is None else progress
        bar = _progress(None, "Image records", "record", enabled=show)

        def set_total(total: int) -> None:
            bar.total = total  # records/s and an ETA once the archive has said how many there are
            bar.refresh()

        try:
            new, replace = self._backend.sync_images(self.image_cache, progress=bar.update,
                                                     checkpoint=self._store.sync_checkpoint, on_total=set_total)
        finally:
            bar.close()
        fresh = new if isinstance(new, RecordStore) else RecordStore((record_id(rec), rec) for rec in new)
        if replace:
            self.image_cache, self._index = fresh, None
        elif new:
            self.image_cache.update(fresh)
            if self._index is not None:
                self._index.add(fresh)
        if new or replace:
            self.image_cache = self._store.save_image_cache(self.image_cache, replace)
            if self._index is not None and len(self._index) != len(self.image_cache):
                self._index = None
        self.images.update(names_of(self.image_cache))
        return self.image_cache

    # ------------------------------------------------------------ selection
    def _image_index(self) -> ImageIndex:
        if not self.image_cache:
            self.cache_images()
        if self._index is None or len(self._index) != len(self.image_cache):
            self._index = ImageIndex(self.image_cache)
        return self._index

    #: raise :class:`QueryError` instead of warning when a selection or search is empty by an apparent
    #: mistake (see :mod:`isicarchive.empty`); ``select_images(strict=...)`` decides for one call
    strict_selection: bool = False

    def select_images(self, criteria: Any, sub_select: bool = False, *, strict: bool | None = None) -> Selection:
        """Select image records by criteria (see :mod:`isicarchive.selection`).

        Parameters
        ----------
        criteria : list
            ``[field, op, value]`` or a list of them (all must hold).
        sub_select : bool
            Narrow the previous selection instead of starting from every image.
        strict : bool, optional
            An empty selection caused by a field no record has, a value of
            the wrong type or a value that never occurs (named with close
            matches) raises :class:`QueryError`; otherwise it warns
            (:class:`~isicarchive.empty.EmptySelectionWarning`).  Default:
            :attr:`strict_selection`.

        Returns
        -------
        Selection
            A mapping image id → record, also stored in :attr:`image_selection`.
        """
        parsed = normalise_criteria(criteria)
        index = self._image_index()
        self._backend.check_criteria(parsed, index.values_of)
        within = self.image_selection.keys() if sub_select else None
        before = self.image_selection.origin.criteria if sub_select and self.image_selection.origin else None
        self.image_selection = index.select(parsed, within=within)
        if not self.image_selection:
            from .empty import check_empty_selection

            check_empty_selection(index, parsed, self.strict_selection if strict is None else strict, within)
        self.image_selection.session = self
        self.image_selection.origin = Origin(self, criteria=[*(before or []), *parsed])
        return self.image_selection

    # ------------------------------------------------------------ downloads
    def _records_for(self, images: Any, unknown: list[str] | None = None) -> list[dict]:
        """The records of ids, names, records or Images; with ``unknown``, keys that name no image are
        put there instead of raising :class:`NotFoundError`."""
        if isinstance(images, Mapping):
            images = list(images.values())
        items = list(images)
        keys = [self._key(item, "image") for item in items if not isinstance(item, (Image, dict))]
        looked_up = self._image_records(keys, unknown) if keys else {}
        records = []
        for item in items:
            if isinstance(item, Image):
                records.append(item.as_json())
            elif isinstance(item, dict):
                records.append(item)
            elif self._key(item, "image") in looked_up:
                records.append(looked_up[self._key(item, "image")])
        return records

    def map_images(self, func: Callable[[Image], Any], images: Any = None, *, client: Any = None,
                   load: Sequence[str] | str = ("imagedata",), meta: Any = None, strict: bool = False,
                   compute: bool = True, npartitions: int | None = None, progress: bool | None = None) -> Any:
        """Call ``func(image)`` for every image of a selection, in parallel on Dask (the ``dask`` extra).

        Parameters
        ----------
        func : callable
            Takes an :class:`~isicarchive.models.image.Image` with the parts
            of ``load`` loaded; returns a dict (one column per key) or any
            other value (a column ``result``).  It must be picklable
            (cloudpickle: lambdas and local functions are fine).
        images : selection, list of ids/names/records/Images, optional
            Defaults to :attr:`image_selection`.
        client : distributed.Client or str, optional
            None (``"threads"``): Dask's threaded scheduler, a thread per
            core — measured faster than worker processes for per-image work,
            whose decoding and numpy release the GIL.  ``"cluster"``: a
            ``distributed.LocalCluster`` of one single-threaded worker process
            per core, started for this call and closed after it (for functions
            that hold the GIL).  A ``distributed.Client``: that cluster,
            whatever its size (its dashboard link is printed).
            ``"processes"``, ``"sync"``: Dask's other local schedulers.
        load : sequence of str
            Parts loaded before ``func`` runs: ``"imagedata"``,
            ``"superpixels"`` (index and map), ``"segmentation"`` (v1 masks).
        meta : pandas.DataFrame, optional
            The result's columns and dtypes for ``compute=False``; by default
            found by running ``func`` on the first image.
        strict : bool
            Raise :class:`~isicarchive.errors.ImageTaskError` at the first
            image ``func`` fails for; otherwise that image's row carries the
            error (``"Type: message"``) in its ``error`` column.
        compute : bool
            False: return the lazy Dask DataFrame, to chain more Dask work.
        npartitions : int, optional
            Tasks to cut the selection into (default: four per worker, at most
            50 images each).

        Returns
        -------
        pandas.DataFrame (or dask.dataframe.DataFrame)
            Indexed by image id, in the selection's order, with the keys of
            ``func``'s dicts and ``error``.

        Each worker opens its own session from this one's archive, cache
        folder (a shared file system for a cluster of several machines),
        retry policy and credentials; see :mod:`isicarchive.scaleout` for how
        the token travels.
        """
        from . import scaleout

        scaleout.check_arguments(func, load)  # before the records are looked up: no work for a doomed call
        records = self._records_for(self.image_selection if images is None else images)
        return scaleout.map_images(self, func, records, client=client, load=load, meta=meta, strict=strict,
                                   compute=compute, npartitions=npartitions,
                                   progress=self.progress if progress is None else progress)

    def download_images(self, images: Any = None, folder: str | os.PathLike[str] | None = None, *,
                        workers: int | None = None, superpixels: bool = False, progress: bool | None = None,
                        strict: bool = False, missing: str = "raise") -> DownloadResult:
        """Download many images at once: in parallel, resumable, verified.

        Parameters
        ----------
        images : selection, list of ids/names/records/Images, optional
            Defaults to :attr:`image_selection`.
        folder : str, optional
            None: into the cache (with the cache's names).  Otherwise
            ``ISIC_xxxxxxx.jpg`` files plus ``metadata.csv`` in that folder.
        workers : int, optional
        superpixels : bool
            Also the superpixel PNGs (v1, cache only).
        strict : bool
            Raise :class:`ArchiveUnavailableError` if any file failed.
        missing : {"raise", "skip"}
            Ids or names the archive does not know (withdrawn images, or
            ones you may not see): ``"raise"`` (the default) stops before
            anything is fetched with a :class:`NotFoundError` listing them;
            ``"skip"`` downloads the rest and lists them in
            :attr:`DownloadResult.missing`.
        """
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise QueryError(f"workers must be a whole number of at least 1, not {workers!r}")
        if missing not in ("raise", "skip"):
            raise QueryError(f"missing= is 'raise' or 'skip', not {missing!r}")
        absent: list[str] | None = [] if missing == "skip" else None
        try:
            records = self._records_for(self.image_selection if images is None else images, absent)
        except NotFoundError as exc:
            raise NotFoundError(f"{exc.args[0]}; nothing was downloaded. missing='skip' downloads the rest and "
                                "lists these in the result's .missing") from None
        if folder is None:
            result = self._store.download_images(records, superpixels=superpixels, workers=workers, progress=progress)
        else:
            from .export import download_to_folder

            # a selection's origin (its collections' DOIs) goes into the folder's CITATION.cff
            result = download_to_folder(self._store, records, Path(folder), workers=workers or self.workers,
                                        progress=self.progress if progress is None else progress,
                                        origin=getattr(images, "origin", None))
        result.missing = absent or []
        if strict:
            result.raise_for_failures()
        return result

    def metadata_frame(self, query: str = "", collections: Iterable[int] | None = None, *,
                       path: str | os.PathLike[str] | None = None) -> Any:
        """The archive's own metadata CSV of a search (or collections) as a pandas DataFrame (v2).

        It comes from the archive's zip-download flow, as in its zips and the
        official CLI's ``metadata.csv`` (every column in use, rows by ISIC id;
        cells that would read as spreadsheet formulas start with a tab, as
        the archive writes them); where that flow is not offered, a table of
        the same rows is built from the paged search (with the image size
        columns, which the archive's file leaves out).  With ``path`` the CSV is also
        written there.  Needs the ``pandas`` extra.
        """
        import io

        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("metadata_frame needs pandas: pip install 'isicarchive[pandas]'") from exc
        text = self._backend.metadata_file(query, collections)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return pd.read_csv(io.StringIO(text), dtype={"isic_id": str, "lesion_id": str, "patient_id": str})

    def search_images(self, query: str, collections: Iterable[int] | None = None, limit: int | None = None, *,
                      strict: bool | None = None) -> Selection:
        """Server-side search (v2 query language); the result becomes :attr:`image_selection`.

        A search that finds nothing while a case variant of one of its terms
        would (``diagnosis_1:malignant``) warns, or raises :class:`QueryError`
        under ``strict`` (default :attr:`strict_selection`).
        """
        records = self._backend.search_images(query, collections=collections, limit=limit)
        if not records and query:
            from .empty import check_empty_search

            check_empty_search(query, lambda q: len(self._backend.search_images(q, collections=collections, limit=1)),
                               self.strict_selection if strict is None else strict)
        self.image_selection = Selection({record_id(r): r for r in records}, session=self)
        self.image_selection.origin = Origin(self, query=query, collections=[int(c) for c in collections or ()]
                                             or None)
        return self.image_selection

    def collection(self, *, doi: str) -> Selection:
        """The images of the collection with this DOI (v2), to lock and cite (:mod:`isicarchive.collections`)."""
        from .collections import collection_by_doi

        return collection_by_doi(self, doi)
