-- Folding the inbox journal a chunk at a time (projections/src/state/feeds): a flush that
-- rewrote every inbox changed since the last fold wrote up to a row per reader in one
-- transaction, and commands stalled for seconds behind its WAL. Folding rounds rewrite
-- them a chunk per flush instead; so that the journal can stay while they do, each inbox
-- row records the newest journal row it includes (`as_of`, 0: none), and a load replays
-- onto it only the later ones. The journal row a round starts with is marked: when the
-- round's last chunk is written, the journal up to it is deleted.
ALTER TABLE feed_inbox
    ADD COLUMN as_of bigint NOT NULL DEFAULT 0;
ALTER TABLE feed_inbox_journal
    ADD COLUMN round_start boolean NOT NULL DEFAULT false;
-- Rows a round kept empty are deleted when the journal is emptied (at rest): found here.
CREATE INDEX feed_inbox_empty ON feed_inbox (owner_id) WHERE cardinality(post_ids) = 0;
