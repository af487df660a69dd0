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

/// Hash times gathered in one or more sittings (see [`measure`]); the report uses medians over
/// all of them, so that one noisy moment of a shared machine does not set the yardstick.
#[derive(Debug, Clone, Default)]
pub struct HashTiming {
    /// One thread hashing while nothing else of the run loads the machine: the yardstick.
    single: Vec<Duration>,
    /// Every core hashing at once, as during a sign-in load: Argon2 touches 19 MiB per hash,
    /// so where the cores share caches and memory bandwidth a hash may be slower than alone.
    all_cores: Vec<Duration>,
    sittings: usize,
}

impl HashTiming {
    /// The median single-thread hash time over every sitting.
    pub fn median(&self) -> Duration {
        median(&self.single)
    }

    pub fn min(&self) -> Duration {
        self.single.iter().min().copied().unwrap_or_default()
    }

    pub fn samples(&self) -> usize {
        self.single.len()
    }

    pub fn sittings(&self) -> usize {
        self.sittings
    }

    /// The median hash time with every core hashing, over every sitting.
    pub fn all_cores_median(&self) -> Duration {
        median(&self.all_cores)
    }

    /// Adds another sitting's samples.
    pub fn extend(&mut self, other: HashTiming) {
        self.single.extend(other.single);
        self.all_cores.extend(other.all_cores);
        self.sittings += other.sittings;
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// One sitting: hashes `samples` times on one thread (after one warm-up), then `samples` times
/// on each of `cores` threads at once.
pub async fn measure(samples: usize, cores: usize) -> anyhow::Result<HashTiming> {
    tokio::task::spawn_blocking(move || {
        let single = time_hashes(samples)?;
        let threads: Vec<_> = (0..cores.max(1)).map(|_| std::thread::spawn(move || time_hashes(samples))).collect();
        let mut all_cores = Vec::with_capacity(samples * threads.len());
        for thread in threads {
            all_cores.extend(thread.join().map_err(|_| anyhow!("a hashing thread panicked"))??);
        }
        Ok(HashTiming { single, all_cores, sittings: 1 })
    })
    .await
    .map_err(|e| anyhow!("hash timing task failed: {e}"))?
}

/// The durations of `samples` hashes on this thread, after one warm-up.
fn time_hashes(samples: usize) -> anyhow::Result<Vec<Duration>> {
    let argon = hasher()?;
    argon.hash_password(b"warm-up password").map_err(|e| anyhow!("argon2: {e}"))?;
    (0..samples.max(1))
        .map(|i| {
            let password = format!("bench password {i}");
            let started = Instant::now();
            argon.hash_password(password.as_bytes()).map_err(|e| anyhow!("argon2: {e}"))?;
            Ok(started.elapsed())
        })
        .collect()
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
