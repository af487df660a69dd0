//! Signing keys: generation (RS256, ES256, EdDSA through aws-lc-rs), encryption of private
//! keys at rest under the master key (AES-256-GCM, bound to tenant and kid), and the
//! per-node cache of a tenant's keys.
//!
//! Rotation lifecycle of one algorithm's keys:
//! ```text
//!   next ──rotate──▶ active ──rotate──▶ retired ──publish_until passes──▶ deleted
//!   (in JWKS, not signing) (signs)      (in JWKS until its tokens expire)
//! ```
//! The cache lives [`KEY_CACHE_TTL`]: a node that has not yet seen a rotation keeps signing
//! with the previous key, which is still published, so tokens stay verifiable everywhere.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tessera_core::model::{KeyStatus, SigningKey};
use tessera_core::{EventKind, NewEvent};
use tessera_store::Store;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

/// How long a node trusts its cached copy of a tenant's keys.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The algorithms Tessera signs with.
pub const SUPPORTED_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    #[error("key generation failed")]
    Generation,
    #[error("a stored private key could not be decrypted: wrong master key or corrupt data")]
    Decrypt,
    #[error("unsupported algorithm {0}")]
    UnsupportedAlg(String),
    #[error("tenant has no active {0} key")]
    NoActiveKey(String),
    #[error(transparent)]
    Store(#[from] tessera_store::StoreError),
}

/// The 256-bit key that encrypts private signing keys at rest.
#[derive(Clone)]
pub struct MasterKey(Arc<Zeroizing<[u8; 32]>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).map_err(|_| KeyError::BadMasterKey)?);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::BadMasterKey)?;
        Ok(Self(Arc::new(Zeroizing::new(array))))
    }

    /// A fresh random master key, base64-encoded (for dev mode and `tessera` setup).
    pub fn generate_base64() -> Result<String, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(bytes.as_mut()).map_err(|_| KeyError::Generation)?;
        Ok(STANDARD.encode(bytes.as_ref()))
    }

    fn aead(&self) -> Result<LessSafeKey, KeyError> {
        Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).map_err(|_| KeyError::BadMasterKey)?))
    }

    /// nonce ‖ ciphertext ‖ tag; the associated data binds the blob to its tenant and kid, so
    /// a row copied onto another key or tenant fails to decrypt.
    fn encrypt(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError::Generation)?;
        let mut buf = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Generation)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn decrypt(&self, blob: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if blob.len() < NONCE_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Decrypt)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self.aead()?.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).map_err(|_| KeyError::Decrypt)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

fn aad(tenant_id: Uuid, kid: &str) -> String {
    format!("tessera-signing-key:{tenant_id}:{kid}")
}

fn algorithm(alg: &str) -> Result<Algorithm, KeyError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(KeyError::UnsupportedAlg(other.to_owned())),
    }
}

fn pkcs8_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Generates a key pair and returns its PKCS#8 DER.
fn generate_pkcs8(alg: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let der = match alg {
        "RS256" => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|_| KeyError::Generation)?;
            der.as_ref().to_vec()
        }
        "ES256" => {
            let doc =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).map_err(|_| KeyError::Generation)?;
            doc.as_ref().to_vec()
        }
        "EdDSA" => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
            pair.to_pkcs8v1().map_err(|_| KeyError::Generation)?.as_ref().to_vec()
        }
        other => return Err(KeyError::UnsupportedAlg(other.to_owned())),
    };
    Ok(Zeroizing::new(der))
}

fn encoding_key(alg: &str, pkcs8: &[u8]) -> Result<EncodingKey, KeyError> {
    match alg {
        "RS256" => EncodingKey::from_rsa_pem(pkcs8_pem(pkcs8).as_bytes()).map_err(|_| KeyError::Decrypt),
        "ES256" => {
            // Validate now so a bad key fails at load, not at the first signature.
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| KeyError::Decrypt)?;
            Ok(EncodingKey::from_ec_der(pkcs8))
        }
        "EdDSA" => {
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Decrypt)?;
            Ok(EncodingKey::from_ed_der(pkcs8))
        }
        other => Err(KeyError::UnsupportedAlg(other.to_owned())),
    }
}

