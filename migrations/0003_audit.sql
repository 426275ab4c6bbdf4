-- The audit trail's "every event a user acted in or is the subject of", index-backed
-- (read by murmur_projections::audit).
--
-- `event_users` lists the users an event concerns: the actor (`metadata.actor_id`, absent on
-- registration) and every user id in the payload's body (`user_id` of HandleClaimed and
-- UserRegistered, `follower_id`/`followee_id` of a follow, `author_id` of a post). The
-- payload is `{"<event_type>": {...}}`, so the body is `payload -> event_type`.
-- Malformed values are skipped, never raised: an error here would make appends fail.
-- One GIN index over it costs less on bulk COPY than four expression B-trees (see the
-- report in replay/).
-- A user id held in a JSON value (a number, or a string as metadata holds it), else NULL.
CREATE FUNCTION jsonb_user_id(v jsonb) RETURNS bigint
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS
$$
SELECT CASE
           WHEN jsonb_typeof(v) = 'number' AND v::numeric BETWEEN 1 AND 9007199254740991
               THEN v::numeric::bigint
           WHEN jsonb_typeof(v) = 'string' AND v #>> '{}' ~ '^[0-9]{1,15}$'
               THEN (v #>> '{}')::bigint
           END
$$;

CREATE FUNCTION event_users(event_type text, payload jsonb, metadata jsonb) RETURNS bigint[]
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE
AS
$$
SELECT array_remove(ARRAY [
                        jsonb_user_id(metadata -> 'actor_id'),
                        jsonb_user_id(payload -> event_type -> 'user_id'),
                        jsonb_user_id(payload -> event_type -> 'follower_id'),
                        jsonb_user_id(payload -> event_type -> 'followee_id'),
                        jsonb_user_id(payload -> event_type -> 'author_id')
                        ], NULL)
$$;

CREATE INDEX events_users ON events USING gin (event_users(event_type, payload, metadata));
