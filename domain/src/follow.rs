//! The follow graph's write side: one small stream per (follower, followee) edge, so that
//! validating a follow of user #1 never loads a million-event stream.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{DomainError, UserId};

/// Whether users exist. Implemented over the event store by the API; the domain only asks.
#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync {
    async fn user_exists(&self, id: UserId) -> Result<bool, String>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FollowCommand {
    Follow {
        follower_id: UserId,
        followee_id: UserId,
    },
    Unfollow {
        follower_id: UserId,
        followee_id: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FollowEvent {
    Followed {
        follower_id: UserId,
        followee_id: UserId,
    },
    Unfollowed {
        follower_id: UserId,
        followee_id: UserId,
    },
}

impl DomainEvent for FollowEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Followed { .. } => "Followed".into(),
            Self::Unfollowed { .. } => "Unfollowed".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Follow {
    pub following: bool,
}

impl Follow {
    pub fn stream_id(follower_id: UserId, followee_id: UserId) -> String {
        format!("{follower_id}:{followee_id}")
    }
}

async fn ensure_exists(directory: &dyn UserDirectory, id: UserId) -> Result<(), DomainError> {
    match directory.user_exists(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(DomainError::UnknownUser(id)),
        Err(e) => Err(DomainError::Lookup(e)),
    }
}

impl Aggregate for Follow {
    const TYPE: &'static str = "Follow";
    type Command = FollowCommand;
    type Event = FollowEvent;
    type Error = DomainError;
    type Services = Arc<dyn UserDirectory>;

    async fn handle(
        &mut self,
        command: FollowCommand,
        directory: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let (follower_id, followee_id, follow) = match command {
            FollowCommand::Follow {
                follower_id,
                followee_id,
            } => (follower_id, followee_id, true),
            FollowCommand::Unfollow {
                follower_id,
                followee_id,
            } => (follower_id, followee_id, false),
        };
        if follower_id == followee_id {
            return Err(DomainError::SelfFollow);
        }
        ensure_exists(directory.as_ref(), follower_id).await?;
        ensure_exists(directory.as_ref(), followee_id).await?;
        // Following twice, or unfollowing when not following, appends nothing.
        if follow == self.following {
            return Ok(());
        }
        let event = if follow {
            FollowEvent::Followed {
                follower_id,
                followee_id,
            }
        } else {
            FollowEvent::Unfollowed {
                follower_id,
                followee_id,
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: FollowEvent) {
        self.following = matches!(event, FollowEvent::Followed { .. });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    /// Users 1..=3 exist; asking about user 666 fails like a broken connection would.
    struct Directory;

    #[async_trait::async_trait]
    impl UserDirectory for Directory {
        async fn user_exists(&self, id: UserId) -> Result<bool, String> {
            if id == 666 {
                return Err("connection reset".into());
            }
            Ok((1..=3).contains(&id))
        }
    }

    fn framework() -> TestFramework<Follow> {
        TestFramework::with(Arc::new(Directory) as Arc<dyn UserDirectory>)
    }

    const FOLLOW: FollowCommand = FollowCommand::Follow {
        follower_id: 1,
        followee_id: 2,
    };
    const UNFOLLOW: FollowCommand = FollowCommand::Unfollow {
        follower_id: 1,
        followee_id: 2,
    };
    const FOLLOWED: FollowEvent = FollowEvent::Followed {
        follower_id: 1,
        followee_id: 2,
    };
    const UNFOLLOWED: FollowEvent = FollowEvent::Unfollowed {
        follower_id: 1,
        followee_id: 2,
    };

    #[tokio::test]
    async fn follow_appends_followed() {
        framework()
            .given_no_previous_events()
            .when_async(FOLLOW)
            .await
            .then_expect_events(vec![FOLLOWED]);
    }

    #[tokio::test]
    async fn following_twice_appends_nothing() {
        framework()
            .given(vec![FOLLOWED])
            .when_async(FOLLOW)
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn unfollow_appends_unfollowed() {
        framework()
            .given(vec![FOLLOWED])
            .when_async(UNFOLLOW)
            .await
            .then_expect_events(vec![UNFOLLOWED]);
    }

    #[tokio::test]
    async fn unfollowing_when_not_following_appends_nothing() {
        framework()
            .given_no_previous_events()
            .when_async(UNFOLLOW)
            .await
            .then_expect_events(vec![]);
        framework()
            .given(vec![FOLLOWED, UNFOLLOWED])
            .when_async(UNFOLLOW)
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn refollow_after_unfollow() {
        framework()
            .given(vec![FOLLOWED, UNFOLLOWED])
            .when_async(FOLLOW)
            .await
            .then_expect_events(vec![FOLLOWED]);
    }

    #[tokio::test]
    async fn self_follow_is_refused() {
        framework()
            .given_no_previous_events()
            .when_async(FollowCommand::Follow {
                follower_id: 2,
                followee_id: 2,
            })
            .await
            .then_expect_error(DomainError::SelfFollow);
    }

    #[tokio::test]
    async fn both_users_must_exist() {
        framework()
            .given_no_previous_events()
            .when_async(FollowCommand::Follow {
                follower_id: 1,
                followee_id: 9,
            })
            .await
            .then_expect_error(DomainError::UnknownUser(9));
        framework()
            .given_no_previous_events()
            .when_async(FollowCommand::Follow {
                follower_id: 9,
                followee_id: 1,
            })
            .await
            .then_expect_error(DomainError::UnknownUser(9));
        framework()
            .given_no_previous_events()
            .when_async(FollowCommand::Unfollow {
                follower_id: 1,
                followee_id: 9,
            })
            .await
            .then_expect_error(DomainError::UnknownUser(9));
    }

    #[tokio::test]
    async fn a_failed_lookup_is_not_a_client_error() {
        let result = framework()
            .given_no_previous_events()
            .when_async(FollowCommand::Follow {
                follower_id: 1,
                followee_id: 666,
            })
            .await
            .inspect_result();
        assert!(matches!(result, Err(DomainError::Lookup(_))));
    }
}
