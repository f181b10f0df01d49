"""The NUL-character walk behind read_body's 422 (shared/http.py)."""

from __future__ import annotations

import pytest

from shared.http import _nul_field


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"text": "plain", "media": [{"url": "u"}]}, None),
        ({"text": "a\x00"}, "text"),
        ({"text": "ok", "media": [{"url": "u"}, {"alt_text": "\x00"}]}, "media[1].alt_text"),
        ({"profile": {"bio": "x\x00"}}, "profile.bio"),
        (["\x00"], "[0]"),
        (42, None),
    ],
)
def test_the_first_string_holding_nul_is_named(value: object, field: str | None) -> None:
    assert _nul_field(value, "") == field
