//! Refresh: one refresh at a time per connection, the rotated token stored atomically
//! (docs/oauth.md#refresh). `active → refreshing` is the per-connection lock; every outcome is
//! a transition whose effects (stored tokens, counted failure and next attempt, operator alert,
//! revocation) commit with it.
//!
//! A refresh whose outcome we cannot know (the worker stopped after the request went out, or the
//! response was lost to a timeout) is recorded as such (`refresh_outcome_unknown_at`): with a
//! rotating partner, the refresh token we still hold may be spent, and the next refresh may meet
//! reuse detection. That revocation is then labelled `refresh_token_reuse_suspected` and alerts
//! operators (docs/oauth.md#lost-refresh).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    StoreError, failpoint,
    ids::ConnectionId,
    model::{Actor, Change, Connection, ErrorInfo, ErrorUpdate, TokenSet},
    schedule::backoff,
    state::{Event, State},
    store::Step,
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

/// Longest wait between two refresh attempts of a connection whose refreshes keep failing.
const MAX_REFRESH_BACKOFF: Duration = Duration::from_secs(30 * 60);

impl Workflows {
    /// Refreshes an active connection's tokens, and records the run (docs/operations.md#step-runs).
    pub async fn refresh(
        &self,
        id: ConnectionId,
        actor: Actor,
    ) -> Result<RefreshOutcome, WorkflowError> {
        let started_at = self.store.clock().now();
        let tally = engine::store::StatusTally::default();
        let outcome = crate::runs::tallied(tally.clone(), self.refresh_once(id, actor)).await?;
        let (name, code) = match &outcome {
            RefreshOutcome::Busy | RefreshOutcome::NotNeeded { .. } => return Ok(outcome),
            RefreshOutcome::Refreshed { .. } => ("refreshed", None),
            RefreshOutcome::Deferred { code, .. } => ("deferred", Some(code.as_str())),
            RefreshOutcome::Revoked { .. } => ("revoked", Some("invalid_grant")),
        };
        let now = self.store.clock().now();
        let run = crate::runs::ended(Step::Refresh, id, started_at, now, &tally, name, code);
        self.record_runs(&[run]).await;
        Ok(outcome)
    }

