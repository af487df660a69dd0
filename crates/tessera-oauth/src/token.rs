//! The token endpoint (RFC 6749 §3.2): `authorization_code` (single use, bound to client,
//! redirect URI and PKCE), `refresh_token` (rotation with family revocation on replay) and
//! `client_credentials`. Only grants enabled for the client are honoured.

use crate::jwt::{self, ACCESS_TOKEN_TYP, AccessTokenClaims};
use crate::keys::TenantKeys;
use crate::{OAuthEngine, OAuthError, claims};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_core::event::RequestOrigin;
use tessera_core::model::{Client, Grant, RefreshToken, Tenant, User};
use tessera_core::scope::Scopes;
use tessera_core::{EventKind, NewEvent, pkce, secret};
use tessera_store::{CodeRedemption, Rotation};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct TokenParams {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

pub async fn exchange(
    engine: &OAuthEngine,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams,
    origin: &RequestOrigin,
) -> Result<TokenResponse, OAuthError> {
    let grant_type = params.grant_type.as_deref().ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token" | "client_credentials") {
        return Err(OAuthError::unsupported_grant_type("this grant type is not supported"));
    }
    if !client.allows_grant(grant_type) {
        return Err(OAuthError::unauthorized_client("this client may not use this grant type"));
    }
    match grant_type {
        "authorization_code" => authorization_code(engine, tenant, client, params, origin).await,
        "refresh_token" => refresh_token(engine, tenant, client, params, origin).await,
        _ => client_credentials(engine, tenant, client, params, origin).await,
    }
}

async fn authorization_code(
    engine: &OAuthEngine,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams,
    origin: &RequestOrigin,
) -> Result<TokenResponse, OAuthError> {
    let code = params.code.as_deref().ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let now = engine.clock.now();
    let grant_id = Uuid::now_v7();
    let redemption = engine
        .store
        .redeem_authorization_code(tenant.id, &secret::hash_token(code), grant_id, now + engine.config.refresh_token_ttl(), now)
        .await?;
    let invalid = || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
    let code = match redemption {
        CodeRedemption::Redeemed(code) => code,
        CodeRedemption::Unknown => return Err(invalid()),
        CodeRedemption::Replayed(code) => {
            let event = NewEvent::new(tenant.id, EventKind::AuthorizationCodeReused, now)
                .failure("code_replayed")
                .user(code.user_id)
                .client(&code.client_id)
                .origin(origin);
            engine.store.append_event(&event).await?;
            return Err(invalid());
        }
    };
    // The code is spent whatever happens next; on any mismatch its grant is revoked so that
    // a stolen code gets nothing and leaves nothing behind.
    let mismatch = if code.client_id != client.client_id {
        Some("client_mismatch")
    } else if code.expires_at <= now {
        Some("code_expired")
    } else if params.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        Some("redirect_uri_mismatch")
    } else {
        match (&code.code_challenge, params.code_verifier.as_deref()) {
            (Some(challenge), Some(verifier)) if pkce::verify_s256(verifier, challenge) => None,
            (Some(_), _) => Some("pkce_failed"),
            // A verifier without a challenge is a downgrade attempt (RFC 9700 §4.8.2).
            (None, Some(_)) => Some("pkce_downgrade"),
            (None, None) => None,
        }
    };
    let user = engine.store.find_user(tenant.id, code.user_id).await?;
    let reason = mismatch.or(match &user {
        Some(u) if !u.disabled => None,
        _ => Some("account_disabled"),
    });
    if let Some(reason) = reason {
        let event = NewEvent::new(tenant.id, EventKind::GrantRevoked, now)
            .failure(reason)
            .user(code.user_id)
            .client(&client.client_id)
            .origin(origin);
        engine.store.revoke_grant(tenant.id, grant_id, &event).await?;
        return Err(invalid());
    }
    let user = user.ok_or_else(invalid)?;
    let grant = Grant::from_code(&code, grant_id, now, now + engine.config.refresh_token_ttl());
    let keys = signing_keys(engine, tenant).await?;
    let refresh_token = client.allows_grant("refresh_token").then(secret::random_token);
    let issued = mint(engine, &keys, tenant, client, &grant, Some(&user), code.nonce.as_deref(), refresh_token, now)?;
    let event = issued_event(tenant, &grant, "authorization_code", now, origin);
    match &issued.refresh_token {
        Some(rt) => engine.store.create_refresh_token(&new_refresh_token(tenant, &grant, rt, now), &event).await?,
        None => engine.store.append_event(&event).await?,
    }
    Ok(issued)
}

