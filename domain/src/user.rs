//! Registration: the `Handle` aggregate makes handles unique, the `User` aggregate is the user.
//!
//! Registering appends `HandleClaimed` to the stream of the normalized handle (the first
//! claim wins: a concurrent second claim hits the stream's sequence key and is refused),
//! then `UserRegistered` to the user's own stream. The claim carries everything the user
//! event needs, so a registration interrupted between the two appends can be completed
//! later by re-sending `Register`, which is idempotent.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::rules::{normalize_handle, validate_display_name, validate_handle};
use crate::{DomainError, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandleCommand {
    Claim {
        user_id: UserId,
        handle: String,
        display_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandleEvent {
    HandleClaimed {
        user_id: UserId,
        handle: String,
        display_name: String,
    },
}

impl DomainEvent for HandleEvent {
    fn event_type(&self) -> String {
        match self {
            Self::HandleClaimed { .. } => "HandleClaimed".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// One stream per normalized handle (see [`Handle::stream_id`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handle {
    pub claimed_by: Option<UserId>,
}

impl Handle {
    pub fn stream_id(handle: &str) -> String {
        normalize_handle(handle)
    }
}

impl Aggregate for Handle {
    const TYPE: &'static str = "Handle";
    type Command = HandleCommand;
    type Event = HandleEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: HandleCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let HandleCommand::Claim {
            user_id,
            handle,
            display_name,
        } = command;
        validate_handle(&handle)?;
        let display_name = validate_display_name(&display_name)?;
        if self.claimed_by.is_some() {
            return Err(DomainError::HandleTaken);
        }
        sink.write(
            HandleEvent::HandleClaimed {
                user_id,
                handle,
                display_name,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: HandleEvent) {
        let HandleEvent::HandleClaimed { user_id, .. } = event;
        self.claimed_by = Some(user_id);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserCommand {
    Register {
        user_id: UserId,
        handle: String,
        display_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Version 2 added `display_name`; version 1 events are upcast (see `event::upcast`).
    UserRegistered {
        user_id: UserId,
        handle: String,
        display_name: String,
    },
}

pub const USER_REGISTERED_VERSION: &str = "2";

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered".into(),
        }
    }
    fn event_version(&self) -> String {
        USER_REGISTERED_VERSION.into()
    }
}

/// One stream per user id (its decimal form).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct User {
    pub registered: Option<(UserId, String, String)>,
}

impl User {
    pub fn stream_id(id: UserId) -> String {
        id.to_string()
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let UserCommand::Register {
            user_id,
            handle,
            display_name,
        } = command;
        validate_handle(&handle)?;
        let display_name = validate_display_name(&display_name)?;
        match &self.registered {
            // Completing an interrupted registration again changes nothing.
            Some(existing) if *existing == (user_id, handle.clone(), display_name.clone()) => {
                Ok(())
            }
            Some(_) => Err(DomainError::AlreadyRegistered(user_id)),
            None => {
                sink.write(
                    UserEvent::UserRegistered {
                        user_id,
                        handle,
                        display_name,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: UserEvent) {
        let UserEvent::UserRegistered {
            user_id,
            handle,
            display_name,
        } = event;
        self.registered = Some((user_id, handle, display_name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn claim(handle: &str, name: &str) -> HandleCommand {
        HandleCommand::Claim {
            user_id: 7,
            handle: handle.into(),
            display_name: name.into(),
        }
    }

    #[test]
    fn first_claim_wins() {
        TestFramework::<Handle>::with(())
            .given_no_previous_events()
            .when(claim("Alice", "  Alice A  "))
            .then_expect_events(vec![HandleEvent::HandleClaimed {
                user_id: 7,
                handle: "Alice".into(),
                display_name: "Alice A".into(),
            }]);
    }

    #[test]
    fn second_claim_is_refused() {
        TestFramework::<Handle>::with(())
            .given(vec![HandleEvent::HandleClaimed {
                user_id: 1,
                handle: "alice".into(),
                display_name: "A".into(),
            }])
            .when(claim("ALICE", "Other"))
            .then_expect_error(DomainError::HandleTaken);
    }

    #[test]
    fn claim_validates_handle_and_display_name() {
        let bad_handle = TestFramework::<Handle>::with(())
            .given_no_previous_events()
            .when(claim("no spaces", "x"))
            .inspect_result();
        assert!(matches!(bad_handle, Err(DomainError::InvalidHandle(_))));
        let bad_name = TestFramework::<Handle>::with(())
            .given_no_previous_events()
            .when(claim("ok", "  \t "))
            .inspect_result();
        assert!(matches!(bad_name, Err(DomainError::InvalidDisplayName(_))));
        let control = TestFramework::<Handle>::with(())
            .given_no_previous_events()
            .when(claim("ok", "bell\u{7}"))
            .inspect_result();
        assert!(matches!(control, Err(DomainError::InvalidDisplayName(_))));
    }

    fn register(name: &str) -> UserCommand {
        UserCommand::Register {
            user_id: 7,
            handle: "alice".into(),
            display_name: name.into(),
        }
    }

    fn registered(name: &str) -> UserEvent {
        UserEvent::UserRegistered {
            user_id: 7,
            handle: "alice".into(),
            display_name: name.into(),
        }
    }

    #[test]
    fn register_appends_user_registered() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(register(" Alice "))
            .then_expect_events(vec![registered("Alice")]);
    }

    #[test]
    fn completing_a_registration_twice_is_idempotent() {
        TestFramework::<User>::with(())
            .given(vec![registered("Alice")])
            .when(register("Alice"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn registering_an_existing_user_differently_is_refused() {
        TestFramework::<User>::with(())
            .given(vec![registered("Alice")])
            .when(register("Mallory"))
            .then_expect_error(DomainError::AlreadyRegistered(7));
    }
}
