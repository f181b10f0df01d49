"""HTTP helpers shared by the command and query services.

Errors are RFC 9457 `application/problem+json` documents with a machine `code` and, where input
is at fault, the `field` path that caused it. Handlers raise `ApiError`; one middleware renders
it, so no handler builds an error body by hand.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from shared.auth import verify_token

log = logging.getLogger("microblog.http")

T = TypeVar("T")

_encoder: Final = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    field: str | None = None


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, detail: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def problem_response(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = Problem(
        type=f"https://microblog.dev/problems/{err.code}",
        title=err.code.replace("_", " "),
        status=err.status,
        code=err.code,
        detail=err.detail,
        field=err.field,
    )
    return web.Response(
        body=_encoder.encode(body),
        status=err.status,
        content_type="application/problem+json",
        headers=headers,
    )


def json_response(
    obj: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(obj), status=status, content_type="application/json", headers=headers
    )


_PATH_IN_MSG = re.compile(r"at `\$(?P<path>[^`]*)`")


def _field_from_validation(msg: str) -> str | None:
    # msgspec reports "... - at `$.text`" or "Object contains unknown field `x` - at `$`".
    unknown = re.search(r"unknown field `([^`]+)`", msg)
    m = _PATH_IN_MSG.search(msg)
    base = m.group("path").lstrip(".") if m else ""
    if unknown:
        return f"{base}.{unknown.group(1)}" if base else unknown.group(1)
    missing = re.search(r"missing required field `([^`]+)`", msg)
    if missing:
        return f"{base}.{missing.group(1)}" if base else missing.group(1)
    return base or None


async def read_body(request: web.Request, model: type[T]) -> T:
    """Decode and validate a JSON body into `model`; any fault is a 400/422 naming the field."""
    decoder = _decoders.get(model)
    if decoder is None:
        decoder = _decoders[model] = msgspec.json.Decoder(model)
    raw = await request.read()
    if not raw:
        raise ApiError(400, "body_required", "a JSON body is required")
    try:
        value = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        code = "unknown_field" if "unknown field" in msg else "invalid_field"
        raise ApiError(422, code, msg, _field_from_validation(msg)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", str(exc)) from None
    # PostgreSQL text cannot hold U+0000, so a string carrying one would fail at the first
    # write as a 500. The byte search keeps the common case free; only then walk the value.
    if b"\\u0000" in raw:
        field = _nul_field(msgspec.to_builtins(value), "")
        if field is not None:
            raise ApiError(
                422, "invalid_field", f"{field or 'body'} must not contain U+0000", field or None
            )
    return value  # type: ignore[no-any-return]


def _nul_field(value: Any, path: str) -> str | None:
    """The path ("media[0].url") of the first string or key holding U+0000, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path
            found = _nul_field(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_field(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def parse_id(value: str, field: str) -> int:
    """Path and query ids: decimal, positive, 63-bit. Anything else is 404-worthy for paths."""
    # isascii: str.isdigit() also accepts digits such as "²" that int() rejects.
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise ApiError(422, "invalid_id", f"{field} must be a positive integer id", field)
    n = int(value)
    if not 0 < n < (1 << 63):
        raise ApiError(422, "invalid_id", f"{field} is out of range", field)
    return n


def bearer_user(request: web.Request, secret: str, required: bool = True) -> int | None:
    """The acting user's id from `Authorization: Bearer <token>`; never from the body."""
    header = request.headers.get("Authorization", "")
    if not header:
        if required:
            raise ApiError(401, "unauthorized", "Authorization: Bearer <token> required")
        return None
    scheme, _, token = header.partition(" ")
    claims = verify_token(secret, token.strip()) if scheme.lower() == "bearer" else None
    if claims is None:
        raise ApiError(401, "invalid_token", "token is invalid or expired")
    return claims.user_id


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ApiError as err:
        return problem_response(err)
    except web.HTTPRequestEntityTooLarge:
        return problem_response(ApiError(413, "body_too_large", "request body is too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return problem_response(ApiError(exc.status, code, exc.reason))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(ApiError(500, "internal_error", "internal error"))


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
