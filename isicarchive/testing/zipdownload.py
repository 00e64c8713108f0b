"""The zip-download flow of the local archive's v2 API (``isic/zip_download/api.py``).

``POST zip-download/url/`` with ``{query, collections}`` answers (as a JSON
string) the zip service's URL carrying a signed token that remembers the
caller and the search for a day.  With that token: ``file-listing/`` (what
the zip would hold: every image, ``metadata.csv``, ``attribution.txt``,
``licenses/<L>.txt``), ``metadata-file/`` (the server-built metadata CSV:
``isic_id, attribution, copyright_license`` and every metadata column in use,
sorted; rows by ISIC id; cells starting ``= - + @`` escaped with a tab) and
``attribution-file/``.  ``license-file/<L>/`` is public.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .server import ApiError, Request, Response

if TYPE_CHECKING:
    from .server import LocalArchive

__all__ = ["LICENSES", "attributions", "metadata_csv", "register"]

TOKEN_LIFETIME = 86400.0
#: metadata that the archive keeps on the image, not in its metadata columns
_NOT_IN_CSV = frozenset({"pixels_x", "pixels_y"})
_FORMULA_STARTS = ("=", "-", "+", "@")


def _licence(title: str, grant: str) -> str:
    # the shape of the Creative Commons legal code the archive serves: a title, ruled sections
    rule = "=" * 71
    return (f"{title}\n\n{rule}\n\nCreative Commons Corporation (\"Creative Commons\") is not a law firm and "
            "does not provide legal services or legal advice.\n\n"
            f"{rule}\n\nSection 1 -- Definitions.\n\n  a. Licensed Material means the artistic or literary work, "
            "database, or other material to which the Licensor applied this Public License.\n\n"
            f"Section 2 -- Scope.\n\n  a. License grant. {grant}\n\n{rule}\n")


LICENSES = {
    "CC-0": _licence("CC0 1.0 Universal", "The person who associated a work with this deed has dedicated the "
                     "work to the public domain by waiving all of his or her rights to the work worldwide."),
    "CC-BY": _licence("Attribution 4.0 International", "You may reproduce and share the Licensed Material, "
                      "in whole or in part, provided you give appropriate credit."),
    "CC-BY-NC": _licence("Attribution-NonCommercial 4.0 International", "You may reproduce and share the "
                         "Licensed Material, in whole or in part, for NonCommercial purposes only, giving "
                         "appropriate credit."),
}


def attributions(values: Iterable[str]) -> list[str]:
    """Attributions by number of images (most first), then name; "Anonymous" last (as the archive)."""
    ordered = sorted(Counter(values).most_common(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, _ in sorted(ordered, key=lambda kv: kv[0] == "Anonymous")]


def _escaped(value: Any) -> Any:
    return "\t" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def metadata_csv(records: list[dict], attribution_of: Callable[[dict], str]) -> str:
    """The archive's own metadata CSV for v2 search records."""
    def flat(record: dict) -> dict[str, Any]:
        row = {"isic_id": record["isic_id"], "attribution": attribution_of(record),
               "copyright_license": record["copyright_license"]}
        for section in record["metadata"].values():
            row.update({k: v for k, v in section.items() if k not in _NOT_IN_CSV})
        return row

    rows = sorted((flat(r) for r in records), key=lambda row: row["isic_id"])
    used = sorted({key for row in rows for key in row} - {"isic_id", "attribution", "copyright_license"})
    out = io.StringIO()
    writer = csv.DictWriter(out, ["isic_id", "attribution", "copyright_license", *used])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _escaped(v) for k, v in row.items()})
    return out.getvalue()


def register(archive: LocalArchive, add: Callable[..., None], searched: Callable[[Request], list[dict]]) -> None:
    data = archive.data
    secret = hashlib.sha256(f"zip:{data.seed}:{id(archive)}".encode()).digest()

    def sign(payload: dict) -> str:
        body = base64.urlsafe_b64encode(json.dumps({**payload, "t": time.time()}).encode()).decode().rstrip("=")
        mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}:{mac}"

    def unsign(req: Request) -> dict:
        token = req.arg("token") or ""
        body, _, mac = token.rpartition(":")
        if not body or not hmac.compare_digest(mac, hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]):
            raise ApiError(401, "Unauthorized")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if time.time() - payload["t"] > TOKEN_LIFETIME:
            raise ApiError(401, "Unauthorized")
        return payload

    def as_search(req: Request, payload: dict) -> Request:
        """The search the token remembers, asked as the user it remembers."""
        params = {"query": payload.get("query") or ""}
        if payload.get("collections"):
            params["collections"] = ",".join(str(c) for c in payload["collections"])
        user = data.users_by_id.get(payload.get("user") or "")
        return Request("GET", req.path, req.route, req.api, params, req.headers, b"", user, req.base_url, req.data)

    def zip_url(req: Request) -> Response:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"query", "collections"}:
            raise ApiError(422, "body", payload={"detail": [{"type": "extra_forbidden", "loc": ["body", "payload"],
                                                             "msg": "Extra inputs are not permitted"}]})
        collections = body.get("collections") or None
        token = sign({"user": req.user.id if req.user else None, "query": body.get("query"),
                      "collections": collections})
        return Response.json(f"{req.base_url}/zip/download?zsid={token}")

    def file_listing(req: Request) -> Response:
        payload = unsign(req)
        images = searched(as_search(req, payload))
        expires, key = archive.storage_terms()
        files = []
        for image in images:
            record = data.v2_record(image, req.base_url, expires, key)
            files.append({"url": record["files"]["full"]["url"], "zipPath": f"{image['name']}.jpg"})
        token = req.arg("token")
        files += [{"url": f"{req.base_url}/api/v2/zip-download/metadata-file/?token={token}",
                   "zipPath": "metadata.csv"},
                  {"url": f"{req.base_url}/api/v2/zip-download/attribution-file/?token={token}",
                   "zipPath": "attribution.txt"}]
        licences = sorted({data.search_record(im)["copyright_license"] for im in images})
        files += [{"url": f"{req.base_url}/api/v2/zip-download/license-file/{lic}/", "zipPath": f"licenses/{lic}.txt"}
                  for lic in licences]
        name = f"{images[0]['name']}.zip" if len(images) == 1 else "ISIC-images.zip"
        return Response.json({"suggestedFilename": name, "files": files})

    def attribution_of(image: dict) -> str:
        return (data.datasets_by_id.get(image["dataset"]["_id"]) or {}).get("attribution", "Anonymous")

    def metadata_file(req: Request) -> Response:
        images = searched(as_search(req, unsign(req)))
        by_id = {im["name"]: im for im in images}
        text = metadata_csv([data.search_record(im) for im in images],
                            lambda record: attribution_of(by_id[record["isic_id"]]))
        return Response(200, text.encode(), "text/csv")

    def attribution_file(req: Request) -> Response:
        images = searched(as_search(req, unsign(req)))
        return Response(200, "\n\n".join(attributions(attribution_of(im) for im in images)).encode(), "text/plain")

    def license_file(req: Request, license: str) -> Response:
        if license not in LICENSES:
            raise ApiError(404, "Not Found")
        return Response(200, LICENSES[license].encode(), "text/plain")

    add("POST", r"zip-download/url", zip_url)
    add("GET", r"zip-download/file-listing", file_listing)
    add("GET", r"zip-download/metadata-file", metadata_file)
    add("GET", r"zip-download/attribution-file", attribution_file)
    add("GET", r"zip-download/license-file/(?P<license>[A-Z0-9-]+)", license_file)
