//! Pure values and rules: no I/O, no async, no clock reads. Every rule of the password
//! policy lives in [`password`]; who may do what lives in [`role`].

pub mod account;
pub mod email;
pub mod oauth;
pub mod password;
pub mod role;
pub mod secret;
pub mod session;
pub mod sso;

pub use account::{Agency, AgencyId, StaffAccount, StaffId, StaffStatus};
pub use email::EmailAddress;
pub use password::{Password, PasswordKind, PasswordPolicy, Violation};
pub use role::Role;
pub use secret::Secret;
