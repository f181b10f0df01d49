"""MB_ACCESS_LOG: which answers the request middleware logs (shared/metrics.py); the request
histogram counts every answer whatever the mode."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.metrics import ServiceMetrics


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _missing(_request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def _logged_statuses(mode: str, caplog: pytest.LogCaptureFixture) -> tuple[list[int], str]:
    logger = logging.getLogger("microblog.test.access")
    metrics = ServiceMetrics("test", access_log=logger)
    app = web.Application(middlewares=[metrics.middleware(mode)])
    app.router.add_get("/ok", _ok)
    app.router.add_get("/missing", _missing)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with TestClient(TestServer(app)) as client:
            for path in ("/ok", "/missing", "/ok"):
                await (await client.get(path)).read()
    statuses = [r.__dict__["status"] for r in caplog.records if r.name == logger.name]
    exposition = (await metrics.handle(None)).text  # type: ignore[arg-type]
    return statuses, exposition or ""


@pytest.mark.parametrize(
    ("mode", "logged"), [("all", [200, 404, 200]), ("errors", [404]), ("off", [])]
)
async def test_access_log_modes(
    mode: str, logged: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    statuses, exposition = await _logged_statuses(mode, caplog)
    assert statuses == logged
    # Every answer is counted in /metrics, logged or not.
    assert 'microblog_test_request_seconds_count{route="/ok",status="200"} 2.0' in exposition
    assert 'microblog_test_request_seconds_count{route="/missing",status="404"} 1.0' in exposition


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="access_log"):
        ServiceMetrics("test").middleware("verbose")
