"""Profiles, locked accounts and follow requests, mutes, logout and token checks, against real
Kafka and PostgreSQL. Refusals are checked on the log: its end offsets don't move."""

from __future__ import annotations

import time

import pytest

from shared.auth import issue_token
from shared.events import (
    FollowRemoved,
    FollowRequestApproved,
    FollowRequested,
    FollowRequestRejected,
    MuteCreated,
    MuteRemoved,
    ProfileUpdated,
)
from shared.settings import Settings
from tests.integration import test_command_api as api
from tests.integration.test_command_api import Client, Log, call
from tests.integration.test_command_domain import User, refused, user

pytestmark = pytest.mark.integration

client = api.client
log = api.log


# ---------------------------------------------------------------- profiles


async def test_profile_update(client: Client, log: Log) -> None:
    alice = await user(client)
    status, body, _ = await call(
        client,
        "PATCH",
        "/v1/accounts/me",
        {"display_name": "Alice", "bio": "hi", "avatar_url": "https://a.example/me.png"},
        token=alice.token,
    )
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, ProfileUpdated)
    data = event.data
    assert (data.user_id, data.display_name, data.bio, data.avatar_url, data.locked) == (
        int(alice.id),
        "Alice",
        "hi",
        "https://a.example/me.png",
        None,
    )
    for bad, expected in [
        ({}, (422, "nothing_to_update", None)),
        ({"bio": "b" * 501}, (422, "invalid_field", "bio")),
        ({"avatar_url": "ftp://a.example/me.png"}, (422, "invalid_field", "avatar_url")),
        ({"avatar_url": "javascript:alert(1)"}, (422, "invalid_field", "avatar_url")),
        ({"display_name": "d" * 61}, (422, "invalid_field", "display_name")),
        ({"locked": "yes"}, (422, "invalid_field", "locked")),
        ({"user_id": alice.id, "bio": "x"}, (422, "unknown_field", "user_id")),
    ]:
        await refused(client, log, "PATCH", "/v1/accounts/me", bad, alice.token, expected)


# ---------------------------------------------------------------- locked accounts


async def _lock(client: Client, who: User) -> None:
    status, body, _ = await call(
        client, "PATCH", "/v1/accounts/me", {"locked": True}, token=who.token
    )
    assert status == 202, body


async def test_follow_requests_of_a_locked_account(client: Client, log: Log) -> None:
    alice, bob, carol = await user(client), await user(client), await user(client)
    await _lock(client, bob)

    status, body, _ = await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=alice.token)
    assert (status, body["state"]) == (202, "requested"), body
    event, _ = await log.at(body["position"])
    assert isinstance(event, FollowRequested)
    assert (event.data.follower_id, event.data.followee_id) == (int(alice.id), int(bob.id))

    # Only the followee answers, and only a pending request.
    approve = f"/v1/follow_requests/{alice.id}/approve"
    await refused(client, log, "POST", approve, None, carol.token, (404, "not_found", None))
    status, body, _ = await call(client, "POST", approve, token=bob.token)
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, FollowRequestApproved)
    assert (event.data.follower_id, event.data.followee_id) == (int(alice.id), int(bob.id))
    assert event.subject == bob.id
    await refused(client, log, "POST", approve, None, bob.token, (404, "not_found", None))

    # Carol asks, then withdraws: nothing is left to reject.
    status, body, _ = await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=carol.token)
    assert (status, body["state"]) == (202, "requested"), body
    status, body, _ = await call(client, "DELETE", f"/v1/users/{bob.id}/follow", token=carol.token)
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], FollowRemoved)
    reject = f"/v1/follow_requests/{carol.id}/reject"
    await refused(client, log, "POST", reject, None, bob.token, (404, "not_found", None))

    # Carol asks again and is rejected.
    await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=carol.token)
    status, body, _ = await call(client, "POST", reject, token=bob.token)
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], FollowRequestRejected)

    # An unlocked account is followed at once.
    status, body, _ = await call(client, "PUT", f"/v1/users/{carol.id}/follow", token=bob.token)
    assert (status, body["state"]) == (202, "following"), body


