//! Token refresh (C8, C9). The `active → refreshing` compare-and-swap is the per-connection
//! refresh lock: of concurrent callers exactly one refreshes (two concurrent refreshes against
//! a rotating server would look like token reuse and revoke the whole grant). The rotated
//! refresh token is stored in the transaction that returns the connection to `active`, before
//! the new access token is used anywhere.

use chrono::TimeDelta;
use engine::{
    StoreError,
    ids::ConnectionId,
    model::{Actor, Change, Connection, ErrorInfo, FailureCount, TokenSet},
    state::{Event, State},
};

use crate::{Workflows, error::WorkflowError, partner::OAuthError};

/// What a refresh did.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// New tokens stored; `active`.
    Refreshed { connection: Connection },
    /// The connection is not `active` (nothing to refresh).
    NotNeeded { connection: Connection },
    /// Another worker holds the refresh lock.
    Busy,
    /// A temporary failure or a configuration fault: tokens kept, `active`, retried later.
    Deferred {
        connection: Connection,
        code: String,
    },
    /// The partner says the grant is gone (`invalid_grant`): `revoked`.
    Revoked { connection: Connection },
}

impl Workflows {
    pub async fn refresh(
        &self,
        id: ConnectionId,
        actor: Actor,
    ) -> Result<RefreshOutcome, WorkflowError> {
        let connection = self.store.get(id).await?;
        if connection.state != State::Active {
            return Ok(if connection.state == State::Refreshing {
                RefreshOutcome::Busy
            } else {
                RefreshOutcome::NotNeeded { connection }
            });
        }
        let client = self
            .partners
            .get(connection.partner.as_str())
            .ok_or_else(|| WorkflowError::UnknownPartner(connection.partner.to_string()))?;

        let locked = match self
            .store
            .apply(
                id,
                Some(connection.version),
                Change::new(Event::RefreshStarted, actor.clone()),
            )
            .await
        {
            Ok(applied) => applied.connection,
            Err(StoreError::Conflict { .. }) => return Ok(RefreshOutcome::Busy),
            Err(err) => return Err(err.into()),
        };
        let version = locked.version;

        let Some(tokens) = self.store.tokens(id).await? else {
            return self.give_up_without_refresh_token(id, version, actor).await;
        };
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            return self.give_up_without_refresh_token(id, version, actor).await;
        };

        let now = self.store.clock().now();
        let result = client.refresh(&refresh_token, now).await;
        let change = match &result {
            Ok(grant) => {
                let rotated = grant.refresh_token.is_some();
                let new_tokens = TokenSet {
                    access_token: grant.access_token.clone(),
                    // No new refresh token: the old one stays valid (no rotation).
                    refresh_token: grant.refresh_token.clone().or(Some(refresh_token)),
                    expires_at: grant.expires_at,
                    scope: grant.scope.clone().or(tokens.scope.clone()),
                };
                Change::new(Event::Refreshed, actor)
                    .details(serde_json::json!({ "rotated": rotated }))
                    .tokens(new_tokens)
                    .clear_error()
                    .failure_count(FailureCount::Reset)
            }
            Err(OAuthError::InvalidGrant) => Change::new(Event::PartnerRevoked, actor)
                .reason("the partner rejected the refresh token (invalid_grant)")
                .error(ErrorInfo::new(
                    "invalid_grant",
                    "access was revoked at the partner; the user must reconnect",
                )),
            Err(OAuthError::Configuration { code }) => {
                self.store
                    .raise_alert(
                        client.name(),
                        Some(&id.to_string()),
                        "partner_configuration",
                        &format!("token endpoint rejected our client during refresh: {code}"),
                    )
                    .await?;
                // Not the user's fault: their failure count stays as it is.
                Change::new(Event::RefreshDeferred, actor).error(ErrorInfo::new(
                    "partner_configuration",
                    "the partner rejected our client configuration; operators are alerted",
                ))
            }
            Err(err @ OAuthError::Transient { retry_after, .. }) => {
                Change::new(Event::RefreshDeferred, actor)
                    .details(serde_json::json!({
                        "retry_after_secs": retry_after.map(|d| d.as_secs()),
                    }))
                    .error(ErrorInfo::new("partner_unavailable", err.to_string()))
                    .failure_count(FailureCount::Increment)
            }
        };

