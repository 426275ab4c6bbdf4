//! Posts: created with a validated body, deleted by their author only, never undeleted.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::rules::validate_post_body;
use crate::{DomainError, PostId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostCommand {
    Create {
        post_id: PostId,
        author_id: UserId,
        body: String,
    },
    Delete {
        post_id: PostId,
        actor_id: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostEvent {
    PostCreated {
        post_id: PostId,
        author_id: UserId,
        body: String,
    },
    PostDeleted {
        post_id: PostId,
        author_id: UserId,
    },
}

impl DomainEvent for PostEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PostCreated { .. } => "PostCreated".into(),
            Self::PostDeleted { .. } => "PostDeleted".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Post {
    pub author_id: Option<UserId>,
    pub deleted: bool,
}

impl Post {
    pub fn stream_id(id: PostId) -> String {
        id.to_string()
    }
}

impl Aggregate for Post {
    const TYPE: &'static str = "Post";
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PostCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            PostCommand::Create {
                post_id,
                author_id,
                body,
            } => {
                if self.author_id.is_some() {
                    return Err(DomainError::PostExists(post_id));
                }
                PostEvent::PostCreated {
                    post_id,
                    author_id,
                    body: validate_post_body(&body)?,
                }
            }
            PostCommand::Delete { post_id, actor_id } => match self.author_id {
                // A deleted post is gone for good: deleting it again finds nothing.
                None => return Err(DomainError::UnknownPost(post_id)),
                Some(_) if self.deleted => return Err(DomainError::UnknownPost(post_id)),
                Some(author_id) if author_id != actor_id => {
                    return Err(DomainError::NotPostAuthor(post_id))
                }
                Some(author_id) => PostEvent::PostDeleted { post_id, author_id },
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: PostEvent) {
        match event {
            PostEvent::PostCreated { author_id, .. } => self.author_id = Some(author_id),
            PostEvent::PostDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn created() -> PostEvent {
        PostEvent::PostCreated {
            post_id: 5,
            author_id: 1,
            body: "hello".into(),
        }
    }

    fn delete_by(actor_id: UserId) -> PostCommand {
        PostCommand::Delete {
            post_id: 5,
            actor_id,
        }
    }

    #[test]
    fn create_trims_the_body() {
        TestFramework::<Post>::with(())
            .given_no_previous_events()
            .when(PostCommand::Create {
                post_id: 5,
                author_id: 1,
                body: "  hello \n".into(),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn body_length_counts_unicode_scalar_values() {
        let ok = TestFramework::<Post>::with(())
            .given_no_previous_events()
            .when(PostCommand::Create {
                post_id: 5,
                author_id: 1,
                body: "é".repeat(280),
            })
            .inspect_result();
        assert!(ok.is_ok());
        for body in ["", "   ", &"é".repeat(281)] {
            let result = TestFramework::<Post>::with(())
                .given_no_previous_events()
                .when(PostCommand::Create {
                    post_id: 5,
                    author_id: 1,
                    body: body.to_string(),
                })
                .inspect_result();
            assert!(matches!(result, Err(DomainError::InvalidPostBody(_))));
        }
    }

    #[test]
    fn a_post_id_is_used_once() {
        TestFramework::<Post>::with(())
            .given(vec![created()])
            .when(PostCommand::Create {
                post_id: 5,
                author_id: 1,
                body: "again".into(),
            })
            .then_expect_error(DomainError::PostExists(5));
    }

    #[test]
    fn the_author_deletes() {
        TestFramework::<Post>::with(())
            .given(vec![created()])
            .when(delete_by(1))
            .then_expect_events(vec![PostEvent::PostDeleted {
                post_id: 5,
                author_id: 1,
            }]);
    }

    #[test]
    fn only_the_author_deletes() {
        TestFramework::<Post>::with(())
            .given(vec![created()])
            .when(delete_by(2))
            .then_expect_error(DomainError::NotPostAuthor(5));
    }

    #[test]
    fn a_deleted_post_stays_deleted() {
        let deleted = PostEvent::PostDeleted {
            post_id: 5,
            author_id: 1,
        };
        TestFramework::<Post>::with(())
            .given(vec![created(), deleted.clone()])
            .when(delete_by(1))
            .then_expect_error(DomainError::UnknownPost(5));
        TestFramework::<Post>::with(())
            .given(vec![created(), deleted])
            .when(PostCommand::Create {
                post_id: 5,
                author_id: 1,
                body: "resurrected".into(),
            })
            .then_expect_error(DomainError::PostExists(5));
    }

    #[test]
    fn deleting_an_unknown_post() {
        TestFramework::<Post>::with(())
            .given_no_previous_events()
            .when(delete_by(1))
            .then_expect_error(DomainError::UnknownPost(5));
    }
}
