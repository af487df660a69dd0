//! Tessera's OAuth 2.0 / OpenID Connect engine. It validates authorization requests, issues
//! codes and tokens, and answers discovery, JWKS, userinfo, introspection, revocation,
//! registration and logout. It knows nothing of how a customer signs in: it stores a
//! [`AuthorizationRequest`](tessera_core::model::AuthorizationRequest) (the login request)
//! and later consumes an [`AcceptedLogin`] from whoever authenticated the customer.

pub mod authorize;
pub mod claims;
pub mod client_auth;
pub mod client_cache;
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
    pub clients: Arc<client_cache::ClientCache>,
}

impl OAuthEngine {
    /// A client by id, through the per-node cache.
    pub async fn client(
        &self,
        tenant_id: uuid::Uuid,
        client_id: &str,
    ) -> tessera_store::StoreResult<Option<Arc<tessera_core::model::Client>>> {
        self.clients.get(self.store.as_ref(), tenant_id, client_id).await
    }

    /// The issuer identifier of a tenant: `<public URL>/t/<slug>`.
    pub fn issuer(&self, tenant: &Tenant) -> String {
        self.config.issuer(&tenant.slug)
    }
}
