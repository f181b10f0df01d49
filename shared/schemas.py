"""JSON Schemas of the events, generated from the msgspec structs into schemas/events/.

These files are the contract analytics consumers code against; a unit test fails when they
drift from the code. Regenerate with `make schemas` (python -m shared.schemas write).
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from shared.events import CURRENT_VERSION, EVENT_TYPES, type_tag
from shared.settings import REPO_ROOT

EVENTS_DIR = REPO_ROOT / "schemas" / "events"


def render() -> dict[str, bytes]:
    """File name -> content for every event schema."""
    files: dict[str, bytes] = {}
    for event_type in EVENT_TYPES:
        tag = type_tag(event_type)
        schema = msgspec.json.schema(event_type)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://microblog.dev/schemas/events/{tag}.json"
        schema["title"] = tag
        schema["x-schemaversion"] = CURRENT_VERSION[tag]
        files[f"{tag}.json"] = msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
    return files


def write(directory: Path = EVENTS_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (directory / name).write_bytes(content)


if __name__ == "__main__":
    if sys.argv[1:] == ["write"]:
        write()
    else:
        sys.stdout.buffer.write(b"\n".join(render().values()))
