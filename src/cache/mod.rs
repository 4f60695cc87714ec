//! Sessions, the per-account session index and throttle counters: in Redis, or in
//! process memory for the embedded default. Both pass the same contract tests.

pub mod memory;
pub mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;
