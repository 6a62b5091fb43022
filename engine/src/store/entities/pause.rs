use sea_orm::entity::prelude::*;

/// A pause of a whole partner or of everything (docs/actions.md#actions): in force while
/// `resumed_at` is `NULL`, kept afterwards as the record of who paused and resumed, and why.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pauses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `all` or `partner:<name>`.
    pub scope: String,
    pub reason: String,
    pub actor: String,
    pub since: DateTimeUtc,
    pub resumed_at: Option<DateTimeUtc>,
    pub resumed_by: Option<String>,
    pub resume_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
