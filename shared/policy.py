"""Who may see which post (invariant 5, schemas/semantics.md): one pure decision.

The command service uses it to refuse replies to, reposts of and likes of posts the actor may
not see; the query service applies it (or its SQL twin for pages) on every read path; the
reference model in tests/model uses it as the rule too.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from shared.events import Visibility


class PostFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy needs to know about a post."""

    author_id: int
    visibility: Visibility = "public"
    audience_id: int | None = None
    mentions: frozenset[int] = frozenset()


class Relations(msgspec.Struct, frozen=True, kw_only=True):
    """The viewer's relations that matter to the posts being decided.

    Loaders may restrict each set to the authors/audiences at hand; that changes no decision.
    - `blocked`: users with an active block between them and the viewer, either direction;
    - `following`: users the viewer actively follows;
    - `audiences`: audiences the viewer is currently a member of;
    - `muted`: users the viewer mutes, with the mute's expiry (None: forever).
    """

    blocked: frozenset[int] = frozenset()
    following: frozenset[int] = frozenset()
    audiences: frozenset[int] = frozenset()
    muted: dict[int, datetime | None] = msgspec.field(default_factory=dict)


def can_view(viewer_id: int | None, post: PostFacts, relations: Relations) -> bool:
    """True when `viewer_id` (None: anonymous) may see `post` at all."""
    if viewer_id is not None and viewer_id == post.author_id:
        return True
    if viewer_id is not None and post.author_id in relations.blocked:
        return False
    match post.visibility:
        case "public" | "unlisted":
            return True
        case "followers":
            return viewer_id is not None and (
                post.author_id in relations.following or viewer_id in post.mentions
            )
        case "audience":
            return (
                viewer_id is not None
                and post.audience_id is not None
                and post.audience_id in relations.audiences
            )
        case "direct":
            return viewer_id is not None and viewer_id in post.mentions
    return False  # an unknown visibility is never shown


def is_muted(author_id: int, relations: Relations, now: datetime) -> bool:
    if author_id not in relations.muted:
        return False
    expires = relations.muted[author_id]
    return expires is None or expires > now


def shows_in_feed(
    viewer_id: int | None, post: PostFacts, relations: Relations, now: datetime
) -> bool:
    """Feeds (home, public, hashtag, notifications, search) also hide muted accounts."""
    if not can_view(viewer_id, post, relations):
        return False
    return viewer_id == post.author_id or not is_muted(post.author_id, relations, now)
