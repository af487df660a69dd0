//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). A redirect after logout
//! happens only to a `post_logout_redirect_uri` registered, byte for byte, for the client
//! that the `id_token_hint` (or `client_id`) names. Without a valid hint the customer is
//! asked to confirm, so a forged link cannot sign anyone out silently.

use crate::{OAuthEngine, OAuthError};
use serde::Deserialize;
use tessera_core::model::Tenant;
use uuid::Uuid;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct LogoutParams {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub ui_locales: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogoutPlan {
    /// Where to send the browser afterwards (with `state`), if allowed.
    pub redirect: Option<String>,
    /// True when no valid `id_token_hint` vouched for the request.
    pub needs_confirmation: bool,
    /// The customer the hint names.
    pub hinted_subject: Option<Uuid>,
}

pub async fn plan(engine: &OAuthEngine, tenant: &Tenant, params: &LogoutParams) -> Result<LogoutPlan, OAuthError> {
    let mut client_id = params.client_id.clone().filter(|c| !c.is_empty());
    let mut hinted_subject = None;
    let mut hint_valid = false;
    if let Some(hint) = params.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        let keys = engine.keys.tenant_keys(engine.store.as_ref(), tenant.id).await.map_err(|e| {
            tracing::error!(error = %e, "loading keys failed");
            OAuthError::server_error()
        })?;
        let claims = crate::jwt::verify_id_token_hint(&keys, hint, &engine.issuer(tenant))?;
        let aud = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => Some(a.clone()),
            Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_str()).map(str::to_owned),
            _ => None,
        };
        if client_id.as_ref().is_some_and(|c| Some(c) != aud.as_ref()) {
            return Err(OAuthError::invalid_request("client_id does not match the id_token_hint"));
        }
        client_id = aud;
        hinted_subject = claims.get("sub").and_then(|s| s.as_str()).and_then(|s| Uuid::parse_str(s).ok());
        hint_valid = true;
    }
    let mut redirect = None;
    if let (Some(uri), Some(client_id)) = (params.post_logout_redirect_uri.as_deref(), client_id.as_deref())
        && let Some(client) = engine.store.find_client(tenant.id, client_id).await?
        && client.post_logout_redirect_uris.iter().any(|r| r == uri)
    {
        redirect = Some(match (&params.state, url::Url::parse(uri)) {
            (Some(state), Ok(mut url)) => {
                url.query_pairs_mut().append_pair("state", state);
                url.to_string()
            }
            _ => uri.to_owned(),
        });
    }
    Ok(LogoutPlan { redirect, needs_confirmation: !hint_valid, hinted_subject })
}
