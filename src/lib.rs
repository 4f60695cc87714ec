//! Latchkey: the sign-in service and OpenID Connect provider for estate agency staff.
//!
//! Layers point one way: `http` → `idm` → `domain`. The adapters (`store`, `cache`,
//! `mail`) implement the ports declared in `idm::ports`, and `startup` is the one place
//! that names concrete adapters.

pub mod cache;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod idm;
pub mod mail;
pub mod metrics;
pub mod render;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod worker;
