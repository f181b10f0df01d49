-- A post's own fields as the JSON a page item carries them, from "text" to "media", written
-- once when the post is stored or edited (a generated column follows every UPDATE of the row)
-- instead of on every read. Timeline and profile pages build each item in PostgreSQL
-- (services/query/page_sql.py); the author's account, the counters and what depends on the
-- page or the viewer are still built at read time. A home statement of 8 pages of 20 items
-- (the default benchmark's graph, 500 viewers, alternating, 4 rounds of 200): 3.5-4.4 ms
-- without the column, 2.6-3.2 ms with it. A stored post costs ~12 us more (20,000 posts
-- inserted: 0.81 s against 0.58 s), so a rebuild replays posts somewhat slower (bench/README);
-- PostgreSQL 15 recomputes a stored generated column on every UPDATE of the row, so a counter
-- update (a like, a reply, a repost) costs ~15 us more too (5,000 `likes_count + 1`: 58-60
-- against 39-49 us each). A trigger limited to the body's columns would spare that, but
-- `CREATE TABLE … (LIKE … INCLUDING ALL)` (the rebuild's fresh tables) copies generated
-- columns and not triggers.
--
-- PL/pgSQL, with the mentions (a subquery) apart: the rest is then one "simple expression",
-- which PL/pgSQL evaluates without the executor. Over 20,000 posts: 10 us a post, against
-- 30 us as a LANGUAGE sql function (which PostgreSQL cannot inline into a generated column)
-- and 7 us for the bare expression.
--
-- Declared IMMUTABLE, which a generated column requires, though to_char and to_json are only
-- STABLE: their results here depend on nothing but the arguments (explicit formats without
-- locale-dependent patterns, UTC, JSON escaping of text), so the stored value cannot go stale.
-- tests/integration/test_page_json.py holds the items equal to views.item.
CREATE FUNCTION post_body_json(
    p_text text,
    p_created_at timestamptz,
    p_edited_at timestamptz,
    p_visibility text,
    p_in_reply_to_id bigint,
    p_conversation_id bigint,
    p_quote_of_id bigint,
    p_mentions bigint[],
    p_mention_names text[],
    p_hashtags text[],
    p_links text[],
    p_media jsonb
) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE mentions_json text := '[]';
BEGIN
    IF cardinality(p_mentions) > 0 THEN
        mentions_json := coalesce((SELECT '[' || string_agg('{"user_id":"' || m.user_id || '","username":'
                                     || to_json(m.username)::text || '}', ',' ORDER BY m.i)
                   || ']'
              FROM unnest(p_mentions, p_mention_names) WITH ORDINALITY m(user_id, username, i)
             WHERE m.i <= least(cardinality(p_mentions), cardinality(p_mention_names))), '[]');
    END IF;
    RETURN ',"text":' || coalesce(to_json(p_text)::text, 'null')
    || ',"created_at":' || coalesce('"' || to_char(p_created_at AT TIME ZONE 'UTC',
           CASE WHEN date_trunc('second', p_created_at AT TIME ZONE 'UTC')
                     = p_created_at AT TIME ZONE 'UTC'
                THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
           || '"', 'null')
    || ',"edited_at":' || coalesce('"' || to_char(p_edited_at AT TIME ZONE 'UTC',
           CASE WHEN date_trunc('second', p_edited_at AT TIME ZONE 'UTC')
                     = p_edited_at AT TIME ZONE 'UTC'
                THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
           || '"', 'null')
    || ',"visibility":' || coalesce(to_json(p_visibility)::text, 'null')
    || ',"in_reply_to_id":' || coalesce('"' || p_in_reply_to_id || '"', 'null')
    || ',"conversation_id":' || coalesce('"' || p_conversation_id || '"', 'null')
    || ',"quote_of_id":' || coalesce('"' || p_quote_of_id || '"', 'null')
    || ',"mentions":' || mentions_json
    || ',"hashtags":' || to_json(p_hashtags)::text
    || ',"links":' || to_json(p_links)::text
    || ',"media":' || p_media::text;
END $$;

ALTER TABLE posts ADD COLUMN body_json text NOT NULL GENERATED ALWAYS AS (post_body_json(
    text, created_at, edited_at, visibility, in_reply_to_id, conversation_id, quote_of_id,
    mentions, mention_names, hashtags, links, media)) STORED;
