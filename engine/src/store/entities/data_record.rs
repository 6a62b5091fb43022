use sea_orm::entity::prelude::*;

/// One partner record of one connection, in the Tidepool data model.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "data_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub partner_record_id: String,
    pub user_id: String,
    pub datum_type: String,
    pub time: DateTimeUtc,
    pub datum: Json,
    /// SHA-256 of the datum: an unchanged re-fetch writes nothing.
    pub datum_hash: String,
    /// The partner deleted the record.
    pub retired: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// 1 when inserted, + 1 on every change (partner corrections, deletions).
    pub revision: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
