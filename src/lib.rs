//! Latchkey: the sign-in service and OpenID Connect provider for estate agency staff.
//!
//! Layers point one way: `http` → `idm` → `domain`. The adapters (`store`, `cache`,
//! `mail`) implement the ports declared in `idm::ports`, and `startup` is the one place
//! that names concrete adapters.

pub mod config;
pub mod crypto;
pub mod domain;
pub mod idm;
pub mod store;
pub mod cache;
