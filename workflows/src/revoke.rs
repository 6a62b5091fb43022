//! Disconnect (docs/oauth.md#revocation): tokens leave the connection at once, in the
//! transition's transaction, and the refresh token is queued (sealed) for RFC 7009 revocation at
//! the partner; the transition wakes the dispatcher, whose revoke jobs attempt it with
//! exponential backoff until the partner confirms or the attempt limit is reached; both outcomes
//! are journaled, in the transaction that records them.
//!
//! Crash boundaries (`failpoint::REVOKE_BOUNDARIES`): stopped after the partner answered and
//! before the outcome is recorded, the revocation is still owed; its claim expires and it is
//! attempted again, which is harmless (RFC 7009: revoking a revoked token answers 200).

use std::time::Duration;

use chrono::TimeDelta;
use engine::{
    failpoint,
    ids::ConnectionId,
    model::{Actor, Change, Connection, ErrorInfo},
    schedule::backoff,
    state::Event,
    store::Step,
};

use crate::{Workflows, error::WorkflowError, partner::OAuthError};

#[derive(Debug, Clone)]
pub struct RevokerSettings {
    /// Attempts before giving up (recorded as `abandoned`).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter (`engine::schedule::backoff`).
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
    /// How often the loop looks for due revocations when nothing wakes it.
    pub poll_interval: Duration,
}

impl Default for RevokerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(6 * 3600),
            poll_interval: Duration::from_secs(5),
        }
    }
}

impl Workflows {
    /// `POST /connections/{id}/disconnect`.
    pub async fn disconnect(
        &self,
        id: ConnectionId,
        actor: Actor,
    ) -> Result<Connection, WorkflowError> {
        let applied = self
            .store
            .apply(id, None, Change::new(Event::Disconnect, actor))
            .await?;
        Ok(applied.connection)
    }

    /// The revoke step (a job "revoke at the partner for connection C"): attempts every
    /// revocation the connection still owes. Running it twice is harmless: RFC 7009 answers 200
    /// for a token already revoked, and finishing is guarded.
    pub async fn run_revoke_step(&self, id: ConnectionId) -> Result<usize, WorkflowError> {
        let open = self.store.open_revocations(id).await?;
        self.attempt_revocations(&open).await?;
        Ok(open.len())
    }

    async fn attempt_revocations(
        &self,
        due: &[engine::store::DueRevocation],
    ) -> Result<(), WorkflowError> {
        let settings = &self.settings.revoker;
        for revocation in due {
            let Some(client) = self.partners.get(&revocation.partner) else {
                self.store
                    .finish_revocation(revocation, false, Some("partner no longer configured"))
                    .await?;
                continue;
            };
            let started_at = self.store.clock().now();
            let tally = engine::store::StatusTally::default();
            let answer =
                crate::runs::tallied(tally.clone(), client.revoke(&revocation.refresh_token)).await;
            let run = |outcome: &str, code: Option<&str>| {
                let now = self.store.clock().now();
                let id = revocation.connection_id;
                crate::runs::ended(Step::Revoke, id, started_at, now, &tally, outcome, code)
            };
            self.store.failpoints().hit(failpoint::REVOKE_ANSWERED)?;
            match answer {
                Ok(()) => {
                    self.store.finish_revocation(revocation, true, None).await?;
                    self.record_runs(&[run("revoked", None)]).await;
                }
                Err(err) => {
                    let attempts = revocation.attempts + 1;
                    if let OAuthError::Configuration { code } = &err {
                        let alert = ErrorInfo::new(
                            "partner_configuration",
                            format!("revocation endpoint rejected our client: {code}"),
                        );
                        self.store
                            .raise_alert(
                                &revocation.partner,
                                Some(&revocation.connection_id.to_string()),
                                &alert,
                            )
                            .await?;
                    }
                    if attempts >= settings.max_attempts {
                        tracing::warn!(partner = %revocation.partner, attempts, "partner-side revocation abandoned");
                        self.store
                            .finish_revocation(revocation, false, Some(err.code()))
                            .await?;
                        self.record_runs(&[run("abandoned", Some(err.code()))])
                            .await;
                    } else {
                        let retry_after = match &err {
                            OAuthError::Transient { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        let delay = backoff(
                            attempts,
                            settings.initial_backoff,
                            settings.max_backoff,
                            &mut rand::rng(),
                        )
                        .max(retry_after.unwrap_or_default().min(settings.max_backoff));
                        let next = self.store.clock().now()
                            + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1));
                        self.store
                            .retry_revocation(revocation, next, err.code())
                            .await?;
                        self.record_runs(&[run("retrying", Some(err.code()))]).await;
                    }
                }
            }
            self.store.failpoints().hit(failpoint::REVOKE_RECORDED)?;
        }
        Ok(())
    }

    /// The maintenance loop until `shutdown` completes: stale-refresh recovery, purging old
    /// OAuth states and delivered messages, expiring invitations. (Refreshes and partner-side revocations are jobs: see `dispatch.rs`.)
    pub async fn maintenance_loop(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(err) = self.recover_stale_refreshes().await {
                tracing::error!(error = %err, "stale refresh recovery failed");
            }
            // Spent and expired OAuth states are kept a day for operators, then deleted.
            let cutoff = self.store.clock().now() - TimeDelta::days(1);
            if let Err(err) = self.store.purge_authorizations(cutoff).await {
                tracing::error!(error = %err, "purging old authorizations failed");
            }
            let kept = self.store.clock().now()
                - TimeDelta::from_std(self.settings.delivery.retention)
                    .unwrap_or(TimeDelta::days(30));
            if let Err(err) = self.store.purge_messages(kept).await {
                tracing::error!(error = %err, "purging delivered messages failed");
            }
            let now = self.store.clock().now();
            if let Err(err) = self.store.purge_runs(now, self.settings.runs).await {
                tracing::error!(error = %err, "purging old step runs failed");
            }
            if let Err(err) = self.store.purge_bulk_plans(now).await {
                tracing::error!(error = %err, "purging expired bulk plans failed");
            }
            match self.expire_invitations().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "invitations expired"),
                Err(err) => tracing::error!(error = %err, "expiring invitations failed"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.settings.revoker.poll_interval) => {}
            }
        }
    }
}
