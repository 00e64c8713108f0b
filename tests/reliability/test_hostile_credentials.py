"""Secrets stay with their origin: keyring entries by (scheme, host, port), no secret query value in
our log lines, no signed address fetched in clear text from an https session."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from hostile import Exchange, serving  # type: ignore[import-not-found]
from reliability_report import record  # type: ignore[import-not-found]

from isicarchive import AuthenticationError, IsicApi, IsicError, credentials
from isicarchive.transport import RetryPolicy, Transport


def quick_api(url: str, *args: object, **kw: object) -> IsicApi:
    kw.setdefault("api_version", 1)  # the legacy API (passwords) unless a test asks for v2
    return IsicApi(*args, hostname=url, progress=False, retries=1, backoff=0.001, timeout=(2.0, 2.0), **kw)  # type: ignore[arg-type]


def girder(exchange: Exchange) -> None:
    """A v1 archive that accepts any Basic password (and so shows which one it was sent)."""
    if exchange.request.path.endswith("/user/authentication"):
        exchange.send(200, json.dumps({"authToken": {"token": "T"}, "user": {"login": "alice"}}).encode())
    else:
        exchange.send(200, b'{"login": "alice"}')


def test_a_password_kept_for_one_port_is_not_sent_to_another(memory_keyring: object) -> None:
    with serving(girder) as service_a, serving(girder) as service_b:
        credentials.store_password(service_a.url + "/api/v1", "alice", "PASSWORD-OF-A")
        with pytest.raises(AuthenticationError, match="No password"):
            quick_api(service_b.url, "alice")
        quick_api(service_a.url, "alice")  # its own service still finds it
        sent_b = [r.headers.get("Authorization", "") for r in service_b.requests]
        sent_a = [r.headers.get("Authorization", "") for r in service_a.requests]
    secret = base64.b64encode(b"alice:PASSWORD-OF-A").decode()
    assert not any(secret in header for header in sent_b)
    assert any(secret in header for header in sent_a)
    record("secrets", "a password in the keyring for 127.0.0.1:A", "a session with 127.0.0.1:B, same user",
           "not found there (keyring entries keyed by scheme, host and port): AuthenticationError, B never "
           "sees it")


def test_host_only_entries_of_earlier_versions(memory_keyring: object) -> None:
    ring = memory_keyring.store  # type: ignore[attr-defined]
    ring[("isicarchive:127.0.0.1", "alice")] = "OLD-LOCAL-PASSWORD"
    ring[("isicarchive:isic.example.org", "alice")] = "OLD-REAL-PASSWORD"
    assert credentials.has_password("http://127.0.0.1:8123/api/v1", "alice") is False
    found = credentials.resolve_password("https://isic.example.org/api/v1", "alice")
    assert found == ("OLD-REAL-PASSWORD", "keyring")
    assert ring[("isicarchive:https://isic.example.org:443", "alice")] == "OLD-REAL-PASSWORD"  # copied
    assert credentials.has_password("http://isic.example.org/api/v1", "alice") is False  # not in clear text
    assert credentials.has_password("https://isic.example.org:8443/api/v1", "alice") is False
    record("secrets", "a keyring entry of an earlier version (host only)", "sessions on other ports or http",
           "read only for https on port 443 (copied under the origin); never for 127.0.0.1:port or http")


def test_no_log_line_of_ours_carries_a_secret_query_value(caplog: pytest.LogCaptureFixture) -> None:
    def answer(exchange: Exchange) -> None:
        if "zip-download/url" in exchange.request.path:
            exchange.send(200, json.dumps("http://zip.example/?zsid=ZSID-SECRET").encode())
        else:
            exchange.send(200, b"isic_id,attribution\nISIC_0000001,x\n", content_type="text/csv")

    with serving(answer) as server:
        api = quick_api(server.url, api_version=2, debug=True)
        with caplog.at_level(logging.DEBUG):
            text = api._backend.metadata_csv("")
    assert text.startswith("isic_id")
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("isicarchive")]
    assert any("metadata-file" in line and "token=[hidden]" in line for line in ours), ours
    assert "ZSID-SECRET" not in caplog.text
    record("secrets", "debug=True, the archive's metadata file", "a signed token in the query",
           "our log line shows token=[hidden]")


def test_an_https_session_refuses_a_plain_http_file_address() -> None:
    with serving(lambda exchange: exchange.send(200, b"\xff\xd8\xff jpeg", content_type="image/jpeg")) as storage:
        http = Transport("https://127.0.0.1:9/api/v2", timeout=(2.0, 2.0),
                         policy=RetryPolicy(retries=1, backoff=0.001, body_retries=1), deadline=5)
        with pytest.raises(IsicError, match="plain http address from an https archive") as caught:
            http.get_bytes(f"{storage.url}/bucket/ISIC_0000001.jpg?X-Amz-Signature=SIGNATURE-SECRET")
        assert storage.requests == []
    assert "SIGNATURE-SECRET" not in str(caught.value)
    record("secrets", "an https session, a record's file URL", "plain http:// with a signed query",
           "ArchiveResponseError before any request: the signature never travels in clear text")
