use sea_orm::entity::prelude::*;

/// A clinician's invitation of a patient to connect a partner, on the patient's connection
/// (docs/notifications.md#invitations).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub clinic_id: String,
    /// The inviting clinician's subject.
    pub clinician: String,
    pub partner: String,
    pub patient_user_id: String,
    /// The address the invitation goes to, AES-256-GCM sealed; associated data =
    /// `invite-email:<connection id>`.
    pub email_ciphertext: Vec<u8>,
    pub email_key_id: String,
    /// `p***@example.org`: what the clinic is shown.
    pub email_masked: String,
    /// `pending`, `accepted`, `cancelled` or `expired`.
    pub status: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// The last time an email was queued for it (the resend limit runs from here).
    pub last_sent_at: DateTimeUtc,
    pub sent_count: i32,
    pub closed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
