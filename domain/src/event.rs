//! Reading stored events back: the metadata every event carries, upcasting of older event
//! versions, and [`MurmurEvent`], the decoded form projectors and the audit work with.
//!
//! Stored layout (postgres-es): `payload` is the serde form of an aggregate's event enum
//! (`{"PostCreated": {...}}`), `metadata` a JSON object of strings.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::user::USER_REGISTERED_VERSION;
use crate::{Follow, FollowEvent, Handle, HandleEvent, Post, PostEvent, User, UserEvent, UserId};

/// Who did it, under which request, and when. Stored as the event's `metadata` (and shown
/// by the audit routes, whose schema this is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventMetadata {
    /// The acting user; null for registration, where nobody is signed in yet.
    #[schema(value_type = Option<i64>)]
    pub actor_id: Option<UserId>,
    pub request_id: String,
    pub time: DateTime<Utc>,
}

impl EventMetadata {
    /// The string map cqrs-es takes in `execute_with_metadata`.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("request_id".to_string(), self.request_id.clone()),
            (
                "time".to_string(),
                self.time
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        ]);
        if let Some(actor) = self.actor_id {
            map.insert("actor_id".to_string(), actor.to_string());
        }
        map
    }

    /// The stored JSON form (what `to_map` becomes in the `metadata` column).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.to_map()).unwrap_or(Value::Null)
    }

    /// Reads stored metadata back.
    pub fn from_json(value: &Value) -> Result<Self, UnknownEvent> {
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        let bad = |what: &str| UnknownEvent(format!("metadata: {what}"));
        let time = field("time")
            .ok_or_else(|| bad("missing time"))
            .and_then(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| bad("bad time"))
            })?;
        let actor_id = match field("actor_id") {
            Some(a) => Some(a.parse().map_err(|_| bad("bad actor_id"))?),
            None => None,
        };
        Ok(Self {
            actor_id,
            request_id: field("request_id").unwrap_or_default().to_string(),
            time,
        })
    }
}

/// A stored event murmur cannot read: unknown type, version or shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable event: {0}")]
pub struct UnknownEvent(pub String);

/// Turns an older stored version of an event into the current one.
/// Returns the payload unchanged for anything already current.
///
/// - `UserRegistered` v1 had no `display_name`; v2 added it, and a v1 user is shown by handle.
pub fn upcast(event_type: &str, event_version: &str, mut payload: Value) -> Value {
    if event_type == "UserRegistered" && event_version == "1" {
        if let Some(body) = payload
            .get_mut("UserRegistered")
            .and_then(Value::as_object_mut)
        {
            if !body.contains_key("display_name") {
                let handle = body.get("handle").cloned().unwrap_or(Value::Null);
                body.insert("display_name".into(), handle);
            }
        }
    }
    payload
}

/// [`upcast`] as a cqrs-es upcaster, so aggregates loading their streams see current events.
pub struct MurmurUpcaster;

impl EventUpcaster for MurmurUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "UserRegistered" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.payload = upcast(&event.event_type, &event.event_version, event.payload);
        event.event_version = USER_REGISTERED_VERSION.to_string();
        event
    }
}

/// Any murmur event, decoded and upcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MurmurEvent {
    Handle(HandleEvent),
    User(UserEvent),
    Follow(FollowEvent),
    Post(PostEvent),
}

impl MurmurEvent {
    /// Decodes a stored row's event, upcasting older versions first.
    pub fn decode(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: Value,
    ) -> Result<Self, UnknownEvent> {
        let payload = upcast(event_type, event_version, payload);
        let bad = |e: serde_json::Error| {
            UnknownEvent(format!(
                "{aggregate_type}/{event_type} v{event_version}: {e}"
            ))
        };
        Ok(match aggregate_type {
            Handle::TYPE => Self::Handle(serde_json::from_value(payload).map_err(bad)?),
            User::TYPE => Self::User(serde_json::from_value(payload).map_err(bad)?),
            Follow::TYPE => Self::Follow(serde_json::from_value(payload).map_err(bad)?),
            Post::TYPE => Self::Post(serde_json::from_value(payload).map_err(bad)?),
            other => return Err(UnknownEvent(format!("unknown aggregate type {other}"))),
        })
    }

    /// [`MurmurEvent::decode`] from the payload's JSON text: current versions are parsed
    /// straight into the event (one pass; what bulk reads of the log use).
    pub fn decode_str(
        aggregate_type: &str,
        event_type: &str,
        event_version: &str,
        payload: &str,
    ) -> Result<Self, UnknownEvent> {
        let bad = |e: serde_json::Error| {
            UnknownEvent(format!(
                "{aggregate_type}/{event_type} v{event_version}: {e}"
            ))
        };
        if MurmurUpcaster.can_upcast(event_type, event_version) {
            let value = serde_json::from_str(payload).map_err(bad)?;
            return Self::decode(aggregate_type, event_type, event_version, value);
        }
        Ok(match aggregate_type {
            Handle::TYPE => Self::Handle(serde_json::from_str(payload).map_err(bad)?),
            User::TYPE => Self::User(serde_json::from_str(payload).map_err(bad)?),
            Follow::TYPE => Self::Follow(serde_json::from_str(payload).map_err(bad)?),
            Post::TYPE => Self::Post(serde_json::from_str(payload).map_err(bad)?),
            other => return Err(UnknownEvent(format!("unknown aggregate type {other}"))),
        })
    }

