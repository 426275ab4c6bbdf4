-- The feeds projection's inbox journal (projections/src/store/feeds.rs): under load a flush
-- appends the inbox changes it carries (a delivery or a removal each, 16 bytes) as one row
-- of two parallel arrays instead of rewriting every inbox a post reached; the inboxes of
-- the durable copy are `feed_inbox`'s rows with these entries replayed in `seq` order. A
-- flush now and then writes the changed inboxes whole and empties it.
-- Stored uncompressed: the rows are written once, read at a load, and compressing megabytes
-- of ids costs more than it saves.
CREATE TABLE feed_inbox_journal
(
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_ids bigint[] NOT NULL,
    -- A post id added (inserted, keeping the newest 800), or its negation, removed.
    entries   bigint[] NOT NULL,
    CHECK (cardinality(owner_ids) = cardinality(entries))
);
ALTER TABLE feed_inbox_journal
    ALTER owner_ids SET STORAGE EXTERNAL,
    ALTER entries SET STORAGE EXTERNAL;

-- The audit index (0003) takes new entries into its pending list (fastupdate, the default),
-- which the projector nodes merge into the index in the background every second
-- (projections/src/log/audit_index.rs): merged sorted and in bulk they cost a fraction of
-- inserting each event's keys into the tree, and no append is left to merge a full list.
-- A larger list leaves room should that task fall behind.
ALTER INDEX events_users SET (fastupdate = on, gin_pending_list_limit = 16384);

-- Transactions that write no event (flushes of the durable copies), registered while they
-- run, so that readers of the log in every process pass over them (projections/src/log/
-- horizon.rs): a flush that writes whole inboxes takes seconds, and read nodes waited.
CREATE TABLE eventless_transactions
(
    xid   xid8        PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);
