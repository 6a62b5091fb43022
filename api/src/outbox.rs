//! Operators' view of the outbox (docs/notifications.md#operators): every email and webhook a
//! transition queued, what came of each attempt, and a resend. `ops` only. No address, token
//! or health datum is shown: a message names its recipient by role (`patient`,
//! `clinic:<id>`, a webhook endpoint's name).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use engine::{
    invitation::{MessageKind, MessageStatus},
    store::{DeliveryAttempt, OutboxMessage, OutboxQuery},
};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::Value;
use uuid::Uuid;
use workflows::Workflows;

use crate::{
    ApiTags,
    models::Nullable,
    params::UuidParam,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, OPS_ROLES, parse_connection_id},
};

/// Messages per page when no `limit` is given.
const DEFAULT_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MessageKind", rename_all = "snake_case")]
pub enum MessageKindJson {
    InviteEmail,
    NoticeEmail,
    Webhook,
}

impl From<MessageKind> for MessageKindJson {
    fn from(kind: MessageKind) -> Self {
        match kind {
            MessageKind::InviteEmail => Self::InviteEmail,
            MessageKind::NoticeEmail => Self::NoticeEmail,
            MessageKind::Webhook => Self::Webhook,
        }
    }
}

impl From<MessageKindJson> for MessageKind {
    fn from(kind: MessageKindJson) -> Self {
        match kind {
            MessageKindJson::InviteEmail => Self::InviteEmail,
            MessageKindJson::NoticeEmail => Self::NoticeEmail,
            MessageKindJson::Webhook => Self::Webhook,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MessageStatus", rename_all = "snake_case")]
pub enum MessageStatusJson {
    /// Not delivered yet (first attempt due, or retrying).
    Pending,
    Sent,
    /// Given up: refused for good, or out of attempts.
    Abandoned,
}

impl From<MessageStatus> for MessageStatusJson {
    fn from(status: MessageStatus) -> Self {
        match status {
            MessageStatus::Pending => Self::Pending,
            MessageStatus::Sent => Self::Sent,
            MessageStatus::Abandoned => Self::Abandoned,
        }
    }
}

impl From<MessageStatusJson> for MessageStatus {
    fn from(status: MessageStatusJson) -> Self {
        match status {
            MessageStatusJson::Pending => Self::Pending,
            MessageStatusJson::Sent => Self::Sent,
            MessageStatusJson::Abandoned => Self::Abandoned,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DeliveryAttempt", rename_all = "camelCase")]
pub struct AttemptJson {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// `sent`, `retrying` or `abandoned`.
    pub outcome: String,
    /// The relay's or endpoint's answer, or the error.
    pub detail: Nullable<String>,
}

impl From<DeliveryAttempt> for AttemptJson {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            attempt: a.attempt,
            at: a.at,
            outcome: a.outcome,
            detail: a.detail.into(),
        }
    }
}

/// An outbox message.
#[derive(Debug, Clone, Object)]
#[oai(rename = "OutboxMessage", rename_all = "camelCase")]
pub struct MessageJson {
    /// The message's stable id (a webhook's `webhook-id`; an email's Message-ID, and in
    /// development the name of its `.eml` file).
    pub id: Uuid,
    /// Order of the connection's messages.
    pub sequence: i64,
    pub connection_id: Uuid,
    pub kind: MessageKindJson,
    /// `patient`, `clinic:<id>`, or the webhook endpoint's name.
    pub target: String,
    pub status: MessageStatusJson,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Nullable<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Nullable<DateTime<Utc>>,
    /// What the message says, without personal data (for a webhook: the event as sent).
    pub payload: Value,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptJson>,
}

fn message_json(
    message: OutboxMessage,
    history: &mut HashMap<i64, Vec<DeliveryAttempt>>,
) -> MessageJson {
    let payload = if message.kind == MessageKind::Webhook {
        serde_json::from_slice(&workflows::deliver::webhook::body(&message)).unwrap_or_default()
    } else {
        message.payload.clone()
    };
    MessageJson {
        id: message.id.parse().unwrap_or_default(),
        sequence: message.seq,
        connection_id: message.connection_id.as_uuid(),
        kind: message.kind.into(),
        target: message.target,
        status: message.status.into(),
        attempts: message.attempts,
        next_attempt_at: message.next_attempt_at,
        last_error: message.last_error.into(),
        created_at: message.created_at,
        sent_at: message.sent_at.into(),
        payload,
        history: history
            .remove(&message.seq)
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
    }
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "OutboxPage", rename_all = "camelCase")]
pub struct OutboxPageJson {
    pub messages: Vec<MessageJson>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

endpoint_response! {
    pub enum OutboxResponse {
        /// Messages, newest first.
        Ok(Json<OutboxPageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` sees the outbox (`forbidden`).
        Forbidden = 403,
    }
}

endpoint_response! {
    pub enum ResendResponse {
        /// The message, pending again and due at once.
        Ok(Json<MessageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` may resend (`forbidden`).
        Forbidden = 403,
        /// No such webhook delivery (`not_found`).
        NotFound = 404,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
    }
}

pub struct OutboxApi {
    pub workflows: Workflows,
}

impl OutboxApi {
    /// A page of messages for operators, `kind` fixed by the route or chosen by the caller.
    async fn list(
        &self,
        caller: &crate::security::Caller,
        kind: Option<MessageKind>,
        status: Option<MessageStatusJson>,
        connection_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> OutboxResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let query = OutboxQuery {
                kind,
                status: status.map(Into::into),
                connection_id: connection_id.map(parse_connection_id).transpose()?,
                ..OutboxQuery::default()
            };
            self.page(query, cursor, limit).await
        };
        match result.await {
            Ok(page) => OutboxResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }

    async fn page(
        &self,
        mut query: OutboxQuery,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<OutboxPageJson, Problem> {
        query.before_seq = cursor
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    Problem::bad_request("invalid_cursor", "not a cursor of this list")
                })
            })
            .transpose()?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        query.limit = u64::from(limit) + 1;
        let store = self.workflows.store();
        let mut messages = store.outbox_messages(&query).await?;
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        let next_cursor = more
            .then(|| messages.last().map(|m| m.seq.to_string()))
            .flatten();
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        let mut history = store.delivery_attempts(&seqs).await?;
        Ok(OutboxPageJson {
            messages: messages
                .into_iter()
                .map(|m| message_json(m, &mut history))
                .collect(),
            next_cursor: next_cursor.into(),
        })
    }
}

#[OpenApi(prefix_path = "/v1/ops", tag = "ApiTags::Operations")]
impl OutboxApi {
    /// Every queued email and webhook, newest first.
    #[oai(path = "/outbox", method = "get", operation_id = "listOutbox")]
    #[allow(clippy::too_many_arguments)]
    async fn outbox(
        &self,
        BearerAuth(caller): BearerAuth,
        kind: Query<Option<MessageKindJson>>,
        status: Query<Option<MessageStatusJson>>,
        /// Only this connection's messages (UUID).
        #[oai(name = "connectionId")]
        connection_id: Query<Option<String>>,
        /// Messages per page, 1 to 500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> OutboxResponse {
        self.list(
            &caller,
            kind.0.map(Into::into),
            status.0,
            connection_id.0.as_deref(),
            limit.0,
            cursor.0.as_deref(),
        )
        .await
    }

    /// Webhook deliveries and their attempts, newest first.
    #[oai(
        path = "/webhooks/deliveries",
        method = "get",
        operation_id = "listWebhookDeliveries"
    )]
    async fn deliveries(
        &self,
        BearerAuth(caller): BearerAuth,
        status: Query<Option<MessageStatusJson>>,
        /// Only this connection's events (UUID).
        #[oai(name = "connectionId")]
        connection_id: Query<Option<String>>,
        /// Deliveries per page, 1 to 500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> OutboxResponse {
        self.list(
            &caller,
            Some(MessageKind::Webhook),
            status.0,
            connection_id.0.as_deref(),
            limit.0,
            cursor.0.as_deref(),
        )
        .await
    }

