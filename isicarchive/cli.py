"""The ``isicarchive`` command line.

Exit codes: 0 success (also when the reader of a pipe, ``| head``, has
gone), 1 an archive/library error, a missing extra or a file the system
refuses (one line on stderr, no traceback), 2 bad usage, 3 authentication
failed, 4 not found, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import AuthenticationError, CacheError, IsicError, NotFoundError, QueryError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
_EXIT_CODES = ((AuthenticationError, EXIT_AUTH), (NotFoundError, EXIT_NOT_FOUND), (QueryError, EXIT_USAGE),
               (IsicError, EXIT_ERROR))

EPILOG = """examples:
  isicarchive demo                                  run the offline demo (local archive)
  isicarchive serve --port 8000                     serve a local archive (v1 and v2)
  isicarchive --host http://127.0.0.1:8000/api/v2 images search -s 'diagnosis_1:Malignant'
  isicarchive --host 127.0.0.1:8000 images select meta.clinical.diagnosis == melanoma
  isicarchive login --user me                       sign in on the archive's page (token kept in the keyring)
  isicarchive --user me images download -s 'diagnosis_3:Melanoma*' -l 100 --out ./melanomas
  isicarchive metadata download -s 'diagnosis_1:Malignant' -o malignant.csv
  isicarchive --api v1 study show "ISIC Annotation Study 0" --json
  isicarchive cache info                            the default cache folder (or --cache-folder DIR)
