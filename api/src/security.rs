//! Who may call what. The bearer token is verified by [`JwtKeys`] as poem-openapi extracts the
//! security scheme (so it is documented in the OpenAPI document); authorization is decided here,
//! per operation, from the caller's role and subject.
//!
//! | role        | connections                       | operator endpoints                |
//! |-------------|-----------------------------------|-----------------------------------|
//! | `user`      | their own only (others: 404)      | 403                               |
//! | `service`   | any user's                        | refresh, revocations (not alerts) |
//! | `ops`       | any                               | all                               |
//! | `clinician` | 403; their clinics' invitations   | 403                               |
//!
//! Invitations (`/v1/clinics/{clinicId}/invites…`): a clinician only for the clinics of their
//! token's `clinics` claim, `service` and `ops` for any; another clinic (and its invitations)
//! is 404, exactly like one that does not exist.
//!
//! A user asking for someone else's connection gets 404, exactly as for a connection that does
//! not exist, so connection ids cannot be probed. A user naming another user id in a path gets
//! 403: that answer is the same whether or not the other user exists.

use engine::{
    Store, StoreError,
    ids::{ConnectionId, UserId},
    model::{Actor, Connection},
};
use poem::{Request, error::ResponseError, http::StatusCode};
use poem_openapi::{SecurityScheme, auth::Bearer};

use crate::{
    auth::{AuthError, Claims, JwtKeys, Role},
    problem::Problem,
};

/// Roles that manage connections.
pub const CONNECTION_ROLES: &[Role] = &[Role::User, Role::Service, Role::Ops];
/// Roles that may repair connections (force a refresh, inspect revocations).
pub const REPAIR_ROLES: &[Role] = &[Role::Service, Role::Ops];
/// Roles that manage invitations (a clinician only for their own clinics).
pub const INVITE_ROLES: &[Role] = &[Role::Clinician, Role::Service, Role::Ops];
/// Roles that see operator alerts.
pub const OPS_ROLES: &[Role] = &[Role::Ops];

/// `Authorization: Bearer <JWT>` (HS256, minted by Tidepool or `tributary token`).
#[derive(SecurityScheme)]
#[oai(
    rename = "bearer",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "verify_bearer"
)]
pub struct BearerAuth(pub Caller);

async fn verify_bearer(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let Some(keys) = req.data::<JwtKeys>() else {
        // A wiring bug, not the caller's fault; `routes` always installs the keys.
        tracing::error!("no JWT keys installed on the API route");
        return Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR));
    };
    keys.verify(&bearer.token).map(Caller).map_err(|err| {
        tracing::info!(reason = %err, "bearer token refused");
        err.into()
    })
}

