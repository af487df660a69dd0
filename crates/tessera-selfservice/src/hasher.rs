//! Argon2id on a bounded pool. At most `workers` hashes run at once (each holds `m_cost`
//! KiB), and at most `max_queue` wait; beyond that callers get [`HashError::Overloaded`] at
//! once, which the web layer answers with 503 + `Retry-After`. A sign-up spike therefore
//! costs bounded memory and leaves the runtime free for token requests.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashingConfig {
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Concurrent hashes; 0 means the number of cores.
    pub workers: usize,
    /// Requests allowed to wait for a worker; 0 means 16 per worker.
    pub max_queue: usize,
}

impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
            workers: 0,
            max_queue: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing pool is full")]
    Overloaded,
    #[error("password hashing failed")]
    Internal,
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash used other parameters than the configured ones: store a new hash.
    pub needs_rehash: bool,
}

pub struct PasswordHasherPool {
    params: Params,
    permits: Arc<Semaphore>,
    workers: usize,
    waiting: AtomicUsize,
    max_queue: usize,
    /// A hash of a random password, verified against when the account does not exist so that
    /// unknown emails cost the same time as wrong passwords.
    dummy_hash: String,
}

impl PasswordHasherPool {
    pub fn new(config: &HashingConfig) -> Result<Self, String> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        let workers = if config.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) } else { config.workers };
        let max_queue = if config.max_queue == 0 { workers * 16 } else { config.max_queue };
        let dummy_hash = argon2(&params)
            .hash_password(tessera_core::secret::random_token().as_bytes())
            .map_err(|e| format!("argon2 self-test failed: {e}"))?
            .to_string();
        Ok(Self { params, permits: Arc::new(Semaphore::new(workers)), workers, waiting: AtomicUsize::new(0), max_queue, dummy_hash })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Requests waiting for a worker right now (exported as a metric).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || argon2(&params).hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|_| HashError::Internal)).await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no account, so
    /// both paths take the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<Verification, HashError> {
        let (phc, real) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.clone(), false),
        };
        let params = self.params.clone();
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return Verification { matches: false, needs_rehash: false };
            };
            let matches = argon2(&params).verify_password(password.as_bytes(), &parsed).is_ok() && real;
            let needs_rehash = matches && !same_params(&parsed, &params);
            Verification { matches, needs_rehash }
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        // Admission control first: a waiter only holds a small future, but an unbounded queue
        // would turn a spike into unbounded latency.
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("tessera_password_hash_rejected_total").increment(1);
            return Err(HashError::Overloaded);
        }
        metrics::gauge!("tessera_password_hash_queue_depth").set(self.queue_depth() as f64);
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| HashError::Internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|_| HashError::Internal)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn same_params(hash: &PasswordHash, params: &Params) -> bool {
    hash.algorithm.as_str() == "argon2id"
        && Params::try_from(hash)
            .is_ok_and(|p| p.m_cost() == params.m_cost() && p.t_cost() == params.t_cost() && p.p_cost() == params.p_cost())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(workers: usize, max_queue: usize) -> PasswordHasherPool {
        PasswordHasherPool::new(&HashingConfig { memory_kib: 64, iterations: 1, parallelism: 1, workers, max_queue }).expect("pool")
    }

    #[tokio::test]
    async fn hash_verify_and_rehash_detection() {
        let pool = small(1, 4);
        let hash = pool.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let ok = pool.verify("correct horse".into(), Some(hash.clone())).await.expect("verify");
        assert_eq!(ok, Verification { matches: true, needs_rehash: false });
        let wrong = pool.verify("wrong horse".into(), Some(hash.clone())).await.expect("verify");
        assert!(!wrong.matches);
        let no_account = pool.verify("anything".into(), None).await.expect("verify");
        assert!(!no_account.matches);
        let stronger = PasswordHasherPool::new(&HashingConfig { memory_kib: 128, iterations: 1, parallelism: 1, workers: 1, max_queue: 4 })
            .expect("pool");
        let old = stronger.verify("correct horse".into(), Some(hash)).await.expect("verify");
        assert_eq!(old, Verification { matches: true, needs_rehash: true });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_rejects_instead_of_growing() {
        let pool = Arc::new(
            PasswordHasherPool::new(&HashingConfig { memory_kib: 8192, iterations: 4, parallelism: 1, workers: 1, max_queue: 2 })
                .expect("pool"),
        );
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.hash(format!("password number {i}")).await })
            })
            .collect();
        let mut ok = 0;
        let mut overloaded = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) => ok += 1,
                Err(HashError::Overloaded) => overloaded += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(ok >= 1 && overloaded >= 1, "ok={ok} overloaded={overloaded}");
        assert_eq!(ok + overloaded, 20);
        assert_eq!(pool.queue_depth(), 0);
    }
}