/// Creates a new signing key for a tenant, encrypted under the master key.
pub fn new_signing_key(
    master: &MasterKey,
    tenant_id: Uuid,
    alg: &str,
    status: KeyStatus,
    now: OffsetDateTime,
) -> Result<SigningKey, KeyError> {
    let pkcs8 = generate_pkcs8(alg)?;
    let encoding = encoding_key(alg, &pkcs8)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm(alg)?).map_err(|_| KeyError::Generation)?;
    let kid = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).map_err(|_| KeyError::Generation)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let public_jwk = serde_json::to_value(&jwk).map_err(|_| KeyError::Generation)?;
    Ok(SigningKey {
        id: Uuid::now_v7(),
        tenant_id,
        private_key_encrypted: master.encrypt(&pkcs8, &aad(tenant_id, &kid))?,
        kid,
        alg: alg.to_owned(),
        status,
        public_jwk,
        created_at: now,
        publish_until: None,
    })
}

/// Creates the active and next key of every supported algorithm for a new tenant.
pub async fn bootstrap_tenant_keys(store: &dyn Store, master: &MasterKey, tenant_id: Uuid, now: OffsetDateTime) -> Result<(), KeyError> {
    for alg in SUPPORTED_ALGS {
        for status in [KeyStatus::Active, KeyStatus::Next] {
            let key = new_signing_key(master, tenant_id, alg, status, now)?;
            let event = NewEvent::new(tenant_id, EventKind::SigningKeyCreated, now)
                .data(serde_json::json!({ "kid": key.kid, "alg": alg, "status": status.as_str() }));
            store.create_signing_key(&key, &event).await?;
        }
    }
    Ok(())
}

/// Rotates one algorithm's keys: next → active, active → retired (kept published for
/// `max_token_lifetime`), and a new next key.
pub async fn rotate(
    store: &dyn Store,
    master: &MasterKey,
    tenant_id: Uuid,
    alg: &str,
    max_token_lifetime: time::Duration,
    now: OffsetDateTime,
) -> Result<SigningKey, KeyError> {
    let next = new_signing_key(master, tenant_id, alg, KeyStatus::Next, now)?;
    let event =
        NewEvent::new(tenant_id, EventKind::SigningKeyRotated, now).data(serde_json::json!({ "alg": alg, "new_next_kid": next.kid }));
    store.rotate_signing_keys(tenant_id, alg, &next, now + max_token_lifetime, &event).await?;
    Ok(next)
}

/// A parsed private key, kept ready so that signing does not re-parse (and, for RSA,
/// re-validate) the key on every token.
pub enum SigningKeyPair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKeyPair {
    fn parse(alg: &str, pkcs8: &[u8]) -> Result<Self, KeyError> {
        match alg {
            "RS256" => aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map(Self::Rsa).map_err(|_| KeyError::Decrypt),
            "ES256" => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map(Self::Ecdsa).map_err(|_| KeyError::Decrypt),
            "EdDSA" => Ed25519KeyPair::from_pkcs8(pkcs8).map(Self::Ed25519).map_err(|_| KeyError::Decrypt),
            other => Err(KeyError::UnsupportedAlg(other.to_owned())),
        }
    }

    /// The JWS signature over `message`: RSASSA-PKCS1-v1_5 SHA-256, ECDSA P-256 SHA-256 in
    /// the fixed r‖s form JWS requires, or Ed25519.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature)
                    .map_err(|_| KeyError::Generation)?;
                Ok(signature)
            }
            Self::Ecdsa(pair) => Ok(pair.sign(&SystemRandom::new(), message).map_err(|_| KeyError::Generation)?.as_ref().to_vec()),
            Self::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// One tenant's keys, ready to sign and verify.
pub struct TenantKeys {
    signing: HashMap<String, (String, SigningKeyPair)>,
    verifying: HashMap<String, (Algorithm, DecodingKey)>,
    /// The JWKS document, serialised once.
    pub jwks_json: Arc<str>,
}

impl TenantKeys {
    /// The active key for `alg`: its kid and encoding key.
    pub fn signer(&self, alg: &str) -> Result<(&str, &SigningKeyPair), KeyError> {
        self.signing.get(alg).map(|(kid, key)| (kid.as_str(), key)).ok_or_else(|| KeyError::NoActiveKey(alg.to_owned()))
    }