async fn refresh_token(
    engine: &OAuthEngine,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams,
    origin: &RequestOrigin,
) -> Result<TokenResponse, OAuthError> {
    let presented = params.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let now = engine.clock.now();
    let old_hash = secret::hash_token(presented);
    let found = engine.store.find_refresh_token(tenant.id, &old_hash).await?.ok_or_else(invalid)?;
    let grant = found.grant;
    if grant.client_id != client.client_id || !grant.is_active(now) {
        return Err(invalid());
    }
    let user = match grant.user_id {
        Some(_) => Some(found.user.filter(|u| !u.disabled).ok_or_else(invalid)?),
        None => None,
    };
    let mut narrowed = grant.clone();
    if let Some(scope) = params.scope.as_deref() {
        let requested = Scopes::parse(scope);
        if !requested.is_subset_of(&grant.scope) {
            return Err(OAuthError::invalid_scope("a refresh cannot widen the grant's scope"));
        }
        narrowed.scope = requested;
    }
    if user.is_none() {
        return Err(OAuthError::unauthorized_client("this client may not use refresh tokens"));
    }
    let keys = signing_keys(engine, tenant).await?;
    let signs_id_token = narrowed.scope.contains("openid");
    ensure_signers(engine, &keys, client, signs_id_token)?;
    let new_rt = secret::random_token();
    let successor = new_refresh_token(tenant, &grant, &new_rt, now);
    let issued_event = issued_event(tenant, &grant, "refresh_token", now, origin);
    let replay_event = NewEvent::new(tenant.id, EventKind::RefreshTokenReused, now)
        .failure("refresh_token_replayed")
        .client(&client.client_id)
        .origin(origin)
        .data(json!({ "grant_id": grant.id }));
    let replay_event = match grant.user_id {
        Some(u) => replay_event.user(u),
        None => replay_event,
    };
    // The rotation is queued for its group commit first and the tokens are signed while it is
    // written: the response waits for the longer of the two instead of both. Once queued, the
    // rotation cannot be taken back, and a client that gets an error instead of the successor
    // would present the spent token again and be taken for a replay: so everything signing
    // needs (the keys, an active key for each algorithm) is checked above, and only the
    // signature itself runs after.
    let mut rotation = engine.store.rotate_refresh_token(tenant.id, &old_hash, &successor, &issued_event, &replay_event);
    let started = poll_once(&mut rotation).await;
    let issued = mint(engine, &keys, tenant, client, &narrowed, user.as_ref(), None, Some(new_rt), now);
    let rotated = match started {
        Some(outcome) => outcome?,
        None => rotation.await?,
    };
    match rotated {
        Rotation::Rotated => issued,
        Rotation::Replayed { .. } | Rotation::Unknown => Err(invalid()),
    }
}

async fn client_credentials(
    engine: &OAuthEngine,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams,
    origin: &RequestOrigin,
) -> Result<TokenResponse, OAuthError> {
    if client.public {
        return Err(OAuthError::unauthorized_client("public clients cannot use client_credentials"));
    }
    let scope = match params.scope.as_deref() {
        Some(s) => {
            let requested = Scopes::parse(s);
            if !requested.is_subset_of(&client.scopes) || requested.contains("openid") {
                return Err(OAuthError::invalid_scope("the client may not request these scopes"));
            }
            requested
        }
        None => Scopes::from_iter(client.scopes.iter().filter(|s| !matches!(*s, "openid" | "offline_access" | "profile" | "email"))),
    };
    let now = engine.clock.now();
    // Machine tokens have no grant row: nothing to revoke but the client itself, and one
    // write (the event) per token keeps this hot path cheap.
    let grant = Grant {
        id: Uuid::nil(),
        tenant_id: tenant.id,
        client_id: client.client_id.clone(),
        user_id: None,
        session_id: None,
        scope,
        auth_time: None,
        amr: Vec::new(),
        nonce: None,
        created_at: now,
        expires_at: now + engine.config.access_token_ttl(),
        revoked_at: None,
    };
    let keys = signing_keys(engine, tenant).await?;
    ensure_signers(engine, &keys, client, false)?;
    // As with refresh: the event is queued for its group commit before the token is signed,
    // once signing can no longer fail for want of a key, so that no event records a token
    // that was never issued.
    let event = issued_event(tenant, &grant, "client_credentials", now, origin);
    let mut append = engine.store.append_event(&event);
    let started = poll_once(&mut append).await;
    let issued = mint(engine, &keys, tenant, client, &grant, None, None, None, now)?;
    match started {
        Some(outcome) => outcome?,
        None => append.await?,
    }
    Ok(issued)
}

/// Polls `future` once, so that the write it queues (a group commit) is on its way before the
/// caller goes on with other work; its output if that one poll finished it.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Refuses (as a server error) before anything is written when the tenant has no active key
/// for the access token's algorithm, or for the ID token's when one is due — a tenant whose
/// key creation was interrupted, or a client registered for an algorithm whose key is gone.
fn ensure_signers(engine: &OAuthEngine, keys: &TenantKeys, client: &Client, id_token: bool) -> Result<(), OAuthError> {
    let algs = [Some(engine.config.access_token_alg.as_str()), id_token.then(|| id_token_alg(engine, client))];
    for alg in algs.into_iter().flatten() {
        if let Err(e) = keys.signer(alg) {
            tracing::error!(error = %e, "cannot sign a token");
            return Err(OAuthError::server_error());
        }
    }
    Ok(())
}

