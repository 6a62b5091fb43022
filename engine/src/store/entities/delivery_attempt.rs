use sea_orm::entity::prelude::*;

/// One attempt at delivering an outbox message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub outbox_seq: i64,
    /// The message's attempt count after this one (an operator's resend starts again at 1).
    pub attempt: i32,
    pub at: DateTimeUtc,
    /// `sent`, `retrying` or `abandoned`.
    pub outcome: String,
    /// The server's answer or the error (never an address or a token).
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
