-- Fan-out on write maintains every index of home_timeline for every row it inserts, and the
-- (user_id, author_id) index was half of that work: replaying the default benchmark's 20,000
-- posts (~2 M rows) into the same database took 12.4-14.0 s with it and 8.6-9.3 s without
-- (a bare INSERT … SELECT of the same rows: 8.7 s and 4.6 s). Its readers, the removals after
-- an unfollow or a block, find an author's rows by scanning the user's primary-key range
-- instead: a timeline is capped (MB_TIMELINE_CAP), and EXPLAIN ANALYZE of REMOVE_AUTHORS
-- over 200 pairs with ~550-row timelines took 0.14 ms a pair.
DROP INDEX IF EXISTS home_timeline_author;
