-- The feeds projection asks, for every run of follows, which of the followees are
-- celebrities: thousands of primary-key probes per run at scale. Celebrities are few (a
-- dozen among a million authors in the benchmark), so it reads them all through this small
-- partial index instead.
CREATE INDEX feed_authors_celebrities ON feed_authors (author_id) WHERE celebrity;
