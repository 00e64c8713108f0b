"""``isicarchive lock create | verify | materialise | audit``: lock files from the command line.

Kept apart from :mod:`isicarchive.cli` (which adds them with one call) so
that the two change independently.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import QueryError

__all__ = ["add_lock_commands"]

EXAMPLES = """examples:
  isicarchive --api v2 lock create melanoma.lock.json.gz -s 'diagnosis_3:Melanoma*' --split train=0.8,test=0.2
  isicarchive --api v2 lock create paper.lock.json.gz --doi 10.34970/151324
  isicarchive lock materialise melanoma.lock.json.gz --to ./melanoma-images
  isicarchive lock verify melanoma.lock.json.gz --folder ./melanoma-images
  isicarchive lock audit melanoma.lock.json.gz
exit codes: verify 0 no drift, 1 drift; materialise 0 every hash matched, 1 not; audit 0 no findings, 1 some"""


def _fractions(text: str) -> dict[str, float]:
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise QueryError(f"--split takes name=fraction pairs such as train=0.8,test=0.2, not {text!r}") from None


def cmd_lock(args: argparse.Namespace) -> int:
    from . import cli
    from .lockfile import materialise, verify_lock

    if args.lock_command == "create":
        api = cli._api(args)
        if args.doi:
            selection: Any = api.collection(doi=args.doi)
        elif args.search is not None:
            selection = cli._searched(api, args)
        elif args.select:
            selection = api.select_images(cli._criteria(args.select))
        elif args.ids:
            from .lockfile import Origin
            from .selection import Selection
            from .transport import record_id

            selection = Selection({record_id(r): r for r in api.context.records_for(args.ids)}, session=api)
            selection.origin = Origin(api)
        else:
            raise QueryError("say what to lock: image ids, --select field op value ..., (v2) --search QUERY "
                             "or --doi DOI")
        if args.commercial:
            selection = selection.licensed(commercial=True)
        target = selection.split(_fractions(args.split), by=args.by, seed=args.seed) if args.split else selection
        lock = target.lock(args.out)
        cli._print(args, {"lock": str(args.out), "images": len(lock), "bytes": Path(args.out).stat().st_size},
                   lambda: f"{lock!r} written to {args.out} ({Path(args.out).stat().st_size} bytes)")
        return cli.EXIT_OK
    if args.lock_command == "audit":
        from .leakage import audit
        from .lockfile import read_lock

        found = audit(read_lock(args.lock))
        cli._print(args, found.as_dict(), lambda: str(found))
        return cli.EXIT_OK if found.ok else cli.EXIT_ERROR
    session = cli._api(args) if args.host else None
    if args.lock_command == "verify":
        report = verify_lock(args.lock, api=session, folder=args.folder, deep=args.deep)
        cli._print(args, report.as_dict(), lambda: str(report))
        return cli.EXIT_OK if report.ok else cli.EXIT_ERROR
    result = materialise(args.lock, args.out, api=session, workers=args.workers,
                         progress=None if session is not None else not (args.json or args.quiet))
    payload = {"folder": str(result.folder), "verified": len(result.verified), "mismatched": result.mismatched,
               "missing": result.missing, "failed": result.failed}
    cli._print(args, payload, lambda: repr(result) + "".join(
        f"\n  {k}: SHA-256 differs from the lock" for k in result.mismatched) + "".join(
        f"\n  {k}: no longer in the archive" for k in result.missing) + "".join(
        f"\n  {k}: {why}" for k, why in result.failed.items()))
    return cli.EXIT_OK if result.ok else cli.EXIT_ERROR


def add_lock_commands(sub: Any, common: argparse.ArgumentParser,
                      add_search_options: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    """Add ``lock create | verify | materialise`` to the command line's subcommands."""
    lock = sub.add_parser("lock", help="lock files: pin a selection (ids, sizes, SHA-256, licences), fetch it "
                                       "again elsewhere, check it against today's archive",
                          epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = lock.add_subparsers(dest="lock_command", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help, parents=[common], epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=cmd_lock)
        return p

    p = action("create", "write a lock file of images (ids, criteria, a search or a DOI'd collection)")
    p.add_argument("out", help="the lock file (gzipped when it ends in .gz)")
    p.add_argument("ids", nargs="*", help="image ids or names")
    p.add_argument("--select", nargs="+", metavar="WORD", help="criteria instead of ids")
    add_search_options(p, False)
    p.add_argument("--doi", help="v2: the images of the collection with this DOI")
    p.add_argument("--split", metavar="PARTS", help="split first, e.g. train=0.8,test=0.2 (one lock, every part)")
    p.add_argument("--by", default="patient_id", help="with --split: keep these groups whole (default patient_id)")
    p.add_argument("--seed", type=int, default=0, help="with --split: the split's seed")
    p.add_argument("--commercial", action="store_true", help="only images licensed for commercial use "
                                                             "(CC-0, CC-BY)")
    p = action("verify", "report how today's archive differs from a lock (and a folder from its SHA-256)")
    p.add_argument("lock")
    p.add_argument("--folder", help="also check the files of a folder `lock materialise` filled")
    p.add_argument("--deep", action="store_true", help="compare every image's SHA-256, not only its size "
                                                       "(fetches what is not cached)")
    p = action("audit", "the leakage audit of a split's lock: patients, lesions and identical files in several "
                        "parts (offline: the lock holds them)")
    p.add_argument("lock")
    p = action("materialise", "fetch exactly a lock's images into a folder, checking every SHA-256")
    p.add_argument("lock")
    p.add_argument("--to", required=True, dest="out", help="the folder")
    p.add_argument("--workers", type=int)
