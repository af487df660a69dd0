//! Redirect URI rules. Matching is a byte-for-byte string comparison with one exception
//! (RFC 8252 §7.3): a loopback IP redirect of a native app may use any port. No parsing or
//! normalisation happens before the comparison, so `/cb/.`, `/CB`, `%2F..` or `@evil.test`
//! tricks can never make two different strings equal.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("the redirect URI is not an absolute URL")]
    NotAbsolute,
    #[error("the redirect URI must not contain a fragment")]
    Fragment,
    #[error("the redirect URI must not contain user information")]
    UserInfo,
    #[error("the redirect URI must use https (http only for loopback addresses)")]
    InsecureScheme,
}

const LOOPBACK_PREFIXES: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];

/// Returns the registered URI that `requested` matches, if any.
pub fn find_match<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    if let Some(exact) = registered.iter().find(|r| r.as_str() == requested) {
        return Some(exact);
    }
    let (prefix, requested_rest) = split_loopback(requested)?;
    registered.iter().map(String::as_str).find(|r| {
        split_loopback(r)
            .is_some_and(|(registered_prefix, registered_rest)| registered_prefix == prefix && registered_rest == requested_rest)
    })
}

/// Splits `http://127.0.0.1:PORT/rest` into (`http://127.0.0.1`, `/rest`); `None` unless
/// the string is a loopback IP URL whose authority ends right after an optional valid port.
fn split_loopback(uri: &str) -> Option<(&'static str, &str)> {
    let prefix = LOOPBACK_PREFIXES.into_iter().find(|p| uri.starts_with(p))?;
    let after_host = &uri[prefix.len()..];
    let rest = match after_host.strip_prefix(':') {
        Some(with_port) => {
            let digits = with_port.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 5 || with_port[..digits].parse::<u16>().is_err() {
                return None;
            }
            &with_port[digits..]
        }
        None => after_host,
    };
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some((prefix, rest))
}

/// Checks a redirect URI at client registration. `allow_http_localhost` admits
/// `http://localhost` (dev mode and native apps that cannot bind an IP literal).
pub fn validate_for_registration(uri: &str, allow_http_localhost: bool) -> Result<(), RedirectUriError> {
    let parsed = url::Url::parse(uri).map_err(|_| RedirectUriError::NotAbsolute)?;
    if uri.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(RedirectUriError::UserInfo);
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let is_loopback_ip = split_loopback(uri).is_some();
            let is_localhost = matches!(parsed.host(), Some(url::Host::Domain("localhost")));
            if is_loopback_ip || (allow_http_localhost && is_localhost) { Ok(()) } else { Err(RedirectUriError::InsecureScheme) }
        }
        // Private-use URI schemes of native apps must be reverse domain names (RFC 8252 §7.1).
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(RedirectUriError::InsecureScheme),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uris: &[&str]) -> Vec<String> {
        uris.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_match_only() {
        let r = reg(&["https://app.example.test/cb"]);
        assert_eq!(find_match(&r, "https://app.example.test/cb"), Some("https://app.example.test/cb"));
        for bad in [
            "https://app.example.test/cb/extra",
            "https://app.example.test/cb/",
            "https://app.example.test/CB",
            "https://app.example.test/cb?x=1",
            "https://app.example.test/cb#f",
            "https://app.example.test/cb/.",
            "https://app.example.test/cb%2F..",
            "https://app.example.test.evil.test/cb",
            "https://app.example.test@evil.test/cb",
            "https://a@b@evil.test/cb",
            "https://evil.test\\@app.example.test/cb",
            "https://app.example.test/cb/..;/x",
            "HTTPS://app.example.test/cb",
            "",
        ] {
            assert_eq!(find_match(&r, bad), None, "{bad} must not match");
        }
    }

    #[test]
    fn loopback_port_may_vary() {
        let r = reg(&["http://127.0.0.1/cb", "http://[::1]:8000/native"]);
        assert!(find_match(&r, "http://127.0.0.1:51234/cb").is_some());
        assert!(find_match(&r, "http://127.0.0.1/cb").is_some());
        assert!(find_match(&r, "http://[::1]:1/native").is_some());
        for bad in [
            "http://127.0.0.1.evil.test/cb",
            "http://127.0.0.1@evil.test/cb",
            "http://127.0.0.1:80@evil.test/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:/cb",
            "http://127.0.0.1:8080/cb/x",
            "http://localhost:8080/cb",
            "http://10.0.0.1:8080/cb",
            "http://[::1]:1/cb",
        ] {
            assert_eq!(find_match(&r, bad), None, "{bad} must not match");
        }
    }

    #[test]
    fn registration_rules() {
        assert!(validate_for_registration("https://app.example.test/cb", false).is_ok());
        assert!(validate_for_registration("http://127.0.0.1/cb", false).is_ok());
        assert!(validate_for_registration("com.example.app:/oauth", false).is_ok());
        assert_eq!(validate_for_registration("http://app.example.test/cb", false), Err(RedirectUriError::InsecureScheme));
        assert_eq!(validate_for_registration("http://localhost:3000/cb", false), Err(RedirectUriError::InsecureScheme));
        assert!(validate_for_registration("http://localhost:3000/cb", true).is_ok());
        assert_eq!(validate_for_registration("https://a.test/cb#x", false), Err(RedirectUriError::Fragment));
        assert_eq!(validate_for_registration("https://u:p@a.test/cb", false), Err(RedirectUriError::UserInfo));
        assert_eq!(validate_for_registration("/relative", false), Err(RedirectUriError::NotAbsolute));
        assert_eq!(validate_for_registration("javascript:alert(1)", false), Err(RedirectUriError::InsecureScheme));
    }
}
