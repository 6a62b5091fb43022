//! How a transfer fails (docs/transfers.md#failures): what is counted against the connection's
//! failure streak, how long it waits, what operators are told, and when the failure budget
//! turns the connection `failed`.

use std::time::Duration;

use engine::{
    StoreError,
    ids::ConnectionId,
    model::{Actor, Change, Connection, ErrorInfo},
    schedule::{SyncPolicy, backoff},
    state::Event,
    store::{SyncEnd, SyncLease},
};

use super::{FetchReport, TransferConfig, secs};
use crate::{
    Workflows,
    adapters::{FetchError, RetryAfter},
    error::WorkflowError,
};

/// The failures that count towards the partner's circuit breaker: the partner is unreachable,
/// erring (5xx, timeouts, bodies it cannot have meant) or turning us away (429), including a
/// token refresh that failed so during the transfer (docs/operations.md#partner-incidents).
const OUTAGE_CODES: [&str; 4] = [
    "partner_unavailable",
    "rate_limited",
    "rate_limited_without_retry_after",
    "retry_after_capped",
];

impl Workflows {
    pub(super) async fn fetch_failed(
        &self,
        lease: &SyncLease,
        err: FetchError,
        policy: &SyncPolicy,
        transfer: &TransferConfig,
    ) -> Result<FetchReport, WorkflowError> {
        let (error, count, delay) = match &err {
            FetchError::RateLimited { retry_after } => {
                return self
                    .rate_limited(lease, *retry_after, policy, transfer)
                    .await;
            }
            FetchError::Configuration { .. } => {
                self.alert(
                    lease,
                    "partner_configuration",
                    format!("data API rejected our request: {err}"),
                )
                .await?;
                (
                    ErrorInfo::new(
                        "partner_configuration",
                        "the partner rejected our request; operators are alerted",
                    ),
                    false,
                    Duration::from_secs(transfer.retry_cap_secs.min(3600)),
                )
            }
            FetchError::Unauthorized => return self.fresh_token_refused(lease, policy).await,
            FetchError::Transient { .. } => (
                ErrorInfo::new("partner_unavailable", err.to_string()),
                true,
                self.retry_delay(&lease.connection),
            ),
        };
        self.end_failed(lease, error, count, delay, policy).await
    }

    /// A 429 (docs/transfers.md#rate-limits). A wait the partner names is honoured and not
    /// counted, up to `max_retry_after_secs`: a longer one is cut to it, counted, shown on the
    /// connection and told to operators (a partner asking for ten years would otherwise stop
    /// the connection silently). A 429 without a usable `Retry-After` is counted and backs off
    /// like any failure, so it cannot retry every minute for ever.
    async fn rate_limited(
        &self,
        lease: &SyncLease,
        retry_after: RetryAfter,
        policy: &SyncPolicy,
        transfer: &TransferConfig,
    ) -> Result<FetchReport, WorkflowError> {
        let cap = Duration::from_secs(transfer.max_retry_after_secs);
        let (error, count, delay) = match retry_after {
            RetryAfter::Given(wait) if wait <= cap => (
                ErrorInfo::new(
                    "rate_limited",
                    format!(
                        "the partner asked us to slow down (429); retrying in {}s",
                        wait.as_secs()
                    ),
                ),
                false,
                wait,
            ),
            RetryAfter::Given(wait) => {
                let message = format!(
                    "the partner asked to wait {}s (429 Retry-After); waiting the partner's \
                     max_retry_after_secs ({}s) instead",
                    wait.as_secs(),
                    cap.as_secs()
                );
                self.alert(lease, "retry_after_capped", message.clone())
                    .await?;
                (ErrorInfo::new("retry_after_capped", message), true, cap)
            }
            RetryAfter::Missing | RetryAfter::Unusable => (
                ErrorInfo::new(
                    "rate_limited_without_retry_after",
                    "the partner asked us to slow down (429) without a usable Retry-After; \
                     backing off",
                ),
                true,
                self.retry_delay(&lease.connection)
                    .max(Duration::from_secs(60)),
            ),
        };
        self.end_failed(lease, error, count, delay, policy).await
    }

