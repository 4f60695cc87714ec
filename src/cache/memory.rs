//! The in-process store of the embedded default (`memory://`): one process only, lost on
//! restart. It keeps the same expiry rules as Redis, on the monotonic clock.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::StaffId;
use crate::domain::session::SessionRecord;
use crate::idm::ports::{Counters, FailureCount, PortError, PortResult, SessionStore};

#[derive(Default)]
struct State {
    sessions: HashMap<String, (SessionRecord, Instant)>,
    index: HashMap<String, HashSet<String>>,
    failures: HashMap<String, (FailureCount, Instant)>,
    hits: HashMap<String, (u64, Instant)>,
    values: HashMap<String, (String, Instant)>,
    sets: HashMap<String, (HashSet<String>, Instant)>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

fn after(seconds: i64) -> Instant {
    Instant::now() + Duration::from_secs(u64::try_from(seconds.max(1)).unwrap_or(1))
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> PortResult<T> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| PortError::unavailable("memory store", "poisoned lock"))?;
        let state = &mut *guard;
        let now = Instant::now();
        // Expire lazily, as Redis would have.
        state.sessions.retain(|_, (_, until)| *until > now);
        state.failures.retain(|_, (_, until)| *until > now);
        state.hits.retain(|_, (_, until)| *until > now);
        state.values.retain(|_, (_, until)| *until > now);
        state.sets.retain(|_, (_, until)| *until > now);
        Ok(f(state))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn ping(&self) -> PortResult<()> {
        self.with(|_| ())
    }

    async fn insert(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()> {
        self.with(|s| {
            s.sessions
                .insert(key.to_owned(), (record.clone(), after(ttl_seconds)));
            s.index
                .entry(record.account_id.clone())
                .or_default()
                .insert(key.to_owned());
        })
    }

    async fn get(&self, key: &str) -> PortResult<Option<SessionRecord>> {
        self.with(|s| s.sessions.get(key).map(|(r, _)| r.clone()))
    }

    async fn update(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()> {
        self.with(|s| {
            if let Some(entry) = s.sessions.get_mut(key) {
                *entry = (record.clone(), after(ttl_seconds));
            }
        })
    }

    async fn remove(&self, key: &str, account: &StaffId) -> PortResult<()> {
        self.with(|s| {
            s.sessions.remove(key);
            if let Some(set) = s.index.get_mut(&account.0) {
                set.remove(key);
            }
        })
    }

    async fn list_for_account(
        &self,
        account: &StaffId,
    ) -> PortResult<Vec<(String, SessionRecord)>> {
        self.with(|s| {
            let keys = s.index.get(&account.0).cloned().unwrap_or_default();
            let live: Vec<_> = keys
                .iter()
                .filter_map(|k| s.sessions.get(k).map(|(r, _)| (k.clone(), r.clone())))
                .collect();
            if let Some(set) = s.index.get_mut(&account.0) {
                set.retain(|k| live.iter().any(|(l, _)| l == k));
            }
            live
        })
    }

    async fn remove_all_for_account(
        &self,
        account: &StaffId,
        keep: Option<&str>,
    ) -> PortResult<u64> {
        self.with(|s| {
            let keys = s.index.remove(&account.0).unwrap_or_default();
            let mut removed = 0;
            let mut kept = HashSet::new();
            for key in keys {
                if Some(key.as_str()) == keep {
                    kept.insert(key);
                } else if s.sessions.remove(&key).is_some() {
                    removed += 1;
                }
            }
            if !kept.is_empty() {
                s.index.insert(account.0.clone(), kept);
            }
            removed
        })
    }
}

#[async_trait]
impl Counters for MemoryStore {
    async fn failures(&self, key: &str) -> PortResult<FailureCount> {
        self.with(|s| s.failures.get(key).map(|(f, _)| *f).unwrap_or_default())
    }

    async fn add_failure(&self, key: &str, now: i64, ttl_seconds: i64) -> PortResult<FailureCount> {
        self.with(|s| {
            let entry = s
                .failures
                .entry(key.to_owned())
                .or_insert((FailureCount::default(), after(ttl_seconds)));
            entry.0.count += 1;
            entry.0.last_at = now;
            entry.1 = after(ttl_seconds);
            entry.0
        })
    }

    async fn clear(&self, key: &str) -> PortResult<()> {
        self.with(|s| {
            s.failures.remove(key);
            s.hits.remove(key);
        })
    }

    async fn hit(&self, key: &str, window_seconds: i64) -> PortResult<u64> {
        self.with(|s| {
            let entry = s
                .hits
                .entry(key.to_owned())
                .or_insert((0, after(window_seconds)));
            entry.0 += 1;
            entry.0
        })
    }

    async fn count(&self, key: &str) -> PortResult<u64> {
        self.with(|s| s.hits.get(key).map_or(0, |(n, _)| *n))
    }
}

#[async_trait]
impl crate::idm::ports::Ephemeral for MemoryStore {
    async fn put(&self, key: &str, value: &str, ttl_seconds: i64) -> PortResult<()> {
        self.with(|s| {
            s.values
                .insert(key.to_owned(), (value.to_owned(), after(ttl_seconds)));
        })
    }

    async fn get(&self, key: &str) -> PortResult<Option<String>> {
        self.with(|s| s.values.get(key).map(|(v, _)| v.clone()))
    }

    async fn take(&self, key: &str) -> PortResult<Option<String>> {
        self.with(|s| s.values.remove(key).map(|(v, _)| v))
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        self.with(|s| {
            s.values.remove(key);
        })
    }

    async fn add_member(&self, set: &str, member: &str, ttl_seconds: i64) -> PortResult<()> {
        self.with(|s| {
            let entry = s
                .sets
                .entry(set.to_owned())
                .or_insert_with(|| (HashSet::new(), after(ttl_seconds)));
            entry.0.insert(member.to_owned());
            entry.1 = after(ttl_seconds);
        })
    }

    async fn members(&self, set: &str) -> PortResult<Vec<String>> {
        self.with(|s| {
            s.sets
                .get(set)
                .map(|(m, _)| m.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn remove_member(&self, set: &str, member: &str) -> PortResult<()> {
        self.with(|s| {
            if let Some((members, _)) = s.sets.get_mut(set) {
                members.remove(member);
            }
        })
    }
}
