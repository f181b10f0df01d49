"""Pure decisions about posts: create, edit, delete, repost and like.

Like decide.py: facts are fetched before deciding, nothing here does I/O, and a post the actor
may not see answers exactly like a missing one (invariant 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from msgspec import Struct

from services.command.decide import AudienceRecord
from shared.entities import Entities, extract
from shared.events import (
    LikeData,
    LikeRemoved,
    Media,
    Mention,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    PostEdited,
    PostEditedData,
    PostLiked,
    PostReposted,
    RepostData,
    RepostRemoved,
    Visibility,
    delivery_for,
    new_event,
)
from shared.http import ApiError, not_found
from shared.policy import PostFacts, Relations, can_view


class CreatePost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int
    text: str
    visibility: Visibility = "public"
    audience_id: int | None = None
    in_reply_to_id: int | None = None
    quote_of_id: int | None = None
    media: tuple[Media, ...] = ()


class EditPost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int
    text: str
    # None: keep the post's current media.
    media: tuple[Media, ...] | None = None


class PostAction(Struct, frozen=True, kw_only=True):
    """Repost, unrepost, like or unlike `post_id`; `repost_id` is the id a new repost gets."""

    actor_id: int
    post_id: int
    repost_id: int = 0


class DeletePost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int


class PostRecord(Struct, frozen=True, kw_only=True):
    author_id: int
    deleted: bool
    visibility: Visibility = "public"
    audience_id: int | None = None
    mentions: frozenset[int] = frozenset()
    media: tuple[Media, ...] = ()

    def policy_facts(self) -> PostFacts:
        return PostFacts(
            author_id=self.author_id,
            visibility=self.visibility,
            audience_id=self.audience_id,
            mentions=self.mentions,
        )


class PostContext(Struct, frozen=True, kw_only=True):
    """What a new post or an edit depends on, fetched before deciding.

    `accounts` maps the lower-cased mention candidates that name existing users to them;
    `relations` are the actor's relations to the authors of `reply_to`/`quote_of` and to the
    mentioned users (blocks refuse mentions' notifications: a blocked name stays plain text).
    """

    audience: AudienceRecord | None = None
    reply_to: PostRecord | None = None
    quote_of: PostRecord | None = None
    accounts: Mapping[str, Mention] = {}
    relations: Relations = Relations()


NO_CONTEXT: Final = PostContext()


def _check_text(text: str) -> None:
    # Length limits are enforced by the input model; blank text passes them but is no post.
    if not text.strip():
        raise ApiError(422, "invalid_field", "text must not be only whitespace", "text")


def resolve_mentions(
    names: Sequence[str], accounts: Mapping[str, Mention], blocked: frozenset[int]
) -> tuple[Mention, ...]:
    """Candidates naming existing users, in text order; blocked pairs stay plain text."""
    resolved: list[Mention] = []
    for name in names:
        mention = accounts.get(name.lower())
        if mention is not None and mention.user_id not in blocked:
            resolved.append(mention)
    return tuple(resolved)


def _viewable(actor_id: int, post: PostRecord | None, relations: Relations) -> PostRecord | None:
    if post is None or post.deleted:
        return None
    return post if can_view(actor_id, post.policy_facts(), relations) else None


def _unknown_post(field: str) -> ApiError:
    # The same answer for a missing and an invisible post, so ids can't be probed.
    return ApiError(422, "not_found", "no such post, or you may not see it", field)


def needs_context(cmd: CreatePost, mention_names: Sequence[str]) -> bool:
    """Whether deciding `cmd` depends on stored facts; a plain post is decided on its own."""
    refs = (cmd.audience_id, cmd.in_reply_to_id, cmd.quote_of_id)
    return bool(mention_names) or any(ref is not None for ref in refs)


def create_post(
    cmd: CreatePost,
    ctx: PostContext = NO_CONTEXT,
    *,
    request_id: str | None = None,
    entities: Entities | None = None,
    wide_author: bool = False,
) -> PostCreated:
    """`entities` are `extract(cmd.text)` when the caller has them already; `wide_author`:
    the author has at least the pull threshold's followers (hybrid fan-out)."""
    _check_text(cmd.text)
    if cmd.visibility == "audience":
        if cmd.audience_id is None:
            raise ApiError(
                422, "invalid_field", "audience_id is required for audience posts", "audience_id"
            )
        audience = ctx.audience
        if audience is None or audience.deleted or audience.owner_id != cmd.actor_id:
            raise ApiError(422, "not_found", "no such audience of yours", "audience_id")
    elif cmd.audience_id is not None:
        raise ApiError(
            422, "invalid_field", 'audience_id needs visibility "audience"', "audience_id"
        )
    reply_to = None
    if cmd.in_reply_to_id is not None:
        reply_to = _viewable(cmd.actor_id, ctx.reply_to, ctx.relations)
        if reply_to is None:
            raise _unknown_post("in_reply_to_id")
    if cmd.quote_of_id is not None and _viewable(cmd.actor_id, ctx.quote_of, ctx.relations) is None:
        raise _unknown_post("quote_of_id")
    entities = entities if entities is not None else extract(cmd.text)
    return new_event(
        PostCreated,
        actor_id=cmd.actor_id,
        data=PostCreatedData(
            post_id=cmd.post_id,
            author_id=cmd.actor_id,
            text=cmd.text,
            visibility=cmd.visibility,
            audience_id=cmd.audience_id,
            in_reply_to_id=cmd.in_reply_to_id,
            in_reply_to_author_id=reply_to.author_id if reply_to else None,
            quote_of_id=cmd.quote_of_id,
            mentions=resolve_mentions(entities.mention_names, ctx.accounts, ctx.relations.blocked),
            hashtags=entities.hashtags,
            links=entities.links,
            media=cmd.media,
            delivery=delivery_for(cmd.visibility, wide_author),
        ),
        request_id=request_id,
    )


def edit_post(
    cmd: EditPost,
    post: PostRecord | None,
    ctx: PostContext = NO_CONTEXT,
    *,
    request_id: str | None = None,
) -> PostEdited:
    # Visibility, audience and reply target are not part of an edit (semantics.md).
    if post is None or post.deleted or post.author_id != cmd.actor_id:
        raise not_found("post")
    _check_text(cmd.text)
    entities = extract(cmd.text)
    return new_event(
        PostEdited,
        actor_id=cmd.actor_id,
        data=PostEditedData(
            post_id=cmd.post_id,
            author_id=cmd.actor_id,
            text=cmd.text,
            mentions=resolve_mentions(entities.mention_names, ctx.accounts, ctx.relations.blocked),
            hashtags=entities.hashtags,
            links=entities.links,
            media=post.media if cmd.media is None else cmd.media,
        ),
        request_id=request_id,
    )


def delete_post(
    cmd: DeletePost, post: PostRecord | None, *, request_id: str | None = None
) -> PostDeleted:
    # Someone else's post answers exactly like a missing one, so ids can't be probed (404, not
    # 403: invariant 5).
    if post is None or post.deleted or post.author_id != cmd.actor_id:
        raise not_found("post")
    return new_event(
        PostDeleted,
        actor_id=cmd.actor_id,
        data=PostDeletedData(post_id=cmd.post_id, author_id=cmd.actor_id),
        request_id=request_id,
    )


def _seen_post(cmd: PostAction, post: PostRecord | None, relations: Relations) -> PostRecord:
    # Missing, deleted, invisible and blocked all answer alike: 404 (invariant 5).
    seen = _viewable(cmd.actor_id, post, relations)
    if seen is None:
        raise not_found("post")
    return seen


def repost(
    cmd: PostAction,
    post: PostRecord | None,
    relations: Relations,
    *,
    already: bool,
    request_id: str | None = None,
) -> PostReposted | None:
    """None: the actor reposted this post already; the first answer stands."""
    seen = _seen_post(cmd, post, relations)
    if seen.visibility not in ("public", "unlisted") and seen.author_id != cmd.actor_id:
        raise ApiError(
            422, "not_repostable", "only public or unlisted posts can be reposted", "post_id"
        )
    if already:
        return None
    return new_event(
        PostReposted,
        actor_id=cmd.actor_id,
        data=RepostData(
            repost_id=cmd.repost_id,
            post_id=cmd.post_id,
            author_id=seen.author_id,
            reposter_id=cmd.actor_id,
        ),
        request_id=request_id,
    )


def remove_repost(
    cmd: PostAction,
    post: PostRecord | None,
    repost_id: int | None,
    *,
    request_id: str | None = None,
) -> RepostRemoved:
    if post is None or repost_id is None:
        raise not_found("repost")
    return new_event(
        RepostRemoved,
        actor_id=cmd.actor_id,
        data=RepostData(
            repost_id=repost_id,
            post_id=cmd.post_id,
            author_id=post.author_id,
            reposter_id=cmd.actor_id,
        ),
        request_id=request_id,
    )


def like(
    cmd: PostAction,
    post: PostRecord | None,
    relations: Relations,
    *,
    already: bool,
    request_id: str | None = None,
) -> PostLiked | None:
    """None: the actor liked this post already; the first answer stands."""
    seen = _seen_post(cmd, post, relations)
    if already:
        return None
    return new_event(
        PostLiked,
        actor_id=cmd.actor_id,
        data=LikeData(post_id=cmd.post_id, author_id=seen.author_id, liker_id=cmd.actor_id),
        request_id=request_id,
    )


def remove_like(
    cmd: PostAction, post: PostRecord | None, *, liked: bool, request_id: str | None = None
) -> LikeRemoved:
    if post is None or not liked:
        raise not_found("like")
    return new_event(
        LikeRemoved,
        actor_id=cmd.actor_id,
        data=LikeData(post_id=cmd.post_id, author_id=post.author_id, liker_id=cmd.actor_id),
        request_id=request_id,
    )