    /// Deliver a webhook event again (same id and body: receivers deduplicate by
    /// `webhook-id`), with its attempts counted afresh.
    #[oai(
        path = "/webhooks/deliveries/:id/resend",
        method = "post",
        operation_id = "resendWebhookDelivery"
    )]
    async fn resend(
        &self,
        BearerAuth(caller): BearerAuth,
        /// The delivery's id (UUID).
        id: Path<UuidParam>,
    ) -> ResendResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let missing = || Problem::not_found("webhook delivery not found");
            let id = id.parse::<Uuid>().map_err(|_| missing())?.to_string();
            let store = self.workflows.store();
            match store.outbox_message(&id).await {
                Ok(message) if message.kind == MessageKind::Webhook => {}
                Ok(_) | Err(engine::StoreError::NotFound) => return Err(missing()),
                Err(err) => return Err(err.into()),
            }
            tracing::info!(message = %id, operator = caller.subject(), "webhook delivery resent");
            let message = store.resend_message(&id).await?;
            let mut history = store.delivery_attempts(&[message.seq]).await?;
            Ok::<_, Problem>(message_json(message, &mut history))
        };
        match result.await {
            Ok(message) => ResendResponse::Ok(Json(message)),
            Err(problem) => problem.into(),
        }
    }
}
