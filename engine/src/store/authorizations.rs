//! Single-use OAuth `state`s: stored hashed, bound to a connection and a partner, expiring
//! (docs/oauth.md#state).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::{Result, Store, StoreError, effects::verifier_aad, entities::oauth_authorization};
use crate::{ids::ConnectionId, secret::SecretString};

/// A `state` accepted and spent: the connection it belongs to and its PKCE verifier.
#[derive(Debug)]
pub struct ConsumedAuthorization {
    pub connection_id: ConnectionId,
    pub pkce_verifier: SecretString,
    pub created_at: DateTime<Utc>,
}

/// A `state` looked at without spending it.
#[derive(Debug, Clone)]
pub struct AuthorizationPeek {
    pub connection_id: ConnectionId,
    pub partner: String,
    /// Unspent and unexpired.
    pub live: bool,
}

/// Why a callback's `state` was refused. Only `Reused` and a successful consume change anything
/// (nothing, and the single-use mark respectively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationRejected {
    #[error("unknown state")]
    Unknown,
    #[error("state already used")]
    Reused,
    #[error("state expired")]
    Expired,
    #[error("state belongs to another partner")]
    WrongPartner,
}

impl Store {
    /// Spends a `state` atomically: of two callbacks carrying it, exactly one gets the
    /// verifier (so a code is exchanged at most once: docs/oauth.md#callback). A state for another partner or an
    /// expired one is refused without being spent.
    pub async fn consume_authorization(
        &self,
        state_hash: &str,
        partner: &str,
    ) -> Result<std::result::Result<ConsumedAuthorization, AuthorizationRejected>> {
        let Some(row) = oauth_authorization::Entity::find_by_id(state_hash.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(Err(AuthorizationRejected::Unknown));
        };
        if row.partner != partner {
            return Ok(Err(AuthorizationRejected::WrongPartner));
        }
        if row.consumed_at.is_some() {
            return Ok(Err(AuthorizationRejected::Reused));
        }
        let now = self.clock.now();
        if row.expires_at <= now {
            return Ok(Err(AuthorizationRejected::Expired));
        }
        let spent = oauth_authorization::Entity::update_many()
            .set(oauth_authorization::ActiveModel {
                consumed_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(oauth_authorization::Column::StateHash.eq(state_hash))
            .filter(oauth_authorization::Column::ConsumedAt.is_null())
            .exec(&self.db)
            .await?;
        if spent.rows_affected != 1 {
            return Ok(Err(AuthorizationRejected::Reused));
        }
        let verifier = self.keyring.open(
            &row.key_id,
            &row.verifier_ciphertext,
            &verifier_aad(&row.connection_id),
        )?;
        let verifier = String::from_utf8(verifier)
            .map_err(|_| StoreError::Corrupt("PKCE verifier is not UTF-8".to_owned()))?;
        Ok(Ok(ConsumedAuthorization {
            connection_id: row
                .connection_id
                .parse()
                .map_err(|_| StoreError::Corrupt("authorization connection id".to_owned()))?,
            pkce_verifier: SecretString::new(verifier),
            created_at: row.created_at,
        }))
    }

    /// What a `state` belongs to, without spending it (`None`: unknown). For the callback's
    /// diagnostics: whether a callback refused before the state was spent carried a live state
    /// (an issuer mismatch on a real attempt is an operator problem), and whose a spent one was
    /// (a user who went Back after connecting is told they are connected).
    pub async fn peek_authorization(&self, state_hash: &str) -> Result<Option<AuthorizationPeek>> {
        let Some(row) = oauth_authorization::Entity::find_by_id(state_hash.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let now = self.clock.now();
        Ok(Some(AuthorizationPeek {
            connection_id: row
                .connection_id
                .parse()
                .map_err(|_| StoreError::Corrupt("authorization connection id".to_owned()))?,
            live: row.consumed_at.is_none() && row.expires_at > now,
            partner: row.partner,
        }))
    }

    /// Deletes authorizations that expired more than `keep` ago (housekeeping).
    pub async fn purge_authorizations(&self, older_than: DateTime<Utc>) -> Result<u64> {
        let result = oauth_authorization::Entity::delete_many()
            .filter(oauth_authorization::Column::ExpiresAt.lt(older_than))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}
