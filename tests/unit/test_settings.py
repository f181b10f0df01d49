"""Settings come from the environment, with defaults for the stack `make up` starts."""

from __future__ import annotations

import pytest

from shared import settings


def test_projector_fetch_wait_defaults_to_50_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MB_PROJECTOR_FETCH_WAIT_MS", raising=False)
    assert settings.load().projector_fetch_wait_ms == 50


def test_projector_fetch_wait_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MB_PROJECTOR_FETCH_WAIT_MS", "5")
    assert settings.load().projector_fetch_wait_ms == 5
