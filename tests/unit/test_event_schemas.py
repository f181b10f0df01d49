"""schemas/events/ is the analytics contract: it must match the code exactly."""

import msgspec

from shared.events import EVENT_TYPES, type_tag
from shared.schemas import EVENTS_DIR, render

SECRET_WORDS = ("password", "passwd", "token", "email", "secret", "credential")


def test_generated_schemas_match_the_committed_files() -> None:
    rendered = render()
    committed = {p.name: p.read_bytes() for p in EVENTS_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "run `make schemas` and commit the result"
    for name, content in rendered.items():
        assert committed[name] == content, f"{name} drifted from the code: run `make schemas`"


def test_every_event_type_has_a_schema() -> None:
    assert {f"{type_tag(t)}.json" for t in EVENT_TYPES} == set(render())


def _property_names(node: object) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= _property_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= _property_names(item)
    return names


def test_no_secret_can_ride_on_the_stream() -> None:
    # Invariant 6: no password, token or email field in any event schema, at any depth.
    for name, content in render().items():
        fields = _property_names(msgspec.json.decode(content))
        assert fields, name
        for field in fields:
            assert not any(w in field.lower() for w in SECRET_WORDS), f"{name}: {field}"
