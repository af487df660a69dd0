//! The authorization endpoint (RFC 6749 §4.1, OIDC Core §3.1.2): validate the request, store
//! it as the login request, decide what the customer must do next, and finally issue the
//! code. Errors before the client and redirect URI are trusted are shown on a page, never
//! redirected (RFC 9700 §4.11); every redirect carries `state` and `iss` (RFC 9207).

use crate::{OAuthEngine, OAuthError};
use serde::Deserialize;
use tessera_core::model::{AuthorizationCode, AuthorizationRequest, Client, Session, Tenant};
use tessera_core::scope::Scopes;
use tessera_core::{pkce, redirect_uri, secret};
use time::OffsetDateTime;
use uuid::Uuid;

/// The query (or form) parameters of an authorization request. Unknown ones are ignored.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub response_mode: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    pub acr_values: Option<String>,
    pub ui_locales: Option<String>,
    pub claims_locales: Option<String>,
    pub display: Option<String>,
    pub request: Option<String>,
    pub request_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect.
    Page(OAuthError),
    /// Tell the client, at its verified redirect URI.
    Redirect(String),
}

/// The "accepted login" of the login boundary: who signed in, when and how.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedLogin {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub auth_time: OffsetDateTime,
    pub amr: Vec<String>,
}

impl From<&Session> for AcceptedLogin {
    fn from(s: &Session) -> Self {
        Self { user_id: s.user_id, session_id: s.id, auth_time: s.auth_time, amr: s.amr.clone() }
    }
}

/// What the customer must do next for a stored authorization request.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    SignIn,
    SignUp,
    Consent,
    /// Everything is settled: issue the code.
    Complete(AcceptedLogin),
    /// `prompt=none` could not be honoured: redirect this error.
    Fail(String),
}

const MAX_PARAM_LEN: usize = 4096;

/// Builds the redirect to the client with the given query parameters plus `iss`.
pub fn redirect_with(redirect_uri: &str, issuer: &str, params: &[(&str, Option<&str>)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    if let Some(v) = v {
                        q.append_pair(k, v);
                    }
                }
                q.append_pair("iss", issuer);
            }
            url.to_string()
        }
        // Registered URIs always parse; this is unreachable in practice but must not panic.
        Err(_) => redirect_uri.to_owned(),
    }
}

pub fn error_redirect(redirect_uri: &str, issuer: &str, error: &OAuthError, state: Option<&str>) -> String {
    redirect_with(redirect_uri, issuer, &[("error", Some(error.code)), ("error_description", Some(&error.description)), ("state", state)])
}

