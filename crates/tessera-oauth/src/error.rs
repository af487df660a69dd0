//! OAuth errors in the shape of RFC 6749 §5.2 (and fosite's): an RFC error code, a
//! description safe to show the client, and the HTTP status. Internal causes are logged by
//! the caller with the request id and never reach the response.

use tessera_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The RFC 6749 / OIDC error code (`invalid_grant`, `login_required`, …).
    pub code: &'static str,
    pub description: String,
    /// HTTP status for direct (non-redirect) responses.
    pub status: u16,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>, status: u16) -> Self {
        Self { code, description: description.into(), status }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d, 400)
    }
    /// Client authentication failed (RFC 6749: 401, with `WWW-Authenticate` for Basic).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", d, 401)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d, 400)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", d, 400)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", d, 400)
    }
    pub fn unsupported_response_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_response_type", d, 400)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", d, 400)
    }
    pub fn access_denied(d: impl Into<String>) -> Self {
        Self::new("access_denied", d, 403)
    }
    pub fn login_required(d: impl Into<String>) -> Self {
        Self::new("login_required", d, 400)
    }
    pub fn consent_required(d: impl Into<String>) -> Self {
        Self::new("consent_required", d, 400)
    }
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new("invalid_token", d, 401)
    }
    pub fn request_not_supported(d: impl Into<String>) -> Self {
        Self::new("request_not_supported", d, 400)
    }
    pub fn request_uri_not_supported(d: impl Into<String>) -> Self {
        Self::new("request_uri_not_supported", d, 400)
    }
    pub fn invalid_client_metadata(d: impl Into<String>) -> Self {
        Self::new("invalid_client_metadata", d, 400)
    }
    pub fn invalid_redirect_uri(d: impl Into<String>) -> Self {
        Self::new("invalid_redirect_uri", d, 400)
    }
    pub fn server_error() -> Self {
        Self::new("server_error", "the server could not complete the request", 500)
    }
    pub fn temporarily_unavailable() -> Self {
        Self::new("temporarily_unavailable", "the server is busy; try again shortly", 503)
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error in the OAuth engine");
        Self::server_error()
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}
