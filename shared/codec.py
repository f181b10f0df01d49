"""Bytes on the topic <-> typed events, and the classification of poison records.

One encoder and one decoder, built once (msgspec's advice). A record that cannot become a valid,
known, supported event raises `PoisonEvent` with a reason; the projector dead-letters it and
moves on (invariant 7).
"""

from __future__ import annotations

from typing import Final

import msgspec

from shared.events import CURRENT_VERSION, AnyEvent, Event
from shared.upcast import UpcastError, upcast

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AnyEvent)


class _Head(msgspec.Struct):
    """Just enough of an envelope to route it before the full decode."""

    type: str
    schemaversion: int = 1


_head_decoder: Final = msgspec.json.Decoder(_Head)


class PoisonEvent(Exception):
    """A record that must go to the dead-letter store; `reason` is a short machine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def headers(event: Event) -> list[tuple[str, bytes]]:
    """Kafka record headers (CloudEvents Kafka binding names) so consumers filter undecoded."""
    tag = type(event).__struct_config__.tag
    return [
        ("ce_type", str(tag).encode()),
        ("ce_id", str(event.id).encode()),
        ("ce_specversion", event.specversion.encode()),
        ("ce_source", event.source.encode()),
        ("ce_subject", event.subject.encode()),
    ]


def partition_key(event: Event) -> bytes:
    """One user's events share a partition, so they stay in order (invariant 4)."""
    return event.subject.encode()


def decode(raw: bytes | None) -> AnyEvent:
    """Decode one record's value into a typed event, or raise PoisonEvent."""
    if not raw:
        raise PoisonEvent("empty", "record has no value")
    try:
        head = _head_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise PoisonEvent("undecodable", str(exc)) from exc
    supported = CURRENT_VERSION.get(head.type)
    if supported is None:
        raise PoisonEvent("unknown_type", f"unknown event type {head.type!r}")
    if head.schemaversion > supported:
        raise PoisonEvent(
            "future_version", f"{head.type} v{head.schemaversion} > supported v{supported}"
        )
    if head.schemaversion < supported:
        raw = _upcast(raw, supported)
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise PoisonEvent("invalid", str(exc)) from exc


def _upcast(raw: bytes, target: int) -> bytes:
    """Lift an old event's JSON to the current version (shared/upcast.py); the typed decode
    then validates the result as it would a new event."""
    doc = msgspec.json.decode(raw)
    if not isinstance(doc, dict):
        raise PoisonEvent("undecodable", "event is not a JSON object")
    try:
        return _encoder.encode(upcast(doc, target))
    except UpcastError as exc:
        raise PoisonEvent("invalid", str(exc)) from exc