/// Validates an authorization request and stores it as the pending login request, bound to
/// the browser whose marker hash is `browser_binding`.
pub async fn validate(
    engine: &OAuthEngine,
    tenant: &Tenant,
    params: &AuthorizeParams,
    browser_binding: Option<String>,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |e: OAuthError| AuthorizeError::Page(e);
    let client_id = params.client_id.as_deref().ok_or_else(|| page(OAuthError::invalid_request("client_id is missing")))?;
    // Through the per-node cache, as at the token endpoint: a change to the client's redirect
    // URIs reaches every node within the cache's few seconds.
    let client = engine
        .client(tenant.id, client_id)
        .await
        .map_err(|e| page(e.into()))?
        .ok_or_else(|| page(OAuthError::invalid_request("unknown client_id")))?;
    let redirect_uri = match params.redirect_uri.as_deref() {
        Some(requested) => {
            redirect_uri::find_match(&client.redirect_uris, requested)
                .ok_or_else(|| page(OAuthError::invalid_request("redirect_uri is not registered for this client")))?;
            requested.to_owned()
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(page(OAuthError::invalid_request("redirect_uri is required"))),
    };

    // From here on the redirect URI is trusted: errors go back to the client.
    let issuer = engine.issuer(tenant);
    let state = params.state.clone();
    let fail = |e: OAuthError| AuthorizeError::Redirect(error_redirect(&redirect_uri, &issuer, &e, state.as_deref()));
    let request = check_parameters(engine, tenant, &client, params).await.map_err(&fail)?;
    let now = engine.clock.now();
    let stored = AuthorizationRequest {
        id: Uuid::new_v4(),
        tenant_id: tenant.id,
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope: request.scope,
        state: params.state.clone(),
        nonce: params.nonce.clone(),
        code_challenge: params.code_challenge.clone(),
        prompt: request.prompt,
        max_age: request.max_age,
        login_hint: params.login_hint.clone(),
        id_token_hint_subject: request.hint_subject,
        acr_values: params.acr_values.clone(),
        ui_locales: params.ui_locales.clone(),
        browser_binding,
        created_at: now,
        expires_at: now + time::Duration::seconds(engine.config.authorization_request_ttl_secs),
    };
    engine.store.create_authorization_request(&stored).await.map_err(|e| fail(e.into()))?;
    Ok(stored)
}

struct CheckedParameters {
    scope: Scopes,
    prompt: Vec<String>,
    max_age: Option<i64>,
    hint_subject: Option<Uuid>,
}

async fn check_parameters(
    engine: &OAuthEngine,
    tenant: &Tenant,
    client: &Client,
    p: &AuthorizeParams,
) -> Result<CheckedParameters, OAuthError> {
    for value in [&p.state, &p.nonce, &p.login_hint, &p.id_token_hint, &p.scope, &p.acr_values, &p.ui_locales].into_iter().flatten() {
        if value.len() > MAX_PARAM_LEN {
            return Err(OAuthError::invalid_request("a parameter is too long"));
        }
    }
    if p.request.is_some() {
        return Err(OAuthError::request_not_supported("request objects are not supported"));
    }
    if p.request_uri.is_some() {
        return Err(OAuthError::request_uri_not_supported("request_uri is not supported"));
    }
    match p.response_type.as_deref() {
        None => return Err(OAuthError::invalid_request("response_type is missing")),
        Some("code") => {}
        Some(_) => return Err(OAuthError::unsupported_response_type("only response_type=code is supported")),
    }
    if !matches!(p.response_mode.as_deref(), None | Some("query")) {
        return Err(OAuthError::invalid_request("only response_mode=query is supported"));
    }
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::unauthorized_client("this client may not use the authorization code grant"));
    }
    let requested = Scopes::parse(p.scope.as_deref().unwrap_or(""));
    if !requested.is_well_formed() {
        return Err(OAuthError::invalid_scope("scope contains invalid characters"));
    }
    // Scopes the client may not have are dropped (RFC 6749 §3.3 lets us narrow the grant).
    let scope = requested.intersection(&client.scopes);
    if scope.is_empty() && !requested.is_empty() {
        return Err(OAuthError::invalid_scope("none of the requested scopes is allowed for this client"));
    }
    match (p.code_challenge.as_deref(), p.code_challenge_method.as_deref()) {
        (Some(challenge), Some("S256")) if pkce::is_valid_challenge(challenge) => {}
        (Some(_), Some("S256")) => return Err(OAuthError::invalid_request("code_challenge is malformed")),
        (Some(_), None) | (Some(_), Some("plain")) | (None, Some("plain")) => {
            return Err(OAuthError::invalid_request("code_challenge_method must be S256"));
        }
        (_, Some(_)) => return Err(OAuthError::invalid_request("unsupported code_challenge_method")),
        (None, None) if client.public => return Err(OAuthError::invalid_request("public clients must use PKCE (S256)")),
        (None, None) => {}
    }
    let prompt: Vec<String> = p.prompt.as_deref().unwrap_or("").split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if prompt.iter().any(|v| v == "none") && prompt.len() > 1 {
        return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
    }
    let max_age = match p.max_age.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| OAuthError::invalid_request("max_age must be a non-negative integer"))?,
        ),
    };
    let hint_subject = match p.id_token_hint.as_deref() {
        None | Some("") => None,
        Some(hint) => {
            let keys = engine.keys.tenant_keys(engine.store.as_ref(), tenant.id).await.map_err(|e| {
                tracing::error!(error = %e, "loading keys failed");
                OAuthError::server_error()
            })?;
            let claims = crate::jwt::verify_id_token_hint(&keys, hint, &engine.issuer(tenant))?;
            let sub = claims.get("sub").and_then(|v| v.as_str()).and_then(|s| Uuid::parse_str(s).ok());
            Some(sub.ok_or_else(|| OAuthError::invalid_request("id_token_hint has no valid subject"))?)
        }
    };
    Ok(CheckedParameters { scope, prompt, max_age, hint_subject })
}

