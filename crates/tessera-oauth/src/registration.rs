//! Client registration: the one place a client is created, used by dynamic registration
//! (RFC 7591, behind an initial access token) and by `tessera client create`.

use crate::{OAuthEngine, OAuthError};
use serde::{Deserialize, Serialize};
use tessera_core::model::{Client, InitialAccessToken, Tenant};
use tessera_core::scope::Scopes;
use tessera_core::{EventKind, NewEvent, redirect_uri, secret};
use uuid::Uuid;

/// The scopes a client gets when it names none.
pub const DEFAULT_CLIENT_SCOPES: &str = "openid profile email offline_access";

/// RFC 7591 client metadata (the subset Tessera implements; unknown fields are ignored).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub scope: Option<String>,
    pub id_token_signed_response_alg: Option<String>,
}

/// A newly created client and, for confidential clients, its secret (shown once).
pub struct CreatedClient {
    pub client: Client,
    pub secret: Option<String>,
    pub token_endpoint_auth_method: String,
}

pub async fn create_client(
    engine: &OAuthEngine,
    tenant: &Tenant,
    metadata: &ClientMetadata,
    first_party: bool,
) -> Result<CreatedClient, OAuthError> {
    let auth_method = metadata.token_endpoint_auth_method.clone().unwrap_or_else(|| "client_secret_basic".to_owned());
    let public = match auth_method.as_str() {
        "client_secret_basic" | "client_secret_post" => false,
        "none" => true,
        _ => {
            return Err(OAuthError::invalid_client_metadata(
                "token_endpoint_auth_method must be client_secret_basic, client_secret_post or none",
            ));
        }
    };
    let grant_types = metadata.grant_types.clone().unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    for g in &grant_types {
        if !matches!(g.as_str(), "authorization_code" | "refresh_token" | "client_credentials") {
            return Err(OAuthError::invalid_client_metadata(format!("grant type {g} is not supported")));
        }
        if public && g == "client_credentials" {
            return Err(OAuthError::invalid_client_metadata("public clients cannot use client_credentials"));
        }
    }
    if let Some(response_types) = &metadata.response_types
        && response_types.iter().any(|r| r != "code")
    {
        return Err(OAuthError::invalid_client_metadata("only the code response type is supported"));
    }
    let uses_redirects = grant_types.iter().any(|g| g == "authorization_code");
    if uses_redirects && metadata.redirect_uris.is_empty() {
        return Err(OAuthError::invalid_redirect_uri("at least one redirect URI is required"));
    }
    for uri in metadata.redirect_uris.iter().chain(&metadata.post_logout_redirect_uris) {
        redirect_uri::validate_for_registration(uri, engine.config.allow_http_localhost_redirects)
            .map_err(|e| OAuthError::invalid_redirect_uri(format!("{uri}: {e}")))?;
    }
    let alg = metadata.id_token_signed_response_alg.clone().unwrap_or_else(|| engine.config.id_token_alg.clone());
    if !crate::keys::SUPPORTED_ALGS.contains(&alg.as_str()) {
        return Err(OAuthError::invalid_client_metadata("id_token_signed_response_alg must be RS256, ES256 or EdDSA"));
    }
    let scopes = Scopes::parse(metadata.scope.as_deref().unwrap_or(DEFAULT_CLIENT_SCOPES));
    if !scopes.is_well_formed() {
        return Err(OAuthError::invalid_client_metadata("scope contains invalid characters"));
    }
    let secret = (!public).then(secret::random_token);
    let now = engine.clock.now();
    let client = Client {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        client_id: secret::random_token()[..22].to_owned(),
        secret_hash: secret.as_deref().map(secret::hash_token),
        name: metadata.client_name.clone().unwrap_or_else(|| "Unnamed application".to_owned()),
        redirect_uris: metadata.redirect_uris.clone(),
        post_logout_redirect_uris: metadata.post_logout_redirect_uris.clone(),
        grant_types,
        scopes,
        first_party,
        public,
        id_token_signed_response_alg: alg,
        created_at: now,
    };
    let event =
        NewEvent::new(tenant.id, EventKind::ClientCreated, now).client(&client.client_id).data(serde_json::json!({ "name": client.name }));
    engine.store.create_client(&client, &event).await?;
    Ok(CreatedClient { client, secret, token_endpoint_auth_method: auth_method })
}

/// The registration response (RFC 7591 §3.2.1).
pub fn registration_response(created: &CreatedClient) -> serde_json::Value {
    let c = &created.client;
    let mut body = serde_json::json!({
        "client_id": c.client_id,
        "client_id_issued_at": c.created_at.unix_timestamp(),
        "client_name": c.name,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "grant_types": c.grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": created.token_endpoint_auth_method,
        "scope": c.scopes.to_string(),
        "id_token_signed_response_alg": c.id_token_signed_response_alg,
    });
    if let Some(secret) = &created.secret {
        body["client_secret"] = serde_json::json!(secret);
        body["client_secret_expires_at"] = serde_json::json!(0);
    }
    body
}

/// Issues an initial access token for dynamic registration; returns the raw token once.
pub async fn create_initial_access_token(engine: &OAuthEngine, tenant: &Tenant) -> Result<String, OAuthError> {
    let token = secret::random_token();
    let now = engine.clock.now();
    let stored = InitialAccessToken {
        token_hash: secret::hash_token(&token),
        tenant_id: tenant.id,
        created_at: now,
        expires_at: now + time::Duration::seconds(engine.config.initial_access_token_ttl_secs),
    };
    engine.store.create_initial_access_token(&stored).await?;
    Ok(token)
}

/// Dynamic registration: only with a valid initial access token; registered clients are
/// third-party (they see the consent page).
pub async fn register(
    engine: &OAuthEngine,
    tenant: &Tenant,
    bearer: Option<&str>,
    metadata: &ClientMetadata,
) -> Result<serde_json::Value, OAuthError> {
    let token = bearer.ok_or_else(|| OAuthError::invalid_token("an initial access token is required"))?;
    engine
        .store
        .find_initial_access_token(tenant.id, &secret::hash_token(token), engine.clock.now())
        .await?
        .ok_or_else(|| OAuthError::invalid_token("the initial access token is invalid or expired"))?;
    let created = create_client(engine, tenant, metadata, false).await?;
    Ok(registration_response(&created))
}
