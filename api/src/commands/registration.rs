//! Registration and login: a registration spans the `Handle` and `User` streams and the
//! `credentials` table; see [`Commands::register`] for how a crash anywhere in it never
//! leaves a user who cannot log in, and how interrupted ones are completed.

use cqrs_es::{Aggregate, AggregateError};
use murmur_domain::rules::{
    normalize_password, validate_display_name, validate_handle, validate_password,
};
use murmur_domain::{
    DomainError, EventMetadata, Handle, HandleCommand, HandleEvent, MurmurEvent, User, UserCommand,
    UserId,
};
use murmur_projections::Position;
use sqlx::Row;

use super::{execute, metadata, CommandError, Commands};

/// Handle claims read at a time when looking for interrupted registrations.
pub const COMPLETION_PAGE: i64 = 5_000;

/// A registration request, unchecked.
#[derive(Debug, Clone)]
pub struct Registration {
    pub handle: String,
    pub display_name: String,
    pub password: String,
}

/// A completed registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: UserId,
    pub handle: String,
    /// As stored (trimmed).
    pub display_name: String,
    pub position: Position,
}

/// The `HandleClaimed` event of a handle: everything its user's registration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    user_id: UserId,
    handle: String,
    display_name: String,
}

impl Commands {
    /// Registers a user. Order matters for crash safety:
    /// 1. check everything (nothing is written for bad input), hash the password;
    /// 2. store the hash in `credentials` under a fresh id;
    /// 3. claim the handle (`HandleClaimed`, first wins) — from here on the user exists;
    /// 4. append `UserRegistered`. A crash between 3 and 4 is repaired from the claim (it
    ///    carries all of the user's data) at start-up, at login, or when the handle is
    ///    registered again.
    ///
    /// The credentials row of a registration that did not claim its handle is deleted (best
    /// effort; an orphan row is harmless since no handle leads to it).
    pub async fn register(
        &self,
        registration: Registration,
        request_id: &str,
    ) -> Result<Registered, CommandError> {
        let Registration {
            handle,
            display_name,
            password,
        } = registration;
        validate_handle(&handle)?;
        let display_name = validate_display_name(&display_name)?;
        let password = normalize_password(&password);
        validate_password(&password)?;
        let metadata = metadata(None, request_id);
        if let Some(claim) = self.claim_of(&handle).await? {
            self.complete_after_refusal(&claim, &metadata).await;
            return Err(DomainError::HandleTaken.into());
        }

        let hash = self.passwords.hash(&password).await?;
        let id: UserId = sqlx::query_scalar("SELECT nextval('user_ids')")
            .fetch_one(&self.pool)
            .await?;
        sqlx::query("INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)")
            .bind(id)
            .bind(&hash)
            .execute(&self.pool)
            .await?;

        let claim = Claim {
            user_id: id,
            handle: handle.clone(),
            display_name: display_name.clone(),
        };
        let claimed = execute(
            &self.handles,
            &Handle::stream_id(&handle),
            HandleCommand::Claim {
                user_id: id,
                handle: handle.clone(),
                display_name: display_name.clone(),
            },
            &metadata,
        )
        .await;
        match claimed {
            Ok(_) => {}
            Err(AggregateError::UserError(DomainError::HandleTaken)) => {
                self.delete_credentials(id).await;
                if let Ok(Some(winner)) = self.claim_of(&handle).await {
                    self.complete_after_refusal(&winner, &metadata).await;
                }
                return Err(DomainError::HandleTaken.into());
            }
            Err(error) => {
                // The claim may have committed even though we saw an error (e.g. the
                // connection dropped after COMMIT): look before deleting the credentials.
                match self.claim_of(&handle).await {
                    Ok(Some(stored)) if stored.user_id == id => {}
                    Ok(_) => {
                        self.delete_credentials(id).await;
                        return Err(error.into());
                    }
                    Err(_) => return Err(error.into()),
                }
            }
        }
        let position = match self.complete(&claim, &metadata).await? {
            Some(appended) => appended,
            // Completed meanwhile (a login or a start-up found the claim first).
            None => self.position_of(User::TYPE, &User::stream_id(id)).await?,
        };
        Ok(Registered {
            id,
            handle,
            display_name,
            position,
        })
    }

