//! Odd input on every route (NUL, overlong, out-of-range numbers, malformed cursors and
//! positions, wrong content types): each is answered with a 4xx problem, never a 500.

mod common;

use common::{TestServer, ADMIN_TOKEN};
use reqwest::Method;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Ids that are not ids: NUL, words, zero, negatives, past 2^53 - 1 and past i64.
const BAD_IDS: [&str; 7] = [
    "%00",
    "abc",
    "0",
    "-1",
    "9007199254740992",
    "99999999999999999999999",
    "1%00",
];

/// Cursors murmur never issued: garbage, base64 of words, of impossible times and ids.
const BAD_CURSORS: [&str; 7] = [
    "%00",
    "not-a-cursor",
    "bm90IGEgY3Vyc29y",
    // "-100000000000000000000:1": a time PostgreSQL cannot hold
    "LTEwMDAwMDAwMDAwMDAwMDAwMDA6MQ",
    // "99999999999999999999:1"
    "OTk5OTk5OTk5OTk5OTk5OTk5OTk6MQ",
    // "1:-5"
    "MTotNQ",
    "%FF%FE",
];

const BAD_LIMITS: [&str; 6] = ["0", "-1", "101", "abc", "99999999999999999999", "%00"];

const BAD_POSITIONS: [&str; 7] = [
    "abc",
    "1:2:3",
    "-1:0",
    "1:-1",
    "99999999999999999999999:1",
    ":",
    "1:",
];

struct Case {
    method: Method,
    path: String,
    token: Option<String>,
    min_position: Option<&'static str>,
}

fn case(method: Method, path: String, token: Option<&str>) -> Case {
    Case {
        method,
        path,
        token: token.map(str::to_string),
        min_position: None,
    }
}

/// What is wrong with the answer to `c`, if anything.
async fn not_a_problem(s: &TestServer, c: &Case) -> Option<String> {
    let mut request = s.request(c.method.clone(), &c.path);
    if let Some(token) = &c.token {
        request = request.bearer_auth(token);
    }
    if let Some(position) = c.min_position {
        request = request.header("x-murmur-min-position", position);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = common::content_type(&response);
    let what = format!("{} {} (min {:?})", c.method, c.path, c.min_position);
    if !status.is_client_error() || content_type != "application/problem+json" {
        return Some(format!("{what}: {status} {content_type}"));
    }
    match response.json::<serde_json::Value>().await {
        Ok(body) => {
            (body["status"] != status.as_u16()).then(|| format!("{what}: problem says {body}"))
        }
        Err(e) => Some(format!("{what}: the problem body is not JSON: {e}")),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn odd_input_on_every_route_is_a_4xx_problem(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let ann = s.register("ann").await;
    let me = Some(ann.token.as_str());
    let admin = Some(ADMIN_TOKEN);
    let mut cases = Vec::new();
    for id in BAD_IDS {
        for path in [
            format!("/v1/users/{id}"),
            format!("/v1/users/{id}/posts"),
            format!("/v1/users/{id}/followers"),
            format!("/v1/users/{id}/following"),
        ] {
            cases.push(case(Method::GET, path, None));
        }
        cases.push(case(Method::GET, format!("/v1/users/{id}/feed"), me));
        cases.push(case(
            Method::PUT,
            format!("/v1/users/{}/following/{id}", ann.id),
            me,
        ));
        cases.push(case(
            Method::DELETE,
            format!("/v1/users/{}/following/{id}", ann.id),
            me,
        ));
        cases.push(case(Method::DELETE, format!("/v1/posts/{id}"), me));
        cases.push(case(Method::GET, format!("/v1/audit/users/{id}"), admin));
    }
    let long = "h".repeat(10_000);
    for handle in [
        "%00",
        "a%00b",
        long.as_str(),
        "%F0%9F%A6%80",
        "%FF",
        "a%20b",
    ] {
        cases.push(case(
            Method::GET,
            format!("/v1/users/by-handle/{handle}"),
            None,
        ));
    }
    for list in ["posts", "followers", "following", "feed"] {
        let token = (list == "feed").then_some(ann.token.as_str());
        for cursor in BAD_CURSORS {
            let path = format!("/v1/users/{}/{list}?cursor={cursor}", ann.id);
            cases.push(case(Method::GET, path, token));
        }
        for limit in BAD_LIMITS {
            let path = format!("/v1/users/{}/{list}?limit={limit}", ann.id);
            cases.push(case(Method::GET, path, token));
        }
    }
    for (aggregate_type, aggregate_id) in [("Handle", "%00"), ("Bogus", "1"), ("%00", "1")] {
        let path = format!("/v1/audit/streams/{aggregate_type}/{aggregate_id}");
        cases.push(case(Method::GET, path, admin));
    }
    for query in BAD_POSITIONS
        .iter()
        .map(|p| format!("after={p}"))
        .chain(["limit=0", "limit=1001", "limit=%00"].map(String::from))
    {
        cases.push(case(
            Method::GET,
            format!("/v1/audit/events?{query}"),
            admin,
        ));
    }
    for position in BAD_POSITIONS {
        for path in [
            format!("/v1/users/{}", ann.id),
            format!("/v1/users/{}/feed", ann.id),
        ] {
            let mut c = case(Method::GET, path, me);
            c.min_position = Some(position);
            cases.push(c);
        }
    }
    let mut wrong = Vec::new();
    for c in &cases {
        wrong.extend(not_a_problem(&s, c).await);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    s.stop().await;
}
