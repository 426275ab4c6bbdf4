#!/usr/bin/env bash
# STOPGAP, measurement only: fills the plain read-model tables the naive baseline reads
# (profiles' user columns, follows, posts) straight from the generated events with SQL,
# for when `replay rebuild --all` is too slow to finish at scale 1. murmur never reads
# tables made this way. In position ranges of 1M events, so no transaction is long
# (projectors in every database of the cluster wait for the oldest open one).
# usage: DATABASE_URL=postgres://.../murmur_bench_s1 bench/stopgap_read_models.sh
set -euo pipefail
q() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt -c "$1"; }
max=$(q "SELECT max(position) FROM events")
q "DROP INDEX IF EXISTS follows_followers; DROP INDEX IF EXISTS follows_following;
   ALTER TABLE follows DROP CONSTRAINT IF EXISTS follows_pkey"
for ((from = 0; from < max; from += 1000000)); do
  to=$((from + 1000000))
  q "INSERT INTO profiles (user_id, handle, display_name, created_at)
     SELECT (payload->'UserRegistered'->>'user_id')::bigint, payload->'UserRegistered'->>'handle',
            payload->'UserRegistered'->>'display_name', (metadata->>'time')::timestamptz
     FROM events WHERE position > $from AND position <= $to AND event_type = 'UserRegistered'"
  q "INSERT INTO follows (follower_id, followee_id, since)
     SELECT (payload->'Followed'->>'follower_id')::bigint, (payload->'Followed'->>'followee_id')::bigint,
            (metadata->>'time')::timestamptz
     FROM events WHERE position > $from AND position <= $to AND event_type = 'Followed'"
  q "INSERT INTO posts (post_id, author_id, body, created_at)
     SELECT (payload->'PostCreated'->>'post_id')::bigint, (payload->'PostCreated'->>'author_id')::bigint,
            payload->'PostCreated'->>'body', (metadata->>'time')::timestamptz
     FROM events WHERE position > $from AND position <= $to AND event_type = 'PostCreated'"
  echo "  $to / $max events" >&2
done
# The same keys and indexes as migrations/0002_read_models.sql.
q "SET maintenance_work_mem = '1GB'; ALTER TABLE follows ADD PRIMARY KEY (follower_id, followee_id)"
q "SET maintenance_work_mem = '1GB'; CREATE INDEX follows_followers ON follows (followee_id, since DESC, follower_id DESC)"
q "SET maintenance_work_mem = '1GB'; CREATE INDEX follows_following ON follows (follower_id, since DESC, followee_id DESC)"
for t in profiles follows posts; do q "VACUUM ANALYZE $t"; done