    /// Checks a handle and password; answers the user id, or 401 with the same detail
    /// whichever was wrong (an unknown handle still costs one password check).
    pub async fn login(
        &self,
        handle: &str,
        password: &str,
        request_id: &str,
    ) -> Result<UserId, CommandError> {
        let claim = match validate_handle(handle) {
            Ok(()) => self.claim_of(handle).await?,
            Err(_) => None,
        };
        let hash: Option<String> = match &claim {
            Some(claim) => {
                sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
                    .bind(claim.user_id)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => None,
        };
        let password = normalize_password(password);
        let (Some(claim), Some(hash)) = (claim, hash) else {
            self.passwords.verify_dummy(&password).await?;
            return Err(CommandError::BadCredentials);
        };
        if !self.passwords.verify(&password, &hash).await? {
            return Err(CommandError::BadCredentials);
        }
        self.complete(&claim, &metadata(None, request_id)).await?;
        Ok(claim.user_id)
    }

    /// Completes every registration interrupted between its handle claim and its
    /// `UserRegistered` (a claim whose user's stream is empty); returns how many it completed.
    /// When there are as many users as claims it only counts them.
    /// Run at start-up, in the background. It walks the claims in pages along the primary key
    /// and looks their users up by key, so it costs index scans over the users, never a scan
    /// of the whole log. `page` claims are read at a time ([`COMPLETION_PAGE`] normally).
    pub async fn complete_interrupted_registrations(&self, page: i64) -> anyhow::Result<usize> {
        use anyhow::Context;
        // Every claim's user registered, and each registration has its claim: as many
        // users as claims means none was cut short (two index-only counts, where the walk
        // below reads every claim). On one core and without JIT: the counts run while the
        // node starts taking commands, and a parallel plan took both cores from them.
        let mut tx = self.pool.begin().await.context("counting handle claims")?;
        sqlx::query(
            "SELECT set_config('max_parallel_workers_per_gather', '0', true),
                    set_config('jit', 'off', true)",
        )
        .execute(&mut *tx)
        .await
        .context("configuring the count of handle claims")?;
        let (claims, users): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE aggregate_type = $1 AND sequence = 1),
                    (SELECT count(*) FROM events WHERE aggregate_type = $2 AND sequence = 1)",
        )
        .bind(Handle::TYPE)
        .bind(User::TYPE)
        .fetch_one(&mut *tx)
        .await
        .context("counting handle claims and users")?;
        tx.commit().await.context("counting handle claims")?;
        if claims == users {
            return Ok(0);
        }
        let metadata = metadata(None, &format!("startup-{}", uuid::Uuid::new_v4()));
        let mut after = String::new();
        let mut completed = 0;
        loop {
            let rows = sqlx::query(
                "SELECT aggregate_id, event_type, event_version, payload FROM events
                 WHERE aggregate_type = $1 AND aggregate_id > $2 AND sequence = 1
                 ORDER BY aggregate_type, aggregate_id, sequence
                 LIMIT $3",
            )
            .bind(Handle::TYPE)
            .bind(&after)
            .bind(page)
            .fetch_all(&self.pool)
            .await
            .context("reading handle claims")?;
            let mut claims = Vec::with_capacity(rows.len());
            for row in &rows {
                match decode_claim(row) {
                    Ok(claim) => claims.push(claim),
                    Err(e) => tracing::error!(error = ?e, "unreadable handle claim"),
                }
            }
            let ids: Vec<String> = claims.iter().map(|c| User::stream_id(c.user_id)).collect();
            let registered: std::collections::HashSet<String> = sqlx::query_scalar(
                "SELECT aggregate_id FROM events
                 WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1",
            )
            .bind(User::TYPE)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .context("looking up the users of handle claims")?
            .into_iter()
            .collect();
            for (claim, id) in claims.iter().zip(&ids) {
                if registered.contains(id) {
                    continue;
                }
                // One claim that cannot be completed must not stop the others.
                match self.complete(claim, &metadata).await {
                    Ok(_) => {
                        tracing::info!(
                            user_id = claim.user_id,
                            "completed an interrupted registration"
                        );
                        completed += 1;
                    }
                    Err(e) => {
                        tracing::error!(user_id = claim.user_id, error = %e, "could not complete a registration")
                    }
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == page => after = last.try_get("aggregate_id")?,
                _ => return Ok(completed),
            }
        }
    }

    /// Appends the claim's `UserRegistered` unless it is already there (`Register` is
    /// idempotent); answers its position if it appended it.
    async fn complete(
        &self,
        claim: &Claim,
        metadata: &EventMetadata,
    ) -> Result<Option<Position>, CommandError> {
        let command = UserCommand::Register {
            user_id: claim.user_id,
            handle: claim.handle.clone(),
            display_name: claim.display_name.clone(),
        };
        Ok(execute(
            &self.users,
            &User::stream_id(claim.user_id),
            command,
            metadata,
        )
        .await?)
    }

    /// [`Self::complete`] for a registration that is being refused anyway: failures are only logged.
    async fn complete_after_refusal(&self, claim: &Claim, metadata: &EventMetadata) {
        if let Err(e) = self.complete(claim, metadata).await {
            tracing::warn!(user_id = claim.user_id, error = %e, "could not complete a registration");
        }
    }

    /// The claim of `handle` (case-insensitively), if it is taken.
    async fn claim_of(&self, handle: &str) -> Result<Option<Claim>, CommandError> {
        let row = sqlx::query(
            "SELECT event_type, event_version, payload FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
        )
        .bind(Handle::TYPE)
        .bind(Handle::stream_id(handle))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| decode_claim(&row).map_err(CommandError::Internal))
            .transpose()
    }

    async fn delete_credentials(&self, id: UserId) {
        let deleted = sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await;
        if let Err(e) = deleted {
            tracing::warn!(user_id = id, error = %e, "could not delete orphan credentials");
        }
    }
}

fn decode_claim(row: &sqlx::postgres::PgRow) -> anyhow::Result<Claim> {
    let event = MurmurEvent::decode(
        Handle::TYPE,
        row.try_get("event_type")?,
        row.try_get("event_version")?,
        row.try_get("payload")?,
    )?;
    match event {
        MurmurEvent::Handle(HandleEvent::HandleClaimed {
            user_id,
            handle,
            display_name,
        }) => Ok(Claim {
            user_id,
            handle,
            display_name,
        }),
        other => anyhow::bail!("expected HandleClaimed, found {other:?}"),
    }
}
