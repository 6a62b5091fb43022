//! The OAuth callback (docs/oauth.md#callback). Order matters: everything that can be checked
//! without spending the `state` is checked first, so a rejected callback changes nothing; the
//! `state` is then spent atomically, so a replayed callback never causes a second code exchange.
//!
//! Crash boundaries (`failpoint::CALLBACK_BOUNDARIES`): a callback stopped after the state is
//! spent, or after the code exchange, leaves the connection `authorizing` with the state spent;
//! the same callback replayed is refused without a second exchange, and the user starts a fresh
//! attempt (a grant the partner issued for an exchange we never stored cannot be revoked: we
//! never held its tokens).

use engine::{
    StoreError, failpoint,
    model::{Actor, Change, Connection, ErrorInfo, TokenSet},
    state::{Event, State},
    store::AuthorizationRejected,
    text::bounded,
};

use crate::{
    Workflows,
    error::WorkflowError,
    partner::{CallbackErrorKind, OAuthError, PartnerClient, classify_callback_error, hash_state},
};

/// Longest value we accept for any callback parameter; partners' codes and states are far shorter.
const MAX_PARAM_LEN: usize = 4096;

/// The query parameters of a callback, as received (untrusted).
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

/// What a callback did. `Rejected` changed nothing.
#[derive(Debug, Clone)]
pub enum CallbackOutcome {
    /// Tokens stored; the connection is active.
    Connected { connection: Connection },
    /// The `state` was spent by an earlier callback that connected (the user went Back and
    /// consented again): nothing changed, and the user is connected.
    AlreadyConnected { connection: Connection },
    /// The user declined consent (`access_denied`): failed, not retried.
    Declined { connection: Connection },
    /// The authorization cannot succeed as configured: failed, operators alerted.
    Failed {
        connection: Connection,
        code: String,
    },
    /// A temporary problem: still `authorizing`; the user may try again.
    Interrupted {
        connection: Connection,
        code: String,
    },
    /// Not a valid callback for any pending authorization; nothing changed.
    Rejected { code: &'static str, message: String },
}

impl CallbackOutcome {
    pub fn outcome(&self) -> &'static str {
        match self {
            CallbackOutcome::Connected { .. } | CallbackOutcome::AlreadyConnected { .. } => {
                "connected"
            }
            CallbackOutcome::Declined { .. } => "declined",
            _ => "error",
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            CallbackOutcome::Connected { .. } | CallbackOutcome::AlreadyConnected { .. } => None,
            CallbackOutcome::Declined { .. } => Some("authorization_declined"),
            CallbackOutcome::Failed { code, .. } | CallbackOutcome::Interrupted { code, .. } => {
                Some(code)
            }
            CallbackOutcome::Rejected { code, .. } => Some(code),
        }
    }

    pub fn connection(&self) -> Option<&Connection> {
        match self {
            CallbackOutcome::Connected { connection }
            | CallbackOutcome::AlreadyConnected { connection }
            | CallbackOutcome::Declined { connection }
            | CallbackOutcome::Failed { connection, .. }
            | CallbackOutcome::Interrupted { connection, .. } => Some(connection),
            CallbackOutcome::Rejected { .. } => None,
        }
    }
}

fn rejected(code: &'static str, message: impl Into<String>) -> CallbackOutcome {
    CallbackOutcome::Rejected {
        code,
        message: message.into(),
    }
}

