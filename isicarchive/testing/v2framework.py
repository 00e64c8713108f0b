"""What the real archive's framework does around its v2 views, for the local archive's v2 routes.

The archive (``ImageMarkup/isic``) runs django-ninja 1.4.5 on Django 5.2
with the middleware of ``isic/settings/base.py`` (``MIDDLEWARE``):
django-cors-headers 4.9.0 (``CORS_ALLOW_ALL_ORIGINS = True``, credentials
off), ``SecurityMiddleware``, ``GZipMiddleware``, ``SessionMiddleware``,
``CommonMiddleware`` (``APPEND_SLASH``) and ``XFrameOptionsMiddleware``.
Each function here names the code it follows; the local archive's server
applies them to every answer under ``/api/v2`` and ``/oauth``.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import re
import secrets
from typing import TYPE_CHECKING, Any

from .. import search as _search

if TYPE_CHECKING:  # server imports the generator, which renders values with this module's helpers
    from .server import Request, Response

__all__ = ["DJANGO_JSON_RESPONSE", "decimal_text", "django_datetime", "django_json", "django_view_not_allowed",
           "finish", "json_object_body", "not_allowed", "preflight"]

#: corsheaders/defaults.py ``default_headers`` and ``default_methods``; conf.py ``CORS_PREFLIGHT_MAX_AGE``
CORS_ALLOW_HEADERS = "accept, authorization, content-type, user-agent, x-csrftoken, x-requested-with"
CORS_ALLOW_METHODS = "DELETE, GET, OPTIONS, PATCH, POST, PUT"
CORS_MAX_AGE = "86400"
#: django/middleware/gzip.py: shorter bodies are not worth compressing; ``re_accepts_gzip``
GZIP_MINIMUM = 200
_ACCEPTS_GZIP = re.compile(r"\bgzip\b")


def django_datetime(value: str | _dt.datetime) -> str:
    """A datetime as ``DjangoJSONEncoder.default`` writes it (django/core/serializers/json.py).

    ISO 8601 with milliseconds (microseconds cut, not rounded) only when
    there are any, and ``Z`` for UTC: ``2015-01-01T00:10:00.123Z``,
    ``2015-01-01T00:00:00Z``.
    """
    moment = _dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    text = moment.isoformat()
    if moment.microsecond:
        text = text[:23] + text[26:]
    if text.endswith("+00:00"):
        text = text.removesuffix("+00:00") + "Z"
    return text


def decimal_text(value: Any) -> str | None:
    """A number as the archive's ``DecimalField(max_digits=5, decimal_places=2)`` comes back in JSON.

    The field reads back as ``Decimal('24.10')`` (always two places), and
    ``DjangoJSONEncoder`` writes a Decimal as ``str(o)``: ``"24.10"``.
    """
    return _search.decimal_text(value)


def json_object_body(req: Request) -> dict[str, Any]:
    """The JSON object a route's ``payload: Schema`` parameter receives, or django-ninja's 422.

    Bad JSON fails as ninja's parser reports it (``loc ["body", 0]``); JSON that is not an object
    fails pydantic's model validation of the parameter (``loc ["body", "payload"]``).
    """
    import json

    from .server import ApiError

    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        raise ApiError(422, "bad JSON", payload={"detail": [{"type": "json_invalid", "loc": ["body", 0],
                                                             "msg": "JSON decode error"}]}) from None
    if not isinstance(body, dict):
        raise ApiError(422, "bad body", payload={"detail": [{"type": "model_attributes_type",
                                                             "loc": ["body", "payload"],
                                                             "msg": "Input should be a valid dictionary"}]})
    return body


def django_json(payload: Any, status: int = 200) -> Response:
    """A view's own ``JsonResponse`` (quick find, populate-from-list, the OpenAPI document): Django's
    content type, ``application/json`` without a charset."""
    from .server import Response

    response = Response.json(payload, status)
    response.headers[DJANGO_JSON_RESPONSE] = "1"
    return response


def preflight(method: str, headers: Any) -> Response | None:
    """``CorsMiddleware.check_preflight``: an ``OPTIONS`` with ``Access-Control-Request-Method`` is
    answered before any view (200, empty, Django's default content type), on every path."""
    from .server import Response

    if method == "OPTIONS" and headers.get("Access-Control-Request-Method") is not None:
        return Response(200, b"", "text/html; charset=utf-8")
    return None


def not_allowed(methods: str) -> Response:
    """``PathView._not_allowed`` (ninja/operation.py): a method the path has no operation for, HEAD and a
    plain OPTIONS on a GET route included (ninja adds neither), is Django's ``HttpResponseNotAllowed``."""
    from .server import Response

    return Response(405, b"Method not allowed", "text/html; charset=utf-8", {"Allow": methods})


def django_view_not_allowed(method: str, methods: set[str]) -> Response:
    """A Django class-based view (django-oauth-toolkit's ``oauth/`` views): ``View.options`` answers OPTIONS
    with 200 and ``Allow`` (HEAD wherever GET is), another method is an empty ``HttpResponseNotAllowed``."""
    from .server import Response

    allowed = [name for name in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
               if name in methods or name == "OPTIONS" or (name == "HEAD" and "GET" in methods)]
    status = 200 if method == "OPTIONS" else 405
    return Response(status, b"", "text/html; charset=utf-8", {"Allow": ", ".join(allowed)})


def _vary(response: Response, *names: str) -> None:
    """``patch_vary_headers`` (django/utils/cache.py): append, keep the order, no duplicates."""
    present = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
    known = {v.lower() for v in present}
    present += [n for n in names if n.lower() not in known]
    response.headers["Vary"] = ", ".join(present)


#: a marker a route sets (and this module removes) on a view's own Django ``JsonResponse``
DJANGO_JSON_RESPONSE = "X-Local-Django-JsonResponse"


def finish(method: str, headers: Any, response: Response, *, api_view: bool, ninja: bool = True,
           gzip: bool = True) -> Response:
    """The archive's middleware on the way out, innermost first.

    ``api_view``: a view answered (django-ninja's authenticators read the
    session, so ``SessionMiddleware`` adds ``Vary: Cookie``); False for
    Django's own answers (a routing 404, the slash redirect).  ``ninja``:
    the view is django-ninja's, whose renderer's content type is
    ``application/json; charset=utf-8`` (``NinjaAPI.get_content_type``);
    a view returning Django's own ``JsonResponse`` sends ``application/json``.
    """
    own_json = response.headers.pop(DJANGO_JSON_RESPONSE, None) is not None
    if ninja and api_view and response.content_type == "application/json" and not own_json:
        response.content_type = "application/json; charset=utf-8"
    # XFrameOptionsMiddleware (X_FRAME_OPTIONS unset: DENY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    if api_view:
        _vary(response, "Cookie")
    if gzip:
        _gzip(method, headers, response)
    # SecurityMiddleware with Django's defaults (nosniff, same-origin referrer and opener policy)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    _cors(method, headers, response)
    return response


def _gzip(method: str, headers: Any, response: Response) -> None:
    """``GZipMiddleware.process_response`` (django/middleware/gzip.py)."""
    if len(response.body) < GZIP_MINIMUM or "Content-Encoding" in response.headers or response.ranged:
        return
    _vary(response, "Accept-Encoding")
    if not _ACCEPTS_GZIP.search(headers.get("Accept-Encoding") or ""):
        return
    compressed = _compress_string(response.body)
    if len(compressed) >= len(response.body):
        return
    response.body = compressed
    etag = response.headers.get("ETag")
    if etag and etag.startswith('"'):
        response.headers["ETag"] = "W/" + etag
    response.headers["Content-Encoding"] = "gzip"


def _compress_string(data: bytes) -> bytes:
    """``compress_string(max_random_bytes=100)`` (django/utils/text.py): level 6, mtime 0, and a file name
    of 0-99 random "a"s in the header (Heal-the-BREACH: the length varies from answer to answer)."""
    compressed = gzip.compress(data, compresslevel=6, mtime=0)
    header = bytearray(compressed[:10])
    header[3] = gzip.FNAME  # type: ignore[attr-defined]
    return bytes(header) + b"a" * secrets.randbelow(100) + b"\x00" + compressed[10:]


def _cors(method: str, headers: Any, response: Response) -> None:
    """``CorsMiddleware.add_response_headers`` with ``CORS_ALLOW_ALL_ORIGINS = True``, no credentials."""
    _vary(response, "origin")
    origin = headers.get("Origin")
    if not origin:
        return
    response.headers["access-control-allow-origin"] = "*"
    if method == "OPTIONS":
        response.headers["access-control-allow-headers"] = CORS_ALLOW_HEADERS
        response.headers["access-control-allow-methods"] = CORS_ALLOW_METHODS
        response.headers["access-control-max-age"] = CORS_MAX_AGE
