//! The query API over HTTP: profiles, feeds, post and follower lists, their shapes, errors,
//! pagination, the celebrity merge, read-your-writes and ETags.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;

use common::{ids, problem, TestServer, TestUser};
use murmur_projections::Position;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_string()
}

/// A 200 answer's JSON body, checking it carries an ETag and a position at least `min`.
async fn ok_json(response: reqwest::Response, min: &str) -> Value {
    let url = response.url().to_string();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    assert!(
        header(&response, "etag").starts_with('"'),
        "{url}: strong ETag"
    );
    let at: Position = header(&response, "x-murmur-position")
        .parse()
        .expect("a position");
    assert!(
        at >= min.parse::<Position>().expect("a position"),
        "{url}: {at} < {min}"
    );
    response.json().await.expect("JSON body")
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn feed_path(user: &TestUser) -> String {
    format!("/v1/users/{}/feed", user.id)
}

/// Every item of a paged list, `limit` at a time. The first page is read at `min`; after
/// each page `between` may add newer items and answers the position to read the next one at.
async fn walk<F, Fut>(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    limit: u32,
    min: &str,
    mut between: F,
) -> Vec<i64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let mut min = min.to_string();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let page = ok_json(s.read(&query, token, &min).await, &min).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= limit as usize);
        items.extend(page_ids);
        if let Some(newer) = between().await {
            min = newer;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn profiles_by_id_and_by_handle(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("Alice").await;
    let bob = s.register("bob").await;
    s.follow(&bob, alice.id).await;
    s.post(&alice, "one").await;
    let (_, last) = s.post(&alice, "two").await;

    let profile = ok_json(
        s.read(&format!("/v1/users/{}", alice.id), None, &last)
            .await,
        &last,
    )
    .await;
    assert_eq!(
        keys(&profile),
        BTreeSet::from([
            "id",
            "handle",
            "display_name",
            "created_at",
            "followers_count",
            "following_count",
            "posts_count"
        ])
    );
    assert_eq!(profile["id"], alice.id);
    assert_eq!(profile["handle"], "Alice");
    assert_eq!(profile["display_name"], "Alice name");
    assert!(chrono::DateTime::parse_from_rfc3339(profile["created_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        (
            &profile["followers_count"],
            &profile["following_count"],
            &profile["posts_count"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(2))
    );

    let by_handle = ok_json(
        s.read("/v1/users/by-handle/aLICE", None, &last).await,
        &last,
    )
    .await;
    assert_eq!(by_handle, profile);
    let bob_profile = ok_json(
        s.read(&format!("/v1/users/{}", bob.id), None, &last).await,
        &last,
    )
    .await;
    assert_eq!(bob_profile["following_count"], 1);
    assert_eq!(bob_profile["posts_count"], 0);

    // Unknown users: 404, still saying which position the answer was read at.
    let missing = s.read("/v1/users/987654321", None, &last).await;
    assert!(missing.headers().contains_key("x-murmur-position"));
    problem(missing, StatusCode::NOT_FOUND).await;
    problem(
        s.read("/v1/users/by-handle/nobody", None, &last).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        s.get("/v1/users/abc").send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_feed_holds_own_and_followed_posts_only_and_only_its_owner_reads_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let dave = s.register("dave").await;
    s.follow(&alice, bob.id).await;
    s.follow(&alice, carol.id).await;
    let (b1, _) = s.post(&bob, "b1").await;
    let (b2, _) = s.post(&bob, "b2").await;
    let (c1, _) = s.post(&carol, "c1").await;
    s.post(&dave, "d1").await;
    let (a1, _) = s.post(&alice, "a1").await;
    let last = s.delete_post(&bob, b1).await;

    let feed = ok_json(
        s.read(&feed_path(&alice), Some(&alice.token), &last).await,
        &last,
    )
    .await;
    assert_eq!(keys(&feed), BTreeSet::from(["items", "next_cursor"]));
    assert_eq!(
        ids(&feed),
        vec![a1, c1, b2],
        "own and followed posts, newest first, no deleted"
    );
    assert_eq!(feed["next_cursor"], Value::Null);
    let item = &feed["items"][2];
    assert_eq!(
        keys(item),
        BTreeSet::from(["id", "body", "created_at", "author"])
    );
    assert_eq!(item["body"], "b2");
    assert!(chrono::DateTime::parse_from_rfc3339(item["created_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        item["author"],
        serde_json::json!({"id": bob.id, "handle": "bob", "display_name": "bob name"})
    );
    let bob_feed = ok_json(
        s.read(&feed_path(&bob), Some(&bob.token), &last).await,
        &last,
    )
    .await;
    assert_eq!(ids(&bob_feed), vec![b2]);

    // Only its owner reads a feed.
    problem(
        s.read(&feed_path(&alice), None, &last).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        s.read(&feed_path(&alice), Some("not-a-token"), &last).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        s.read(&feed_path(&alice), Some(&bob.token), &last).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn post_and_follower_lists(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    s.follow(&bob, alice.id).await;
    s.follow(&carol, alice.id).await;
    s.follow(&alice, carol.id).await;
    let (p1, _) = s.post(&alice, "p1").await;
    let (p2, last) = s.post(&alice, "p2").await;

    let posts_path = format!("/v1/users/{}/posts", alice.id);
    let posts = ok_json(s.read(&posts_path, None, &last).await, &last).await;
    assert_eq!(ids(&posts), vec![p2, p1]);
    assert_eq!(posts["items"][0]["author"]["handle"], "alice");
    assert_eq!(posts["next_cursor"], Value::Null);

    let followers_path = format!("/v1/users/{}/followers", alice.id);
    let followers = ok_json(s.read(&followers_path, None, &last).await, &last).await;
    assert_eq!(keys(&followers), BTreeSet::from(["items", "next_cursor"]));
    assert_eq!(
        ids(&followers),
        vec![carol.id, bob.id],
        "newest follow first"
    );
    let entry = &followers["items"][0];
    assert_eq!(
        keys(entry),
        BTreeSet::from(["id", "handle", "display_name", "since"])
    );
    assert_eq!(
        (&entry["handle"], &entry["display_name"]),
        (&Value::from("carol"), &Value::from("carol name"))
    );
    let since = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(followers["items"][i]["since"].as_str().unwrap())
            .unwrap()
    };
    assert!(since(0) >= since(1));

    let following = |user: &TestUser| format!("/v1/users/{}/following", user.id);
    let alice_follows = ok_json(s.read(&following(&alice), None, &last).await, &last).await;
    assert_eq!(ids(&alice_follows), vec![carol.id]);
    let bob_follows = ok_json(s.read(&following(&bob), None, &last).await, &last).await;
    assert_eq!(ids(&bob_follows), vec![alice.id]);
    let no_followers = ok_json(
        s.read(&format!("/v1/users/{}/followers", bob.id), None, &last)
            .await,
        &last,
    )
    .await;
    assert_eq!(ids(&no_followers), Vec::<i64>::new());

    for list in ["posts", "followers", "following"] {
        let path = format!("/v1/users/987654321/{list}");
        problem(s.read(&path, None, &last).await, StatusCode::NOT_FOUND).await;
    }
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn limits_and_cursors_are_validated(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let lists = ["feed", "posts", "followers", "following"];
    for list in lists {
        let path = format!("/v1/users/{}/{list}", alice.id);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=1.5",
            "cursor=!!!",
            "cursor=eA",
        ] {
            let response = s
                .read(
                    &format!("{path}?{bad}"),
                    Some(&alice.token),
                    &alice.position,
                )
                .await;
            let body = problem(response, StatusCode::BAD_REQUEST).await;
            assert!(body["detail"].as_str().is_some(), "{list}?{bad}");
        }
        for good in ["limit=1", "limit=100", ""] {
            let response = s
                .read(
                    &format!("{path}?{good}"),
                    Some(&alice.token),
                    &alice.position,
                )
                .await;
            ok_json(response, &alice.position).await;
        }
    }
    let profile = format!("/v1/users/{}", alice.id);
    for bad in ["abc", "1", "1:-1", "x:1"] {
        problem(s.read(&profile, None, bad).await, StatusCode::BAD_REQUEST).await;
    }
    s.stop().await;
}

/// Pages never skip or repeat an item while newer ones arrive between pages, and the
/// default page size is 20.
#[sqlx::test(migrations = "../migrations")]
async fn pagination_is_stable_under_concurrent_inserts(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    s.follow(&alice, bob.id).await;
    // Newest first, as the lists show them.
    let all = RefCell::new(Vec::new());
    let bobs = RefCell::new(Vec::new());
    let post = |author: &TestUser, body: String| {
        let (s, all, bobs, bob_id) = (&s, &all, &bobs, bob.id);
        let author = author.clone();
        async move {
            let (id, position) = s.post(&author, &body).await;
            all.borrow_mut().insert(0, id);
            if author.id == bob_id {
                bobs.borrow_mut().insert(0, id);
            }
            position
        }
    };
    let mut last = String::new();
    for i in 0..12 {
        post(&alice, format!("alice {i}")).await;
        last = post(&bob, format!("bob {i}")).await;
    }
    // Newer posts from both authors before each next page is read.
    let both_post = || async {
        post(&alice, "newer".into()).await;
        Some(post(&bob, "newer".into()).await)
    };

    let wanted = all.borrow().clone();
    let feed = walk(
        &s,
        &feed_path(&alice),
        Some(&alice.token),
        5,
        &last,
        both_post,
    )
    .await;
    assert_eq!(feed, wanted, "the feed: every item once, newest first");
    let wanted = bobs.borrow().clone();
    let posts_path = format!("/v1/users/{}/posts", bob.id);
    let min = post(&alice, "sync".into()).await;
    let posts = walk(&s, &posts_path, None, 5, &min, both_post).await;
    assert_eq!(posts, wanted, "bob's posts: every item once, newest first");

    // Default limit: 20, then the rest.
    let min = post(&alice, "sync".into()).await;
    let first = ok_json(
        s.read(&feed_path(&alice), Some(&alice.token), &min).await,
        &min,
    )
    .await;
    assert_eq!(ids(&first).len(), 20);
    assert!(first["next_cursor"].is_string());

    // Followers: newer followers arriving between pages are not shown, none is lost.
    let mut followers = Vec::new();
    let mut min = String::new();
    for i in 0..7 {
        let fan = s.register(&format!("fan{i}")).await;
        min = s.follow(&fan, alice.id).await;
        followers.insert(0, fan.id);
    }
    let late = Cell::new(0);
    let late_follower = || async {
        late.set(late.get() + 1);
        let fan = s.register(&format!("late{}", late.get())).await;
        Some(s.follow(&fan, alice.id).await)
    };
    let path = format!("/v1/users/{}/followers", alice.id);
    assert_eq!(
        walk(&s, &path, None, 3, &min, late_follower).await,
        followers
    );
    s.stop().await;
}

/// With a celebrity threshold of 1, an author with two followers is merged into feeds at
/// read time instead of fanned out; readers see each of their posts exactly once, whether
/// it was fanned out before the author crossed the threshold or not.
#[sqlx::test(migrations = "../migrations")]
async fn celebrity_posts_are_merged_into_feeds_once(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start_with(db, |c| c.shared.celebrity_threshold = 1).await;
    let star = s.register("star").await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    s.follow(&alice, star.id).await;
    let (p1, _) = s.post(&star, "before the threshold").await; // fanned out to alice
    s.follow(&bob, star.id).await; // two followers: above the threshold
    let (p2, _) = s.post(&star, "a celebrity's post").await;
    let (p3, _) = s.post(&star, "another").await;
    s.follow(&carol, star.id).await;
    let (a1, _) = s.post(&alice, "alice's own").await;
    let (p4, _) = s.post(&star, "to be deleted").await;
    let last = s.delete_post(&star, p4).await;

    let star_profile = ok_json(
        s.read(&format!("/v1/users/{}", star.id), None, &last).await,
        &last,
    )
    .await;
    assert_eq!(star_profile["followers_count"], 3);
    for (reader, expected) in [
        (&alice, vec![a1, p3, p2, p1]),
        (&bob, vec![p3, p2, p1]),
        (&carol, vec![p3, p2, p1]),
    ] {
        let feed = ok_json(
            s.read(&feed_path(reader), Some(&reader.token), &last).await,
            &last,
        )
        .await;
        assert_eq!(ids(&feed), expected, "{}'s feed", reader.handle);
        // The same one item at a time: the cursor walks the merged feed without repeats.
        let paged = walk(
            &s,
            &feed_path(reader),
            Some(&reader.token),
            1,
            &last,
            || async { None },
        )
        .await;
        assert_eq!(paged, expected, "{}'s feed, paged", reader.handle);
    }
    // The feeds projection took the read-time merge path for star, not only fan-out (its
    // tables trail the memory the feeds above were read from by a flush).
    s.durable_at_least(&last).await;
    let celebrity: bool =
        sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM feed_celebrities WHERE author_id = $1)")
            .bind(star.id)
            .fetch_one(&s.pool)
            .await
            .expect("reading the celebrities");
    assert!(celebrity);
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn min_position_gives_read_your_writes_or_503(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let (post, position) = s.post(&alice, "read me back").await;
    let feed = ok_json(
        s.read(&feed_path(&alice), Some(&alice.token), &position)
            .await,
        &position,
    )
    .await;
    assert_eq!(ids(&feed), vec![post]);
    let profile = ok_json(
        s.read(&format!("/v1/users/{}", alice.id), None, &position)
            .await,
        &position,
    )
    .await;
    assert_eq!(profile["posts_count"], 1);

    // A position the log will not reach: 503 after the wait, with Retry-After.
    let far = format!("{}:1", u64::MAX);
    let response = s
        .read_once(&format!("/v1/users/{}", alice.id), None, &far)
        .await;
    assert!(header(&response, "retry-after").parse::<u64>().is_ok());
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn etags_answer_304_until_the_representation_changes(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let (_, first) = s.post(&alice, "first").await;

    for (path, token) in [
        (format!("/v1/users/{}", alice.id), None),
        (feed_path(&alice), Some(alice.token.as_str())),
        (format!("/v1/users/{}/posts?limit=5", alice.id), None),
    ] {
        let response = s.read(&path, token, &first).await;
        let etag = header(&response, "etag");
        ok_json(response, &first).await;

        let conditional = |tag: String, min: String| {
            let mut request = s
                .get(&path)
                .header("if-none-match", tag)
                .header("x-murmur-min-position", min);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let unchanged = conditional(etag.clone(), first.clone()).await.unwrap();
        assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(&unchanged, "etag"), etag);
        assert!(header(&unchanged, "x-murmur-position")
            .parse::<Position>()
            .is_ok());
        assert!(unchanged.bytes().await.unwrap().is_empty());

        let other = conditional("\"something else\"".into(), first.clone())
            .await
            .unwrap();
        ok_json(other, &first).await;

        // A new post changes all three representations.
        let (_, newer) = s.post(&alice, &format!("after {path}")).await;
        // Caught up first (retrying a 503), so the conditional read below does not wait.
        ok_json(s.read(&path, token, &newer).await, &newer).await;
        let changed = conditional(etag.clone(), newer.clone()).await.unwrap();
        assert_ne!(header(&changed, "etag"), etag, "{path}");
        ok_json(changed, &newer).await;
    }
    s.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn read_your_writes_when_another_process_runs_the_projectors(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // As with `murmur serve --no-projectors` beside `murmur project`: the server learns of
    // checkpoints only from the database's notifications.
    let s = TestServer::start_with(db, |config| config.no_projectors = true).await;
    let stop = murmur_projections::shutdown::Stop::new();
    let projectors = murmur_projections::runtime::spawn(
        s.pool.clone(),
        murmur_projections::ProjectorConfig::default(),
        stop.shutdown(),
    );
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    s.follow(&bob, alice.id).await;
    for n in 0..3 {
        let (post, position) = s.post(&alice, &format!("post {n}")).await;
        let feed = ok_json(
            s.read(&feed_path(&bob), Some(&bob.token), &position).await,
            &position,
        )
        .await;
        assert_eq!(ids(&feed).first(), Some(&post));
        let profile = ok_json(
            s.read(&format!("/v1/users/{}", alice.id), None, &position)
                .await,
            &position,
        )
        .await;
        assert_eq!(profile["posts_count"], n + 1);
    }
    stop.stop();
    projectors.await.unwrap().unwrap();
    s.stop().await;
}
