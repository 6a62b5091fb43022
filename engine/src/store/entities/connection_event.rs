use sea_orm::entity::prelude::*;

/// One journal row per transition, written in the transaction that changes the connection.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "connection_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: String,
    /// Equals the connection's version after the transition, so journal and row agree by construction.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub event: String,
    pub actor: String,
    pub reason: Option<String>,
    pub details: Json,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
