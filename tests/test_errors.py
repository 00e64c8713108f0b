"""The exception tree: one module, HTTP errors carrying status and address."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import isicarchive
from isicarchive import errors
from isicarchive.testing import LocalArchive
from tests.conftest import make_api


def _package_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(isicarchive.__path__, "isicarchive."):
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra (dask, torch, ...) is not installed
            continue
        names.append(info.name)
    return names


def test_every_isic_error_lives_in_errors_module() -> None:
    defined = set()
    for name in _package_modules():
        for _, value in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(value, isicarchive.IsicError) and value.__module__.startswith("isicarchive"):
                defined.add((value.__name__, value.__module__))
    assert {module for _, module in defined} == {"isicarchive.errors"}
    names = {name for name, _ in defined}
    assert {"ArchiveResponseError", "LayoutError", "ImageTaskError", "CacheError"} <= names
    # exported at the top, and drawn in the tree of the module's docstring
    for name in names:
        assert getattr(isicarchive, name) is getattr(errors, name)
        assert f"── {name}" in (errors.__doc__ or "") or name == "IsicError"


def test_old_import_places_still_work() -> None:
    from isicarchive.disk.layouts import LayoutError
    from isicarchive.scaleout import ImageTaskError
    from isicarchive.transport import ArchiveResponseError

    assert (LayoutError, ImageTaskError, ArchiveResponseError) == (
        errors.LayoutError, errors.ImageTaskError, errors.ArchiveResponseError)


@pytest.mark.parametrize("version", [1, 2])
def test_http_errors_carry_status_and_address(archive: LocalArchive, version: int) -> None:
    api = make_api(archive, api_version=version)
    with pytest.raises(errors.NotFoundError) as caught:
        api.image("ISIC_9999999" if version == 2 else "5" * 24)
    assert caught.value.status == (404 if version == 2 else 400)  # Girder answers 400 for an unknown id
    assert caught.value.url is not None and caught.value.url.startswith(archive.url)
    assert "?" not in caught.value.url
    again = pickle.loads(pickle.dumps(caught.value))  # crosses process boundaries intact
    assert (again.status, again.url, str(again)) == (caught.value.status, caught.value.url, str(caught.value))


def test_errors_without_an_answer_have_no_status() -> None:
    assert errors.CacheError("x").status is None and errors.CacheError("x").url is None
    assert errors.ArchiveResponseError("HTTP 502", 502, url="https://a/b").status == 502
