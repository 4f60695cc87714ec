//! argon2id hashing on a bounded pool.
//!
//! Hashing is the one expensive thing a sign-in does. It runs on tokio's blocking threads,
//! never on the async workers, behind a semaphore with one slot per core, so memory use is
//! bounded (memory cost × slots) and pages that only check a session keep their latency
//! while sign-ins are overloaded. When too many hashes wait for a slot, new ones are
//! refused with [`HashError::Busy`] instead of queueing without limit.
//!
//! An unknown account is verified against a dummy hash made with the same parameters, so
//! it costs the same time as a wrong password.
//!
//! Each running hash works in a buffer of the pool (memory cost in 1 KiB blocks), taken
//! and given back instead of allocated per hash: glibc keeps freed blocks of that size in
//! each blocking thread's arena, so per-hash allocation grew the process by up to memory
//! cost × arenas (hundreds of MB) instead of × slots. Buffers left unused for
//! [`IDLE_RELEASE`] go back to the operating system.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::Semaphore;

/// Hash buffers unused for this long are freed, so an idle server holds no hash memory.
const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// Buffers get at least this many blocks of capacity (33 MiB; only the blocks a hash uses
/// are touched, so only those are resident). glibc always maps an allocation above 32 MiB
/// on its own and unmaps it when freed, so releasing a buffer really returns its memory.
const MIN_BUFFER_CAPACITY_BLOCKS: usize = 33 * 1024;

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Match { needs_rehash: bool },
    Mismatch,
}

#[derive(Debug, Clone, Copy)]
pub struct HasherSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes at once; 0 means one per CPU core.
    pub concurrency: usize,
    /// Hashes that may wait for a slot; 0 means 64 per slot.
    pub queue: usize,
}

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    slots: Semaphore,
    slot_count: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    dummy_hash: String,
    memory: HashMemory,
}

/// The pool's argon2 working memory: at most one buffer per slot, reused from hash to hash.
#[derive(Default)]
struct HashMemory {
    spare: Mutex<Vec<Vec<Block>>>,
    last_used: Mutex<Option<Instant>>,
}

impl HashMemory {
    /// A buffer of at least `blocks` blocks: a spare one, or a new one.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match spare {
            Some(buffer) if buffer.len() >= blocks => buffer,
            _ => {
                let mut buffer = Vec::with_capacity(blocks.max(MIN_BUFFER_CAPACITY_BLOCKS));
                buffer.resize(blocks, Block::default());
                buffer
            }
        }
    }

    fn give_back(&self, buffer: Vec<Block>) {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buffer);
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Frees the spare buffers once no hash has used one for [`IDLE_RELEASE`].
    fn release_if_idle(&self) {
        let idle = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() >= IDLE_RELEASE);
        if idle {
            self.spare
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Runs `work` with a buffer of at least `blocks` blocks.
    fn with_buffer<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let mut buffer = self.take(blocks);
        let result = work(&mut buffer);
        self.give_back(buffer);
        result
    }
}

