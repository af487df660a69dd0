//! The JWTs Tessera mints: ID tokens (OIDC Core §2) and access tokens (RFC 9068,
//! `typ: at+jwt`), and the verification of access tokens presented back to us. An ID token
//! or anything else presented as a bearer token fails on `typ`.

use crate::OAuthError;
use crate::keys::TenantKeys;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// RFC 9068 access-token claims. `gid` names the grant, so revocation reaches these tokens at
/// our own userinfo and introspection endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    pub gid: Uuid,
}

/// Signs claims with the tenant's active key of `alg` as a JWS compact serialisation
/// (RFC 7515 §7.1). The key pair is parsed once per cache period, not per token; verification
/// of what we sign is left to `jsonwebtoken` and, in the end-to-end tests, to `openid-client`.
pub fn sign(keys: &TenantKeys, alg: &str, typ: &str, claims: &impl Serialize) -> Result<String, OAuthError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "{what}");
        OAuthError::server_error()
    };
    let (kid, pair) = keys.signer(alg).map_err(|e| fail("no signing key", &e))?;
    let header = serde_json::json!({ "alg": alg, "typ": typ, "kid": kid });
    let claims = serde_json::to_vec(claims).map_err(|e| fail("claims do not serialise", &e))?;
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = pair.sign(token.as_bytes()).map_err(|e| fail("signing failed", &e))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// Verifies one of our access tokens: known `kid`, its algorithm only (no `none`, no HMAC
/// confusion), `typ: at+jwt`, issuer, audience and expiry (against the injected clock's `now`,
/// the same clock that set `exp`).
pub fn verify_access_token(
    keys: &TenantKeys,
    token: &str,
    issuer: &str,
    now: time::OffsetDateTime,
) -> Result<AccessTokenClaims, OAuthError> {
    let invalid = || OAuthError::invalid_token("the access token is invalid or expired");
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) || header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
        return Err(invalid());
    }
    let (alg, key) = header.kid.as_deref().and_then(|kid| keys.verifier(kid)).ok_or_else(invalid)?;
    if alg != header.alg {
        return Err(invalid());
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<AccessTokenClaims>(token, key, &validation).map(|d| d.claims).map_err(|_| invalid())?;
    if claims.exp <= now.unix_timestamp() {
        return Err(invalid());
    }
    Ok(claims)
}

/// Verifies an ID token we issued, for `id_token_hint`. Expiry is not checked: the OIDC spec
/// allows an expired ID token as a hint. Returns the claims.
pub fn verify_id_token_hint(keys: &TenantKeys, token: &str, issuer: &str) -> Result<Map<String, Value>, OAuthError> {
    let invalid = || OAuthError::invalid_request("id_token_hint is not an ID token issued by this tenant");
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    if header.typ.as_deref() == Some(ACCESS_TOKEN_TYP) || header.jku.is_some() || header.jwk.is_some() || header.x5u.is_some() {
        return Err(invalid());
    }
    let (alg, key) = header.kid.as_deref().and_then(|kid| keys.verifier(kid)).ok_or_else(invalid)?;
    if alg != header.alg {
        return Err(invalid());
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map(|d| d.claims).map_err(|_| invalid())
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the token's hash, with the hash that
/// matches the signing algorithm (SHA-512 for Ed25519).
pub fn at_hash(access_token: &str, alg: &str) -> String {
    let digest_alg = if alg == "EdDSA" { &aws_lc_rs::digest::SHA512 } else { &aws_lc_rs::digest::SHA256 };
    let digest = aws_lc_rs::digest::digest(digest_alg, access_token.as_bytes());
    let bytes = digest.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_oidc_example() {
        // OIDC Core appendix A.3: access token jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y, RS256.
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
