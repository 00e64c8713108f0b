"""A keyring backend stored in a JSON file, so that CLI subprocesses in the tests share one
without touching the machine's real keyring.  Selected with
PYTHON_KEYRING_BACKEND=file_keyring.FileKeyring and ISICARCHIVE_TEST_KEYRING=<path>."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keyring.backend
from keyring.errors import PasswordDeleteError


class FileKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def _path(self) -> Path:
        return Path(os.environ["ISICARCHIVE_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        return json.loads(self._path.read_text()) if self._path.exists() else {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}|{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}|{username}"] = password
        self._path.write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if f"{service}|{username}" not in data:
            raise PasswordDeleteError("not stored")
        del data[f"{service}|{username}"]
        self._path.write_text(json.dumps(data))
