//! Which customer claims a scope releases (OIDC Core §5.4), shared by the ID token and
//! userinfo. `email_verified` reflects what Tessera knows, never an assumption.

use serde_json::{Map, Value, json};
use tessera_core::model::User;
use tessera_core::scope::Scopes;

pub fn user_claims(user: &User, scope: &Scopes) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id.to_string()));
    if scope.contains("email") {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(user.email_verified));
    }
    if scope.contains("profile") {
        if let Some(name) = user.full_name() {
            claims.insert("name".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            claims.insert("given_name".into(), json!(g));
        }
        if let Some(f) = &user.family_name {
            claims.insert("family_name".into(), json!(f));
        }
        claims.insert("updated_at".into(), json!(user.updated_at.unix_timestamp()));
    }
    claims
}

/// Claims advertised in discovery.
pub const SUPPORTED_CLAIMS: [&str; 16] = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "azp",
    "sid",
    "at_hash",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "updated_at",
];
