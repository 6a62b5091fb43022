use sea_orm::entity::prelude::*;

/// A pending OAuth authorization: the hashed `state` (docs/oauth.md#state) and the sealed PKCE
/// verifier (docs/oauth.md#pkce).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oauth_authorizations")]
pub struct Model {
    /// SHA-256 hex of the `state` value; the raw value only ever exists in the user's browser.
    #[sea_orm(primary_key, auto_increment = false)]
    pub state_hash: String,
    pub connection_id: String,
    pub partner: String,
    /// Sealed with associated data `verifier:<connection id>`.
    pub verifier_ciphertext: Vec<u8>,
    pub key_id: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set once, atomically: a state is single use.
    pub consumed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
