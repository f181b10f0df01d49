-- Initial schema: command-side store and the read models.
-- Read-model tables are dropped and rebuilt from the log by a replay (invariant 1); the
-- command-side tables (cmd_*) are not derived from the log and are never dropped by a rebuild.

-- ---------------------------------------------------------------- command side
CREATE TABLE cmd_accounts (
    user_id       bigint PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Usernames are unique regardless of case, as people read them.
CREATE UNIQUE INDEX cmd_accounts_username ON cmd_accounts (lower(username));

-- Who wrote which post, so "only the author deletes" is decided without waiting for a projector.
CREATE TABLE cmd_posts (
    post_id   bigint PRIMARY KEY,
    author_id bigint NOT NULL,
    deleted   boolean NOT NULL DEFAULT false
);

-- ---------------------------------------------------------------- projector bookkeeping
-- The projector's consumer positions live here, written in the same transaction as the read
-- models (invariant 3). `epoch` fences a stale instance: each assignment bumps it, and a commit
-- whose epoch is no longer current updates no row and is rolled back.
CREATE TABLE projector_offsets (
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL,
    epoch       bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    partition   int NOT NULL,
    "offset"    bigint NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);

-- ---------------------------------------------------------------- read models
CREATE TABLE users (
    user_id       bigint PRIMARY KEY,
    username      text NOT NULL,
    display_name  text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL
);
-- Not unique: the command side enforces uniqueness; a projection never rejects a fact.
CREATE INDEX users_username ON users (lower(username));

CREATE TABLE posts (
    post_id    bigint PRIMARY KEY,
    author_id  bigint NOT NULL,
    text       text NOT NULL,
    created_at timestamptz NOT NULL
);
-- The per-user post list is this index: (author_id, post_id) range scans.
CREATE INDEX posts_author ON posts (author_id, post_id);

-- Follow and block edges are last-writer-wins registers keyed by the event id (a UUIDv7, so
-- time-ordered). Keeping the version of the latest event per pair makes the result independent
-- of how partitions interleave (invariant 4): a follow older than a block between the same two
-- people stays inactive whichever of the two the projector sees first.
CREATE TABLE follows (
    follower_id bigint NOT NULL,
    followee_id bigint NOT NULL,
    active      boolean NOT NULL,
    version     uuid NOT NULL,
    since       timestamptz NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX follows_followee_active ON follows (followee_id, follower_id) WHERE active;

CREATE TABLE blocks (
    blocker_id         bigint NOT NULL,
    blocked_id         bigint NOT NULL,
    active             boolean NOT NULL,
    version            uuid NOT NULL,
    last_block_version uuid NOT NULL,
    since              timestamptz NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_blocked ON blocks (blocked_id, blocker_id) WHERE active;

-- The hot path: fan-out on write. One row per (reader, post); reads are one range scan on the
-- primary key plus a primary-key join to posts.
CREATE TABLE home_timeline (
    user_id   bigint NOT NULL,
    post_id   bigint NOT NULL,
    author_id bigint NOT NULL,
    PRIMARY KEY (user_id, post_id)
);
-- Unfollow and block remove one author's rows from one timeline.
CREATE INDEX home_timeline_author ON home_timeline (user_id, author_id);
