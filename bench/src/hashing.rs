//! The Argon2id yardstick: the time of one hash at Tessera's configured parameters
//! (m = 19456 KiB, t = 2, p = 1, its defaults), measured in this process with the same
//! `argon2` crate. A password sign-in costs one verification, which costs one hash, so
//! `cores ÷ hash time` is the most sign-ins per second the machine can do.

use anyhow::anyhow;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use std::time::{Duration, Instant};

/// Tessera's `[hashing]` defaults.
pub const MEMORY_KIB: u32 = 19_456;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

fn hasher() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An Argon2id PHC string of `password` at Tessera's parameters (for seeding).
pub fn phc(password: &str) -> anyhow::Result<String> {
    Ok(hasher()?.hash_password(password.as_bytes()).map_err(|e| anyhow!("argon2: {e}"))?.to_string())
}

#[derive(Debug, Clone)]
pub struct HashTiming {
    pub median: Duration,
    pub min: Duration,
    pub samples: usize,
}

/// Hashes `samples` times on one thread (after one warm-up) and keeps the median.
pub async fn measure(samples: usize) -> anyhow::Result<HashTiming> {
    tokio::task::spawn_blocking(move || {
        let argon = hasher()?;
        let mut times = Vec::with_capacity(samples);
        argon.hash_password(b"warm-up password").map_err(|e| anyhow!("argon2: {e}"))?;
        for i in 0..samples.max(1) {
            let password = format!("bench password {i}");
            let started = Instant::now();
            argon.hash_password(password.as_bytes()).map_err(|e| anyhow!("argon2: {e}"))?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(HashTiming { median: times[times.len() / 2], min: times[0], samples: times.len() })
    })
    .await
    .map_err(|e| anyhow!("hash timing task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phc_has_the_configured_parameters() {
        let h = phc("correct horse battery staple").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }
}
