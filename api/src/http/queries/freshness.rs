//! What every query response shares, in one place: read-your-writes (`X-Murmur-Min-Position`
//! waits until the projections read have applied a command's position), the
//! `X-Murmur-Position` the answer was read at, and a strong `ETag` with `If-None-Match` → 304.

use std::future::Future;
use std::time::Duration;

use super::Render;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use murmur_projections::{Position, Reads};

use crate::http::{ApiError, AppState};

/// The progress of the projections an answer was read from.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("x-murmur-position");
/// The position (a command's `position`) the projections must have applied before reading.
pub const MIN_POSITION_HEADER: HeaderName = HeaderName::from_static("x-murmur-min-position");

/// How long a request waits for `X-Murmur-Min-Position` before answering 503.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// What a 503 asks the client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

/// The freshness and validator headers of a query request; 400 on a malformed
/// `X-Murmur-Min-Position`.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    min_position: Option<Position>,
    if_none_match: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ReadRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers)
    }
}

impl ReadRequest {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let min_position = match headers.get(&MIN_POSITION_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.parse::<Position>().ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "{MIN_POSITION_HEADER}: {}",
                            murmur_projections::log::position::BadPosition
                        ))
                    })?,
            ),
        };
        let if_none_match = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Self {
            min_position,
            if_none_match,
        })
    }

    /// Waits until `projections` have applied the requested position, runs `read`, and
    /// answers its value as JSON (or 304), or its error; both carry `X-Murmur-Position`.
    pub async fn answer<T, F>(
        &self,
        state: &AppState,
        reads: Reads,
        read: F,
    ) -> Result<Response, ApiError>
    where
        T: Render,
        F: Future<Output = Result<T, ApiError>>,
    {
        // Read before the data, so the data is at least as new as the header says.
        let position = self.wait_for(state, reads).await?;
        let mut response = match read.await {
            Ok(value) => self.json(&value)?,
            Err(e) => e.into_response(),
        };
        response.headers_mut().insert(
            POSITION_HEADER,
            HeaderValue::try_from(position.to_string()).map_err(internal("position header"))?,
        );
        Ok(response)
    }

    /// The projections' progress, once it has reached `min_position` (if any); 503 after
    /// [`MAX_WAIT`].
    async fn wait_for(&self, state: &AppState, reads: Reads) -> Result<Position, ApiError> {
        let Some(min) = self.min_position else {
            return Ok(state.read_model.progress_of(reads).await?);
        };
        let at = state
            .read_model
            .progress_of_reaching(reads, min, MAX_WAIT)
            .await?;
        if at < min {
            return Err(ApiError::Unavailable {
                detail: format!(
                    "the read model has applied the log up to {at}, not yet {min}; retry later"
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        Ok(at)
    }

    /// 200 with the JSON body and its ETag, or 304 when the client holds that ETag.
    fn json<T: Render>(&self, value: &T) -> Result<Response, ApiError> {
        // Sized for a page of posts: growing from 128 bytes copied it six times.
        let mut body = Vec::with_capacity(8 * 1024);
        value
            .render(&mut body)
            .map_err(internal("serialising the answer"))?;
        let etag = etag(&body);
        let etag_value = HeaderValue::try_from(etag.as_str()).map_err(internal("etag header"))?;
        let not_modified = self
            .if_none_match
            .as_deref()
            .is_some_and(|tags| matches_any(tags, &etag));
        let mut response = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        };
        response.headers_mut().insert(header::ETAG, etag_value);
        Ok(response)
    }
}

fn internal<E>(context: &'static str) -> impl FnOnce(E) -> ApiError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| ApiError::Internal(anyhow::Error::new(e).context(context))
}

/// A strong entity tag: the body's 128-bit XXH3, in hex, quoted. A tag only has to change
/// with the body (it guards no secret), and SHA-256 here cost 5% of a feed read's CPU.
pub fn etag(body: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body))
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn matches_any(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_quoted_and_body_dependent() {
        let a = etag(b"{\"a\":1}");
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 34,
            "{a}"
        );
        assert_eq!(a, etag(b"{\"a\":1}"));
        assert_ne!(a, etag(b"{\"a\":2}"));
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let tag = etag(b"x");
        assert!(matches_any(&tag, &tag));
        assert!(matches_any(&format!("\"other\", W/{tag}"), &tag));
        assert!(matches_any("*", &tag));
        assert!(!matches_any("\"other\"", &tag));
        assert!(!matches_any("", &tag));
    }

    #[test]
    fn min_position_header_is_parsed_or_rejected() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            ReadRequest::from_headers(&headers).unwrap().min_position,
            None
        );
        headers.insert(MIN_POSITION_HEADER, HeaderValue::from_static("812:40"));
        assert_eq!(
            ReadRequest::from_headers(&headers).unwrap().min_position,
            Some(Position::new(812, 40))
        );
        for bad in ["812", "a:b", "1:-1", ""] {
            headers.insert(MIN_POSITION_HEADER, HeaderValue::from_static(bad));
            let err = ReadRequest::from_headers(&headers).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
