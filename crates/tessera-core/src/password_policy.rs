//! Password rules after NIST SP 800-63B: length, not composition; a blocklist of common
//! passwords and of context words; any Unicode; no truncation. Passwords are NFKC-normalised
//! once, here, and the same normalised form is hashed at sign-up and verified at sign-in.

use std::collections::HashSet;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// The most common passwords (SecLists' top list, lowercased), bundled in the binary.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().filter(|l| !l.is_empty()).collect())
}

/// How many entries the bundled blocklist holds.
pub fn blocklist_len() -> usize {
    common_passwords().len()
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    /// Minimum length in Unicode scalar values. NIST: 8; 15 where the password is the only factor.
    pub min_length: usize,
    /// Upper bound that keeps hashing cost bounded; far above the 64 NIST asks us to accept.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 8, max_length: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    #[error("use at least {0} characters")]
    TooShort(usize),
    #[error("use at most {0} characters")]
    TooLong(usize),
    #[error("this password is too common; choose one that is harder to guess")]
    Common,
    #[error("do not use your email address or the name of this site in your password")]
    ContainsContext,
}

impl PasswordRejection {
    /// A stable message id, so that pages and SDKs can translate the text.
    pub fn message_id(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "password.too_short",
            Self::TooLong(_) => "password.too_long",
            Self::Common => "password.common",
            Self::ContainsContext => "password.context",
        }
    }
}

/// The single normal form under which passwords are hashed and verified.
pub fn normalize_password(raw: &str) -> String {
    raw.nfkc().collect()
}

impl PasswordPolicy {
    /// Checks a new password. `context` holds words the password must not be built from
    /// (the tenant's name, the email's local part).
    pub fn check(&self, password: &str, context: &[&str]) -> Result<(), PasswordRejection> {
        let normalized = normalize_password(password);
        let length = normalized.chars().count();
        if length < self.min_length {
            return Err(PasswordRejection::TooShort(self.min_length));
        }
        if length > self.max_length {
            return Err(PasswordRejection::TooLong(self.max_length));
        }
        let lowered = normalized.to_lowercase();
        if common_passwords().contains(lowered.as_str()) {
            return Err(PasswordRejection::Common);
        }
        // A context word only counts when it carries real guessing power (4+ chars), and the
        // password is rejected when fewer than 6 characters remain once the word is removed.
        for word in context.iter().map(|w| w.trim().to_lowercase()).filter(|w| w.chars().count() >= 4) {
            if lowered.contains(&word) && lowered.replace(&word, "").chars().count() < 6 {
                return Err(PasswordRejection::ContainsContext);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocklist_is_large() {
        assert!(blocklist_len() >= 10_000, "only {}", blocklist_len());
    }

    #[test]
    fn length_not_composition() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("short", &[]), Err(PasswordRejection::TooShort(8)));
        assert_eq!(p.check("password1", &[]), Err(PasswordRejection::Common));
        assert_eq!(p.check("PassWord1", &[]), Err(PasswordRejection::Common));
        assert!(p.check("correct horse battery staple", &[]).is_ok());
        assert!(p.check("zebra mango", &[]).is_ok(), "no composition rules");
        let long: String = "ü🔑 ".repeat(30);
        assert!(p.check(&long, &[]).is_ok(), "64+ Unicode incl. spaces and emoji");
        assert!(p.check(&"x".repeat(1025), &[]).is_err());
    }

    #[test]
    fn context_words_are_refused() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("acmeshop2024", &["AcmeShop"]), Err(PasswordRejection::ContainsContext));
        assert_eq!(p.check("jdoe!jdoe!", &["jdoe"]), Err(PasswordRejection::ContainsContext));
        assert!(p.check("acmeshop loves purple turtles", &["AcmeShop"]).is_ok());
    }

    #[test]
    fn normalization_is_stable() {
        assert_eq!(normalize_password("ﬁsh"), normalize_password("fish"));
        assert_eq!(normalize_password("caf\u{0065}\u{0301}"), normalize_password("caf\u{00e9}"));
    }
}
