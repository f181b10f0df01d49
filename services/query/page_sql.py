"""SQL that turns a page's rows `(key, post_id, repost_id, reposter_id)` into what a reader
gets (repository.py builds the pages): the joins to the post, its author, the audience and
the reposter, and each item's JSON written by PostgreSQL."""

from __future__ import annotations

from typing import Final

V: Final = "$1::bigint"  # the viewer (NULL: anonymous) is always the first parameter


# The audience and the reposter are per-row probes, fenced with OFFSET 0: as plain LEFT JOINs
# the generic plan (parameters unknown) hash-joined them, reading the whole users table for
# every page (1,000 rows, 0.4 ms of a 1 ms statement on the small bench; 10,000 on default).
JOINS: Final = """
JOIN posts p ON p.post_id = page.post_id
JOIN users u ON u.user_id = p.author_id
LEFT JOIN LATERAL (SELECT aud.name FROM audiences aud
                   WHERE aud.audience_id = p.audience_id OFFSET 0) aud ON true
LEFT JOIN LATERAL (SELECT ru.username, ru.display_name, ru.avatar_url, ru.account_json
                   FROM users ru WHERE ru.user_id = page.reposter_id OFFSET 0) ru ON true
"""


# views.item built by PostgreSQL, as JSON text: a page's rows then need no decoding, no
# structs and no encoding in Python, which was ~40 % of the query service's CPU per home page
# (py-spy, small bench: asyncpg's row decoding 23 %, views.item 16 %, msgspec the rest).
# It is spelled as string concatenation because json_build_object costs ~20 us per row here
# (it works out every argument's type on every call): a 20-item page took 0.9 ms in
# PostgreSQL instead of 0.6 ms as concatenation, or 0.7 ms with the old per-column rows.
# The post's own fields, "text" to "media", are `posts.body_json`, stored with the post, and
# the accounts (author, reposter) `users.account_json`, stored with the user
# (schemas/sql/080_post_body_json.sql, 081_user_account_json.sql); only the counters and what
# depends on the page or the viewer are built here.
# views.item stays the definition (single posts, threads, the stream use it);
# tests/integration/test_page_json.py holds this twin equal to it, field for field.


def _str(expr: str) -> str:
    """A JSON string (escaped by to_json), or null."""
    return f"coalesce(to_json({expr})::text, 'null')"


def _id(expr: str) -> str:
    """A bigint id as a JSON string (views: ids go out as decimal strings), or null."""
    return f"""coalesce('"' || {expr} || '"', 'null')"""


# Optional fields are appended only when set, as msgspec's omit_defaults does.
def _item_json(viewer: str) -> str:
    return f"""
'{{"post_id":' || {_id("p.post_id")}
|| ',"author":' || u.account_json
|| p.body_json
|| ',"replies_count":' || p.replies_count
|| ',"reposts_count":' || p.reposts_count
|| ',"likes_count":' || p.likes_count
|| CASE WHEN page.reposter_id IS NULL THEN ''
        ELSE ',"reposted_by":' || coalesce(ru.account_json,
             user_account_json(page.reposter_id, NULL, NULL, NULL)) END
|| CASE WHEN page.repost_id IS NULL THEN '' ELSE ',"repost_id":' || {_id("page.repost_id")} END
|| CASE WHEN p.author_id = {viewer} AND aud.name IS NOT NULL
        THEN ',"audience_name":' || {_str("aud.name")} ELSE '' END
|| '}}'
"""


def page_json(inner: str, viewer: str = V) -> str:
    """Like repository._hydrate, newest first, but each row is `(key, item)`: the item as `viewer`
    sees it, ready-made JSON text (see _item_json)."""
    return f"""
WITH page AS ({inner})
SELECT page.key, {_item_json(viewer)} AS item
FROM page {JOINS}
ORDER BY page.key DESC
"""
