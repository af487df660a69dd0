//! Tenant slugs appear in URLs and cookie names, so they are kept to a safe alphabet.

/// A slug is 1–63 characters of lowercase ASCII letters, digits and inner hyphens.
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 63
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_valid_slug("default"));
        assert!(is_valid_slug("acme-shop2"));
        assert!(!is_valid_slug(""));
        assert!(!is_valid_slug("-a"));
        assert!(!is_valid_slug("Acme"));
        assert!(!is_valid_slug("a/b"));
        assert!(!is_valid_slug("a;b"));
        assert!(!is_valid_slug(&"a".repeat(64)));
    }
}