    pub fn verifier(&self, kid: &str) -> Option<(Algorithm, &DecodingKey)> {
        self.verifying.get(kid).map(|(alg, key)| (*alg, key))
    }
}

/// Per-node cache of every tenant's keys with a short TTL.
pub struct KeyRing {
    master: MasterKey,
    cache: RwLock<HashMap<Uuid, (Instant, Arc<TenantKeys>)>>,
}

impl KeyRing {
    pub fn new(master: MasterKey) -> Self {
        Self { master, cache: RwLock::new(HashMap::new()) }
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The tenant's keys, from the cache while fresh, else loaded from the store.
    pub async fn tenant_keys(&self, store: &dyn Store, tenant_id: Uuid) -> Result<Arc<TenantKeys>, KeyError> {
        if let Some((loaded, keys)) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&tenant_id)
            && loaded.elapsed() < KEY_CACHE_TTL
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(self.load(store, tenant_id).await?);
        self.cache.write().unwrap_or_else(|p| p.into_inner()).insert(tenant_id, (Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Forgets a tenant's keys on this node (after a rotation done by this node).
    pub fn invalidate(&self, tenant_id: Uuid) {
        self.cache.write().unwrap_or_else(|p| p.into_inner()).remove(&tenant_id);
    }

    async fn load(&self, store: &dyn Store, tenant_id: Uuid) -> Result<TenantKeys, KeyError> {
        let stored = store.list_signing_keys(tenant_id).await?;
        let mut signing = HashMap::new();
        let mut verifying = HashMap::new();
        let mut published = Vec::new();
        for key in &stored {
            let jwk: Jwk = serde_json::from_value(key.public_jwk.clone()).map_err(|_| KeyError::Decrypt)?;
            let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Decrypt)?;
            verifying.insert(key.kid.clone(), (algorithm(&key.alg)?, decoding));
            published.push(key.public_jwk.clone());
            if key.status == KeyStatus::Active && !signing.contains_key(&key.alg) {
                let pkcs8 = self.master.decrypt(&key.private_key_encrypted, &aad(tenant_id, &key.kid))?;
                signing.insert(key.alg.clone(), (key.kid.clone(), SigningKeyPair::parse(&key.alg, &pkcs8)?));
            }
        }
        let jwks_json: Arc<str> = serde_json::json!({ "keys": published }).to_string().into();
        Ok(TenantKeys { signing, verifying, jwks_json })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_is_bound_to_tenant_and_kid() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64().expect("gen")).expect("key");
        let blob = master.encrypt(b"secret", "a").expect("enc");
        assert_eq!(master.decrypt(&blob, "a").expect("dec").as_slice(), b"secret");
        assert!(master.decrypt(&blob, "b").is_err());
        let other = MasterKey::from_base64(&MasterKey::generate_base64().expect("gen")).expect("key");
        assert!(other.decrypt(&blob, "a").is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn every_algorithm_generates_a_usable_key() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64().expect("gen")).expect("key");
        for alg in SUPPORTED_ALGS {
            let key = new_signing_key(&master, Uuid::nil(), alg, KeyStatus::Active, OffsetDateTime::UNIX_EPOCH).expect(alg);
            let pkcs8 = master.decrypt(&key.private_key_encrypted, &aad(Uuid::nil(), &key.kid)).expect("decrypt");
            let enc = encoding_key(alg, &pkcs8).expect("encoding key");
            let mut header = jsonwebtoken::Header::new(algorithm(alg).expect("alg"));
            header.kid = Some(key.kid.clone());
            let token = jsonwebtoken::encode(&header, &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}), &enc).expect("sign");
            let jwk: Jwk = serde_json::from_value(key.public_jwk.clone()).expect("jwk");
            let dec = DecodingKey::from_jwk(&jwk).expect("dec key");
            let mut validation = jsonwebtoken::Validation::new(algorithm(alg).expect("alg"));
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &validation).expect("verify");
            assert_eq!(key.public_jwk["kid"], key.kid);
            assert!(key.public_jwk.get("d").is_none(), "no private part in the JWK");
        }
    }
}
