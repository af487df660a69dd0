//! Email canonicalisation: the one function used for uniqueness, sign-in, recovery and
//! (later) SCIM and account linking, so that `quac\u{212A}@…` and `quack@…` are one account.
//! Mail always goes to the address the customer typed at sign-up (`User::email`), never to a
//! newly typed variant.

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("enter an email address such as name@example.com")]
    Invalid,
    #[error("this email address is too long")]
    TooLong,
}

/// The canonical form of an address: trimmed, NFKC-normalised, lowercased local part
/// (providers treat it case-insensitively in practice), and the domain in its IDNA ASCII
/// form so that Unicode and punycode spellings of one domain compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalEmail(String);

impl CanonicalEmail {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`, for context-word checks of the password policy.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or(&self.0)
    }
}

impl std::fmt::Display for CanonicalEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Canonicalises a typed address; see [`CanonicalEmail`].
pub fn canonicalize_email(raw: &str) -> Result<CanonicalEmail, EmailError> {
    let trimmed = raw.trim();
    if trimmed.len() > 320 {
        return Err(EmailError::TooLong);
    }
    // NFKC folds compatibility characters (full-width letters, the Kelvin sign) before the
    // lowercase step; a second pass normalises anything lowercasing produced (e.g. `İ`).
    let folded: String = trimmed.nfkc().collect::<String>().to_lowercase().nfkc().collect();
    let (local, domain) = folded.rsplit_once('@').ok_or(EmailError::Invalid)?;
    if local.is_empty()
        || local.chars().count() > 64
        || local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '<' || c == '>')
    {
        return Err(EmailError::Invalid);
    }
    let domain = match url::Host::parse(domain) {
        Ok(url::Host::Domain(d)) if d.contains('.') && !d.starts_with('.') && !d.ends_with('.') => d,
        _ => return Err(EmailError::Invalid),
    };
    Ok(CanonicalEmail(format!("{local}@{domain}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        canonicalize_email(s).map(|e| e.0).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn variants_collapse_to_one_identity() {
        assert_eq!(c("  Quack@Example.COM "), "quack@example.com");
        assert_eq!(c("quac\u{212A}@example.com"), "quack@example.com");
        assert_eq!(c("\u{FF51}uack@example.com"), "quack@example.com");
        assert_eq!(c("a@B\u{FC}cher.example"), "a@xn--bcher-kva.example");
        assert_eq!(c("a@xn--bcher-kva.example"), "a@xn--bcher-kva.example");
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "no-at", "@example.com", "a@", "a@localhost", "a b@example.com", "a@exa mple.com", "a@.com"] {
            assert!(canonicalize_email(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(canonicalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn dotless_i_and_turkish_capital_i_stay_distinct_from_ascii_i() {
        assert_ne!(c("\u{0130}van@example.com"), c("ivan@example.com"));
        assert_ne!(c("\u{0131}van@example.com"), c("ivan@example.com"));
    }
}
