use sea_orm::entity::prelude::*;

/// Something operators must fix (a partner rejecting our client credentials, say) rather than
/// something to charge to a user's connection.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "operator_alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub partner: String,
    pub connection_id: Option<String>,
    pub code: String,
    /// The latest occurrence's message (bounded, sanitised).
    pub message: String,
    /// When the alert was first raised.
    pub created_at: DateTimeUtc,
    /// `partner:code`: repeats fold into this row (NULL for alerts stored before folding).
    pub fold_key: Option<String>,
    /// Occurrences folded into this row.
    pub count: i64,
    pub last_seen_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
