use sea_orm::entity::prelude::*;

/// A partner-side revocation (RFC 7009) still owed: the refresh token moved here, sealed, from
/// the connection the moment it was disconnected, so the connection can no longer use it while
/// the call to the partner is retried in the background (docs/oauth.md#revocation).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "partner_revocations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub partner: String,
    /// Cleared when the revocation completes or is abandoned.
    pub token_ciphertext: Option<Vec<u8>>,
    pub key_id: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    /// `revoked` or `abandoned`.
    pub outcome: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
