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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use tokio::sync::Semaphore;

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
        let dummy_hash = hash_blocking(&params, &crate::crypto::tokens::random_token(24))?;
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                slots: Semaphore::new(slot_count),
                slot_count,
                waiting: AtomicUsize::new(0),
                max_waiting,
                dummy_hash,
            }),
        })
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
        let params = self.inner.params.clone();
        let secret = password.expose().to_owned();
        self.run(move || hash_blocking(&params, &secret)).await?
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
        let wanted = self.inner.params.clone();
        let outcome = self
            .run(move || verify_blocking(&wanted, &hash, &secret))
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

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, secret: &str) -> Result<String, HashError> {
    use argon2::PasswordHasher as _;
    let salt = SaltString::generate(&mut OsRng);
    argon2id(params)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

fn verify_blocking(wanted: &Params, stored: &str, secret: &str) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification::Mismatch;
    };
    // The stored hash names its own algorithm and parameters; verify with those.
    if Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_err()
    {
        return Verification::Mismatch;
    }
    let current = Params::try_from(&parsed).ok();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || current.is_none_or(|p| {
            p.m_cost() != wanted.m_cost()
                || p.t_cost() != wanted.t_cost()
                || p.p_cost() != wanted.p_cost()
        });
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
