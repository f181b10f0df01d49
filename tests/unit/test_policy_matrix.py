"""The full permit/deny matrix of shared.policy (schemas/semantics.md, "Who may see a post").

Every cell is written out: viewer kind by visibility → (can_view, shows_in_feed). The same table
drives tests/integration/test_query_policy_sql.py, which checks the SQL twins and the HTTP
routes against it on real PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import pytest

from shared.policy import PostFacts, Relations, can_view, shows_in_feed

AUTHOR: Final = 1
AUDIENCE: Final = 500
NOW: Final = datetime(2026, 1, 1, tzinfo=UTC)

# The viewers: one id each (None: anonymous).
VIEWERS: Final[dict[str, int | None]] = {
    "anonymous": None,
    "stranger": 2,
    "follower": 3,
    "audience_member": 4,
    "mentioned": 5,
    "blocked": 6,  # the viewer blocks the author ...
    "blocked_by": 7,  # ... the author blocks the viewer
    "muted": 8,  # the viewer mutes the author
    "author": AUTHOR,
}

# Who each post mentions: the mentioned viewer, and the two on either side of a block (which
# must win over the mention).
MENTIONS: Final = frozenset({VIEWERS["mentioned"], VIEWERS["blocked"], VIEWERS["blocked_by"]})

# What each viewer has with the author. The blocked ones and the muter also follow the author
# and are audience members, so the block (or, in feeds, the mute) is what decides.
ROLES: Final[dict[str, dict[str, bool]]] = {
    "anonymous": {},
    "stranger": {},
    "follower": {"follows": True},
    "audience_member": {"member": True},
    "mentioned": {},
    "blocked": {"follows": True, "member": True, "blocks_author": True},
    "blocked_by": {"follows": True, "member": True, "blocked_by_author": True},
    "muted": {"follows": True, "member": True, "mutes": True},
    "author": {},
}

VISIBILITIES: Final = ("public", "unlisted", "followers", "audience", "direct")

Y, N = True, False
# viewer → visibility → (can_view, shows_in_feed)
MATRIX: Final[dict[str, dict[str, tuple[bool, bool]]]] = {
    #                  public     unlisted   followers  audience   direct
    "anonymous": dict(zip(VISIBILITIES, [(Y, Y), (Y, Y), (N, N), (N, N), (N, N)], strict=True)),
    "stranger": dict(zip(VISIBILITIES, [(Y, Y), (Y, Y), (N, N), (N, N), (N, N)], strict=True)),
    "follower": dict(zip(VISIBILITIES, [(Y, Y), (Y, Y), (Y, Y), (N, N), (N, N)], strict=True)),
    "audience_member": dict(
        zip(VISIBILITIES, [(Y, Y), (Y, Y), (N, N), (Y, Y), (N, N)], strict=True)
    ),
    "mentioned": dict(zip(VISIBILITIES, [(Y, Y), (Y, Y), (Y, Y), (N, N), (Y, Y)], strict=True)),
    "blocked": dict(zip(VISIBILITIES, [(N, N), (N, N), (N, N), (N, N), (N, N)], strict=True)),
    "blocked_by": dict(zip(VISIBILITIES, [(N, N), (N, N), (N, N), (N, N), (N, N)], strict=True)),
    "muted": dict(zip(VISIBILITIES, [(Y, N), (Y, N), (Y, N), (Y, N), (N, N)], strict=True)),
    "author": dict(zip(VISIBILITIES, [(Y, Y), (Y, Y), (Y, Y), (Y, Y), (Y, Y)], strict=True)),
}

CELLS: Final = [(v, vis) for v in VIEWERS for vis in VISIBILITIES]


def post(visibility: str) -> PostFacts:
    return PostFacts(
        author_id=AUTHOR,
        visibility=visibility,  # type: ignore[arg-type]
        audience_id=AUDIENCE,
        mentions=MENTIONS,
    )


def relations(viewer: str, mute_expires: datetime | None = None) -> Relations:
    """The viewer's relations as a loader would build them from the ROLES row."""
    role = ROLES[viewer]
    blocked = role.get("blocks_author") or role.get("blocked_by_author")
    return Relations(
        blocked=frozenset({AUTHOR}) if blocked else frozenset(),
        following=frozenset({AUTHOR}) if role.get("follows") else frozenset(),
        audiences=frozenset({AUDIENCE}) if role.get("member") else frozenset(),
        muted={AUTHOR: mute_expires} if role.get("mutes") else {},
    )


def test_matrix_covers_every_cell() -> None:
    assert set(MATRIX) == set(VIEWERS) == set(ROLES)
    assert all(set(row) == set(VISIBILITIES) for row in MATRIX.values())
    # Feeds only ever hide more.
    assert all(not feed or view for row in MATRIX.values() for view, feed in row.values())


@pytest.mark.parametrize(("viewer", "visibility"), CELLS)
def test_can_view(viewer: str, visibility: str) -> None:
    expected, _ = MATRIX[viewer][visibility]
    assert can_view(VIEWERS[viewer], post(visibility), relations(viewer)) is expected


@pytest.mark.parametrize(("viewer", "visibility"), CELLS)
def test_shows_in_feed(viewer: str, visibility: str) -> None:
    _, expected = MATRIX[viewer][visibility]
    assert shows_in_feed(VIEWERS[viewer], post(visibility), relations(viewer), NOW) is expected


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_an_expired_mute_is_no_mute(visibility: str) -> None:
    expired = relations("muted", mute_expires=NOW - timedelta(seconds=1))
    running = relations("muted", mute_expires=NOW + timedelta(days=1))
    viewer = VIEWERS["muted"]
    assert shows_in_feed(viewer, post(visibility), expired, NOW) is MATRIX["muted"][visibility][0]
    assert not shows_in_feed(viewer, post(visibility), running, NOW)


def test_unknown_visibility_is_never_shown() -> None:
    odd = PostFacts(author_id=AUTHOR, visibility="secret")  # type: ignore[arg-type]
    assert not can_view(VIEWERS["stranger"], odd, Relations())
    assert can_view(AUTHOR, odd, Relations())  # the author always sees their own posts
