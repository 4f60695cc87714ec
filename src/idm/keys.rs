//! Signing keys over time.
//!
//! ```text
//!  rotate ─▶ new key published (JWKS) ─(activation delay)─▶ signs new tokens
//!  old key: still published until every token it signed has expired, then removed
//! ```
//! At any instant each algorithm signs with its newest key whose `active_from` has passed.

use std::sync::Arc;

use crate::crypto::keys::{self, Algorithm, KeyEncryption, PublicParts, SigningKey};
use crate::crypto::tokens;
use crate::idm::ports::StoredSigningKey;

use super::{Idm, IdmError};

/// How long decrypted keys are kept in memory before the store is read again.
const CACHE_SECONDS: i64 = 30;

pub struct LoadedKey {
    pub stored: StoredSigningKey,
    pub alg: Algorithm,
    pub key: Arc<SigningKey>,
}

#[derive(Default)]
pub struct KeyCache {
    loaded_at: Option<i64>,
    keys: Vec<Arc<LoadedKey>>,
}

impl KeyCache {
    pub fn invalidate(&mut self) {
        self.loaded_at = None;
    }
}

fn decrypt(kek: &KeyEncryption, stored: &StoredSigningKey) -> Result<LoadedKey, IdmError> {
    let alg = Algorithm::parse(&stored.alg)
        .ok_or_else(|| IdmError::Internal(format!("unknown key algorithm {}", stored.alg)))?;
    let pkcs8 = kek
        .open(&stored.kid, &stored.sealed_private)
        .map_err(|e| IdmError::Internal(e.to_string()))?;
    let public = PublicParts {
        a: stored.public_a.clone(),
        b: stored.public_b.clone(),
    };
    let key = SigningKey::from_pkcs8(&stored.kid, alg, &pkcs8, public)
        .map_err(|e| IdmError::Internal(e.to_string()))?;
    Ok(LoadedKey {
        stored: stored.clone(),
        alg,
        key: Arc::new(key),
    })
}

impl Idm {
    fn longest_token_seconds(&self) -> i64 {
        self.rules
            .access_token_seconds
            .max(self.rules.id_token_seconds)
    }

    /// Makes one key of each algorithm and stores it sealed; it signs from `active_from`.
    async fn create_keys(&self, now: i64, active_from: i64) -> Result<Vec<String>, IdmError> {
        let mut kids = Vec::new();
        for alg in [Algorithm::ES256, Algorithm::RS256] {
            let generated = tokio::task::spawn_blocking(move || keys::generate(alg))
                .await
                .map_err(|e| IdmError::Internal(e.to_string()))?
                .map_err(|e| IdmError::Internal(e.to_string()))?;
            let kid = format!(
                "{}-{}",
                alg.as_str().to_lowercase(),
                &tokens::random_id()[..16]
            );
            let sealed = self
                .key_encryption
                .seal(&kid, &generated.pkcs8)
                .map_err(|e| IdmError::Internal(e.to_string()))?;
            self.signing_keys
                .insert_signing_key(&StoredSigningKey {
                    kid: kid.clone(),
                    alg: alg.as_str().to_owned(),
                    sealed_private: sealed,
                    public_a: generated.public.a,
                    public_b: generated.public.b,
                    created_at: now,
                    active_from,
                })
                .await?;
            kids.push(kid);
        }
        self.key_cache.lock().await.invalidate();
        Ok(kids)
    }

    /// On first start: keys that sign at once.
    pub async fn ensure_signing_keys(&self, now: i64) -> Result<(), IdmError> {
        if self.signing_keys.signing_keys().await?.is_empty() {
            self.create_keys(now, now).await?;
            tracing::info!("signing keys created");
        }
        Ok(())
    }

    /// `latchkey keys rotate`: publish new keys now, sign with them after the delay, and
    /// drop keys whose every token has expired.
    pub async fn rotate_keys(&self, now: i64) -> Result<Vec<String>, IdmError> {
        let kids = self
            .create_keys(now, now + self.rules.key_activation_delay_seconds)
            .await?;
        for retired in self.retired_keys(now).await? {
            self.signing_keys.delete_signing_key(&retired).await?;
        }
        self.key_cache.lock().await.invalidate();
        Ok(kids)
    }

    async fn loaded_keys(&self, now: i64) -> Result<Vec<Arc<LoadedKey>>, IdmError> {
        let mut cache = self.key_cache.lock().await;
        let fresh = cache
            .loaded_at
            .is_some_and(|at| now >= at && now - at < CACHE_SECONDS);
        if !fresh {
            let stored = self.signing_keys.signing_keys().await?;
            let mut loaded = Vec::with_capacity(stored.len());
            for key in &stored {
                loaded.push(Arc::new(decrypt(&self.key_encryption, key)?));
            }
            cache.keys = loaded;
            cache.loaded_at = Some(now);
        }
        Ok(cache.keys.clone())
    }

    /// The key that signs with `alg` at `now`.
    pub async fn signing_key(&self, alg: Algorithm, now: i64) -> Result<Arc<SigningKey>, IdmError> {
        self.loaded_keys(now)
            .await?
            .iter()
            .filter(|k| k.alg == alg && k.stored.active_from <= now)
            .max_by_key(|k| (k.stored.active_from, k.stored.created_at))
            .map(|k| k.key.clone())
            .ok_or_else(|| IdmError::Internal(format!("no active {} key", alg.as_str())))
    }

    /// Keys no longer needed: a newer key of the same algorithm has been signing for
    /// longer than any token lives.
    async fn retired_keys(&self, now: i64) -> Result<Vec<String>, IdmError> {
        let keys = self.signing_keys.signing_keys().await?;
        let lifetime = self.longest_token_seconds();
        Ok(keys
            .iter()
            .filter(|key| {
                keys.iter().any(|newer| {
                    newer.alg == key.alg
                        && (newer.active_from, newer.created_at) > (key.active_from, key.created_at)
                        && newer.active_from + lifetime <= now
                })
            })
            .map(|key| key.kid.clone())
            .collect())
    }

    /// What the JWKS publishes: every key that is pending or may still verify a token.
    pub async fn published_keys(
        &self,
        now: i64,
    ) -> Result<Vec<(String, Algorithm, PublicParts)>, IdmError> {
        let retired = self.retired_keys(now).await?;
        Ok(self
            .loaded_keys(now)
            .await?
            .iter()
            .filter(|k| !retired.contains(&k.stored.kid))
            .map(|k| (k.stored.kid.clone(), k.alg, k.key.public.clone()))
            .collect())
    }
}