    /// The row this event is stored as: (aggregate type, aggregate id, event type, version,
    /// payload). Used by tools that write the log in bulk, so they write what cqrs-es would.
    pub fn encode(&self) -> (&'static str, String, String, String, Value) {
        fn row<A: Aggregate>(
            id: String,
            event: &A::Event,
        ) -> (&'static str, String, String, String, Value) {
            (
                A::TYPE,
                id,
                event.event_type(),
                event.event_version(),
                serde_json::to_value(event).unwrap_or(Value::Null),
            )
        }
        match self {
            Self::Handle(e @ HandleEvent::HandleClaimed { handle, .. }) => {
                row::<Handle>(Handle::stream_id(handle), e)
            }
            Self::User(e @ UserEvent::UserRegistered { user_id, .. }) => {
                row::<User>(User::stream_id(*user_id), e)
            }
            Self::Follow(
                e @ (FollowEvent::Followed {
                    follower_id,
                    followee_id,
                }
                | FollowEvent::Unfollowed {
                    follower_id,
                    followee_id,
                }),
            ) => row::<Follow>(Follow::stream_id(*follower_id, *followee_id), e),
            Self::Post(
                e @ (PostEvent::PostCreated { post_id, .. }
                | PostEvent::PostDeleted { post_id, .. }),
            ) => row::<Post>(Post::stream_id(*post_id), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoding_text_equals_decoding_values() {
        for (aggregate, event_type, version, payload) in [
            (
                "User",
                "UserRegistered",
                "1",
                r#"{"UserRegistered": {"user_id": 3, "handle": "h"}}"#,
            ),
            (
                "Follow",
                "Followed",
                "1",
                r#"{"Followed": {"follower_id": 1, "followee_id": 2}}"#,
            ),
        ] {
            let value = serde_json::from_str(payload).unwrap();
            assert_eq!(
                MurmurEvent::decode_str(aggregate, event_type, version, payload).unwrap(),
                MurmurEvent::decode(aggregate, event_type, version, value).unwrap()
            );
        }
        assert!(MurmurEvent::decode_str("Follow", "Followed", "1", "{").is_err());
    }

    #[test]
    fn v1_user_registered_is_upcast() {
        let stored = json!({"UserRegistered": {"user_id": 3, "handle": "old_timer"}});
        let event = MurmurEvent::decode("User", "UserRegistered", "1", stored).unwrap();
        assert_eq!(
            event,
            MurmurEvent::User(UserEvent::UserRegistered {
                user_id: 3,
                handle: "old_timer".into(),
                display_name: "old_timer".into(),
            })
        );
    }

    #[test]
    fn the_cqrs_upcaster_produces_a_current_event() {
        let stored = SerializedEvent {
            aggregate_id: "3".into(),
            sequence: 1,
            aggregate_type: "User".into(),
            event_type: "UserRegistered".into(),
            event_version: "1".into(),
            payload: json!({"UserRegistered": {"user_id": 3, "handle": "old"}}),
            metadata: json!({}),
        };
        assert!(MurmurUpcaster.can_upcast("UserRegistered", "1"));
        assert!(!MurmurUpcaster.can_upcast("UserRegistered", "2"));
        let current = MurmurUpcaster.upcast(stored);
        assert_eq!(current.event_version, "2");
        let event: UserEvent = serde_json::from_value(current.payload).unwrap();
        assert!(
            matches!(event, UserEvent::UserRegistered { display_name, .. } if display_name == "old")
        );
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let events = [
            MurmurEvent::Handle(HandleEvent::HandleClaimed {
                user_id: 1,
                handle: "Ann".into(),
                display_name: "Ann".into(),
            }),
            MurmurEvent::User(UserEvent::UserRegistered {
                user_id: 1,
                handle: "Ann".into(),
                display_name: "Ann".into(),
            }),
            MurmurEvent::Follow(FollowEvent::Unfollowed {
                follower_id: 1,
                followee_id: 2,
            }),
            MurmurEvent::Post(PostEvent::PostDeleted {
                post_id: 9,
                author_id: 1,
            }),
        ];
        for event in events {
            let (agg, id, ty, version, payload) = event.encode();
            assert!(!id.is_empty());
            assert_eq!(
                MurmurEvent::decode(agg, &ty, &version, payload).unwrap(),
                event
            );
        }
        let (_, id, ..) = MurmurEvent::Handle(HandleEvent::HandleClaimed {
            user_id: 1,
            handle: "Ann".into(),
            display_name: "Ann".into(),
        })
        .encode();
        assert_eq!(id, "ann");
    }

    #[test]
    fn metadata_round_trips() {
        let meta = EventMetadata {
            actor_id: Some(4),
            request_id: "req-1".into(),
            time: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        assert_eq!(EventMetadata::from_json(&meta.to_json()).unwrap(), meta);
        assert!(EventMetadata::from_json(&json!({})).is_err());
    }

    #[test]
    fn unknown_events_are_errors_not_panics() {
        assert!(MurmurEvent::decode("Nope", "X", "1", json!({})).is_err());
        assert!(
            MurmurEvent::decode("Post", "PostCreated", "1", json!({"PostCreated": {}})).is_err()
        );
    }
}