    async fn refresh_once(
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
        let failpoints = self.store.failpoints();
        failpoints.hit(failpoint::REFRESH_LOCKED)?;

        let Some(refresh_token) = self
            .store
            .tokens(id)
            .await?
            .and_then(|tokens| tokens.refresh_token.map(|r| (tokens.scope, r)))
        else {
            return self.give_up_without_refresh_token(id, version, actor).await;
        };
        let (scope, refresh_token) = refresh_token;

        let now = self.store.clock().now();
        let result = client.refresh(&refresh_token, now).await;
        // The most dangerous point with a rotating partner: it may have rotated the grant, and
        // only the commit below makes the new refresh token ours.
        failpoints.hit(failpoint::REFRESH_ANSWERED)?;
        let retry_at = self.refresh_retry_at(&locked, None);
        let change = match &result {
            Ok(grant) => {
                let rotated = grant.refresh_token.is_some();
                let tokens = TokenSet {
                    access_token: grant.access_token.clone(),
                    // No new refresh token: the old one stays valid (no rotation).
                    refresh_token: grant.refresh_token.clone().or(Some(refresh_token)),
                    expires_at: grant.expires_at,
                    scope: grant.scope.clone().or(scope),
                };
                Change::new(Event::Refreshed { tokens }, actor)
                    .details(serde_json::json!({ "rotated": rotated }))
                    .error_update(ErrorUpdate::ClearUnlessTransfersFailing)
            }
            Err(OAuthError::InvalidGrant) => invalid_grant_change(&locked, actor),
            Err(OAuthError::Configuration { code }) => {
                // Our client rejected by the token endpoint (`invalid_client` & co.), or a token
                // response we refuse (`unsupported_token_type`, `token_too_large`).
                let alert = ErrorInfo::new(
                    "partner_configuration",
                    format!(
                        "a refresh failed on a configuration fault ({code}): check the client's \
                         registration at the partner and the partner's token responses"
                    ),
                );
                Change::new(Event::RefreshMisconfigured { retry_at, alert }, actor).error(
                    ErrorInfo::new(
                        "partner_configuration",
                        "the partner rejected our client configuration; operators are alerted",
                    ),
                )
            }
            Err(
                err @ OAuthError::Transient {
                    retry_after,
                    status,
                    ..
                },
            ) => {
                let retry_at = self.refresh_retry_at(&locked, *retry_after);
                let details = serde_json::json!({
                    "retry_after_secs": retry_after.map(|d| d.as_secs()),
                    "status": status,
                });
                let error = ErrorInfo::new("partner_unavailable", err.to_string());
                if status.is_none() {
                    // No response: the request may have reached the partner, which may have
                    // rotated the grant. Record that we do not know.
                    Change::new(Event::RefreshAbandoned { retry_at }, actor)
                        .reason("the refresh got no response; its outcome is unknown")
                        .details(details)
                        .error(error)
                } else {
                    Change::new(Event::RefreshDeferred { retry_at }, actor)
                        .details(details)
                        .error(error)
                }
            }
        };

        match self.store.apply(id, Some(version), change).await {
            Ok(applied) => {
                failpoints.hit(failpoint::REFRESH_COMMITTED)?;
                Ok(match result {
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
                })
            }
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

    /// When a failed refresh is tried again: exponential in the connection's consecutive
    /// refresh failures (one backoff rule for the whole engine, `engine::schedule::backoff`),
    /// never sooner than the partner's `Retry-After`.
    fn refresh_retry_at(
        &self,
        connection: &Connection,
        retry_after: Option<Duration>,
    ) -> DateTime<Utc> {
        let delay = backoff(
            connection.refresh_failures + 1,
            self.settings.refresh_retry_after,
            MAX_REFRESH_BACKOFF,
            &mut rand::rng(),
        )
        .max(retry_after.unwrap_or_default().min(MAX_REFRESH_BACKOFF));
        self.store.clock().now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::minutes(30))
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

    /// The refresh step of a job from the refresh dispatcher (`claim_due_refreshes`). A job
    /// whose connection changed since the claim refreshes only if the refresh is still due
    /// (an inline refresh may have planned the next one meanwhile).
    pub async fn run_refresh_step(
        &self,
        id: ConnectionId,
        version: i64,
    ) -> Result<Option<RefreshOutcome>, WorkflowError> {
        let connection = self.store.get(id).await?;
        let claim_end = self.store.clock().now()
            + TimeDelta::from_std(self.settings.transfer.dispatch_lease)
                .unwrap_or(TimeDelta::minutes(2));
        let replanned = connection.refresh_due_at.is_none_or(|due| due > claim_end);
        if connection.version != version && replanned {
            return Ok(None);
        }
        self.refresh(id, Actor::system("refresher")).await.map(Some)
    }

    /// Returns connections a stopped worker left in `refreshing` to `active`, recording that the
    /// refresh's outcome is unknown and planning the next attempt at once. Returns how many were
    /// recovered.
    pub async fn recover_stale_refreshes(&self) -> Result<usize, WorkflowError> {
        let now = self.store.clock().now();
        let older_than = now
            - TimeDelta::from_std(self.settings.stale_refresh_after)
                .unwrap_or(TimeDelta::minutes(5));
        let stale = self
            .store
            .held_since(State::Refreshing, older_than, 100)
            .await?;
        let mut recovered = 0;
        for connection in stale {
            let change = Change::new(
                Event::RefreshAbandoned { retry_at: now },
                Actor::system("reconciler"),
            )
            .reason("refresh abandoned by a stopped worker; its outcome is unknown");
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

/// `invalid_grant` on refresh: the grant is gone. After a refresh whose outcome was unknown,
/// the likeliest cause is that the partner rotated the grant and we presented the spent token:
/// label it so, and alert operators (folded by partner, so frequency shows as the count).
fn invalid_grant_change(connection: &Connection, actor: Actor) -> Change {
    if let Some(since) = connection.refresh_outcome_unknown_at {
        let message = format!(
            "the partner revoked the grant after a refresh whose outcome was unknown (since {since}); \
             the refresh token was probably rotated by a response we never received"
        );
        let alert = ErrorInfo::new("refresh_token_reuse_suspected", message.clone());
        Change::new(Event::PartnerRevoked { alert: Some(alert) }, actor)
            .reason("invalid_grant after a refresh with an unknown outcome")
            .error(ErrorInfo::new(
                "refresh_token_reuse_suspected",
                "access was lost after an interrupted token refresh; the user must reconnect",
            ))
    } else {
        Change::new(Event::PartnerRevoked { alert: None }, actor)
            .reason("the partner rejected the refresh token (invalid_grant)")
            .error(ErrorInfo::new(
                "invalid_grant",
                "access was revoked at the partner; the user must reconnect",
            ))
    }
}