        match self.store.apply(id, Some(version), change).await {
            Ok(applied) => Ok(match result {
                Ok(_) => RefreshOutcome::Refreshed {
                    connection: applied.connection,
                },
                Err(OAuthError::InvalidGrant) => RefreshOutcome::Revoked {
                    connection: applied.connection,
                },
                Err(err) => RefreshOutcome::Deferred {
                    code: applied
                        .connection
                        .last_error
                        .as_ref()
                        .map_or_else(|| err.code().to_owned(), |e| e.code.clone()),
                    connection: applied.connection,
                },
            }),
            Err(StoreError::Conflict { .. }) => {
                // The user disconnected while we refreshed: the new grant must not survive.
                if let Ok(grant) = result {
                    let token = grant.refresh_token.unwrap_or(grant.access_token);
                    if let Err(err) = client.revoke(&token).await {
                        tracing::warn!(connection = %id, error = %err, "could not revoke a grant refreshed during disconnect");
                    }
                }
                Ok(RefreshOutcome::Busy)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn give_up_without_refresh_token(
        &self,
        id: ConnectionId,
        version: i64,
        actor: Actor,
    ) -> Result<RefreshOutcome, WorkflowError> {
        let applied = self
            .store
            .apply(
                id,
                Some(version),
                Change::new(Event::Fail, actor).error(ErrorInfo::new(
                    "no_refresh_token",
                    "the partner issued no refresh token; the user must reconnect",
                )),
            )
            .await?;
        Ok(RefreshOutcome::Deferred {
            connection: applied.connection,
            code: "no_refresh_token".to_owned(),
        })
    }

    /// Active connections whose access token expires within the refresh margin, as refresh
    /// jobs (fenced by version: a duplicate or stale job does nothing). A connection whose
    /// refresh failed is offered again only after `refresh_retry_after`.
    pub async fn expiring_refresh_jobs(&self) -> Result<Vec<engine::jobs::StepJob>, WorkflowError> {
        let now = self.store.clock().now();
        let margin =
            TimeDelta::from_std(self.settings.refresh_margin).unwrap_or(TimeDelta::minutes(5));
        let idle =
            TimeDelta::from_std(self.settings.refresh_retry_after).unwrap_or(TimeDelta::minutes(1));
        Ok(self
            .store
            .tokens_expiring_before(now + margin, now - idle, 500)
            .await?
            .into_iter()
            .map(|c| engine::jobs::StepJob {
                step: engine::jobs::Step::Refresh,
                connection_id: c.id.to_string(),
                version: c.version,
            })
            .collect())
    }

    /// The refresh step of a job: refreshes only if the connection is still at the job's
    /// version (otherwise something newer already happened).
    pub async fn run_refresh_step(
        &self,
        id: ConnectionId,
        version: i64,
    ) -> Result<Option<RefreshOutcome>, WorkflowError> {
        let connection = self.store.get(id).await?;
        if connection.version != version {
            return Ok(None);
        }
        self.refresh(id, Actor::system("refresher")).await.map(Some)
    }

    /// Returns connections a crashed worker left in `refreshing` to `active` (the lock is
    /// released; the next refresh takes it again). Returns how many were recovered.
    pub async fn recover_stale_refreshes(&self) -> Result<usize, WorkflowError> {
        let older_than = self.store.clock().now()
            - TimeDelta::from_std(self.settings.stale_refresh_after)
                .unwrap_or(TimeDelta::minutes(5));
        let stale = self
            .store
            .held_since(State::Refreshing, older_than, 100)
            .await?;
        let mut recovered = 0;
        for connection in stale {
            let change = Change::new(Event::RefreshDeferred, Actor::system("reconciler"))
                .reason("refresh abandoned by a stopped worker");
            if self
                .store
                .apply(connection.id, Some(connection.version), change)
                .await
                .is_ok()
            {
                recovered += 1;
            }
        }
        Ok(recovered)
    }
}
