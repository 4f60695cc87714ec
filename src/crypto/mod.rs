//! Password hashing and random tokens.

pub mod hasher;
pub mod jwt;
pub mod keys;
pub mod tokens;

pub use hasher::{HashError, PasswordHasher, Verification};
