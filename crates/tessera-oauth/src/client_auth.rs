//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, and `none` for public clients. Secrets are
//! 256-bit random values stored as SHA-256 hashes and compared in constant time.

use crate::{OAuthEngine, OAuthError};
use std::sync::Arc;
use tessera_core::model::{Client, Tenant};
use tessera_core::secret::token_matches_hash;

/// The credentials a request carried, already decoded by the HTTP layer.
#[derive(Debug, Default, Clone)]
pub struct PresentedCredentials {
    /// From `Authorization: Basic`, form-urldecoded per RFC 6749 §2.3.1.
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl PresentedCredentials {
    pub fn used_basic(&self) -> bool {
        self.basic.is_some()
    }
}

/// The authenticated client, shared with the per-node cache (no copy per request).
pub async fn authenticate_client(engine: &OAuthEngine, tenant: &Tenant, creds: &PresentedCredentials) -> Result<Arc<Client>, OAuthError> {
    let (client_id, secret) = match (&creds.basic, &creds.client_id, &creds.client_secret) {
        (Some(_), _, Some(_)) => return Err(OAuthError::invalid_request("use exactly one client authentication method")),
        (Some((id, _)), Some(body_id), None) if id != body_id => {
            return Err(OAuthError::invalid_request("client_id does not match the authenticated client"));
        }
        (Some((id, secret)), _, None) => (id.as_str(), Some(secret.as_str())),
        (None, Some(id), secret) => (id.as_str(), secret.as_deref()),
        (None, None, _) => return Err(OAuthError::invalid_client("client authentication is required")),
    };
    let unknown = || OAuthError::invalid_client("client authentication failed");
    let client = engine.client(tenant.id, client_id).await?.ok_or_else(unknown)?;
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if token_matches_hash(secret, hash) => Ok(client),
        (None, None) if client.public => Ok(client),
        _ => Err(unknown()),
    }
}
