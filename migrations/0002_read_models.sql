-- Read models, maintained by the projectors in murmur-projections. Each table belongs to
-- exactly one projection (see `Projection::tables`); a projection reads only its own tables
-- while applying events, so a lagging or rebuilt projection ends in the same state.

-- Where each projection is in the log: (transaction_id, position) of the last applied event.
-- Written in the same transaction as the projection's read-model changes.
CREATE TABLE projection_checkpoints
(
    projection     text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Projection `profiles`.
CREATE TABLE profiles
(
    user_id         bigint PRIMARY KEY,
    handle          text        NOT NULL,
    display_name    text        NOT NULL,
    created_at      timestamptz NOT NULL,
    followers_count bigint      NOT NULL DEFAULT 0,
    following_count bigint      NOT NULL DEFAULT 0,
    posts_count     bigint      NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX profiles_handle ON profiles (lower(handle));

-- Projection `posts` (deleted posts are removed).
CREATE TABLE posts
(
    post_id    bigint PRIMARY KEY,
    author_id  bigint      NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX posts_by_author ON posts (author_id, post_id DESC);

-- Projection `feeds`: the follow graph and everything the home feed needs. The graph lives
-- here (not in a projection of its own) because fan-out must read it and a projection reads
-- only its own tables; one copy of a 50M-edge graph is enough.

-- `feed_from`: the oldest post of the followee that belongs in the follower's feed (the
-- followee's 20th newest post when the follow happened, 0 if they had fewer), so feeds are
-- the same whether the followee's posts were fanned out or are merged at read time.
CREATE TABLE follows
(
    follower_id bigint      NOT NULL,
    followee_id bigint      NOT NULL,
    since       timestamptz NOT NULL,
    feed_from   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX follows_followers ON follows (followee_id, since DESC, follower_id DESC);
CREATE INDEX follows_following ON follows (follower_id, since DESC, followee_id DESC);

-- Follower counts as the feeds projection sees them, and whether the author is currently
-- above the celebrity threshold (stored, so crossing it is noticed exactly once).
CREATE TABLE feed_authors
(
    author_id bigint PRIMARY KEY,
    followers bigint  NOT NULL DEFAULT 0,
    celebrity boolean NOT NULL DEFAULT false
);

-- The feeds projection's own index of live posts (ids only; bodies are in `posts`).
CREATE TABLE feed_posts
(
    author_id bigint NOT NULL,
    post_id   bigint NOT NULL,
    PRIMARY KEY (author_id, post_id)
);

-- Fan-out on write: one row per (reader, post), the newest 800 per reader.
CREATE TABLE feed_inbox
(
    owner_id  bigint NOT NULL,
    post_id   bigint NOT NULL,
    author_id bigint NOT NULL,
    PRIMARY KEY (owner_id, post_id)
);
CREATE INDEX feed_inbox_post ON feed_inbox (post_id);

-- Row counts of feed_inbox per reader, so trimming to 800 touches only full inboxes.
CREATE TABLE feed_inbox_sizes
(
    owner_id bigint PRIMARY KEY,
    entries  integer NOT NULL
);

-- The celebrities each reader follows: their posts are merged into the feed at read time.
CREATE TABLE feed_celebrity_follows
(
    reader_id bigint NOT NULL,
    author_id bigint NOT NULL,
    feed_from bigint NOT NULL,
    PRIMARY KEY (reader_id, author_id)
);
CREATE INDEX feed_celebrity_follows_author ON feed_celebrity_follows (author_id);
