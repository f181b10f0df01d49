-- An account as a page item carries it (the author; the reposter), stored with the user like
-- posts.body_json (080) instead of built for every item of every page: users change only
-- with their profile. Same reasons for PL/pgSQL and IMMUTABLE as in 080;
-- tests/integration/test_page_json.py holds the items equal to views.item. A home statement of
-- 8 pages of 20 (as measured for 080, 12 rounds alternating): 2.5 ms mean against 2.8 ms.
CREATE FUNCTION user_account_json(
    p_user_id bigint,
    p_username text,
    p_display_name text,
    p_avatar_url text
) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN '{"user_id":' || coalesce('"' || p_user_id || '"', 'null')
        || ',"username":' || coalesce(to_json(p_username)::text, 'null')
        || ',"display_name":' || coalesce(to_json(p_display_name)::text, 'null')
        || ',"avatar_url":' || coalesce(to_json(p_avatar_url)::text, 'null')
        || '}';
END $$;

ALTER TABLE users ADD COLUMN account_json text NOT NULL GENERATED ALWAYS AS (
    user_account_json(user_id, username, display_name, avatar_url)) STORED;
