"""What `make up` starts: every service once, and the projector as many times as asked, each
instance with a port of its own for health and metrics."""

import msgspec

from shared.settings import load
from shared.stack import services


def test_projector_instances_get_their_own_ports() -> None:
    settings = msgspec.structs.replace(load(), projector_port=9003)
    plan = services(settings, 3)
    assert [s.name for s in plan] == ["command", "projector", "projector-2", "projector-3", "query"]
    projectors = [s for s in plan if s.module == "services.projector"]
    assert [s.env["MB_PROJECTOR_PORT"] for s in projectors] == ["9003", "9013", "9023"]
    assert [s.url.rsplit(":", 1)[1] for s in projectors] == ["9003", "9013", "9023"]


def test_at_least_one_projector() -> None:
    assert [s.name for s in services(load(), 0)] == ["command", "projector", "query"]
