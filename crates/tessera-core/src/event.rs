//! Identity events: every sign-up, sign-in, sign-out, token issuance, consent decision and
//! customer change becomes one row, written in the same transaction as the change itself.
//! They feed the audit log now, and webhooks, SIEM export and analytics later.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TenantCreated,
    UserRegistered,
    UserCreated,
    UsersImported,
    UserDisabled,
    UserEnabled,
    UserPasswordRehashed,
    SignIn,
    SignOut,
    TokenIssued,
    RefreshTokenReused,
    AuthorizationCodeReused,
    GrantRevoked,
    ConsentGranted,
    ConsentDenied,
    ConsentRevoked,
    ClientCreated,
    ClientDeleted,
    SigningKeyCreated,
    SigningKeyRotated,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TenantCreated => "tenant_created",
            Self::UserRegistered => "user_registered",
            Self::UserCreated => "user_created",
            Self::UsersImported => "users_imported",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::UserPasswordRehashed => "user_password_rehashed",
            Self::SignIn => "sign_in",
            Self::SignOut => "sign_out",
            Self::TokenIssued => "token_issued",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::AuthorizationCodeReused => "authorization_code_reused",
            Self::GrantRevoked => "grant_revoked",
            Self::ConsentGranted => "consent_granted",
            Self::ConsentDenied => "consent_denied",
            Self::ConsentRevoked => "consent_revoked",
            Self::ClientCreated => "client_created",
            Self::ClientDeleted => "client_deleted",
            Self::SigningKeyCreated => "signing_key_created",
            Self::SigningKeyRotated => "signing_key_rotated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Where a request came from, carried onto its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOrigin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An event as recorded. `data` holds kind-specific metadata and never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: EventKind,
    pub outcome: Outcome,
    /// Why a failure failed (`invalid_credentials`, `account_disabled`, …).
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub user_id: Option<Uuid>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(tenant_id: Uuid, kind: EventKind, occurred_at: OffsetDateTime) -> Self {
        Self {
            id: Uuid::now_v7(),
            tenant_id,
            kind,
            outcome: Outcome::Success,
            reason: None,
            occurred_at,
            user_id: None,
            client_id: None,
            ip: None,
            user_agent: None,
            data: serde_json::Value::Null,
        }
    }

    pub fn failure(mut self, reason: &str) -> Self {
        self.outcome = Outcome::Failure;
        self.reason = Some(reason.to_owned());
        self
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_owned());
        self
    }

    pub fn origin(mut self, origin: &RequestOrigin) -> Self {
        self.ip.clone_from(&origin.ip);
        self.user_agent.clone_from(&origin.user_agent);
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}
