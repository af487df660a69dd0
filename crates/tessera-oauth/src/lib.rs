//! Tessera's OAuth 2.0 / OpenID Connect engine. It validates authorization requests, issues
//! codes and tokens, and answers discovery, JWKS, userinfo, introspection, revocation,
//! registration and logout. It knows nothing of how a customer signs in: it stores a
//! [`AuthorizationRequest`](tessera_core::model::AuthorizationRequest) (the login request)
//! and later consumes an [`AcceptedLogin`] from whoever authenticated the customer.

pub mod authorize;
pub mod claims;
pub mod client_auth;
pub mod config;
pub mod discovery;
pub mod error;
pub mod introspection;
pub mod jwt;
pub mod keys;
pub mod logout;
pub mod registration;
pub mod token;

pub use authorize::AcceptedLogin;
pub use config::OAuthConfig;
pub use error::OAuthError;

use std::sync::Arc;
use tessera_core::Clock;
use tessera_core::model::Tenant;
use tessera_store::Store;

/// What every use-case of the engine needs.
#[derive(Clone)]
pub struct OAuthEngine {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<OAuthConfig>,
    pub keys: Arc<keys::KeyRing>,
}

impl OAuthEngine {
    /// The issuer identifier of a tenant: `<public URL>/t/<slug>`.
    pub fn issuer(&self, tenant: &Tenant) -> String {
        self.config.issuer(&tenant.slug)
    }
}