impl ResponseError for AuthError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(AuthError::status(self)).unwrap_or(StatusCode::UNAUTHORIZED)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn subject(&self) -> &str {
        &self.0.sub
    }

    /// The journal's actor for this caller's requests: `user:alice`, `ops:bob`, …
    pub fn actor(&self) -> Actor {
        Actor::new(self.role().as_str(), self.subject())
    }

    /// 403 `forbidden` unless the caller holds one of `allowed`.
    pub fn require(&self, allowed: &[Role]) -> Result<(), Problem> {
        self.0
            .require_role(allowed)
            .map_err(|err| Problem::from(&err))
    }

    /// The user id of a `/users/{userId}/…` path, if the caller may act for that user.
    pub fn user_path(&self, raw: &str) -> Result<UserId, Problem> {
        self.require(CONNECTION_ROLES)?;
        let user = UserId::parse(raw)
            .map_err(|err| Problem::bad_request("invalid_user_id", err.to_string()))?;
        if self.role() == Role::User && user.as_str() != self.subject() {
            return Err(Problem::forbidden(
                "users may only see and manage their own connections",
            ));
        }
        Ok(user)
    }

    /// The clinic of a `/clinics/{clinicId}/…` path, if the caller may manage its invitations.
    /// A clinic the clinician does not belong to is 404, like one that does not exist.
    pub fn clinic_path(&self, raw: &str) -> Result<String, Problem> {
        self.require(INVITE_ROLES)?;
        if !engine::invitation::valid_clinic_id(raw) {
            return Err(Problem::bad_request(
                "invalid_clinic_id",
                "a clinic id is 1 to 128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if self.role() == Role::Clinician && !self.0.clinics.iter().any(|c| c == raw) {
            return Err(Problem::not_found("clinic not found"));
        }
        Ok(raw.to_owned())
    }

    /// The journal's actor for a request on behalf of a clinic: `clinician:dr-a@clinic:c1`.
    pub fn clinic_actor(&self, clinic: &str) -> Actor {
        Actor::new(
            self.role().as_str(),
            &format!("{}@clinic:{clinic}", self.subject()),
        )
    }

    /// Whether the caller may see `connection` at all.
    pub fn may_see(&self, connection: &Connection) -> bool {
        match self.role() {
            Role::User => connection.user_id.as_str() == self.subject(),
            Role::Service | Role::Ops => true,
            Role::Clinician => false,
        }
    }

    /// The connection of a `/connections/{id}/…` path, if the caller holds one of `roles` and may
    /// see it. Someone else's connection is reported exactly like a missing one.
    pub async fn connection(
        &self,
        store: &Store,
        raw_id: &str,
        roles: &[Role],
    ) -> Result<Connection, Problem> {
        self.require(roles)?;
        let id = parse_connection_id(raw_id)?;
        match store.get(id).await {
            Ok(connection) if self.may_see(&connection) => Ok(connection),
            Ok(_) | Err(StoreError::NotFound) => Err(Problem::not_found("connection not found")),
            Err(err) => Err(Problem::internal(&err)),
        }
    }
}

pub fn parse_connection_id(raw: &str) -> Result<ConnectionId, Problem> {
    raw.parse().map_err(|_| {
        Problem::bad_request(
            "invalid_connection_id",
            "connection id must be a UUID such as 0190f5e2-7b1c-7d3e-8f00-0123456789ab",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, sub: &str) -> Caller {
        Caller(Claims {
            sub: sub.to_owned(),
            role,
            iss: "tributary".into(),
            aud: "tributary".into(),
            exp: 0,
            iat: None,
            nbf: None,
            clinics: vec!["c1".into()],
        })
    }

    #[test]
    fn actor_is_role_and_subject() {
        assert_eq!(caller(Role::User, "alice").actor().as_str(), "user:alice");
        assert_eq!(caller(Role::Ops, "bob").actor().as_str(), "ops:bob");
    }

    #[test]
    fn user_paths() {
        let alice = caller(Role::User, "alice");
        assert_eq!(alice.user_path("alice").unwrap().as_str(), "alice");
        assert_eq!(alice.user_path("bob").unwrap_err().status, 403);
        assert_eq!(alice.user_path("a b").unwrap_err().code, "invalid_user_id");
        assert!(caller(Role::Service, "web").user_path("bob").is_ok());
        assert!(caller(Role::Ops, "op").user_path("bob").is_ok());
        let p = caller(Role::Clinician, "dr").user_path("bob").unwrap_err();
        assert_eq!((p.status, p.code.as_str()), (403, "forbidden"));
    }

    #[test]
    fn clinic_paths() {
        let dr = caller(Role::Clinician, "dr");
        assert_eq!(dr.clinic_path("c1").unwrap(), "c1");
        assert_eq!(dr.clinic_path("c2").unwrap_err().status, 404);
        assert_eq!(dr.clinic_path("a/b").unwrap_err().code, "invalid_clinic_id");
        assert_eq!(dr.clinic_actor("c1").as_str(), "clinician:dr@clinic:c1");
        assert!(caller(Role::Ops, "op").clinic_path("c2").is_ok());
        assert_eq!(
            caller(Role::User, "u")
                .clinic_path("c1")
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn connection_ids_parse_strictly() {
        assert!(parse_connection_id(&ConnectionId::new().to_string()).is_ok());
        for bad in ["", "42", "not-a-uuid", "0190f5e27b1c7d3e8f000123456789ab"] {
            assert_eq!(
                parse_connection_id(bad).unwrap_err().code,
                "invalid_connection_id"
            );
        }
    }
}