impl Workflows {
    pub async fn callback(&self, partner: &str, params: CallbackParams) -> CallbackOutcome {
        match self.callback_step(partner, params).await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(partner, error = %err, "callback failed on storage");
                rejected("internal", "the callback could not be processed; try again")
            }
        }
    }

    /// The callback as a step: storage failures and failpoints (crash tests) as errors.
    pub async fn callback_step(
        &self,
        partner: &str,
        params: CallbackParams,
    ) -> Result<CallbackOutcome, WorkflowError> {
        Ok(self.callback_inner(partner, params).await?)
    }

    async fn callback_inner(
        &self,
        partner: &str,
        params: CallbackParams,
    ) -> Result<CallbackOutcome, StoreError> {
        let Some(client) = self.partners.get(partner) else {
            return Ok(rejected(
                "unknown_partner",
                "this partner is not configured",
            ));
        };
        let too_long = [&params.state, &params.code, &params.error, &params.iss]
            .into_iter()
            .flatten()
            .any(|v| v.len() > MAX_PARAM_LEN);
        if too_long {
            return Ok(rejected(
                "invalid_callback",
                "a callback parameter is too long",
            ));
        }
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(rejected("invalid_state", "the callback carries no state"));
        };
        if let Err(err) = client.check_issuer(params.iss.as_deref()) {
            // On a live attempt of ours, a mismatch is most likely our configuration (a
            // trailing slash in `issuer`): every user of the partner fails the same way, so
            // operators must hear of it. A callback with no live state tells nothing.
            if let Some(peek) = self.store.peek_authorization(&hash_state(state)).await?
                && peek.live
                && peek.partner == partner
            {
                let alert = ErrorInfo::new(
                    "issuer_mismatch",
                    format!(
                        "a callback for a live authorization carried another issuer than \
                         configured ({err}); check `partners.{partner}.issuer`"
                    ),
                );
                self.store
                    .raise_alert(partner, Some(&peek.connection_id.to_string()), &alert)
                    .await?;
            }
            tracing::warn!(partner, "callback rejected: issuer mismatch");
            return Ok(rejected(
                "issuer_mismatch",
                format!("the authorization response is not from this partner's issuer: {err}"),
            ));
        }
        let code = params.code.as_deref().filter(|c| !c.is_empty());
        if code.is_none() && params.error.is_none() {
            return Ok(rejected(
                "invalid_callback",
                "the callback carries neither code nor error",
            ));
        }

        let consumed = match self
            .store
            .consume_authorization(&hash_state(state), partner)
            .await?
        {
            Ok(consumed) => consumed,
            Err(reason) => {
                if reason == AuthorizationRejected::Reused
                    && let Some(connection) = self.connected_by(state).await?
                {
                    return Ok(CallbackOutcome::AlreadyConnected { connection });
                }
                let code = match reason {
                    AuthorizationRejected::Unknown => "invalid_state",
                    AuthorizationRejected::Reused => "state_reused",
                    AuthorizationRejected::Expired => "state_expired",
                    AuthorizationRejected::WrongPartner => "wrong_partner",
                };
                tracing::warn!(partner, code, "callback rejected");
                return Ok(rejected(code, reason.to_string()));
            }
        };
        let id = consumed.connection_id;
        let actor = Actor::partner(&engine::ids::PartnerName::parse(partner).expect("configured"));
        self.store
            .failpoints()
            .hit(failpoint::CALLBACK_STATE_SPENT)?;

        if let Some(error) = params.error.as_deref() {
            let kind = classify_callback_error(error);
            // The `error` parameter is the user's to choose: only a well-formed code is
            // repeated, bounded; `error_description` never is.
            let shown = error_code_shown(error);
            let info = ErrorInfo::new(
                kind.code(),
                format!("the partner answered the authorization with error {shown}"),
            );
            let (event, failure) = match kind {
                CallbackErrorKind::Declined => (Event::AuthorizationDeclined, None),
                CallbackErrorKind::Retryable => (Event::AuthorizationInterrupted, None),
                CallbackErrorKind::Configuration => (
                    Event::AuthorizationFailed {
                        alert: info.clone(),
                    },
                    Some(kind.code().to_owned()),
                ),
            };
            let change = Change::new(event, actor)
                .details(serde_json::json!({ "error": shown }))
                .error(info);
            let connection = match self.store.apply(id, None, change).await {
                Ok(applied) => applied.connection,
                Err(StoreError::InvalidTransition(_) | StoreError::Conflict { .. }) => {
                    return Ok(rejected(
                        "invalid_transition",
                        "the connection is no longer authorizing",
                    ));
                }
                Err(err) => return Err(err),
            };
            return Ok(match (kind, failure) {
                (CallbackErrorKind::Declined, _) => CallbackOutcome::Declined { connection },
                (_, Some(code)) => CallbackOutcome::Failed { connection, code },
                _ => CallbackOutcome::Interrupted {
                    connection,
                    code: kind.code().to_owned(),
                },
            });
        }

        // Exactly one callback gets here per state: the code is exchanged at most once
        // (docs/oauth.md#code-exchange).
        let code = engine::secret::SecretString::from(code.unwrap_or_default());
        let now = self.store.clock().now();
        match client
            .exchange_code(&code, &consumed.pkce_verifier, now)
            .await
        {
            Ok(grant) => {
                self.store
                    .failpoints()
                    .hit(failpoint::CALLBACK_CODE_EXCHANGED)?;
                let tokens = TokenSet {
                    access_token: grant.access_token,
                    refresh_token: grant.refresh_token,
                    expires_at: grant.expires_at,
                    scope: grant.scope,
                };
                let change = Change::new(
                    Event::Authorized {
                        tokens: tokens.clone(),
                    },
                    actor,
                )
                .details(serde_json::json!({ "scope": tokens.scope }))
                .clear_error();
                match self.store.apply(id, None, change).await {
                    Ok(applied) => {
                        self.store.failpoints().hit(failpoint::CALLBACK_COMMITTED)?;
                        Ok(CallbackOutcome::Connected {
                            connection: applied.connection,
                        })
                    }
                    Err(StoreError::InvalidTransition(_) | StoreError::Conflict { .. }) => {
                        // Disconnected while the user was at the partner: the fresh grant must
                        // not outlive the connection.
                        revoke_orphan(client, tokens).await;
                        Ok(rejected(
                            "invalid_transition",
                            "the connection is no longer authorizing",
                        ))
                    }
                    Err(err) => Err(err),
                }
            }
            Err(err) => {
                let info =
                    |code: &str| ErrorInfo::new(code, format!("code exchange failed: {err}"));
                let (event, code) = match &err {
                    // The code was refused (expired, replayed): the user can simply try again.
                    OAuthError::InvalidGrant => (Event::AuthorizationInterrupted, "code_rejected"),
                    OAuthError::Transient { .. } => {
                        (Event::AuthorizationInterrupted, "partner_unavailable")
                    }
                    OAuthError::Configuration { .. } => (
                        Event::AuthorizationFailed {
                            alert: info("partner_configuration"),
                        },
                        "partner_configuration",
                    ),
                };
                let failed = matches!(event, Event::AuthorizationFailed { .. });
                let change = Change::new(event, actor)
                    .details(serde_json::json!({ "oauth_error": err.code() }))
                    .error(info(code));
                let connection = match self.store.apply(id, None, change).await {
                    Ok(applied) => applied.connection,
                    Err(StoreError::InvalidTransition(_) | StoreError::Conflict { .. }) => {
                        return Ok(rejected(
                            "invalid_transition",
                            "the connection is no longer authorizing",
                        ));
                    }
                    Err(err) => return Err(err),
                };
                Ok(if failed {
                    CallbackOutcome::Failed {
                        connection,
                        code: code.to_owned(),
                    }
                } else {
                    CallbackOutcome::Interrupted {
                        connection,
                        code: code.to_owned(),
                    }
                })
            }
        }
    }
}

async fn revoke_orphan(client: &PartnerClient, tokens: TokenSet) {
    let token = tokens.refresh_token.unwrap_or(tokens.access_token);
    if let Err(err) = client.revoke(&token).await {
        tracing::warn!(partner = client.name(), error = %err, "could not revoke an orphaned grant");
    }
}

/// The callback's `error` as repeated in journals and alerts: a well-formed OAuth error code
/// (RFC 6749 §4.1.2.1 characters, at most 64), else `(unrecognised)`.
fn error_code_shown(error: &str) -> String {
    let well_formed = !error.is_empty()
        && error.len() <= 64
        && error
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if well_formed {
        bounded(error, 64)
    } else {
        "(unrecognised)".to_owned()
    }
}

impl Workflows {
    /// The connection a spent `state` belonged to, if it is connected now.
    async fn connected_by(&self, state: &str) -> Result<Option<Connection>, StoreError> {
        let Some(peek) = self.store.peek_authorization(&hash_state(state)).await? else {
            return Ok(None);
        };
        let connection = self.store.get(peek.connection_id).await?;
        Ok(matches!(connection.state, State::Active | State::Refreshing).then_some(connection))
    }
}
