//! The engine's settings (operator configuration; per-tenant settings live in the store).

use serde::{Deserialize, Serialize};
use time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Public base URL without a trailing slash; issuers are `<public_url>/t/<slug>`.
    #[serde(skip)]
    pub public_url: String,
    pub authorization_code_ttl_secs: i64,
    pub access_token_ttl_secs: i64,
    pub id_token_ttl_secs: i64,
    /// Absolute lifetime of a refresh-token family, however often it is used.
    pub refresh_token_ttl_secs: i64,
    /// How long a pending authorization request waits for the customer to sign in.
    pub authorization_request_ttl_secs: i64,
    pub initial_access_token_ttl_secs: i64,
    /// Signing algorithm of access tokens (RFC 9068 JWTs).
    pub access_token_alg: String,
    /// Default ID token algorithm for clients that do not choose one.
    pub id_token_alg: String,
    /// Admit `http://localhost` redirect URIs at registration (dev mode).
    #[serde(skip)]
    pub allow_http_localhost_redirects: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            public_url: "http://localhost:8080".to_owned(),
            authorization_code_ttl_secs: 60,
            access_token_ttl_secs: 600,
            id_token_ttl_secs: 600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            authorization_request_ttl_secs: 3600,
            initial_access_token_ttl_secs: 24 * 3600,
            access_token_alg: "ES256".to_owned(),
            id_token_alg: "RS256".to_owned(),
            allow_http_localhost_redirects: true,
        }
    }
}

impl OAuthConfig {
    pub fn issuer(&self, slug: &str) -> String {
        format!("{}/t/{}", self.public_url.trim_end_matches('/'), slug)
    }

    pub fn code_ttl(&self) -> Duration {
        Duration::seconds(self.authorization_code_ttl_secs)
    }
    pub fn access_token_ttl(&self) -> Duration {
        Duration::seconds(self.access_token_ttl_secs)
    }
    pub fn id_token_ttl(&self) -> Duration {
        Duration::seconds(self.id_token_ttl_secs)
    }
    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::seconds(self.refresh_token_ttl_secs)
    }
    /// The longest any signed token lives: how long a retired key stays published.
    pub fn max_signed_token_lifetime(&self) -> Duration {
        Duration::seconds(self.access_token_ttl_secs.max(self.id_token_ttl_secs)) + Duration::minutes(5)
    }

    /// Checks the lifetimes are sane; returns a message naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("authorization_code_ttl_secs", self.authorization_code_ttl_secs, 1, 600),
            ("access_token_ttl_secs", self.access_token_ttl_secs, 30, 86_400),
            ("id_token_ttl_secs", self.id_token_ttl_secs, 30, 86_400),
            ("refresh_token_ttl_secs", self.refresh_token_ttl_secs, 60, 366 * 86_400),
            ("authorization_request_ttl_secs", self.authorization_request_ttl_secs, 60, 86_400),
            ("initial_access_token_ttl_secs", self.initial_access_token_ttl_secs, 60, 366 * 86_400),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(format!("tokens.{name} must be between {min} and {max}"));
            }
        }
        for (name, alg) in [("access_token_alg", &self.access_token_alg), ("id_token_alg", &self.id_token_alg)] {
            if !crate::keys::SUPPORTED_ALGS.contains(&alg.as_str()) {
                return Err(format!("tokens.{name} must be one of RS256, ES256, EdDSA"));
            }
        }
        Ok(())
    }
}