/// The algorithm of the client's ID tokens: its registered one, else the configured default.
fn id_token_alg<'a>(engine: &'a OAuthEngine, client: &'a Client) -> &'a str {
    if client.id_token_signed_response_alg.is_empty() {
        engine.config.id_token_alg.as_str()
    } else {
        client.id_token_signed_response_alg.as_str()
    }
}

/// The tenant's signing keys (the per-node cache, or the store).
async fn signing_keys(engine: &OAuthEngine, tenant: &Tenant) -> Result<std::sync::Arc<TenantKeys>, OAuthError> {
    engine.keys.tenant_keys(engine.store.as_ref(), tenant.id).await.map_err(|e| {
        tracing::error!(error = %e, "loading signing keys failed");
        OAuthError::server_error()
    })
}

fn new_refresh_token(tenant: &Tenant, grant: &Grant, token: &str, now: OffsetDateTime) -> RefreshToken {
    RefreshToken { token_hash: secret::hash_token(token), tenant_id: tenant.id, grant_id: grant.id, created_at: now, rotated_at: None }
}

fn issued_event(tenant: &Tenant, grant: &Grant, grant_type: &str, now: OffsetDateTime, origin: &RequestOrigin) -> NewEvent {
    let event = NewEvent::new(tenant.id, EventKind::TokenIssued, now)
        .client(&grant.client_id)
        .origin(origin)
        .data(json!({ "grant_type": grant_type, "scope": grant.scope.to_string() }));
    match grant.user_id {
        Some(u) => event.user(u),
        None => event,
    }
}

/// Signs the access token and the ID token (with `openid` and a customer), and answers with
/// `refresh_token` (issued only to a grant with a customer).
#[allow(clippy::too_many_arguments)]
fn mint(
    engine: &OAuthEngine,
    keys: &TenantKeys,
    tenant: &Tenant,
    client: &Client,
    grant: &Grant,
    user: Option<&User>,
    nonce: Option<&str>,
    refresh_token: Option<String>,
    now: OffsetDateTime,
) -> Result<TokenResponse, OAuthError> {
    let issuer = engine.issuer(tenant);
    let sub = grant.user_id.map(|u| u.to_string()).unwrap_or_else(|| client.client_id.clone());
    let at_claims = AccessTokenClaims {
        iss: issuer.clone(),
        sub: sub.clone(),
        aud: issuer.clone(),
        client_id: client.client_id.clone(),
        exp: (now + engine.config.access_token_ttl()).unix_timestamp(),
        iat: now.unix_timestamp(),
        jti: Uuid::new_v4().to_string(),
        scope: grant.scope.to_string(),
        auth_time: grant.auth_time.map(|t| t.unix_timestamp()),
        gid: grant.id,
    };
    let access_token = jwt::sign(keys, &engine.config.access_token_alg, ACCESS_TOKEN_TYP, &at_claims)?;
    let id_token = match user {
        Some(user) if grant.scope.contains("openid") => {
            Some(id_token(engine, keys, client, grant, user, &issuer, &access_token, nonce, now)?)
        }
        _ => None,
    };
    let refresh_token = refresh_token.filter(|_| user.is_some());
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: engine.config.access_token_ttl_secs,
        refresh_token,
        id_token,
        scope: grant.scope.to_string(),
    })
}

#[allow(clippy::too_many_arguments)]
fn id_token(
    engine: &OAuthEngine,
    keys: &TenantKeys,
    client: &Client,
    grant: &Grant,
    user: &User,
    issuer: &str,
    access_token: &str,
    nonce: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, OAuthError> {
    let alg = id_token_alg(engine, client);
    let mut claims = claims::user_claims(user, &grant.scope);
    claims.insert("iss".into(), json!(issuer));
    claims.insert("aud".into(), json!(client.client_id));
    claims.insert("azp".into(), json!(client.client_id));
    claims.insert("iat".into(), json!(now.unix_timestamp()));
    claims.insert("exp".into(), json!((now + engine.config.id_token_ttl()).unix_timestamp()));
    claims.insert("at_hash".into(), json!(jwt::at_hash(access_token, alg)));
    if let Some(auth_time) = grant.auth_time {
        claims.insert("auth_time".into(), json!(auth_time.unix_timestamp()));
    }
    if !grant.amr.is_empty() {
        claims.insert("amr".into(), json!(grant.amr));
    }
    if let Some(sid) = grant.session_id {
        claims.insert("sid".into(), json!(sid.to_string()));
    }
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), Value::String(nonce.to_owned()));
    }
    jwt::sign(keys, alg, "JWT", &claims)
}
