-- Hybrid fan-out. A post.created event with delivery "pull" (the command service decides it
-- for authors with at least MB_PULL_THRESHOLD followers) is not written into its author's
-- followers' home timelines; home reads merge such posts in from `posts`, through
-- `pulled_follows`. Audience and direct posts, the author's own row and reposts are always
-- written (pushed).
ALTER TABLE posts ADD COLUMN pulled boolean NOT NULL DEFAULT false;
-- A pull author's posts that readers merge: one backwards range scan per followed pull author.
CREATE INDEX posts_pulled ON posts (author_id, post_id) WHERE pulled;

-- Authors with at least one pulled post (sticky: their pulled posts stay pulled).
CREATE TABLE pull_authors (
    author_id bigint PRIMARY KEY
);

-- (follower, pull author) for every active follow of a pull author: a home read finds the
-- accounts whose posts it merges with one range probe, empty for almost every reader. Kept by
-- the projector as follows(active) ⋈ pull_authors, whichever order the events come in.
CREATE TABLE pulled_follows (
    follower_id bigint NOT NULL,
    author_id   bigint NOT NULL,
    PRIMARY KEY (follower_id, author_id)
);
