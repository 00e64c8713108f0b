"""The session context: the one named interface between a session and the modules working for it."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import isicarchive
from isicarchive import IsicApi
from isicarchive.context import SessionContext
from isicarchive.testing import LocalArchive
from tests.conftest import make_api

PACKAGE = Path(isicarchive.__file__).parent


def _private_names_of_the_facade(api: IsicApi) -> set[str]:
    names = {n for n in vars(api) if n.startswith("_")}
    names |= {n for n in vars(IsicApi) if n.startswith("_") and not n.endswith("__")}
    return names - {"_repr_html_"}  # the notebook protocol, public by convention


def test_no_module_but_the_facade_reads_its_private_attributes(archive: LocalArchive) -> None:
    private = _private_names_of_the_facade(make_api(archive))
    assert {"_store", "_backend", "_image_object", "_http", "_cache"} <= private
    # parsing the whole package costs a second: a source is parsed only where one of the names is still written
    # after taking out "self._name" and "cls._name" (what the check lets pass anyway)
    names = "|".join(sorted(map(re.escape, private)))
    anywhere = re.compile(rf"\b(?:{names})\b")
    own = re.compile(rf"(?<![\w.])(?:self|cls)\.(?:{names})\b")
    found = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if path == PACKAGE / "api.py" or not anywhere.search(own.sub("", source)):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and node.attr in private and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert found == []


def test_the_context_names_the_sessions_parts(archive: LocalArchive, tmp_path: Path) -> None:
    api = make_api(archive, cache_folder=tmp_path)
    context = api.context
    assert isinstance(context, SessionContext)
    assert (context.base_url, context.api_version, context.workers, context.progress) == (
        api.base_url, api.api_version, api.workers, api.progress)
    assert context.cache is not None and context.cache.root == Path(api.cache_folder or "")
    assert context.store.cache is context.cache and context.store.backend is context.backend
    assert not context.local and api.layout is None and api.problems == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.workers = 3  # type: ignore[misc]
    record = next(iter(api.cache_images().values()))
    image = context.image_object(record)
    assert api.image(image.name) is image  # the session's own object, handed out again
    assert context.store.image_pixels(record).ndim == 3


def test_a_login_gives_a_new_context_with_its_own_cache_layer(archive: LocalArchive, tmp_path: Path) -> None:
    api = make_api(archive, cache_folder=tmp_path)
    anonymous = api.context
    api.login("alice", archive.credentials["alice"])
    assert api.context is not anonymous
    assert api.context.cache is not None and anonymous.cache is not None
    assert api.context.cache.layer != anonymous.cache.layer
    assert api.context.store.cache is api.context.cache
    assert "alice" not in repr(api.context) and archive.credentials["alice"] not in repr(api.context)