async def test_unlocking_approves_the_pending_requests(client: Client, log: Log) -> None:
    alice, bob, carol, dave = [await user(client) for _ in range(4)]
    await _lock(client, bob)
    for asker in (alice, carol):
        status, body, _ = await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=asker.token)
        assert (status, body["state"]) == (202, "requested"), body

    status, body, _ = await call(
        client, "PATCH", "/v1/accounts/me", {"locked": False}, token=bob.token
    )
    assert status == 202, body
    # The profile change, then one approval per request, on Bob's partition; the answer's
    # position is the last of them.
    partition, offset = (int(x) for x in body["position"].split(":"))
    changed, _ = await log.at(f"{partition}:{offset - 2}")
    assert isinstance(changed, ProfileUpdated) and changed.data.locked is False
    approved = [(await log.at(f"{partition}:{offset - k}"))[0] for k in (1, 0)]
    assert all(isinstance(e, FollowRequestApproved) for e in approved)
    assert sorted(e.data.follower_id for e in approved) == sorted([int(alice.id), int(carol.id)])
    assert {e.data.followee_id for e in approved} == {int(bob.id)}

    # Nothing is pending any more, and a new follower follows at once.
    approve = f"/v1/follow_requests/{alice.id}/approve"
    await refused(client, log, "POST", approve, None, bob.token, (404, "not_found", None))
    status, body, _ = await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=dave.token)
    assert (status, body["state"]) == (202, "following"), body


async def test_block_ends_pending_requests(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    await _lock(client, bob)
    await call(client, "PUT", f"/v1/users/{bob.id}/follow", token=alice.token)
    status, body, _ = await call(client, "PUT", f"/v1/users/{alice.id}/block", token=bob.token)
    assert status == 202, body
    await refused(
        client,
        log,
        "POST",
        f"/v1/follow_requests/{alice.id}/approve",
        None,
        bob.token,
        (404, "not_found", None),
    )


# ---------------------------------------------------------------- mutes


async def test_mute_and_unmute(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    status, body, _ = await call(client, "PUT", f"/v1/users/{bob.id}/mute", token=alice.token)
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, MuteCreated)
    assert (event.data.muter_id, event.data.muted_id, event.data.expires_at) == (
        int(alice.id),
        int(bob.id),
        None,
    )
    status, body, _ = await call(
        client, "PUT", f"/v1/users/{bob.id}/mute", {"expires_in_s": 3600}, token=alice.token
    )
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, MuteCreated) and event.data.expires_at is not None
    assert 3590 < (event.data.expires_at - event.time).total_seconds() <= 3600

    path = f"/v1/users/{bob.id}/mute"
    for bad, expected in [
        ({"expires_in_s": 59}, (422, "invalid_field", "expires_in_s")),
        ({"expires_in_s": 366 * 24 * 3600}, (422, "invalid_field", "expires_in_s")),
        ({"expires_in_s": "soon"}, (422, "invalid_field", "expires_in_s")),
        ({"muter_id": alice.id}, (422, "unknown_field", "muter_id")),
    ]:
        await refused(client, log, "PUT", path, bad, alice.token, expected)
    await refused(
        client,
        log,
        "PUT",
        f"/v1/users/{alice.id}/mute",
        None,
        alice.token,
        (422, "cannot_target_self", "user_id"),
    )
    await refused(
        client, log, "PUT", "/v1/users/999999/mute", None, alice.token, (404, "not_found", None)
    )
    status, body, _ = await call(client, "DELETE", path, token=alice.token)
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], MuteRemoved)


# ---------------------------------------------------------------- tokens


async def test_logout_revokes_the_token(client: Client, log: Log) -> None:
    alice = await user(client)
    status, body, _ = await call(client, "POST", "/v1/posts", {"text": "hi"}, token=alice.token)
    assert status == 202, body
    status, body, _ = await call(client, "DELETE", "/v1/sessions/current", token=alice.token)
    assert (status, body) == (204, None)
    for method, path, payload in [
        ("POST", "/v1/posts", {"text": "hi"}),
        ("PATCH", "/v1/accounts/me", {"bio": "x"}),
        ("DELETE", "/v1/sessions/current", None),
    ]:
        await refused(client, log, method, path, payload, alice.token, (401, "invalid_token", None))


async def test_tampered_and_expired_tokens_are_401(
    client: Client, log: Log, settings: Settings
) -> None:
    alice = await user(client)
    user_id, expires, nonce, mac = alice.token.split(".")
    expired, _ = issue_token(settings.token_secret, int(alice.id), 60, now=time.time() - 3600)
    forged, _ = issue_token("not-the-secret", int(alice.id), 3600)
    for token in [
        f"{int(user_id) + 1}.{expires}.{nonce}.{mac}",  # someone else's id
        f"{user_id}.{int(expires) + 10**6}.{nonce}.{mac}",  # a longer life
        f"{user_id}.{expires}.{nonce}.{mac[:-2]}xx",  # a bad signature
        expired,
        forged,
        "garbage",
    ]:
        await refused(
            client, log, "POST", "/v1/posts", {"text": "hi"}, token, (401, "invalid_token", None)
        )
