"""Fixtures shared by every test directory."""

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """No CRYPTODESK_* variable from the developer's shell, and an empty working directory
    (so no stray cryptodesk.toml is read)."""
    for key in list(os.environ):
        if key.startswith("CRYPTODESK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
