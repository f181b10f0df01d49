-- Indexes the projector needs for the whole domain (issue 3). Read models only.

-- A parent that arrives after its replies re-roots the posts that assumed it was the root.
CREATE INDEX posts_conversation ON posts (conversation_id, post_id);

-- Deleting an audience or removing a member removes that audience's posts from timelines.
CREATE INDEX posts_audience ON posts (audience_id, post_id) WHERE audience_id IS NOT NULL;

-- Deleting a post removes every repost of it from every timeline. Partial: only repost rows
-- pay for it, plain fan-out does not.
CREATE INDEX home_timeline_reposted_post ON home_timeline (reposted_post_id)
    WHERE reposted_post_id IS NOT NULL;

-- A mute hides notifications caused while it stood. The start of the latest mute is kept
-- besides the register's current state, so "was the actor muted when this happened?" has the
-- same answer whatever order partitions are projected in (invariant 4).
ALTER TABLE mutes ADD COLUMN last_mute_version uuid NOT NULL
    DEFAULT '00000000-0000-0000-0000-000000000000';

-- A reply projected after its parent was deleted (another partition ran ahead) still finds
-- the thread's root here.
ALTER TABLE post_tombstones ADD COLUMN conversation_id bigint;
CREATE INDEX post_tombstones_conversation ON post_tombstones (conversation_id)
    WHERE conversation_id IS NOT NULL;
