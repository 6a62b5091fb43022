use sea_orm::entity::prelude::*;

/// A message a transition owes: written in the transition's transaction, delivered by the
/// deliver step (docs/notifications.md#the-outbox).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Orders a connection's messages (their writes are serialized by the connection's row).
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The message's stable id (a webhook's `webhook-id`, an email's `Message-ID`).
    #[sea_orm(unique)]
    pub id: String,
    pub connection_id: String,
    /// `invite_email`, `notice_email` or `webhook`.
    pub kind: String,
    /// Who receives it: `patient`, `clinic:<id>`, or a webhook endpoint's name.
    pub target: String,
    pub invitation_id: Option<String>,
    /// What the message says, without personal data: the webhook event, or the email's facts.
    pub payload: Json,
    /// `pending`, `sent` or `abandoned`.
    pub status: String,
    pub attempts: i32,
    /// When it is due (its first attempt, or the next after a failure).
    pub next_attempt_at: DateTimeUtc,
    /// A dispatcher handed it to a deliver job; not dispatched again before this.
    pub claimed_until: Option<DateTimeUtc>,
    /// A deliver step is sending it; nobody else sends it before this.
    pub lease_until: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
