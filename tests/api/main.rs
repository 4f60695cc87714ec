//! The one integration test binary: every module is a set of journeys over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod bad_input;
mod embedded_default;
mod helpers;
mod outages;
mod permissions;
mod self_service;
mod sessions;
mod sign_in;
mod store_contract;
mod walkthrough;