    /// The data API refused a token the token endpoint had just issued: not an expired token
    /// but a scope, client or entitlement fault. Operators hear of it (one folded alert per
    /// partner), the connection shows it, and retries back off as the streak grows instead of
    /// refreshing again at once.
    pub(super) async fn fresh_token_refused(
        &self,
        lease: &SyncLease,
        policy: &SyncPolicy,
    ) -> Result<FetchReport, WorkflowError> {
        self.alert(
            lease,
            "fresh_token_refused",
            "the data API refused an access token the partner had just issued (401 after a \
             successful refresh): check the client's scopes, permissions and entitlement"
                .to_owned(),
        )
        .await?;
        let error = ErrorInfo::new(
            "fresh_token_refused",
            "the partner's data API refuses freshly issued tokens; operators are alerted",
        );
        let delay = self.retry_delay(&lease.connection);
        self.end_failed(lease, error, true, delay, policy).await
    }

    /// A storage failure is a failure like any other: recorded on the connection, counted, and
    /// retried with backoff, instead of leaving the lease to expire with nothing said.
    pub(super) async fn storage_failed(
        &self,
        lease: &SyncLease,
        err: StoreError,
        policy: &SyncPolicy,
    ) -> Result<FetchReport, WorkflowError> {
        tracing::error!(connection = %lease.connection.id, error = %err, "storing a transfer's window failed");
        let error = ErrorInfo::new(
            "storage_failure",
            "the transfer's records could not be stored; it will be retried",
        );
        let delay = self.retry_delay(&lease.connection);
        self.end_failed(lease, error, true, delay, policy).await
    }

    async fn alert(
        &self,
        lease: &SyncLease,
        code: &str,
        message: String,
    ) -> Result<(), WorkflowError> {
        self.store
            .raise_alert(
                lease.connection.partner.as_str(),
                Some(&lease.connection.id.to_string()),
                &ErrorInfo::new(code, message),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn end_failed(
        &self,
        lease: &SyncLease,
        error: ErrorInfo,
        count_failure: bool,
        delay: Duration,
        policy: &SyncPolicy,
    ) -> Result<FetchReport, WorkflowError> {
        let code = error.code.clone();
        if OUTAGE_CODES.contains(&code.as_str()) {
            // Counted first, so a failure that trips the breaker is judged by it below.
            self.store
                .record_outage_failure(lease.connection.partner.as_str(), lease.connection.id)
                .await?;
        }
        let next = policy.after_delay(self.store.clock().now(), delay, &mut rand::rng());
        let connection = self
            .store
            .finish_sync(
                lease,
                SyncEnd::Failed {
                    next_sync_at: next,
                    error,
                    count_failure,
                },
            )
            .await?;
        if let Some(connection) = connection {
            self.check_budget(&connection).await?;
        }
        Ok(FetchReport::Failed { code })
    }

    /// `failed` once the current failure streak is older than the partner's budget.
    pub(super) async fn check_budget(&self, connection: &Connection) -> Result<(), WorkflowError> {
        let Some(since) = connection.failing_since else {
            return Ok(());
        };
        let budget = self
            .partners
            .get(connection.partner.as_str())
            .map_or(TransferConfig::default().failure_budget_secs, |p| {
                p.config().transfer.failure_budget_secs
            });
        // During the partner's outage (its circuit breaker not closed) no budget runs out:
        // the failures are the partner's (docs/operations.md#partner-incidents).
        if self.store.clock().now() - since >= secs(budget)
            && !self
                .store
                .breaker_holds(connection.partner.as_str())
                .await?
        {
            let error = connection.last_error.clone().unwrap_or_else(|| {
                ErrorInfo::new("failure_budget_exhausted", "transfers kept failing")
            });
            self.fail_connection(connection.id, error).await?;
        }
        Ok(())
    }

    pub(super) async fn fail_connection(
        &self,
        id: ConnectionId,
        error: ErrorInfo,
    ) -> Result<(), WorkflowError> {
        let change = Change::new(Event::Fail, Actor::system("fetch"))
            .reason("transfers kept failing beyond the partner's failure budget")
            .error(error);
        match self.store.apply(id, None, change).await {
            Ok(_) | Err(StoreError::InvalidTransition(_)) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    pub(super) fn policy_of(&self, connection: &Connection) -> SyncPolicy {
        self.partners
            .get(connection.partner.as_str())
            .map(|p| p.sync_policy().clone())
            .unwrap_or_default()
    }

    /// Exponential backoff with jitter from the transfer failure streak (one backoff rule for
    /// the whole engine: `engine::schedule::backoff`).
    pub(super) fn retry_delay(&self, connection: &Connection) -> Duration {
        let transfer = self
            .partners
            .get(connection.partner.as_str())
            .map(|p| p.config().transfer.clone())
            .unwrap_or_default();
        backoff(
            connection.failure_count + 1,
            Duration::from_secs(transfer.retry_base_secs),
            Duration::from_secs(transfer.retry_cap_secs),
            &mut rand::rng(),
        )
    }
}
