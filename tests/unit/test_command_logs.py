"""The command service's JSON log lines carry the request id and any extras."""

from __future__ import annotations

import json
import logging

from shared.logs import JsonFormatter, current_request_id


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("microblog.test", logging.WARNING, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_one_json_object_per_line_with_request_id_and_extras() -> None:
    token = current_request_id.set("req-7")
    try:
        line = JsonFormatter().format(_record("produce of %s failed", status=503))
    finally:
        current_request_id.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "produce of %s failed"
    assert (entry["level"], entry["logger"], entry["request_id"], entry["status"]) == (
        "WARNING",
        "microblog.test",
        "req-7",
        503,
    )


def test_without_a_request_no_request_id() -> None:
    entry = json.loads(JsonFormatter().format(_record("started\nok")))
    assert "request_id" not in entry
    assert entry["message"] == "started\nok"