API: v2 (today's) unless --api v1 or the host serves only v1
exit codes: 0 ok, 1 error, 2 usage, 3 authentication, 4 not found, 130 interrupted"""


def _value(text: str) -> Any:
    """A criterion value from the command line: JSON when it parses (numbers, true, null, lists), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _criteria(words: Sequence[str]) -> list[list[Any]]:
    """``field op value`` triples (unary ``is None``/``not is None`` take no value)."""
    words = list(words)
    criteria = []
    while words:
        if len(words) < 2:
            raise QueryError(f"incomplete criterion: {' '.join(words)!r}; write field op value")
        field, op = words[0], words[1]
        if op in ("is None", "not is None"):
            criteria.append([field, op, None])
            words = words[2:]
            continue
        if len(words) < 3:
            raise QueryError(f"criterion {' '.join(words)!r} has no value")
        criteria.append([field, op, _value(words[2])])
        words = words[3:]
    return criteria


def _print(args: argparse.Namespace, payload: Any, text: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text())


def _api_version(args: argparse.Namespace) -> int | None:
    """``--api`` as a number; None (not given): the library's default, v2 unless the host serves only v1."""
    return {"v1": 1, "v2": 2}.get(args.api or "")


def user_cache_root() -> Path:
    """The platform's user cache folder for isicarchive: ``$XDG_CACHE_HOME/isicarchive`` (default
    ``~/.cache/isicarchive``) on Linux and other Unix systems, ``~/Library/Caches/isicarchive`` on macOS,
    ``%LOCALAPPDATA%\\isicarchive\\Cache`` on Windows; ``$ISICARCHIVE_CACHE_DIR`` overrides them all."""
    chosen = os.environ.get("ISICARCHIVE_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "isicarchive" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "isicarchive"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "isicarchive"


def default_cache_folder(hostname: str | None, api_version: int | None) -> Path:
    """The cache folder the command line uses without ``--cache-folder``: one per archive and API
    (a cache folder belongs to one archive address), under :func:`user_cache_root`."""
    import hashlib

    from .hosts import DEFAULTS, split_api_address, version_of

    host, api_uri = split_api_address(hostname, None)
    version = version_of(api_uri, api_version, host)
    where = (host or DEFAULTS[version][0]).strip().rstrip("/")
    if where.lower().startswith("file:"):
        name = "disk-" + hashlib.sha256(where.encode()).hexdigest()[:16]
    else:
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", where.split("://", 1)[-1]).strip("_") + f"-v{version}"
    return user_cache_root() / name


def _api(args: argparse.Namespace) -> Any:
    from .api import IsicApi

    hostname = args.host or os.environ.get("ISICARCHIVE_HOST")
    api_version = _api_version(args)
    if hostname and hostname.strip().lower().startswith("file:"):
        api_version = None  # an archive on disk: today's records, whatever --api says
    cache_folder = args.cache_folder or default_cache_folder(hostname, api_version)
    api = IsicApi(args.user, None, hostname=hostname, cache_folder=cache_folder, api_version=api_version,
                  progress=not args.json and not args.quiet)
    api.strict_selection = bool(getattr(args, "strict", False))
    return api


# ------------------------------------------------------------------ commands
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, images=args.images)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .testing import ArchiveConfig, ArchiveData, LocalArchive

    config = ArchiveConfig(images=args.images, datasets=args.datasets, private_datasets=min(1, args.datasets - 1),
                           image_bytes=tuple(args.image_bytes) if args.image_bytes else None)
    if args.from_dump:
        data = ArchiveData.from_dump(args.from_dump, seed=args.seed, config=config, limit=args.limit)
    else:
        data = ArchiveData(seed=args.seed, config=config)
    archive = LocalArchive(data=data, host=args.bind, port=args.port, https=args.https, latency=args.latency,
                           bandwidth=args.bandwidth, total_bandwidth=args.total_bandwidth)
    for spec in args.fault or []:
        kind, _, rest = spec.partition(":")
        pattern, _, probability = rest.rpartition(":") if rest.count(":") else (rest, "", "1")
        params: dict[str, Any] = {"status": 429, "retry_after": 1} if kind == "429" else {}
        archive.faults.add("status" if kind == "429" else kind, pattern or ".*", float(probability or 1), **params)
    archive.start()
    print(f"Local ISIC archive at {archive.url}  (v1: {archive.v1_url}  v2: {archive.v2_url})", flush=True)
    print(f"{len(data.images)} images, {len(data.datasets)} datasets, {len(data.studies)} studies", flush=True)
    for login, password in archive.credentials.items():
        print(f"  account {login} / {password}", flush=True)
    if archive.ca_file:
        print(f"CA bundle: {archive.ca_file} (export REQUESTS_CA_BUNDLE={archive.ca_file})", flush=True)
    print("Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        archive.stop()
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    import getpass

    from . import credentials
    from .api import IsicApi

    version = _api_version(args)
    token = getattr(args, "token", None) or os.environ.get("ISICARCHIVE_TOKEN")
    if token:
        if not args.user:
            raise QueryError("login --token needs --user NAME (the keyring label)")
        api = IsicApi(args.user, hostname=args.host, api_version=version, token=token)
        credentials.store_token(api.base_url, args.user, token)
        print(f"Token for {args.user} checked and stored in the keyring.")
        return EXIT_OK
    if version is None:  # v2 unless the host serves only v1
        version = IsicApi(hostname=args.host, progress=False).api_version
    if version == 2 and not os.environ.get("ISICARCHIVE_PASSWORD"):
        # the archive signs people in on its web page; the code is read from stdin (EOF: a clear error)
        api = IsicApi(hostname=args.host, api_version=2, progress=False)
        api.sign_in(args.user, store=False, ask=_read_code)
        assert api.username is not None and api.oauth_token is not None
        credentials.store_token(api.base_url, api.username, api.oauth_token)  # no keyring: a clear error
        print(f"Signed in as {api.username}; the token (renewed as it expires) is in the keyring. "
              f"Use IsicApi({api.username!r}, api_version=2).")
        return EXIT_OK
    if not args.user:
        raise QueryError("login needs --user NAME")
    password = os.environ.get("ISICARCHIVE_PASSWORD") or (getpass.getpass(f"Password for {args.user}: ")
                                                          if credentials.interactive() else None)
    if not password:
        raise AuthenticationError("no password: set ISICARCHIVE_PASSWORD or run interactively")
    api = IsicApi(args.user, password, hostname=args.host, api_version=version)
    credentials.store_password(api.base_url, args.user, password)
    print(f"Logged in as {args.user}; password stored in the keyring (service "
          f"{credentials.keyring_service(api.base_url)!r}).")
    return EXIT_OK


def _read_code(prompt: str) -> str:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise AuthenticationError("no code was entered (standard input is closed)")
    return line.strip()


def cmd_logout(args: argparse.Namespace) -> int:
    from . import credentials
    from .api import IsicApi

    if not args.user:
        raise QueryError("logout needs --user NAME")
    # revoking is a courtesy: one retry, so that logging out of an unreachable archive is quick
    api = IsicApi(hostname=args.host, api_version=_api_version(args), progress=False, retries=1)
    if api.api_version == 2:
        try:
            stored = credentials.load_token(api.base_url, args.user)
        except AuthenticationError:  # unreadable: nothing the archive could revoke
            stored = None
        if stored is not None:
            api.revoke(stored)
    removed = credentials.delete_password(api.base_url, args.user)
    print("Password or token removed from the keyring." if removed else "Nothing stored for that user.")
    return EXIT_OK


def cmd_images_select(args: argparse.Namespace) -> int:
    api = _api(args)
    selection = api.select_images(_criteria(args.criteria))
    _print(args, {"count": len(selection), "ids": selection.ids(), "names": selection.names()},
           lambda: "\n".join(selection.names()) + f"\n{len(selection)} images selected")
    return EXIT_OK


def _collections(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise QueryError(f"--collections takes collection ids separated by commas, not {text!r}") from None


def _searched(api: Any, args: argparse.Namespace) -> Any:
    if api.api_version != 2:
        raise QueryError("--search uses the current API's search language: add --api v2 "
                         "(with v1, select with field op value criteria)")
    return api.search_images(args.search, collections=_collections(args.collections), limit=args.limit)


def cmd_images_search(args: argparse.Namespace) -> int:
    api = _api(args)
    selection = _searched(api, args)
    _print(args, {"count": len(selection), "ids": selection.ids()},
           lambda: "\n".join(selection.ids()) + f"\n{len(selection)} images found")
    return EXIT_OK


def cmd_images_download(args: argparse.Namespace) -> int:
    api = _api(args)
    if args.search is not None:
        images: Any = _searched(api, args)
    elif args.select:
        images = api.select_images(_criteria(args.select))
    elif args.ids:
        images = args.ids
    elif getattr(args, "everything", False):
        images = list(api.cache_images().values())
    else:
        raise QueryError("say what to download: image ids/names, --select field op value ..., "
                         "or (v2) --search QUERY")
    if args.limit is not None and args.search is None:
        images = list(images)[:args.limit]
    if getattr(args, "commercial", False):  # export --commercial: no CC-BY-NC image is written
        from .licenses import keep

        images = keep(api.context.records_for(images), commercial=True)
    result = api.download_images(images, folder=args.out, workers=args.workers, superpixels=args.superpixels,
                                 missing="skip" if args.skip_missing else "raise")
    payload = {"downloaded": len(result.downloaded), "skipped": len(result.skipped), "failed": result.failed,
               "missing": result.missing, "bytes": result.bytes, "seconds": round(result.seconds, 3)}
    if result.missing:
        listed = ", ".join(result.missing[:20]) + (" …" if len(result.missing) > 20 else "")
        print(f"isicarchive: {len(result.missing)} images not found (withdrawn, or not visible to you), "
              f"left out: {listed}", file=sys.stderr)
    _print(args, payload, lambda: repr(result))
    return EXIT_OK if result.ok else EXIT_ERROR


def cmd_study(args: argparse.Namespace) -> int:
    api = _api(args)
    study = api.study(args.study)
    if args.action == "download":
        result = study.cache_imagedata()
        _print(args, {"downloaded": len(result.downloaded), "skipped": len(result.skipped),
                      "failed": result.failed}, lambda: repr(result))
        return EXIT_OK if result.ok else EXIT_ERROR
    if args.action == "annotations":
        annotations = study.load_annotations()
        payload = [{"id": a.id, "image": a.image_id, "user": a.user_id, "state": a.state,
                    "features": sorted(a.features)} for a in annotations]
        _print(args, payload, lambda: "\n".join(f"{a['id']} {a['state']:9} image {a['image']} "
                                                f"features: {', '.join(a['features']) or '-'}" for a in payload))
        return EXIT_OK
    # the number of annotations is the length of the study's annotation list (their markups are not loaded)
    count = len(api.context.backend.annotations(study.id)) if api.api_version == 1 else None
    summary = {"id": study.id, "name": study.name, "description": study.description, "images": study.image_names(),
               "features": study.feature_list(), "questions": [q.get("id") for q in study.questions],
               "annotations": count}
    _print(args, summary, lambda: str(study) + (f"\n  annotations: {count}" if count is not None else ""))
    return EXIT_OK


def cmd_metadata_download(args: argparse.Namespace) -> int:
    """The metadata CSV of a search (or collections), as ``isic metadata download`` writes it."""
    import io

    from .csvguard import write_csv
    from .export import metadata_rows

    api = _api(args)
    if api.api_version != 2:
        raise QueryError("metadata download is a feature of today's API: leave --api out, or write --api v2")
    collections = _collections(args.collections)
    try:
        text = api.context.backend.metadata_csv(args.search or "", collections)
    except AuthenticationError:
        raise
    except IsicError:  # no zip-download flow here: the same rows from the paged search
        columns, rows = metadata_rows(sorted(api.search_images(args.search or "", collections=collections).values(),
                                             key=lambda r: str(r.get("isic_id") or r.get("_id"))))
        buffer = io.StringIO()
        write_csv(buffer, columns, ([row.get(key) for key in columns] for row in rows))
        text = buffer.getvalue()
    if args.outfile and args.outfile != "-":
        Path(args.outfile).write_text(text, encoding="utf-8")
        print(f"metadata of {max(0, len(text.splitlines()) - 1)} images written to {args.outfile}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_dataset(args: argparse.Namespace) -> int:
    api = _api(args)
    if not args.dataset:
        found = api.dataset()
        _print(args, found, lambda: "\n".join(f"{d.get('_id', d.get('id'))}  {d.get('name')}" for d in found))
        return EXIT_OK
    dataset = api.dataset(args.dataset)
    payload = dataset.as_json() | {"access_list": dataset.access_list, "metadata": dataset.metadata}
    _print(args, payload, lambda: str(dataset))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import MARKER, Cache

    root = Path(args.cache_folder).expanduser() if args.cache_folder else user_cache_root()
    if not root.is_dir():
        raise NotFoundError(f"no cache folder at {root}")
    if args.action != "info" and not (root / MARKER).is_file():
        if not args.cache_folder:
            # the default cache holds one folder per archive: each of them (links not followed)
            folders = sorted(Path(folder) for folder, _, names in os.walk(root) if MARKER in names)
            codes = [cmd_cache(argparse.Namespace(**{**vars(args), "cache_folder": str(folder)})) for folder in folders]
            return max(codes, default=EXIT_OK)
        # clean and verify delete files: never in a folder this library did not make a cache
        raise CacheError(f"{root} is not a cache folder of this library (it has no {MARKER}): nothing removed")
    # links are not followed: a link inside the cache must not make clean delete what it points to
    files = [Path(folder, name) for folder, _, names in os.walk(root) for name in names
             if name != MARKER and not Path(folder, name).is_symlink()]
    if args.action == "info":
        kinds: dict[str, list[int]] = {}
        for path in files:
            kind = "sha256" if path.name.endswith(".sha256") else path.name.split("_", 1)[0]  # digests apart
            kinds.setdefault(kind, [0, 0])
            kinds[kind][0] += 1
            kinds[kind][1] += path.stat().st_size
        total = sum(v[1] for v in kinds.values())
        payload = {"folder": str(root), "files": len(files), "bytes": total,
                   "kinds": {k: {"files": v[0], "bytes": v[1]} for k, v in sorted(kinds.items())}}
        _print(args, payload, lambda: f"{root}: {len(files)} files, {total / 1e6:.1f} MB\n" +
               "\n".join(f"  {k:8} {v[0]:7d} files {v[1] / 1e6:9.1f} MB" for k, v in sorted(kinds.items())))
        return EXIT_OK
    if args.action == "clean":
        leftovers = [p for p in files if p.name.endswith((".tmp", ".part", ".lock"))]
        if args.all:
            leftovers = files
        for path in leftovers:
            path.unlink(missing_ok=True)
        _print(args, {"removed": len(leftovers)}, lambda: f"removed {len(leftovers)} files")
        return EXIT_OK
    # verify
    import warnings

    marker = root / MARKER
    base = json.loads(marker.read_text()).get("base_url", "") if marker.exists() else ""
    cache = Cache(root, base or "https://isic-archive.com/api/v1")
    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            ok = True
            if path.name.endswith(".json.gz"):
                ok = cache.read_json_gz(path) is not None
            elif path.suffix == ".npz":
                ok = cache.read_npz(path, "idx") is not None
            elif path.suffix in (".png", ".jpg", ".jpeg", ".tif"):
                ok = cache.read_image(path) is not None and _digest_holds(cache, path)
            if not ok:
                bad.append(str(path))
    _print(args, {"checked": len(files), "corrupt_removed": bad},
           lambda: f"checked {len(files)} files; {len(bad)} corrupt (removed)" + "".join(f"\n  {b}" for b in bad))
    return EXIT_OK if not bad else EXIT_ERROR


def _digest_holds(cache: Any, path: Path) -> bool:
    """False (and the file removed) when a cached file's bytes differ from the SHA-256 kept with it."""
    from .digests import sidecar_of, verify_cached_file

    if verify_cached_file(cache, path) is False:
        path.unlink(missing_ok=True)
        sidecar_of(path).unlink(missing_ok=True)
        return False
    return True


# -------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    def common_options(suppress: bool) -> argparse.ArgumentParser:
        # Options may stand before or after the command; after it, their defaults are
        # suppressed so that they do not overwrite what was given before it.
        common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS if suppress else None)
        def defaults(value: Any) -> dict[str, Any]:
            return {} if suppress else {"default": value}

        common.add_argument("--host", help="archive host (default: the official one; or $ISICARCHIVE_HOST)")
        common.add_argument("--api", choices=["v1", "v2"],
                            help="API version (default v2, today's; v1 where the host serves only the legacy API)",
                            **defaults(None))
        common.add_argument("--user", help="log in as this user (v1: password from keyring/netrc/prompt; "
                                           "v2: the token `login` stored)")
        common.add_argument("--cache-folder", help="cache folder (default: one per archive in the user cache "
                                                   "folder, ~/.cache/isicarchive on Linux, $XDG_CACHE_HOME respected)")
        common.add_argument("--json", action="store_true", help="machine-readable output", **defaults(False))
        common.add_argument("--quiet", action="store_true", help="no progress bars", **defaults(False))
        common.add_argument("--strict", action="store_true", help="an empty selection or search is an error "
                                                                  "(exit 2), not a warning", **defaults(False))
        return common

    common = common_options(suppress=True)

    parser = argparse.ArgumentParser(prog="isicarchive", description="Work with the ISIC Archive.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[common_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"isicarchive {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
        p.set_defaults(func=func)
        return p

    p = command("demo", cmd_demo, "run the library end to end against a local archive",
                "isicarchive demo --out ./isic-demo")
    p.add_argument("--out", default="isicarchive-demo", help="folder for the demo's cache and pictures")
    p.add_argument("--images", type=int, default=400, help="images in the local archive")

    p = command("serve", cmd_serve, "serve a local ISIC archive (v1 and v2) until Ctrl-C",
                "isicarchive serve --port 8000 --images 2000")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--bind", default="127.0.0.1", help="interface (loopback by default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--https", action="store_true", help="TLS with a throwaway CA")
    p.add_argument("--from-dump", help="serve real records from an imcache_…json.gz dump")
    p.add_argument("--limit", type=int, help="with --from-dump: only the first N records")
    p.add_argument("--datasets", type=int, default=4, help="datasets (the last one private)")
    p.add_argument("--image-bytes", type=int, nargs=2, metavar=("MIN", "MAX"), help="image file sizes")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    p.add_argument("--bandwidth", type=float, help="bytes per second per connection for response bodies")
    p.add_argument("--total-bandwidth", type=float, help="bytes per second for the bodies of all connections together")
    p.add_argument("--fault", action="append", metavar="KIND:PATTERN:P",
                   help="inject a fault, e.g. 429:/storage/:0.3 or status:/api/v2/images:0.1 (repeatable)")

    p = command("login", cmd_login, "v1: check your password and store it in the system keyring; v2: sign in "
                "through the archive's web page (OAuth, paste the code it shows) and keep the token in the keyring",
                "isicarchive login --user me@example.org   |   isicarchive --api v2 login   |   "
                "isicarchive --api v2 login --user me --token TOKEN")
    p.add_argument("--token", help="a v2 access token (or $ISICARCHIVE_TOKEN) instead of signing in")
    command("logout", cmd_logout, "remove your stored password or token (v2: the archive revokes it too)",
            "isicarchive logout --user me@example.org")

    images = sub.add_parser("images", help="select, search (v2) and download images")
    images_sub = images.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    p = images_sub.add_parser("select", help="select images by criteria (field op value ...)", parents=[common],
                              epilog="example:\n  isicarchive images select meta.clinical.diagnosis == melanoma "
                                     "meta.acquisition.pixelsX '>=' 2048",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("criteria", nargs="+", help="field op value triples; values are JSON when they parse")
    p.set_defaults(func=cmd_images_select)
    def add_search_options(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--search", "-s", required=required, metavar="QUERY",
                       help="v2: the archive's search language, e.g. 'diagnosis_3:Melanoma* AND age_approx:[50 TO 70]'")
        p.add_argument("--collections", "-c", metavar="IDS", help="v2: only these collections (ids, comma separated)")
        p.add_argument("--limit", "-l", type=int, help="at most this many images")

    def add_image_options(p: argparse.ArgumentParser, ids_help: str) -> None:
        """Which images (ids, criteria or a search) and how many transfers: download and export alike."""
        p.add_argument("ids", nargs="*", help=ids_help)
        p.add_argument("--select", nargs="+", metavar="WORD", help="criteria instead of ids")
        add_search_options(p, required=False)
        p.add_argument("--workers", type=int)
        p.add_argument("--skip-missing", action="store_true",
                       help="download the rest when some ids are unknown (withdrawn) and list those on stderr")

    p = images_sub.add_parser("search", help="v2: find images with the archive's search language",
                              parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n"
                                     "  isicarchive --api v2 images search -s 'age_approx:[50 TO 70]' -l 20\n"
                                     "  isicarchive --api v2 images search -s 'diagnosis_1:Malignant AND "
                                     "age_approx:[50 TO *] AND -sex:male'\n"
                                     "grammar: field:value terms; AND, OR, ( ); a leading '-' negates (no NOT); "
                                     "'*' alone = has a value; [a TO *] open ranges")
    add_search_options(p, required=True)
    p.set_defaults(func=cmd_images_search)
    p = images_sub.add_parser("download", help="download images (parallel, resumable)", parents=[common],
                              epilog="examples:\n  isicarchive images download ISIC_0000000 ISIC_0000001 --out imgs\n"
                                     "  isicarchive --api v2 images download -s 'diagnosis_3:Melanoma*' -l 50 "
                                     "--out melanomas",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_image_options(p, "image ids or names")
    p.add_argument("--out", help="folder (ISIC_….jpg + metadata.csv); default: the cache")
    p.add_argument("--superpixels", action="store_true", help="also superpixel PNGs (cache, v1)")
    p.set_defaults(func=cmd_images_download)
    p = images_sub.add_parser("export", help="write images + metadata.csv + attribution.txt + licenses/ to a "
                                             "folder, the official CLI's layout", parents=[common],
                              epilog="examples:\n  isicarchive --host file:///data/ISIC_2020_Training_JPEG.zip "
                                     "images export --to isic2020\n"
                                     "  isicarchive --api v2 images export -s 'diagnosis_1:Malignant' --to malignant",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_image_options(p, "image ids or names (default: every image)")
    p.add_argument("--to", required=True, dest="out", help="the folder")
    p.add_argument("--commercial", action="store_true", help="only images licensed for commercial use (CC-0, "
                                                             "CC-BY): no CC-BY-NC image is written")
    p.set_defaults(func=cmd_images_download, superpixels=False, everything=True)

    p = command("study", cmd_study, "show a study, download its images, or list its annotations",
                "isicarchive study annotations 'ISIC Annotation Study 0'")
    p.add_argument("action", choices=["show", "download", "annotations"])
    p.add_argument("study", help="study id or name")

    metadata = sub.add_parser("metadata", help="the metadata CSV of a search or collections (v2)")
    metadata_sub = metadata.add_subparsers(dest="metadata_command", metavar="ACTION", required=True)
    p = metadata_sub.add_parser("download", help="write the metadata CSV of a search (as `isic metadata download`)",
                                parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  isicarchive metadata download -s 'diagnosis_1:Malignant' "
                                       "-o meta.csv\n  isicarchive metadata download -c 70 | head")
    p.add_argument("--search", "-s", metavar="QUERY", help="the archive's search language (default: every image)")
    p.add_argument("--collections", "-c", metavar="IDS", help="only these collections (ids, comma separated)")
    p.add_argument("--outfile", "-o", metavar="FILE", help="the CSV file (default: standard output)")
    p.set_defaults(func=cmd_metadata_download)

    p = command("dataset", cmd_dataset, "list datasets or show one", "isicarchive dataset show HAM10000")
    p.add_argument("action", choices=["show", "list"])
    p.add_argument("dataset", nargs="?", help="dataset id or name")

    p = command("cache", cmd_cache, "inspect, verify or clean a cache folder",
                "isicarchive cache verify --cache-folder ~/isic-cache")
    p.add_argument("action", choices=["info", "verify", "clean"])
    p.add_argument("--all", action="store_true", help="with clean: remove every cached file")

    from .lockcli import add_lock_commands

    add_lock_commands(sub, common, add_search_options)
    return parser


#: how the library's messages name Python arguments, and the flags a command-line user writes instead
_FLAG_NAMES = (
    (re.compile(r"IsicApi\(cache_folder=\.\.\.\)|cache_folder=\.\.\."), "--cache-folder DIR"),
    (re.compile(r"(?<![\w-])cache_folder\b"), "--cache-folder"),
    (re.compile(r"download_images\(folder=\.\.\.\)|(?<![\w-])folder=\.\.\."), "--out DIR"),
    (re.compile(r"IsicApi\(api_version=2\)|api_version=2"), "--api v2"),
    (re.compile(r"IsicApi\(api_version=1\)|api_version=1"), "--api v1"),
    (re.compile(r"raise `?retries`?|raise `deadline`"), "retry later"),
    (re.compile(r"missing='skip' downloads the rest and lists these in the result's \.missing"),
     "--skip-missing downloads the rest and lists these"),
    (re.compile(r"Log in \(IsicApi\(username\)\)"), "Log in (--user NAME)"),
)


def _for_the_command_line(message: str) -> str:
    """A library message with its Python argument names replaced by the CLI's flags."""
    for pattern, flag in _FLAG_NAMES:
        message = pattern.sub(flag, message)
    return message


def _fail(message: str, code: int) -> int:
    print(f"isicarchive: {_for_the_command_line(message)}", file=sys.stderr)
    return code


def _quiet_broken_pipe() -> None:
    """The reader (``| head``) has gone: what is left to print goes nowhere, without a traceback at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (tests capturing it)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point.

    Every failure ends with one line on stderr and an exit code (module
    docstring), never a traceback: library errors, a missing extra (the line
    names it), a file the system refuses, an interrupt, a closed pipe.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    def one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"isicarchive: warning: {_for_the_command_line(str(message))}", file=sys.stderr)

    warnings.showwarning = one_line  # the library's warnings without a source line under them
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_OK
    except IsicError as exc:
        return _fail(str(exc), next(code for kind, code in _EXIT_CODES if isinstance(exc, kind)))
    except ImportError as exc:  # an optional dependency: the line names the extra that installs it
        from .extras import missing_message

        return _fail(missing_message(exc), EXIT_ERROR)
    except OSError as exc:  # permissions, a full disk, a missing file: what and where, in one line
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

