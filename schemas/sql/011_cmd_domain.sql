-- Command side of the complete domain: the facts decisions need without waiting for a
-- projector. Written in the command's transaction, which commits only after the broker
-- acknowledged the event; like every cmd_* table, not derived from the log and never dropped by
-- a rebuild of the read models.

-- Locked accounts turn follows into follow requests.
ALTER TABLE cmd_accounts ADD COLUMN locked boolean NOT NULL DEFAULT false;

-- Who may see a post (shared.policy.can_view) decides replies, quotes, reposts and likes; the
-- media are kept so an edit that leaves them out keeps them.
ALTER TABLE cmd_posts
    ADD COLUMN visibility  text NOT NULL DEFAULT 'public',
    ADD COLUMN audience_id bigint,
    ADD COLUMN mentions    bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN media       jsonb NOT NULL DEFAULT '[]';

CREATE TABLE cmd_audiences (
    audience_id bigint PRIMARY KEY,
    owner_id    bigint NOT NULL,
    -- audience.deleted carries the name too (its event type requires one).
    name        text NOT NULL,
    deleted     boolean NOT NULL DEFAULT false
);

CREATE TABLE cmd_audience_members (
    audience_id bigint NOT NULL,
    member_id   bigint NOT NULL,
    PRIMARY KEY (audience_id, member_id)
);
-- "Is the actor a member of this post's audience?" for replies, reposts and likes.
CREATE INDEX cmd_audience_members_member ON cmd_audience_members (member_id);

-- One repost and one like per user and post. The first answer's event id and position are kept
-- so a repeated PUT answers them again instead of appending a second event.
CREATE TABLE cmd_reposts (
    post_id     bigint NOT NULL,
    reposter_id bigint NOT NULL,
    repost_id   bigint NOT NULL UNIQUE,
    event_id    uuid NOT NULL,
    position    text NOT NULL DEFAULT '',
    PRIMARY KEY (post_id, reposter_id)
);

CREATE TABLE cmd_likes (
    post_id  bigint NOT NULL,
    user_id  bigint NOT NULL,
    event_id uuid NOT NULL,
    position text NOT NULL DEFAULT '',
    PRIMARY KEY (post_id, user_id)
);

-- Pending follow requests, so approve/reject of a request that does not exist is a 404.
CREATE TABLE cmd_follow_requests (
    follower_id bigint NOT NULL,
    followee_id bigint NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX cmd_follow_requests_followee ON cmd_follow_requests (followee_id, follower_id);

-- Logged-out tokens, by nonce, until they would have expired anyway (then they are purged).
CREATE TABLE cmd_revoked_tokens (
    nonce      text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX cmd_revoked_tokens_expires ON cmd_revoked_tokens (expires_at);
