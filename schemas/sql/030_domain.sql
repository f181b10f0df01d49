-- The complete microblog's read models: audiences and privacy, conversations, media,
-- reposts, likes, edits, profiles, locked accounts, mutes, notifications, search.
-- Written only by the projector (from events); rebuilt from offset 0 like every read model.

-- ---------------------------------------------------------------- profiles
ALTER TABLE users
    ADD COLUMN bio        text NOT NULL DEFAULT '',
    ADD COLUMN avatar_url text,
    ADD COLUMN locked     boolean NOT NULL DEFAULT false;
-- Prefix search on username and display name.
CREATE INDEX users_username_prefix ON users (lower(username) text_pattern_ops);
CREATE INDEX users_display_name_prefix ON users (lower(display_name) text_pattern_ops);

-- ---------------------------------------------------------------- posts
ALTER TABLE posts
    ADD COLUMN visibility            text NOT NULL DEFAULT 'public'
        CHECK (visibility IN ('public', 'unlisted', 'followers', 'audience', 'direct')),
    ADD COLUMN audience_id           bigint,
    ADD COLUMN in_reply_to_id        bigint,
    ADD COLUMN in_reply_to_author_id bigint,
    ADD COLUMN quote_of_id           bigint,
    -- Root of the thread; equals post_id for a post that replies to nothing.
    ADD COLUMN conversation_id       bigint,
    -- Mentioned user ids; `direct` posts are visible exactly to these (and the author).
    ADD COLUMN mentions              bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN mention_names         text[] NOT NULL DEFAULT '{}',
    ADD COLUMN hashtags              text[] NOT NULL DEFAULT '{}',
    ADD COLUMN links                 text[] NOT NULL DEFAULT '{}',
    ADD COLUMN media                 jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN edited_at             timestamptz,
    ADD COLUMN replies_count         integer NOT NULL DEFAULT 0,
    ADD COLUMN reposts_count         integer NOT NULL DEFAULT 0,
    ADD COLUMN likes_count           integer NOT NULL DEFAULT 0,
    ADD COLUMN search                tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED;
CREATE INDEX posts_reply_to ON posts (in_reply_to_id, post_id) WHERE in_reply_to_id IS NOT NULL;
-- The public (local) timeline: public posts only, newest first.
CREATE INDEX posts_public ON posts (post_id) WHERE visibility = 'public';
CREATE INDEX posts_search ON posts USING gin (search);

-- Hashtag timeline (public posts only; lower-cased tags).
CREATE TABLE post_tags (
    tag     text NOT NULL,
    post_id bigint NOT NULL,
    PRIMARY KEY (tag, post_id)
);

-- Edit history: one row per version, version 0 being the original text.
CREATE TABLE post_versions (
    post_id    bigint NOT NULL,
    version    integer NOT NULL,
    text       text NOT NULL,
    media      jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL,
    PRIMARY KEY (post_id, version)
);

-- ---------------------------------------------------------------- reposts and likes
CREATE TABLE reposts (
    repost_id   bigint PRIMARY KEY,
    post_id     bigint NOT NULL,
    reposter_id bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    UNIQUE (post_id, reposter_id)
);
CREATE INDEX reposts_reposter ON reposts (reposter_id, repost_id);

CREATE TABLE likes (
    post_id    bigint NOT NULL,
    user_id    bigint NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (post_id, user_id)
);

-- A repost sits in a home timeline under its own repost_id, with the post it shares here.
-- The partial index is touched only by repost rows, so plain fan-out pays nothing for it; it
-- lets a repost skip timelines that already show the post (a post appears once).
ALTER TABLE home_timeline ADD COLUMN reposted_post_id bigint;
CREATE INDEX home_timeline_reposted ON home_timeline (user_id, reposted_post_id)
    WHERE reposted_post_id IS NOT NULL;

-- ---------------------------------------------------------------- relations
CREATE TABLE follow_requests (
    follower_id bigint NOT NULL,
    followee_id bigint NOT NULL,
    version     uuid NOT NULL,
    requested_at timestamptz NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX follow_requests_followee ON follow_requests (followee_id, requested_at);

CREATE TABLE mutes (
    muter_id   bigint NOT NULL,
    muted_id   bigint NOT NULL,
    active     boolean NOT NULL,
    expires_at timestamptz,
    version    uuid NOT NULL,
    PRIMARY KEY (muter_id, muted_id)
);

CREATE TABLE audiences (
    audience_id bigint PRIMARY KEY,
    owner_id    bigint NOT NULL,
    name        text NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL
);
CREATE INDEX audiences_owner ON audiences (owner_id);

CREATE TABLE audience_members (
    audience_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    PRIMARY KEY (audience_id, member_id)
);
CREATE INDEX audience_members_member ON audience_members (member_id);

-- ---------------------------------------------------------------- notifications
-- One row per (recipient, causing event). `event_id` is the event's UUIDv7, so it orders by
-- time and is the same in a rebuild (a serial would not be).
CREATE TABLE notifications (
    user_id    bigint NOT NULL,
    event_id   uuid NOT NULL,
    kind       text NOT NULL
        CHECK (kind IN ('mention', 'reply', 'follow', 'follow_request', 'repost', 'like')),
    actor_id   bigint NOT NULL,
    post_id    bigint,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX notifications_post ON notifications (post_id) WHERE post_id IS NOT NULL;

-- Deleted posts, for streaming clients that reconnect (Last-Event-ID) and must learn of
-- deletes they missed.
CREATE TABLE post_tombstones (
    post_id    bigint PRIMARY KEY,
    author_id  bigint NOT NULL,
    deleted_at timestamptz NOT NULL
);
