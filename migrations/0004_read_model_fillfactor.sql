-- Counter rows (follower/following/post counts, inbox sizes) are rewritten on every batch
-- that touches them. Room left in each page lets PostgreSQL update them in place (HOT),
-- without new index entries.
ALTER TABLE profiles SET (fillfactor = 80);
ALTER TABLE feed_authors SET (fillfactor = 80);
ALTER TABLE feed_inbox_sizes SET (fillfactor = 80);
