use sea_orm::entity::prelude::*;

/// A partner record a transfer could not store, once per connection and record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "skipped_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: String,
    /// The partner id when readable, else `sha256:<hex>` of the record's bytes.
    #[sea_orm(primary_key, auto_increment = false)]
    pub record_key: String,
    /// The partner record kind (`egv`, `event`, `basal`, …).
    pub kind: String,
    pub partner_record_id: Option<String>,
    /// Names the field and the problem, never a value.
    pub reason: String,
    pub first_seen_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub seen_count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
