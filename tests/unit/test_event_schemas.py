"""schemas/events/ is the analytics contract: it must match the code exactly."""

from shared.events import EVENT_TYPES, type_tag
from shared.schemas import EVENTS_DIR, render

SECRET_WORDS = ("password", "token", "email", "secret", "hash")


def test_generated_schemas_match_the_committed_files() -> None:
    rendered = render()
    committed = {p.name: p.read_bytes() for p in EVENTS_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "run `make schemas` and commit the result"
    for name, content in rendered.items():
        assert committed[name] == content, f"{name} drifted from the code: run `make schemas`"


def test_every_event_type_has_a_schema() -> None:
    assert {f"{type_tag(t)}.json" for t in EVENT_TYPES} == set(render())


def test_no_secret_can_ride_on_the_stream() -> None:
    # Invariant 6: no password, token or email field in any event schema.
    for name, content in render().items():
        text = content.decode().lower()
        for word in SECRET_WORDS:
            assert f'"{word}' not in text, f"{name} mentions {word}"
