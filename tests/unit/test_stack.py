"""What `make up` starts: every service once, and the projector as many times as asked, each
instance with a port of its own for health and metrics; and the free ports the tests and the
bench start their services on, never one port for two of them."""

import msgspec
import pytest

from shared.devstack import StackError, free_port
from shared.settings import load
from shared.stack import projector_count, services


def test_projector_instances_get_their_own_ports() -> None:
    settings = msgspec.structs.replace(load(), projector_port=9003)
    plan = services(settings, 3)
    assert [s.name for s in plan] == ["command", "projector", "projector-2", "projector-3", "query"]
    projectors = [s for s in plan if s.module == "services.projector"]
    assert [s.env["MB_PROJECTOR_PORT"] for s in projectors] == ["9003", "9013", "9023"]
    assert [s.url.rsplit(":", 1)[1] for s in projectors] == ["9003", "9013", "9023"]


def test_at_least_one_projector() -> None:
    assert [s.name for s in services(load(), 0)] == ["command", "projector", "query"]


@pytest.mark.parametrize(("raw", "count"), [(None, 2), ("", 2), ("1", 1), ("3", 3)])
def test_projector_count_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, count: int
) -> None:
    if raw is None:
        monkeypatch.delenv("MB_PROJECTORS", raising=False)
    else:
        monkeypatch.setenv("MB_PROJECTORS", raw)
    assert projector_count() == count


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_projector_count_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("MB_PROJECTORS", raw)
    with pytest.raises(StackError, match="MB_PROJECTORS"):
        projector_count()


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
