//! Presented tokens: userinfo (OIDC Core §5.3), introspection (RFC 7662) and revocation
//! (RFC 7009). An access token is only good while its grant is active and its customer
//! enabled, so revocation and disabling take effect here at once.

use crate::jwt::{self, AccessTokenClaims};
use crate::{OAuthEngine, OAuthError, claims};
use serde_json::{Map, Value, json};
use tessera_core::model::{Client, Tenant, User};
use tessera_core::scope::Scopes;
use tessera_core::{EventKind, NewEvent, secret};
use uuid::Uuid;

/// Verifies an access token and checks that its grant and customer are still good.
pub async fn active_access_token(
    engine: &OAuthEngine,
    tenant: &Tenant,
    token: &str,
) -> Result<(AccessTokenClaims, Option<User>), OAuthError> {
    let keys = engine.keys.tenant_keys(engine.store.as_ref(), tenant.id).await.map_err(|e| {
        tracing::error!(error = %e, "loading keys failed");
        OAuthError::server_error()
    })?;
    let claims = jwt::verify_access_token(&keys, token, &engine.issuer(tenant), engine.clock.now())?;
    let invalid = || OAuthError::invalid_token("the access token is invalid or expired");
    if claims.gid.is_nil() {
        // client_credentials: good while the client exists (asked of the database, not the
        // cache, so a deletion anywhere takes effect here at once).
        engine.store.find_client(tenant.id, &claims.client_id).await?.ok_or_else(invalid)?;
        return Ok((claims, None));
    }
    let (grant, user) = engine.store.find_grant_and_user(tenant.id, claims.gid).await?.ok_or_else(invalid)?;
    if !grant.is_active(engine.clock.now()) {
        return Err(invalid());
    }
    let user = match grant.user_id {
        Some(_) => Some(user.filter(|u| !u.disabled).ok_or_else(invalid)?),
        None => None,
    };
    Ok((claims, user))
}

pub async fn userinfo(engine: &OAuthEngine, tenant: &Tenant, token: &str) -> Result<Map<String, Value>, OAuthError> {
    let (claims, user) = active_access_token(engine, tenant, token).await?;
    let scope = Scopes::parse(&claims.scope);
    match user {
        Some(user) if scope.contains("openid") => Ok(claims::user_claims(&user, &scope)),
        _ => Err(OAuthError { code: "insufficient_scope", description: "the access token does not allow userinfo".into(), status: 403 }),
    }
}

/// RFC 7662: `{"active": false}` for anything not currently valid, without saying why.
pub async fn introspect(engine: &OAuthEngine, tenant: &Tenant, caller: &Client, token: &str) -> Result<Value, OAuthError> {
    if caller.public {
        return Err(OAuthError::invalid_client("public clients cannot introspect tokens"));
    }
    // Our access tokens are JWTs (three dot-separated parts); refresh tokens never contain a
    // dot. Looking at the shape first saves a database round trip per introspection.
    if token.split('.').count() == 3 {
        return match active_access_token(engine, tenant, token).await {
            Ok((claims, _)) => Ok(json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": claims.client_id,
                "sub": claims.sub,
                "scope": claims.scope,
                "exp": claims.exp,
                "iat": claims.iat,
                "iss": claims.iss,
                "aud": claims.aud,
                "jti": claims.jti,
            })),
            Err(e) if e.code == "invalid_token" => Ok(json!({ "active": false })),
            Err(e) => Err(e),
        };
    }
    let now = engine.clock.now();
    let Some(found) = engine.store.find_refresh_token(tenant.id, &secret::hash_token(token)).await? else {
        return Ok(json!({ "active": false }));
    };
    let (rt, grant) = (found.token, found.grant);
    let user_ok = match grant.user_id {
        Some(_) => found.user.is_some_and(|u| !u.disabled),
        None => true,
    };
    if rt.rotated_at.is_none() && grant.is_active(now) && user_ok {
        return Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": grant.client_id,
            "sub": grant.user_id.map(|u| u.to_string()),
            "scope": grant.scope.to_string(),
            "exp": grant.expires_at.unix_timestamp(),
            "iat": rt.created_at.unix_timestamp(),
            "iss": engine.issuer(tenant),
        }));
    }
    Ok(json!({ "active": false }))
}

/// RFC 7009: revokes the grant behind a refresh or access token issued to `caller`.
/// Unknown tokens and other clients' tokens are silently ignored (200), as the RFC asks.
pub async fn revoke(engine: &OAuthEngine, tenant: &Tenant, caller: &Client, token: &str) -> Result<(), OAuthError> {
    let now = engine.clock.now();
    let grant_id = if let Some(found) = engine.store.find_refresh_token(tenant.id, &secret::hash_token(token)).await? {
        (found.grant.client_id == caller.client_id).then_some(found.grant.id)
    } else {
        match active_access_token(engine, tenant, token).await {
            Ok((claims, _)) if claims.client_id == caller.client_id && !claims.gid.is_nil() => Some(claims.gid),
            _ => None,
        }
    };
    if let Some(grant_id) = grant_id {
        let event = NewEvent::new(tenant.id, EventKind::GrantRevoked, now)
            .client(&caller.client_id)
            .data(json!({ "grant_id": grant_id, "via": "revocation_endpoint" }));
        engine.store.revoke_grant(tenant.id, grant_id, &event).await?;
    }
    Ok(())
}

/// The grant id an access token names, for callers that only need it.
pub fn grant_of(claims: &AccessTokenClaims) -> Option<Uuid> {
    (!claims.gid.is_nil()).then_some(claims.gid)
}
