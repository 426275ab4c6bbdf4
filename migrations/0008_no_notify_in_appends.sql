-- Appends no longer notify: a transaction that queued a NOTIFY holds a cluster-wide lock
-- through its commit, so the trigger of 0001 made every append commit alone
-- (bench/pgbench/notify on 2026-12-01: 20,140-24,805 one-row insert tps without it,
-- 3,742-4,817 with it). Projectors are woken by the
-- process that appended, after its commit (projections/src/log/wake.rs), and poll.
DROP TRIGGER events_notify ON events;
DROP FUNCTION notify_events();
