-- Read-side indexes on tables created in 030_domain.sql.
-- Streaming clients catch up on deletes they missed by (deleted_at, post_id).
CREATE INDEX post_tombstones_deleted ON post_tombstones (deleted_at, post_id);
-- Paging a user's pending follow requests by requester id.
CREATE INDEX follow_requests_followee_follower ON follow_requests (followee_id, follower_id);
