//! The aggregates Tessera stores. Every one carries its tenant; secrets appear only as hashes.

use crate::scope::Scopes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A brand: its own customers, clients, keys, settings and issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub branding: Branding,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a tenant can change about the hosted pages' look.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Branding {
    pub logo_url: Option<String>,
    /// CSS colour, `#rrggbb`.
    pub primary_color: Option<String>,
    pub background_color: Option<String>,
}

/// A customer of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The address as the customer typed it; mail goes here.
    pub email: String,
    /// `email::canonicalize_email` of `email`; unique per tenant.
    pub email_canonical: String,
    pub email_verified: bool,
    /// Argon2id PHC string; `None` for customers without a password.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl User {
    pub fn full_name(&self) -> Option<String> {
        match (&self.given_name, &self.family_name) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// An application registered with a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub client_id: String,
    /// `secret::hash_token` of the secret; `None` for public clients.
    #[serde(skip_serializing)]
    pub secret_hash: Option<String>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: Vec<String>,
    /// The scopes the client may ask for.
    pub scopes: Scopes,
    /// First-party clients skip the consent page.
    pub first_party: bool,
    /// Public clients (SPAs, native apps) have no secret and must use PKCE.
    pub public: bool,
    /// `RS256` (default), `ES256` or `EdDSA`.
    pub id_token_signed_response_alg: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Client {
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// A signed-in browser. The cookie holds a random token; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub token_hash: String,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    /// Authentication methods references (RFC 8176), e.g. `pwd`.
    pub amr: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// Absolute end of the session, whatever its activity.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    Login,
    Registration,
}

impl FlowKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Registration => "registration",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "login" => Some(Self::Login),
            "registration" => Some(Self::Registration),
            _ => None,
        }
    }
}

/// A self-service journey (sign-in, sign-up) as a stored object. It is bound to the browser
/// that started it through the CSRF cookie whose hash it keeps, so a flow id planted by an
/// attacker cannot be continued by someone else's browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: FlowKind,
    pub csrf_token_hash: String,
    /// The authorization request to resume when the flow succeeds.
    pub authorization_request_id: Option<Uuid>,
    /// Pre-filled identifier (`login_hint`).
    pub login_hint: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A validated authorization request waiting for a login (and maybe consent): the "login
/// request" of the boundary between the OAuth engine and the hosted pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    /// `none`, `login`, `consent`, `create`.
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// The subject of a valid `id_token_hint`, which the signed-in customer must match.
    pub id_token_hint_subject: Option<Uuid>,
    pub acr_values: Option<String>,
    pub ui_locales: Option<String>,
    /// Hash of the CSRF cookie of the browser that sent the request. Only that browser may
    /// continue it, so a request id planted by an attacker is worthless elsewhere.
    #[serde(default)]
    pub browser_binding: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl AuthorizationRequest {
    pub fn has_prompt(&self, value: &str) -> bool {
        self.prompt.iter().any(|p| p == value)
    }
}

/// An issued authorization code, stored under its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub code_hash: String,
    pub tenant_id: Uuid,
    pub client_id: String,
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub redirect_uri: String,
    pub scope: Scopes,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    pub amr: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Set by the one successful redemption.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// The grant the redemption created; revoked when the code is replayed.
    pub grant_id: Option<Uuid>,
}

/// What a client was given for a customer (or for itself): the family of refresh tokens and
/// the access tokens minted from it. Revoking the grant kills all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub client_id: String,
    /// `None` for `client_credentials`.
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub scope: Scopes,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub auth_time: Option<OffsetDateTime>,
    pub amr: Vec<String>,
    pub nonce: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Absolute end of the refresh-token family.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl Grant {
    /// The grant a code's one redemption creates: the code's customer, session, scope and
    /// authentication, with a refresh-token family that ends at `expires_at`.
    pub fn from_code(code: &AuthorizationCode, id: Uuid, now: OffsetDateTime, expires_at: OffsetDateTime) -> Self {
        Self {
            id,
            tenant_id: code.tenant_id,
            client_id: code.client_id.clone(),
            user_id: Some(code.user_id),
            session_id: code.session_id,
            scope: code.scope.clone(),
            auth_time: Some(code.auth_time),
            amr: code.amr.clone(),
            nonce: code.nonce.clone(),
            created_at: now,
            expires_at,
            revoked_at: None,
        }
    }

    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// One refresh token of a grant's family, stored under its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub token_hash: String,
    pub tenant_id: Uuid,
    pub grant_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set when this token was exchanged for its successor.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
}

/// A customer's standing decision to let a client have some scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub client_id: String,
    pub scopes: Scopes,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Published in the JWKS, not yet signing: relying parties' caches learn it first.
    Next,
    /// Signs new tokens.
    Active,
    /// No longer signs; published until every token it signed has expired.
    Retired,
}

impl KeyStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "next" => Some(Self::Next),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

/// A tenant's signing key. The private key is encrypted under the master key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub alg: String,
    pub status: KeyStatus,
    #[serde(skip_serializing)]
    pub private_key_encrypted: Vec<u8>,
    pub public_jwk: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// For retired keys: when the last token it signed expires.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub publish_until: Option<OffsetDateTime>,
}

/// A token that allows dynamic client registration (RFC 7591 §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialAccessToken {
    pub token_hash: String,
    pub tenant_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
