"""docker-compose.yml must stay valid for people who run the stack with Docker."""

import os
import shutil
import subprocess

import pytest

from shared.settings import REPO_ROOT


def _compose() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid() -> None:
    compose = _compose()
    if compose is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install docker compose (or docker-compose) to check the file")
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*compose, "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
