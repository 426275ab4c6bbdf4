//! `GET /openapi.json` against the live router: every documented operation is routed, every
//! route murmur serves is documented, and every `$ref` in the document resolves.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Every route the router serves (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/users"),
    ("post", "/v1/sessions"),
    ("put", "/v1/users/{id}/following/{target}"),
    ("delete", "/v1/users/{id}/following/{target}"),
    ("post", "/v1/posts"),
    ("delete", "/v1/posts/{id}"),
    ("get", "/v1/users/{id}"),
    ("get", "/v1/users/by-handle/{handle}"),
    ("get", "/v1/users/{id}/feed"),
    ("get", "/v1/users/{id}/posts"),
    ("get", "/v1/users/{id}/followers"),
    ("get", "/v1/users/{id}/following"),
    ("get", "/v1/audit/events"),
    ("get", "/v1/audit/streams/{aggregate_type}/{aggregate_id}"),
    ("get", "/v1/audit/users/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Whether the router has no route for the request (its fallback's answer) or not for that
/// method: what a documented operation must never get.
async fn unrouted(response: reqwest::Response) -> Option<String> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let no_route = status == StatusCode::NOT_FOUND && body["detail"] == "no such route";
    (no_route || status == StatusCode::METHOD_NOT_ALLOWED).then(|| format!("{status} {body}"))
}

/// The JSON value `pointer` (`#/components/...`) names in `doc`.
fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer.strip_prefix('#')?)
}

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push(r),
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_document_matches_the_live_router(_: PgPoolOptions, db: PgConnectOptions) {
    let s = TestServer::start(db).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;

    let response = s.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                documented.insert((method.to_string(), path.clone()));
                if path.starts_with("/v1/") {
                    let errors = operation["responses"]
                        .as_object()
                        .expect("responses")
                        .keys()
                        .filter(|status| status.starts_with('4'))
                        .count();
                    assert!(errors > 0, "{method} {path} documents no error response");
                }
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is served but not documented"
        );
    }

    for (method, path) in &documented {
        let url = path
            .replace("{id}", &alice.id.to_string())
            .replace("{target}", &bob.id.to_string())
            .replace("{handle}", &alice.handle)
            .replace("{aggregate_type}", "User")
            .replace("{aggregate_id}", &alice.id.to_string());
        let operation = &doc["paths"][path][method.as_str()];
        let admin = operation["security"].to_string().contains("admin_token");
        let token = if admin {
            ADMIN_TOKEN
        } else {
            alice.token.as_str()
        };
        let method_ = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = s.request(method_.clone(), &url).bearer_auth(token);
        if method_ == Method::POST || method_ == Method::PUT {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap();
        if let Some(answer) = unrouted(response).await {
            panic!("{method} {url} (documented as {path}) is not routed: {answer}");
        }
    }

    // The check above can tell: an undocumented route is answered as unrouted.
    let nowhere = s.get("/v1/nowhere").send().await.unwrap();
    assert!(unrouted(nowhere).await.is_some());
    let wrong_method = s.request(Method::PATCH, "/v1/posts").send().await.unwrap();
    assert!(unrouted(wrong_method).await.is_some());

    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    s.stop().await;
}
