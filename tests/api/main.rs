//! The one integration test binary: every module is a set of journeys over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod admin_api;
mod attacks;
mod bad_input;
mod embedded_default;
mod helpers;
mod oidc;
mod oidc_node_client;
mod oidc_rust_client;
mod outages;
mod permissions;
mod self_service;
mod sessions;
mod sign_in;
mod sso;
mod store_contract;
mod walkthrough;
