"""Every route each service serves is documented, and schemas/openapi/ matches the code."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from aiohttp import web

from shared.openapi import OPENAPI_DIR, encode
from shared.settings import load

SERVICES = ["command", "query"]


def _routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method, str(path)))
    return routes


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_is_documented(service: str) -> None:
    app_mod = importlib.import_module(f"services.{service}.app")
    doc = importlib.import_module(f"services.{service}.openapi").document()
    served = _routes(app_mod.create_app(load()))
    documented = _documented(doc)
    assert served - documented == set(), "undocumented routes"
    assert documented - served == set(), "documented routes that don't exist"


@pytest.mark.parametrize("service", SERVICES)
def test_committed_document_is_current(service: str) -> None:
    doc = importlib.import_module(f"services.{service}.openapi").document()
    committed = (OPENAPI_DIR / f"{service}.json").read_bytes()
    assert committed == encode(doc), f"run `make schemas` to refresh {service}.json"


@pytest.mark.parametrize("service", SERVICES)
def test_document_is_valid_openapi(service: str) -> None:
    from openapi_spec_validator import validate

    doc = importlib.import_module(f"services.{service}.openapi").document()
    validate(doc)
