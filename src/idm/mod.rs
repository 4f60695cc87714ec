//! Use-cases. Each flow is one function here, taking `now` from its caller; the adapters
//! behind [`ports`] do the I/O.

pub mod clients;
pub mod keys;
pub mod oidc;
pub mod passwords;
pub mod ports;
pub mod sessions;
pub mod sign_in;
pub mod sso;
pub mod staff;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::crypto::keys::KeyEncryption;
use crate::crypto::{HashError, PasswordHasher};
use crate::domain::role::Denial;
use crate::domain::{PasswordPolicy, Violation};
use ports::{
    AuditEvent, AuditLog, ClientRegistry, ConsentStore, Counters, Directory, Ephemeral,
    MailComposer, MailQueue, PortError, SessionStore, SigningKeyStore, SsoStore, UpstreamOidc,
};

/// What went wrong, in domain words. `http::error` maps each to a status and a page.
#[derive(Debug, thiserror::Error)]
pub enum IdmError {
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("too many attempts; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("the temporary password has expired")]
    TemporaryPasswordExpired,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("the password does not meet the policy")]
    PasswordPolicy(Vec<Violation>),
    #[error("the password change was refused")]
    PasswordChangeRefused {
        current_wrong: bool,
        violations: Vec<Violation>,
    },
    #[error("the reset link is invalid, expired or used")]
    InvalidResetToken,
    #[error("not found")]
    NotFound,
    #[error("not allowed")]
    Forbidden,
    #[error("administrators change their own password with change-password")]
    OwnAccount,
    #[error("{0}")]
    InvalidInput(String),
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    #[error("password checks are overloaded")]
    Busy,
    #[error("{service} is unavailable")]
    Unavailable {
        service: &'static str,
        #[source]
        cause: PortError,
    },
    #[error("the single sign-on settings were refused")]
    SsoSetup(Vec<String>),
    #[error("single sign-on refused: {0}")]
    SsoRefused(String),
    #[error("no account for this single sign-on identity")]
    SsoNoAccount { agency_name: String },
    #[error("the agency signs in with single sign-on")]
    SsoRequired { email: String },
    #[error("the identity provider is unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PortError> for IdmError {
    fn from(err: PortError) -> Self {
        match err {
            PortError::Conflict { what } => Self::Conflict { what },
            PortError::Unavailable { service, .. } => Self::Unavailable {
                service,
                cause: err,
            },
        }
    }
}

impl From<HashError> for IdmError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Self::Busy,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<Denial> for IdmError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::NotFound => Self::NotFound,
            Denial::Forbidden => Self::Forbidden,
            Denial::OwnAccount => Self::OwnAccount,
        }
    }
}

/// Who is asking and when: filled in by the HTTP edge (or the CLI).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub now: i64,
    pub ip: String,
    pub user_agent: String,
}

/// Timings and limits the use-cases apply.
#[derive(Debug, Clone)]
pub struct Rules {
    pub public_base: String,
    pub session_idle_seconds: i64,
    pub session_absolute_seconds: i64,
    pub temporary_valid_seconds: i64,
    pub reset_valid_seconds: i64,
    pub account_free_failures: u32,
    pub account_delay_initial_seconds: i64,
    pub account_delay_max_seconds: i64,
    pub ip_max_failures: u64,
    pub ip_window_seconds: i64,
    pub reset_mails_per_address_per_hour: u64,
    pub reset_mails_per_ip_per_hour: u64,
    pub access_token_seconds: i64,
    pub id_token_seconds: i64,
    pub refresh_token_seconds: i64,
    pub code_seconds: i64,
    pub key_activation_delay_seconds: i64,
    /// Plain-http issuers on loopback are accepted (local development and tests).
    pub allow_http_loopback_issuers: bool,
}

/// The application: every use-case hangs off this.
#[derive(Clone)]
pub struct Idm {
    pub directory: Arc<dyn Directory>,
    pub audit: Arc<dyn AuditLog>,
    pub mail_queue: Arc<dyn MailQueue>,
    pub composer: Arc<dyn MailComposer>,
    pub sessions: Arc<dyn SessionStore>,
    pub counters: Arc<dyn Counters>,
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub rules: Rules,
    /// Wakes the mail worker when a mail is queued.
    pub mail_ready: Arc<Notify>,
    pub clients: Arc<dyn ClientRegistry>,
    pub signing_keys: Arc<dyn SigningKeyStore>,
    pub consents: Arc<dyn ConsentStore>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub key_encryption: Arc<KeyEncryption>,
    pub key_cache: Arc<tokio::sync::Mutex<keys::KeyCache>>,
    pub sso: Arc<dyn SsoStore>,
    pub upstream: Arc<dyn UpstreamOidc>,
}

impl Idm {
    /// Writes an audit event; a failure is logged, never shown to the user.
    pub(crate) async fn audit(&self, event: AuditEvent) {
        if let Err(err) = self.audit.record(&event).await {
            tracing::error!(event = event.event, error = %err, "audit record failed");
        }
    }
}
