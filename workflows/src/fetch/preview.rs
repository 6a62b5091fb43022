//! The re-fetch's dry run (docs/coverage.md#refetch): fetches a time range from the partner
//! exactly as a transfer would (the same windows, mapping and plausibility checks, the
//! partner's rate limits) and reports what committing it would insert, update, leave unchanged
//! or retire, without committing anything and without touching the cursor or the transfer
//! lease. Only the tokens may change: an access token about to expire, or refused, is refreshed
//! by the ordinary refresh step first.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    model::{Actor, Connection},
    secret::SecretString,
    state::State,
    store::{PauseScope, Preview, TimeSpan},
};

use super::{WindowBatch, plausible::Plausible, windows_between};
use crate::{
    RefreshOutcome, Workflows, adapters::FetchError, error::WorkflowError, mapping::MappingContext,
};

/// What committing the range would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefetchPreview {
    /// Windows fetched (the partner's longest window each).
    pub windows: u32,
    pub counts: Preview,
}

/// Why no preview could be made; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewRefused {
    /// The connection is not `active`.
    NotTransferring(State),
    /// The connection, its partner or everything is paused: it is not to be fetched.
    Paused,
    /// No usable access token: the refresh before the preview did not give one (its code).
    NoToken(String),
    /// The partner answered the fetch with an error (its message).
    Partner(String),
}

impl Workflows {
    /// Fetches `range` for `connection` and compares it with what is stored.
    pub async fn refetch_preview(
        &self,
        connection: &Connection,
        range: TimeSpan,
        actor: &Actor,
    ) -> Result<Result<RefetchPreview, PreviewRefused>, WorkflowError> {
        if connection.state != State::Active {
            return Ok(Err(PreviewRefused::NotTransferring(connection.state)));
        }
        let partner = connection.partner.to_string();
        let paused = self.store.pauses().await?;
        let covers = |scope: &PauseScope| match scope {
            PauseScope::All => true,
            PauseScope::Partner(p) => *p == connection.partner,
        };
        if connection.paused || paused.iter().any(|p| covers(&p.scope)) {
            return Ok(Err(PreviewRefused::Paused));
        }
        let (Some(client), Some(data)) =
            (self.partners.get(&partner), self.partners.data(&partner))
        else {
            return Err(WorkflowError::UnknownPartner(partner));
        };
        let transfer = client.config().transfer.clone();
        let ctx = MappingContext {
            upload_id: format!("tributary-{}", connection.id.as_uuid().simple()),
            partner: partner.clone(),
            origin_name: client.config().display_name.clone(),
        };
        let mut token = match self.preview_token(connection, actor, false).await? {
            Ok(token) => token,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut refreshed = false;
        let mut preview = RefetchPreview {
            windows: 0,
            counts: Preview::default(),
        };
        let mut windows = windows_between(range.start, range.end, data.max_window());
        while let Some(&(start, end)) = windows.front() {
            let now = self.store.clock().now();
            let mut batch = WindowBatch::new(
                connection.id,
                &ctx,
                Plausible::new(start, end, now, &transfer),
            );
            let fetched = data
                .fetch_window(&token, start, end, None, &mut |kind, item| {
                    batch.take(kind, item)
                })
                .await;
            match fetched {
                Ok(_share) => {
                    let chunk = batch.into_chunk(start);
                    let counts = self.store.preview_chunk(connection.id, chunk).await?;
                    preview.counts.add(counts);
                    preview.windows += 1;
                    windows.pop_front();
                }
                Err(FetchError::Unauthorized) if !refreshed => {
                    refreshed = true;
                    token = match self.preview_token(connection, actor, true).await? {
                        Ok(token) => token,
                        Err(refused) => return Ok(Err(refused)),
                    };
                }
                Err(err) => return Ok(Err(PreviewRefused::Partner(err.to_string()))),
            }
        }
        Ok(Ok(preview))
    }

    /// The connection's access token, refreshed first when it expires within a minute or
    /// `force` says the partner refused it.
    async fn preview_token(
        &self,
        connection: &Connection,
        actor: &Actor,
        force: bool,
    ) -> Result<Result<SecretString, PreviewRefused>, WorkflowError> {
        let soon: DateTime<Utc> = self.store.clock().now() + TimeDelta::seconds(60);
        let expiring = connection.token_expires_at.is_some_and(|at| at <= soon);
        if force || expiring {
            match self.refresh(connection.id, actor.clone()).await? {
                RefreshOutcome::Refreshed { .. } => {}
                RefreshOutcome::Deferred { code, .. } => {
                    return Ok(Err(PreviewRefused::NoToken(code)));
                }
                RefreshOutcome::Revoked { .. } => {
                    return Ok(Err(PreviewRefused::NoToken("invalid_grant".to_owned())));
                }
                RefreshOutcome::Busy | RefreshOutcome::NotNeeded { .. } => {
                    return Ok(Err(PreviewRefused::NoToken(
                        "refresh_in_progress".to_owned(),
                    )));
                }
            }
        }
        Ok(match self.store.tokens(connection.id).await? {
            Some(tokens) => Ok(tokens.access_token),
            None => Err(PreviewRefused::NoToken("no_tokens".to_owned())),
        })
    }
}