/// Decides the next step for a stored request given the browser's current session.
pub async fn next_step(
    engine: &OAuthEngine,
    tenant: &Tenant,
    request: &AuthorizationRequest,
    session: Option<&Session>,
) -> Result<NextStep, OAuthError> {
    let now = engine.clock.now();
    let usable = session.filter(|s| {
        let fresh_enough = request.max_age.is_none_or(|max| (now - s.auth_time).whole_seconds() <= max);
        let right_subject = request.id_token_hint_subject.is_none_or(|sub| sub == s.user_id);
        // prompt=login/create demand an authentication that happened after this request.
        let reauthenticated = s.auth_time >= request.created_at;
        let forced = (request.has_prompt("login") || request.has_prompt("create")) && !reauthenticated;
        fresh_enough && right_subject && !forced
    });
    let Some(session) = usable else {
        if request.has_prompt("none") {
            return Ok(NextStep::Fail("login_required".into()));
        }
        return Ok(if request.has_prompt("create") { NextStep::SignUp } else { NextStep::SignIn });
    };
    if needs_consent(engine, tenant, request, session.user_id).await? {
        if request.has_prompt("none") {
            return Ok(NextStep::Fail("consent_required".into()));
        }
        return Ok(NextStep::Consent);
    }
    Ok(NextStep::Complete(AcceptedLogin::from(session)))
}

/// First-party clients never ask; others ask until a remembered consent covers the scopes,
/// and always on `prompt=consent`.
pub async fn needs_consent(
    engine: &OAuthEngine,
    tenant: &Tenant,
    request: &AuthorizationRequest,
    user_id: Uuid,
) -> Result<bool, OAuthError> {
    let client = engine.client(tenant.id, &request.client_id).await?.ok_or_else(|| OAuthError::invalid_request("unknown client"))?;
    if client.first_party {
        return Ok(false);
    }
    if request.has_prompt("consent") && !request.has_prompt("none") {
        // Asked once per request: a consent saved after this request was created counts.
        let consent = engine.store.find_consent(tenant.id, user_id, &client.client_id).await?;
        return Ok(!consent.is_some_and(|c| c.granted_at >= request.created_at && request.scope.is_subset_of(&c.scopes)));
    }
    let consent = engine.store.find_consent(tenant.id, user_id, &client.client_id).await?;
    Ok(!consent.is_some_and(|c| request.scope.is_subset_of(&c.scopes)))
}

/// Issues the code for a settled request and returns the redirect to the client. The
/// request is consumed: a second completion of the same request fails.
pub async fn complete(
    engine: &OAuthEngine,
    tenant: &Tenant,
    request: &AuthorizationRequest,
    login: &AcceptedLogin,
) -> Result<String, OAuthError> {
    if !engine.store.delete_authorization_request(tenant.id, request.id).await? {
        return Err(OAuthError::invalid_request("this authorization request has already been completed"));
    }
    let code = secret::random_token();
    let now = engine.clock.now();
    let stored = AuthorizationCode {
        code_hash: secret::hash_token(&code),
        tenant_id: tenant.id,
        client_id: request.client_id.clone(),
        user_id: login.user_id,
        session_id: Some(login.session_id),
        redirect_uri: request.redirect_uri.clone(),
        scope: request.scope.clone(),
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        auth_time: login.auth_time,
        amr: login.amr.clone(),
        created_at: now,
        expires_at: now + engine.config.code_ttl(),
        used_at: None,
        grant_id: None,
    };
    engine.store.create_authorization_code(&stored).await?;
    Ok(redirect_with(&request.redirect_uri, &engine.issuer(tenant), &[("code", Some(&code)), ("state", request.state.as_deref())]))
}

/// The redirect for a request the customer or the policy refused.
pub async fn refuse(
    engine: &OAuthEngine,
    tenant: &Tenant,
    request: &AuthorizationRequest,
    error: &OAuthError,
) -> Result<String, OAuthError> {
    engine.store.delete_authorization_request(tenant.id, request.id).await?;
    Ok(error_redirect(&request.redirect_uri, &engine.issuer(tenant), error, request.state.as_deref()))
}