/// Frees idle hash buffers every half [`IDLE_RELEASE`], until the hasher is dropped.
fn spawn_memory_release(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("latchkey-hash-memory".into())
        .spawn(move || {
            loop {
                std::thread::sleep(IDLE_RELEASE / 2);
                match inner.upgrade() {
                    Some(inner) => inner.memory.release_if_idle(),
                    None => break,
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "hash memory release thread not started; buffers stay allocated");
    }
}

impl PasswordHasher {
    pub fn new(settings: HasherSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashError::Params(e.to_string()))?;
        let slot_count = if settings.concurrency == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            settings.concurrency
        };
        let max_waiting = if settings.queue == 0 {
            64 * slot_count
        } else {
            settings.queue
        };
        let memory = HashMemory::default();
        let dummy_hash = hash_blocking(&memory, &params, &crate::crypto::tokens::random_token(24))?;
        let inner = Arc::new(Inner {
            params,
            slots: Semaphore::new(slot_count),
            slot_count,
            waiting: AtomicUsize::new(0),
            max_waiting,
            dummy_hash,
            memory,
        });
        spawn_memory_release(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Slots the pool runs hashes in at once.
    pub fn slots(&self) -> usize {
        self.inner.slot_count
    }

    /// Hashes waiting for a slot right now (for metrics).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let inner = self.inner.clone();
        let secret = password.expose().to_owned();
        self.run(move || hash_blocking(&inner.memory, &inner.params, &secret))
            .await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// stored hash, so both cases cost one argon2 verification.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verification, HashError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.inner.dummy_hash).to_owned();
        let secret = password.expose().to_owned();
        let inner = self.inner.clone();
        let outcome = self
            .run(move || verify_blocking(&inner.memory, &inner.params, &hash, &secret))
            .await?;
        Ok(match outcome {
            Verification::Match { .. } if !known => Verification::Mismatch,
            other => other,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let inner = &self.inner;
        if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.max_waiting + inner.slot_count {
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = inner.slots.acquire().await;
        inner.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HashError::Hash(e.to_string()))
    }
}

fn hash_blocking(memory: &HashMemory, params: &Params, secret: &str) -> Result<String, HashError> {
    let hash_error = |e: &dyn std::fmt::Display| HashError::Hash(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| hash_error(&e))?;
    let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    memory
        .with_buffer(params.block_count(), |buffer| {
            argon2.hash_password_into_with_memory(
                secret.as_bytes(),
                salt_bytes,
                &mut output,
                buffer,
            )
        })
        .map_err(|e| hash_error(&e))?;
    // The PHC string argon2's own `hash_password` makes.
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| hash_error(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(|e| hash_error(&e))?),
    };
    Ok(hash.to_string())
}

/// argon2's `verify_password`, in a buffer of the pool: the stored hash names its own
/// algorithm, version and parameters, and the outputs are compared in constant time
/// (`Output`'s equality).
fn verify_blocking(
    memory: &HashMemory,
    wanted: &Params,
    stored: &str,
    secret: &str,
) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification::Mismatch;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Verification::Mismatch;
    };
    let (Ok(algorithm), Ok(version), Ok(current)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return Verification::Mismatch;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return Verification::Mismatch;
    };
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, current.clone());
    let computed = memory.with_buffer(current.block_count(), |buffer| {
        argon2.hash_password_into_with_memory(secret.as_bytes(), salt_bytes, &mut output, buffer)
    });
    if computed.is_err() || Output::new(&output).ok() != Some(expected) {
        return Verification::Mismatch;
    }
    let needs_rehash = algorithm != Algorithm::Argon2id
        || current.m_cost() != wanted.m_cost()
        || current.t_cost() != wanted.t_cost()
        || current.p_cost() != wanted.p_cost();
    Verification::Match { needs_rehash }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(memory_kib: u32) -> PasswordHasher {
        PasswordHasher::new(HasherSettings {
            memory_kib,
            iterations: 1,
            parallelism: 1,
            concurrency: 2,
            queue: 4,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let h = hasher(1024);
        let stored = h.hash(&Password::new("Password.1")).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{stored}"
        );
        assert_eq!(
            h.verify(&Password::new("Password.1"), Some(&stored))
                .await
                .unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Password::new("password.1"), Some(&stored))
                .await
                .unwrap(),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn unknown_accounts_never_match_the_dummy_hash() {
        let h = hasher(1024);
        assert_eq!(
            h.verify(&Password::new(""), None).await.unwrap(),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn raised_parameters_ask_for_a_rehash() {
        let old = hasher(1024)
            .hash(&Password::new("Password.1"))
            .await
            .unwrap();
        assert_eq!(
            hasher(2048)
                .verify(&Password::new("Password.1"), Some(&old))
                .await
                .unwrap(),
            Verification::Match { needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_hashing_and_verification() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let h = hasher(1024);
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"Password.1", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert_eq!(
            h.verify(&Password::new("Password.1"), Some(&theirs))
                .await
                .unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Password::new("Password.2"), Some(&theirs))
                .await
                .unwrap(),
            Verification::Mismatch
        );
        let ours = h.hash(&Password::new("Password.1")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"Password.1", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"Password.2", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_one_buffer_per_slot() {
        let h = hasher(1024);
        let password = Password::new("Password.1");
        let stored = h.hash(&password).await.unwrap();
        let checks: Vec<_> = (0..8).map(|_| h.verify(&password, Some(&stored))).collect();
        for check in checks {
            check.await.unwrap();
        }
        let spare = h.inner.memory.spare.lock().unwrap().len();
        assert!((1..=2).contains(&spare), "{spare} buffers for 2 slots");
    }

    #[tokio::test]
    async fn garbage_hashes_do_not_match() {
        let h = hasher(1024);
        assert_eq!(
            h.verify(&Password::new("x"), Some("not a hash"))
                .await
                .unwrap(),
            Verification::Mismatch
        );
    }
}
