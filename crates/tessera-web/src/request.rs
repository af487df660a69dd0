//! Reading requests: cookies, forms (with RFC 6749's no-duplicate rule), bearer and Basic
//! credentials, and the client's address behind trusted proxies only.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE, USER_AGENT};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use tessera_core::event::RequestOrigin;
use tessera_oauth::OAuthError;

pub const CSRF_COOKIE: &str = "tessera_csrf";
pub const MAX_FORM_FIELDS: usize = 64;

/// The value of cookie `name`, if present once.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The cookie's name on the wire: `__Host-` prefixed on https (host-only, path /, Secure).
pub fn cookie_name(base: &str, secure: bool) -> String {
    if secure { format!("__Host-{base}") } else { base.to_owned() }
}

pub fn session_cookie_base(slug: &str) -> String {
    format!("tessera_session_{slug}")
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure on https.
pub fn set_cookie(base: &str, value: &str, max_age_secs: Option<i64>, secure: bool) -> String {
    let mut c = format!("{}={value}; Path=/; HttpOnly; SameSite=Lax", cookie_name(base, secure));
    if let Some(age) = max_age_secs {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

pub fn clear_cookie(base: &str, secure: bool) -> String {
    set_cookie(base, "", Some(0), secure)
}

/// Parses `application/x-www-form-urlencoded` (or a query string). A repeated parameter is
/// an error (RFC 6749 §3.1, §3.2).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.len() >= MAX_FORM_FIELDS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {k} is repeated")));
        }
    }
    // An empty value counts as absent (RFC 6749 §3.1).
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

/// Turns parsed parameters into a struct of optional strings.
pub fn into_params<T: DeserializeOwned>(map: HashMap<String, String>) -> Result<T, OAuthError> {
    let object: serde_json::Map<String, serde_json::Value> = map.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|_| OAuthError::invalid_request("malformed parameters"))
}

/// The token of `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Credentials of `Authorization: Basic …`, form-urldecoded (RFC 6749 §2.3.1).
/// `Err` when the header is present but malformed.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
    Ok(Some((unescape(id), unescape(secret))))
}

/// The client's address: the peer, or — only when the peer is a trusted proxy — the
/// right-most untrusted entry of `X-Forwarded-For`. Garbage entries are ignored.
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trusted: &[IpAddr]) -> Option<IpAddr> {
    let ip = peer?.ip();
    if !trusted.contains(&ip) {
        return Some(ip);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded.into_iter().rev().find(|a| !trusted.contains(a)).or(Some(ip))
}

pub fn origin(headers: &HeaderMap, peer: Option<SocketAddr>, trusted: &[IpAddr]) -> RequestOrigin {
    RequestOrigin {
        ip: client_ip(headers, peer, trusted).map(|ip| ip.to_string()),
        user_agent: headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| ua.chars().take(512).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, x, 5.6.7.8"));
        let untrusted_peer = Some("9.9.9.9:1".parse().expect("addr"));
        assert_eq!(client_ip(&h, untrusted_peer, &[proxy]), Some("9.9.9.9".parse().expect("ip")));
        let via_proxy = Some("10.0.0.1:1".parse().expect("addr"));
        assert_eq!(client_ip(&h, via_proxy, &[proxy]), Some("5.6.7.8".parse().expect("ip")));
        h.insert("x-forwarded-for", HeaderValue::from_str(&"a".repeat(4096)).expect("hv"));
        assert_eq!(client_ip(&h, via_proxy, &[proxy]), Some(proxy));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(parse_form(b"a=1&a=2").is_err());
        let m = parse_form(b"a=1&b=&c=x%20y").expect("form");
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert!(!m.contains_key("b"));
        assert_eq!(m.get("c").map(String::as_str), Some("x y"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let enc = STANDARD.encode("my%3Aclient:s%2Bcret+x");
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {enc}")).expect("hv"));
        assert_eq!(basic_credentials(&h).expect("ok"), Some(("my:client".into(), "s+cret x".into())));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&h).is_err());
    }
}
