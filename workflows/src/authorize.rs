//! Connect, reconnect and restart authorization: a fresh `state` (stored hashed) and PKCE
//! verifier (stored sealed) per attempt, written with the transition that issues them.

use chrono::TimeDelta;
use engine::{
    StoreError,
    ids::{ConnectionId, PartnerName, UserId},
    model::{Actor, Change, Connection, NewAuthorization},
    state::{Event, State},
};
use url::Url;

use crate::{Workflows, error::WorkflowError, partner::hash_state};

/// A connection in `authorizing` and the URL to send the user's browser to.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub connection: Connection,
    pub authorize_url: Url,
    /// Whether a new connection row was created (false: an existing one was reused).
    pub created: bool,
}

impl Workflows {
    /// `POST /users/{u}/connections`: starts (or reconnects, reusing the revoked/failed row and
    /// its data cursor) a connection to `partner`.
    pub async fn connect(
        &self,
        user: &UserId,
        partner: &PartnerName,
        actor: Actor,
    ) -> Result<Authorization, WorkflowError> {
        let client = self
            .partners
            .get(partner.as_str())
            .ok_or_else(|| WorkflowError::UnknownPartner(partner.to_string()))?;
        let request = client.authorization_request();
        let change = self.start_change(actor, &request);
        match self.store.open_connection(user, partner, change).await {
            Ok((applied, created)) => Ok(Authorization {
                connection: applied.connection,
                authorize_url: request.url,
                created,
            }),
            Err(StoreError::InvalidTransition(t))
                if matches!(t.from, Some(State::Active | State::Refreshing)) =>
            {
                Err(WorkflowError::AlreadyActive)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// `POST /connections/{id}/authorize`: a fresh authorize URL; earlier states stop working.
    pub async fn authorize(
        &self,
        id: ConnectionId,
        actor: Actor,
    ) -> Result<Authorization, WorkflowError> {
        let connection = self.store.get(id).await?;
        let client = self
            .partners
            .get(connection.partner.as_str())
            .ok_or_else(|| WorkflowError::UnknownPartner(connection.partner.to_string()))?;
        let request = client.authorization_request();
        let change = self.start_change(actor, &request);
        match self.store.apply(id, None, change).await {
            Ok(applied) => Ok(Authorization {
                connection: applied.connection,
                authorize_url: request.url,
                created: false,
            }),
            Err(StoreError::InvalidTransition(t))
                if matches!(t.from, Some(State::Active | State::Refreshing)) =>
            {
                Err(WorkflowError::AlreadyActive)
            }
            Err(err) => Err(err.into()),
        }
    }

    fn start_change(&self, actor: Actor, request: &crate::partner::AuthorizationRequest) -> Change {
        let ttl = TimeDelta::from_std(self.settings.state_ttl).unwrap_or(TimeDelta::minutes(10));
        let authorization = NewAuthorization {
            state_hash: hash_state(request.state.expose()),
            pkce_verifier: request.pkce_verifier.clone(),
            expires_at: self.store.clock().now() + ttl,
        };
        Change::new(Event::StartAuthorization { authorization }, actor).clear_error()
    }
}
