//! Random secrets (session ids, codes, refresh tokens, CSRF tokens, client secrets) and the
//! one-way hashes under which they are stored. A leaked database therefore yields nothing
//! that can be presented back to Tessera.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 256 bits from the operating system's CSPRNG, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a high-entropy secret: SHA-256, base64url. A slow password hash would
/// add nothing for 256-bit random values and would put Argon2 on the token endpoint.
pub fn hash_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn token_matches_hash(token: &str, stored_hash: &str) -> bool {
    hash_token(token).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Constant-time equality of two strings (e.g. a CSRF form field and its cookie).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_verifies() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        let h = hash_token(&a);
        assert!(token_matches_hash(&a, &h));
        assert!(!token_matches_hash(&b, &h));
        assert_ne!(h, a);
    }
}
