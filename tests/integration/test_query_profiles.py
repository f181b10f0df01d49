"""Profiles and blocks: signed-in readers never see accounts they block or are blocked by
(schemas/semantics.md), by id or by username; and input PostgreSQL cannot store (NUL) is refused
before it reaches a statement."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed, assert_problem

pytestmark = pytest.mark.integration

client, seed, query_settings = api.client, api.seed, api.query_settings


async def test_a_block_hides_the_profile_both_ways(client: Any, seed: Seed) -> None:
    alice, bob, carol = await seed.user(), await seed.user(), await seed.user()
    await seed.block(alice, bob)
    names = {}
    for user in (alice, bob):
        response = await client.get(f"/v1/users/{user}")
        assert response.status == 200  # anonymous readers see both
        names[user] = (await response.json())["username"]
    for viewer, other in ((alice, bob), (bob, alice)):
        headers = seed.auth(viewer)
        await assert_problem(
            await client.get(f"/v1/users/{other}", headers=headers), 404, "not_found"
        )
        await assert_problem(
            await client.get(f"/v1/users/by-username/{names[other]}", headers=headers),
            404,
            "not_found",
        )
        # Their own profile, and a third party's, are unaffected.
        assert (await client.get(f"/v1/users/{viewer}", headers=headers)).status == 200
        assert (await client.get(f"/v1/users/{carol}", headers=headers)).status == 200


async def test_a_bad_token_on_a_profile_is_401(client: Any, seed: Seed) -> None:
    user = await seed.user()
    headers = {"Authorization": "Bearer not-a-token"}
    await assert_problem(
        await client.get(f"/v1/users/{user}", headers=headers), 401, "invalid_token"
    )


async def test_nul_characters_are_refused_not_a_500(client: Any) -> None:
    # PostgreSQL text cannot hold NUL: such input must not reach a statement.
    await assert_problem(await client.get("/v1/users/by-username/a%00b"), 404, "not_found")
    for kind in ("posts", "accounts"):
        await assert_problem(
            await client.get(f"/v1/search?q=a%00b&type={kind}"), 422, "invalid_field", "q"
        )
