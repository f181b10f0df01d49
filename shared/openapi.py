"""OpenAPI 3.1 documents built from the same msgspec structs the handlers decode and encode.

Each service lists its operations once (services/<name>/openapi.py); `build()` turns them into a
document, which is written to schemas/openapi/<name>.json (`make schemas`), served at
/openapi.json, and checked by tests: every route of the app is documented, and the committed
file matches the code.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from shared.http import Problem
from shared.settings import REPO_ROOT

_PATH_PARAM = re.compile(r"{([a-z_]+)}")


class Param(msgspec.Struct, frozen=True):
    name: str
    where: str  # "query" | "header" | "path"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    summary: str
    tag: str
    ok_status: int = 200
    also_ok: tuple[int, ...] = ()  # further success statuses with the same body
    response: Any = None  # a msgspec type (Struct, list[Struct]…) or None for no body
    request: Any = None
    request_required: bool = True
    auth: bool = False  # True: Bearer required; "optional" handled by auth_optional
    auth_optional: bool = False
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    response_headers: tuple[str, ...] = ()
    content_type: str = "application/json"


ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"}

PAGINATION = (
    Param("limit", "query", {"type": "integer", "minimum": 1}, "page size (max 40)"),
    Param("max_id", "query", ID_SCHEMA, "only items with a smaller id"),
    Param("since_id", "query", ID_SCHEMA, "only items with a larger id"),
)
CONSISTENCY = Param(
    "X-Consistency-Position",
    "header",
    {"type": "string", "pattern": "^[0-9]{1,5}:[0-9]{1,19}$"},
    "wait until the projector has passed this position (partition:offset)",
)
IDEMPOTENCY = Param(
    "Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 200}
)

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: the event is durably on the log",
    204: "No content",
    400: "Malformed request",
    401: "Missing, invalid, expired or revoked token",
    404: "Not found (or not visible to you)",
    409: "Conflict",
    413: "Body too large",
    422: "Invalid field",
    429: "Rate limited",
    503: "A dependency is unavailable",
    504: "The projector did not reach the requested position in time",
}


def build(title: str, version: str, operations: list[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `operations`."""
    types: list[Any] = [Problem]
    for op in operations:
        if op.response is not None:
            types.append(op.response)
        if op.request is not None:
            types.append(op.request)
    refs, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(range(len(types)), refs, strict=True))
    problem_ref = ref_of[0]
    paths: dict[str, dict[str, Any]] = {}
    index = 1
    for op in operations:
        response_ref = request_ref = None
        if op.response is not None:
            response_ref = ref_of[index]
            index += 1
        if op.request is not None:
            request_ref = ref_of[index]
            index += 1
        params = [
            {"name": name, "in": "path", "required": True, "schema": ID_SCHEMA}
            if name.endswith("_id")
            else {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(op.path)
        ]
        params += [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
            }
            for p in op.params
        ]
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(op.ok_status, "OK")}
        if response_ref is not None:
            ok["content"] = {op.content_type: {"schema": response_ref}}
        if op.response_headers:
            ok["headers"] = {h: {"schema": {"type": "string"}} for h in op.response_headers}
        responses: dict[str, Any] = {str(op.ok_status): ok}
        for extra in op.also_ok:
            responses[str(extra)] = {**ok, "description": _STATUS_TEXT.get(extra, "OK")}
        statuses = set(op.errors) | {429, 503}
        if op.request is not None:
            statuses |= {400, 413, 422}
        if op.auth:
            statuses.add(401)
        if any(p.name == "X-Consistency-Position" for p in op.params):
            statuses |= {400, 504}
        if params:
            statuses.add(422)
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/problem+json": {"schema": problem_ref}},
            }
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op),
            "tags": [op.tag],
            "parameters": params,
            "responses": responses,
        }
        if op.request is not None:
            entry["requestBody"] = {
                "required": op.request_required,
                "content": {"application/json": {"schema": request_ref}},
            }
        if op.auth:
            entry["security"] = [{"bearer": []}]
        elif op.auth_optional:
            entry["security"] = [{}, {"bearer": []}]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    # Round-trip so Python-only values (tuple defaults) become their JSON form.
    return msgspec.json.decode(msgspec.json.encode(document))  # type: ignore[no-any-return]


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[{}]", "", op.path).strip("/").replace("/", "_").replace("-", "_")
    return f"{op.method.lower()}_{words}"


def encode(document: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


OPENAPI_DIR = REPO_ROOT / "schemas" / "openapi"


def write_document(service: str, document: dict[str, Any]) -> None:
    OPENAPI_DIR.mkdir(parents=True, exist_ok=True)
    (OPENAPI_DIR / f"{service}.json").write_bytes(encode(document))


def handler(document: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving `document`, encoded once."""
    body = encode(document)

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return serve
