"""Schema evolution: upcasters lift old event documents to the current schema version.

The log is immutable and kept forever (invariant 1), so an event written under an old
`schemaversion` must still project after its type changed. The codec decodes the envelope's
head, and when the version is older than `CURRENT_VERSION` runs the registered upcasters one
version step at a time on the plain JSON document, before the typed decode. Additive changes
(a new field with a default) need no new version and no upcaster: old readers skip unknown
fields and new readers fill in defaults (DESIGN.md §3).

Versions so far:
- `post.created` v2: `data.hashtags` are lower-cased and unique, in order of first appearance
  (the hashtag timeline matches tags case-insensitively). v1 producers wrote them as typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from shared.events import dataschema_for

Document = dict[str, Any]
Upcaster = Callable[[Document], Document]

# (event type, version it upgrades from) -> function returning the next version's document.
_REGISTRY: Final[dict[tuple[str, int], Upcaster]] = {}


class UpcastError(Exception):
    """No path from the document's version to the wanted one, or the document is malformed."""


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register `fn` as the step from `from_version` to `from_version + 1` of `event_type`."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _REGISTRY:
            raise ValueError(f"two upcasters for {event_type} v{from_version}")
        _REGISTRY[key] = fn
        return fn

    return register


def upcast(doc: Document, target: int) -> Document:
    """Lift an event document to `target`, one registered step at a time."""
    event_type = doc.get("type")
    version = doc.get("schemaversion", 1)
    if not isinstance(event_type, str) or not isinstance(version, int):
        raise UpcastError("document has no usable type or schemaversion")
    while version < target:
        step = _REGISTRY.get((event_type, version))
        if step is None:
            raise UpcastError(f"no upcaster for {event_type} v{version}")
        doc = step(doc)
        version += 1
        doc["schemaversion"] = version
        doc["dataschema"] = dataschema_for(event_type, version)
    return doc


@upcaster("post.created", 1)
def _post_created_v1_to_v2(doc: Document) -> Document:
    data = doc.get("data")
    if not isinstance(data, dict):
        raise UpcastError("post.created v1 without a data object")
    tags = data.get("hashtags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UpcastError("post.created v1 hashtags must be a list of strings")
    data = {**data, "hashtags": list(dict.fromkeys(t.lower() for t in tags))}
    return {**doc, "data": data}
