-- The read models become the durable copies of in-memory projections (see
-- projections/src/store). What the projections keep in memory and can derive is no longer
-- stored: inbox sizes, per-reader celebrity lists, follower counts per author. What is
-- stored is shaped for loading and bulk writing:
-- - `feed_inbox`: one row per reader with the inbox's post ids, ascending (a flush rewrites
--   a touched inbox once, however many posts reached it).
-- - `feed_celebrities`: the authors currently above the threshold (with hysteresis this is
--   history, not a function of the follower count).
-- - `follows` loses its primary key: the projection knows which edges exist, and
--   follows_following (follower_id first) finds an edge to delete.
-- - checkpoints record the settings a projection was built with (the celebrity threshold);
--   NULL: built before this migration, taken to match the configured ones.

ALTER TABLE projection_checkpoints ADD COLUMN settings jsonb;

CREATE TABLE feed_inbox_rows
(
    owner_id bigint PRIMARY KEY,
    post_ids bigint[] NOT NULL
);
INSERT INTO feed_inbox_rows
SELECT owner_id, array_agg(post_id ORDER BY post_id) FROM feed_inbox GROUP BY owner_id;
DROP TABLE feed_inbox;
ALTER TABLE feed_inbox_rows RENAME TO feed_inbox;
ALTER INDEX feed_inbox_rows_pkey RENAME TO feed_inbox_pkey;

CREATE TABLE feed_celebrities
(
    author_id bigint PRIMARY KEY
);
INSERT INTO feed_celebrities SELECT author_id FROM feed_authors WHERE celebrity;

DROP TABLE feed_authors, feed_inbox_sizes, feed_celebrity_follows;

ALTER TABLE follows DROP CONSTRAINT follows_pkey;
