//! The Redis adapter.
//!
//! Keys, under the configured prefix:
//! - `s:<digest>`: a session record (JSON, under 1 KB), expiring at its idle/absolute limit;
//! - `as:<account>`: the set of an account's session digests, so that every session of
//!   an account can be ended at once;
//! - `fail:…`, `reset:…`: throttle counters with their own expiry.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

use crate::domain::StaffId;
use crate::domain::session::SessionRecord;
use crate::idm::ports::{Counters, FailureCount, PortError, PortResult, SessionStore};

const REMOVE_ALL: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, member in ipairs(members) do
  if member ~= ARGV[2] then
    removed = removed + redis.call('DEL', ARGV[1] .. member)
    redis.call('SREM', KEYS[1], member)
  end
end
return removed
";

pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    index_ttl_seconds: i64,
    remove_all: Script,
}

fn unavailable(err: impl std::fmt::Display) -> PortError {
    PortError::unavailable("redis", err)
}

impl RedisStore {
    /// Does not connect yet: the first command does, and the connection manager
    /// reconnects by itself after Redis comes back.
    pub fn new(url: &str, prefix: &str, index_ttl_seconds: i64) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
            index_ttl_seconds,
            remove_all: Script::new(REMOVE_ALL),
        })
    }

    async fn connection(&self) -> PortResult<ConnectionManager> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(2))
                    .set_number_of_retries(1);
                self.client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}s:{key}", self.prefix)
    }

    fn index_key(&self, account: &StaffId) -> String {
        format!("{}as:{}", self.prefix, account.0)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn encode(record: &SessionRecord) -> PortResult<String> {
    serde_json::to_string(record).map_err(unavailable)
}

fn ttl(seconds: i64) -> u64 {
    u64::try_from(seconds.max(1)).unwrap_or(1)
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn ping(&self) -> PortResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn insert(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()> {
        let mut conn = self.connection().await?;
        let index = self.index_key(&record.staff_id());
        redis::pipe()
            .atomic()
            .set_ex(self.session_key(key), encode(record)?, ttl(ttl_seconds))
            .ignore()
            .sadd(&index, key)
            .ignore()
            .expire(&index, self.index_ttl_seconds)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> PortResult<Option<SessionRecord>> {
        let mut conn = self.connection().await?;
        let raw: Option<String> = conn.get(self.session_key(key)).await.map_err(unavailable)?;
        Ok(raw.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn update(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("SET")
            .arg(self.session_key(key))
            .arg(encode(record)?)
            .arg("EX")
            .arg(ttl(ttl_seconds))
            .arg("XX")
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn remove(&self, key: &str, account: &StaffId) -> PortResult<()> {
        let mut conn = self.connection().await?;
        redis::pipe()
            .atomic()
            .del(self.session_key(key))
            .ignore()
            .srem(self.index_key(account), key)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_for_account(
        &self,
        account: &StaffId,
    ) -> PortResult<Vec<(String, SessionRecord)>> {
        let mut conn = self.connection().await?;
        let index = self.index_key(account);
        let members: Vec<String> = conn.smembers(&index).await.map_err(unavailable)?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members.iter().map(|m| self.session_key(m)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (member, value) in members.into_iter().zip(values) {
            match value.and_then(|json| serde_json::from_str(&json).ok()) {
                Some(record) => live.push((member, record)),
                None => gone.push(member),
            }
        }
        if !gone.is_empty() {
            let _: () = conn.srem(&index, gone).await.map_err(unavailable)?;
        }
        Ok(live)
    }

    async fn remove_all_for_account(
        &self,
        account: &StaffId,
        keep: Option<&str>,
    ) -> PortResult<u64> {
        let mut conn = self.connection().await?;
        self.remove_all
            .key(self.index_key(account))
            .arg(self.session_key(""))
            .arg(keep.unwrap_or(""))
            .invoke_async::<u64>(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl Counters for RedisStore {
    async fn failures(&self, key: &str) -> PortResult<FailureCount> {
        let mut conn = self.connection().await?;
        let (count, last_at): (Option<u32>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.counter_key(key))
            .arg("n")
            .arg("t")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(FailureCount {
            count: count.unwrap_or(0),
            last_at: last_at.unwrap_or(0),
        })
    }

    async fn add_failure(&self, key: &str, now: i64, ttl_seconds: i64) -> PortResult<FailureCount> {
        let mut conn = self.connection().await?;
        let key = self.counter_key(key);
        let (count,): (u32,) = redis::pipe()
            .atomic()
            .hincr(&key, "n", 1)
            .hset(&key, "t", now)
            .ignore()
            .expire(&key, ttl_seconds)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(FailureCount {
            count,
            last_at: now,
        })
    }

    async fn clear(&self, key: &str) -> PortResult<()> {
        let mut conn = self.connection().await?;
        conn.del(self.counter_key(key)).await.map_err(unavailable)
    }

    async fn hit(&self, key: &str, window_seconds: i64) -> PortResult<u64> {
        let mut conn = self.connection().await?;
        let key = self.counter_key(key);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("EX")
            .arg(ttl(window_seconds))
            .arg("NX")
            .ignore()
            .incr(&key, 1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(count)
    }

    async fn count(&self, key: &str) -> PortResult<u64> {
        let mut conn = self.connection().await?;
        let value: Option<u64> = conn.get(self.counter_key(key)).await.map_err(unavailable)?;
        Ok(value.unwrap_or(0))
    }
}

#[async_trait]
impl crate::idm::ports::Ephemeral for RedisStore {
    async fn put(&self, key: &str, value: &str, ttl_seconds: i64) -> PortResult<()> {
        let mut conn = self.connection().await?;
        conn.set_ex(self.counter_key(key), value, ttl(ttl_seconds))
            .await
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> PortResult<Option<String>> {
        let mut conn = self.connection().await?;
        conn.get(self.counter_key(key)).await.map_err(unavailable)
    }

    async fn take(&self, key: &str) -> PortResult<Option<String>> {
        let mut conn = self.connection().await?;
        redis::cmd("GETDEL")
            .arg(self.counter_key(key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        let mut conn = self.connection().await?;
        conn.del(self.counter_key(key)).await.map_err(unavailable)
    }

    async fn add_member(&self, set: &str, member: &str, ttl_seconds: i64) -> PortResult<()> {
        let mut conn = self.connection().await?;
        let key = self.counter_key(set);
        redis::pipe()
            .atomic()
            .sadd(&key, member)
            .ignore()
            .expire(&key, ttl_seconds.max(1))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn members(&self, set: &str) -> PortResult<Vec<String>> {
        let mut conn = self.connection().await?;
        conn.smembers(self.counter_key(set))
            .await
            .map_err(unavailable)
    }

    async fn remove_member(&self, set: &str, member: &str) -> PortResult<()> {
        let mut conn = self.connection().await?;
        conn.srem(self.counter_key(set), member)
            .await
            .map_err(unavailable)
    }
}
