"""What the query API answers: response structs and their construction from read-model rows.

Ids go out as decimal strings (63-bit ids lose precision as JavaScript numbers), times as
ISO-8601 UTC. Each response is encoded once by msgspec; media, stored as JSON, passes through
as raw JSON without being decoded.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from shared.policy import PostFacts


class Account(msgspec.Struct):
    user_id: str
    username: str
    display_name: str
    avatar_url: str | None


class MentionView(msgspec.Struct):
    user_id: str
    username: str


class Item(msgspec.Struct, omit_defaults=True):
    """A post as timelines, threads, search and notifications show it.

    `reposted_by`/`repost_id` only on a repost; `audience_name` only to the post's author, so an
    audience's name never reaches anyone else.
    """

    post_id: str
    author: Account
    text: str
    created_at: datetime
    edited_at: datetime | None
    visibility: str
    in_reply_to_id: str | None
    conversation_id: str | None
    quote_of_id: str | None
    mentions: list[MentionView]
    hashtags: list[str]
    links: list[str]
    media: msgspec.Raw
    replies_count: int
    reposts_count: int
    likes_count: int
    reposted_by: Account | None = None
    repost_id: str | None = None
    audience_name: str | None = None


class Version(msgspec.Struct):
    version: int
    text: str
    media: msgspec.Raw
    created_at: datetime


class UserProfile(msgspec.Struct):
    user_id: str
    username: str
    display_name: str
    bio: str
    avatar_url: str | None
    locked: bool
    created_at: datetime
    followers_count: int
    following_count: int
    posts_count: int


class Relationship(msgspec.Struct):
    id: str
    following: bool
    followed_by: bool
    requested: bool
    blocking: bool
    blocked_by: bool
    muting: bool
    muting_expires_at: datetime | None


class AudienceView(msgspec.Struct):
    audience_id: str
    name: str
    created_at: datetime
    members_count: int


class Notification(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    created_at: datetime
    account: Account
    post: Item | None = None


class Context(msgspec.Struct):
    ancestors: list[Item]
    descendants: list[Item]


class SearchResults(msgspec.Struct):
    accounts: list[Account]
    posts: list[Item]


def raw_json(text: str) -> msgspec.Raw:
    """Stored JSON (jsonb read as text) passed through into a response without decoding."""
    return msgspec.Raw(text.encode())


def _opt_id(value: int | None) -> str | None:
    return None if value is None else str(value)


def account(row: asyncpg.Record) -> Account:
    """An account from the columns user_id, username, display_name, avatar_url."""
    return Account(str(row["user_id"]), row["username"], row["display_name"], row["avatar_url"])


def post_facts(row: asyncpg.Record) -> PostFacts:
    return PostFacts(
        author_id=row["author_id"],
        visibility=row["visibility"],
        audience_id=row["audience_id"],
        mentions=frozenset(row["mentions"]),
    )


def item(row: asyncpg.Record, viewer: int | None) -> Item:
    """The item for a hydrated post row (repository._hydrate), as `viewer` sees it."""
    author = Account(str(row["author_id"]), row["username"], row["display_name"], row["avatar_url"])
    reposter_id = row["reposter_id"]
    reposted_by = (
        None
        if reposter_id is None
        else Account(
            str(reposter_id), row["r_username"], row["r_display_name"], row["r_avatar_url"]
        )
    )
    return Item(
        post_id=str(row["post_id"]),
        author=author,
        text=row["text"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        visibility=row["visibility"],
        in_reply_to_id=_opt_id(row["in_reply_to_id"]),
        conversation_id=_opt_id(row["conversation_id"]),
        quote_of_id=_opt_id(row["quote_of_id"]),
        mentions=[
            MentionView(str(uid), name)
            for uid, name in zip(row["mentions"], row["mention_names"], strict=False)
        ],
        hashtags=list(row["hashtags"]),
        links=list(row["links"]),
        media=raw_json(row["media"]),
        replies_count=row["replies_count"],
        reposts_count=row["reposts_count"],
        likes_count=row["likes_count"],
        reposted_by=reposted_by,
        repost_id=_opt_id(row["repost_id"]),
        audience_name=row["audience_name"] if viewer == row["author_id"] else None,
    )
