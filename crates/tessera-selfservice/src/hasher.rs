//! Argon2id on a bounded pool. `workers` dedicated threads (one per core by default) each own
//! one preallocated Argon2 memory area (`m_cost` KiB) that every hash reuses, so hashing never
//! allocates, never page-faults fresh memory, and the process's memory is bounded by
//! workers × m_cost whatever the load. At most `max_queue` requests wait for a worker; beyond
//! that callers get [`HashError::Overloaded`] at once, which the web layer answers with 503 +
//! `Retry-After`. A sign-up spike therefore leaves the async runtime free for token requests.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Work for a hashing thread; it receives the thread's memory area.
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;

pub struct PasswordHasherPool {
    params: Params,
    jobs: SyncSender<Job>,
    workers: usize,
    max_queue: usize,
    waiting: Arc<AtomicUsize>,
    /// A hash of a random password, verified against when the account does not exist so that
    /// unknown emails cost the same time as wrong passwords. Made by the first verification.
    dummy_hash: Arc<OnceLock<String>>,
}

impl PasswordHasherPool {
    pub fn new(config: &HashingConfig) -> Result<Self, String> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, Some(OUTPUT_LEN))
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        let workers = if config.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) } else { config.workers };
        let max_queue = if config.max_queue == 0 { workers * 16 } else { config.max_queue };
        let (jobs, queue) = sync_channel::<Job>(max_queue);
        let queue = Arc::new(Mutex::new(queue));
        let waiting = Arc::new(AtomicUsize::new(0));
        for n in 0..workers {
            let queue = queue.clone();
            let waiting = waiting.clone();
            let blocks = params.block_count();
            std::thread::Builder::new()
                .name(format!("tessera-hash-{n}"))
                .spawn(move || {
                    // Allocated at the first hash, not at start: an idle server stays small.
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        // The pool's sender closes when the pool is dropped; then the thread ends.
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = next else { return };
                        waiting.fetch_sub(1, Ordering::AcqRel);
                        if memory.is_empty() {
                            memory = vec![Block::default(); blocks];
                        }
                        job(&mut memory);
                    }
                })
                .map_err(|e| format!("cannot start a hashing thread: {e}"))?;
        }
        Ok(Self { params, jobs, workers, max_queue, waiting, dummy_hash: Arc::new(OnceLock::new()) })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// True when a new request would be turned away: callers check this before doing any
    /// other work, so that a spike's rejected requests cost almost nothing.
    pub fn is_saturated(&self) -> bool {
        self.queue_depth() >= self.max_queue
    }

    /// Requests waiting for a worker right now (exported as a metric).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move |memory| hash_with(&params, password.as_bytes(), memory)).await?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no account, so
    /// both paths take the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<Verification, HashError> {
        let params = self.params.clone();
        let dummy = self.dummy_hash.clone();
        self.run(move |memory| {
            let (phc, real) = match stored {
                Some(h) => (h, true),
                None => {
                    let dummy = dummy
                        .get_or_init(|| hash_with(&params, tessera_core::secret::random_token().as_bytes(), memory).unwrap_or_default());
                    (dummy.clone(), false)
                }
            };
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return Verification { matches: false, needs_rehash: false };
            };
            let matches = verify_with(&parsed, password.as_bytes(), memory) && real;
            let needs_rehash = matches && !same_params(&parsed, &params);
            Verification { matches, needs_rehash }
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut [Block]) -> T + Send + 'static) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        // Admission control: a full queue answers at once instead of growing latency.
        self.waiting.fetch_add(1, Ordering::AcqRel);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!("tessera_password_hash_rejected_total").increment(1);
                return Err(HashError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(HashError::Internal);
            }
        }
        metrics::gauge!("tessera_password_hash_queue_depth").set(self.queue_depth() as f64);
        result.await.map_err(|_| HashError::Internal)
    }
}

/// Hashes with a fresh random salt into the caller's memory area; returns the PHC string.
fn hash_with(params: &Params, password: &[u8], memory: &mut [Block]) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, &mut memory[..params.block_count()])
        .map_err(|_| HashError::Internal)?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|_| HashError::Internal)?,
        salt: Some(Salt::new(&salt).map_err(|_| HashError::Internal)?),
        hash: Some(Output::new(&out).map_err(|_| HashError::Internal)?),
    };
    Ok(phc.to_string())
}

/// Recomputes a stored hash with its own parameters (older hashes may differ from today's)
/// and compares the outputs in constant time.
fn verify_with(stored: &PasswordHash, password: &[u8], memory: &mut [Block]) -> bool {
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(stored.algorithm.as_str()), Params::try_from(stored), stored.salt.as_ref(), stored.hash.as_ref())
    else {
        return false;
    };
    let Ok(version) = Version::try_from(stored.version.unwrap_or(0x13)) else { return false };
    let needed = params.block_count();
    let mut larger;
    let blocks = if needed <= memory.len() {
        &mut memory[..needed]
    } else {
        // A hash made with more memory than today's setting: allocate once for it.
        larger = vec![Block::default(); needed];
        &mut larger[..]
    };
    let mut out = vec![0u8; expected.len()];
    if Argon2::new(algorithm, version, params).hash_password_into_with_memory(password, salt.as_ref(), &mut out, blocks).is_err() {
        return false;
    }
    Output::new(&out).is_ok_and(|computed| computed == *expected)
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

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let pool = small(1, 4);
        let ours = pool.hash("pässword 🔑".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("standard PHC string");
        Argon2::default().verify_password("pässword 🔑".as_bytes(), &parsed).expect("the argon2 crate verifies our hash");
        let params = Params::new(96, 1, 1, None).expect("params");
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"their password").expect("hash").to_string();
        let checked = pool.verify("their password".into(), Some(theirs.clone())).await.expect("verify");
        assert_eq!(
            checked,
            Verification { matches: true, needs_rehash: true },
            "a hash of other parameters verifies and asks for a rehash"
        );
        assert!(!pool.verify("other password".into(), Some(theirs)).await.expect("verify").matches);
        assert!(!pool.verify("x".into(), Some("$argon2id$garbage".into())).await.expect("verify").matches);
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
