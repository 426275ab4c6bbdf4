//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` annotations. Also the reusable problem+json responses handlers cite, and
//! the headers and responses all query routes share (added here once, not per handler).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi};

use super::error::Problem;
use super::queries::{self, freshness};
use super::responses::{
    BadRequest, Conflict, Forbidden, NotFound, NotModified, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType,
};
use super::AppState;
use super::{audit, follows, health, posts, users};
use murmur_projections::read_model::{PostItem, UserListItem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "murmur",
        description = "An event-sourced social network: commands append events, queries read projections."
    ),
    paths(
        users::register,
        users::login,
        follows::follow,
        follows::unfollow,
        posts::create_post,
        posts::delete_post,
        queries::get_profile,
        queries::get_profile_by_handle,
        queries::get_feed,
        queries::get_user_posts,
        queries::get_followers,
        queries::get_following,
        audit::audit_events,
        audit::audit_stream,
        audit::audit_user,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(
        // Bodies named only in `IntoResponses` enums are not collected from the paths, nor
        // the item types of a generic page.
        schemas(Problem, follows::FollowResponse, PostItem, UserListItem),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            TooManyRequests,
            Unavailable,
            ServiceUnavailable,
            NotModified
        )
    ),
    modifiers(&SecuritySchemes, &QueryConventions),
    tags(
        (name = "commands", description = "Append events through the domain's aggregates"),
        (name = "queries", description = "Read the projections"),
        (name = "audit", description = "Read the event log (admin token)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json() -> impl IntoResponse {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    axum::Json(DOC.get_or_init(ApiDoc::openapi))
}

/// The bearer schemes handlers name in `security(...)`: `bearer` (a user's JWT from
/// `POST /v1/sessions` or registration) and `admin_token` (`MURMUR_ADMIN_TOKEN`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .build(),
            )
        };
        components.add_security_scheme("bearer", bearer("JWT"));
        components.add_security_scheme("admin_token", bearer("opaque"));
    }
}

/// Adds to every operation tagged [`queries::TAG`] what [`freshness::ReadRequest`] does:
/// the `X-Murmur-Min-Position` and `If-None-Match` request headers, the `X-Murmur-Position`
/// and `ETag` response headers, and the 304, 400 and 503 answers.
struct QueryConventions;

impl Modify for QueryConventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let Some(operation) = item.get.as_mut() {
                let tagged = operation
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|t| t == queries::TAG));
                if tagged {
                    add_query_conventions(operation);
                }
            }
        }
    }
}

/// A position as the API writes it: two decimal numbers, `"<transaction id>:<position>"`.
pub const POSITION_PATTERN: &str = "^[0-9]{1,20}:[0-9]{1,19}$";

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn add_query_conventions(operation: &mut Operation) {
    let header_param = |name: &str, description: &str, schema: ObjectBuilder| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .description(Some(description))
            .schema(Some(schema))
            .build()
    };
    operation.parameters.get_or_insert_with(Vec::new).extend([
        header_param(
            freshness::MIN_POSITION_HEADER.as_str(),
            "Wait (up to 5 s) until the projections read have applied this position \
             (a command's `position`, \"<xid>:<pos>\")",
            string_schema().pattern(Some(POSITION_PATTERN)),
        ),
        header_param(
            header::IF_NONE_MATCH.as_str(),
            "An ETag of an earlier answer: 304 if unchanged",
            string_schema(),
        ),
    ]);
    let responses = &mut operation.responses.responses;
    let position = freshness::POSITION_HEADER;
    let headers = [
        (
            position.as_str(),
            "Progress of the projections this answer was read from (\"<xid>:<pos>\")",
        ),
        (header::ETAG.as_str(), "Strong entity tag of the body"),
    ];
    for (status, response) in responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            for (name, description) in headers {
                let header = HeaderBuilder::new()
                    .schema(string_schema())
                    .description(Some(description))
                    .build();
                response.headers.insert(name.to_string(), header);
            }
        }
    }
    let reference = |name: &str| RefOr::Ref(Ref::from_response_name(name));
    responses.insert("304".into(), reference("NotModified"));
    responses.insert("400".into(), reference("BadRequest"));
    responses.insert("503".into(), reference("Unavailable"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_routes_carry_the_shared_conventions() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let feed = &doc["paths"]["/v1/users/{id}/feed"]["get"];
        let params: Vec<&str> = feed["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in [
            "id",
            "limit",
            "cursor",
            "x-murmur-min-position",
            "if-none-match",
        ] {
            assert!(params.contains(&name), "{name} missing from {params:?}");
        }
        for status in ["200", "304", "400", "401", "403", "503"] {
            assert!(feed["responses"][status].is_object(), "{status} missing");
        }
        let ok_headers = &feed["responses"]["200"]["headers"];
        assert!(ok_headers["x-murmur-position"].is_object() && ok_headers["etag"].is_object());
        assert_eq!(feed["security"][0]["bearer"], serde_json::json!([]));
        // The constraints the server enforces are stated, so that a schema-driven client's
        // valid requests are accepted.
        let param = |op: &serde_json::Value, name: &str| {
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"))["schema"]
                .clone()
        };
        let id = param(feed, "id");
        assert_eq!(
            (id["minimum"].as_f64(), id["maximum"].as_f64()),
            (Some(1.0), Some(9007199254740991.0))
        );
        let limit = param(feed, "limit");
        assert_eq!(
            (limit["minimum"].as_f64(), limit["maximum"].as_f64()),
            (Some(1.0), Some(100.0))
        );
        assert_eq!(
            param(feed, "x-murmur-min-position")["pattern"],
            POSITION_PATTERN
        );
        for path in [
            "/v1/users/{id}/following/{target}",
            "/v1/posts/{id}",
            "/v1/audit/users/{id}",
        ] {
            for op in doc["paths"][path].as_object().unwrap().values() {
                for p in op["parameters"].as_array().unwrap() {
                    if p["in"] == "path" {
                        assert_eq!(p["schema"]["minimum"].as_f64(), Some(1.0), "{path} {p}");
                    }
                }
            }
        }
        let schemas = &doc["components"]["schemas"];
        let register = &schemas["RegisterRequest"]["properties"];
        assert_eq!(register["handle"]["pattern"], "^[A-Za-z0-9_]{1,30}$");
        assert_eq!(register["display_name"]["maxLength"], 50);
        assert_eq!(register["password"]["minLength"], 8);
        assert_eq!(register["password"]["maxLength"], 128);
        assert_eq!(
            schemas["CreatePostRequest"]["properties"]["body"]["maxLength"],
            280
        );
        // A type alias such as `UserId` in a schema shows up as a component named "i64".
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(name.starts_with(char::is_uppercase), "schema {name:?}");
        }
    }

    /// Every `$ref` names a component the document has.
    #[test]
    fn references_resolve() {
        fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        found.push(r);
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10);
        for r in found {
            let path = r.strip_prefix("#/").unwrap_or_else(|| panic!("{r}"));
            let target = path.split('/').fold(&doc, |node, key| &node[key]);
            assert!(!target.is_null(), "{r} does not resolve");
        }
    }
}
