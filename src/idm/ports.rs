//! The traits the adapters implement. Use-cases see only these.

use async_trait::async_trait;

use crate::domain::account::PasswordState;
use crate::domain::session::SessionRecord;
use crate::domain::{Agency, AgencyId, EmailAddress, Role, StaffAccount, StaffId, StaffStatus};

/// A failure of the database, Redis or SMTP: the operation may work when retried.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
    },
}

impl PortError {
    pub fn unavailable(service: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            service,
            message: err.to_string(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// The clock. Only the HTTP edge and the worker read it; use-cases take `now`.
pub trait Clock: Send + Sync {
    /// Unix time in seconds.
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

#[derive(Debug, Clone, Default)]
pub struct StaffFilter {
    /// Matches name or email, case-insensitively.
    pub query: Option<String>,
    pub role: Option<Role>,
    pub status: Option<StaffStatus>,
}

/// A security event for the agency's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub agency_id: Option<AgencyId>,
    pub at: i64,
    pub event: &'static str,
    pub actor: Option<StaffId>,
    pub subject: Option<StaffId>,
    pub ip: String,
    /// Extra facts as `key=value` text; never a secret.
    pub detail: String,
}

impl AuditEvent {
    /// An event about `subject`, in its agency, from the request in `context`.
    pub fn about(
        subject: &crate::domain::StaffAccount,
        event: &'static str,
        context: &super::RequestContext,
    ) -> Self {
        Self {
            agency_id: Some(subject.agency_id.clone()),
            at: context.now,
            event,
            actor: None,
            subject: Some(subject.id.clone()),
            ip: context.ip.clone(),
            detail: String::new(),
        }
    }

    /// Who did it.
    pub fn by(mut self, actor: &StaffId) -> Self {
        self.actor = Some(actor.clone());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    pub at: i64,
    pub event: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub ip: String,
    pub detail: String,
}

/// A rendered mail, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub to: EmailAddress,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A mail whose content is useless after this instant (a reset link) is dropped then.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    pub id: String,
    pub attempts: i64,
    pub mail: OutgoingMail,
}

/// Everything one password change writes, applied in one transaction.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub hash: String,
    pub state: PasswordState,
    pub changed_at: i64,
    pub audit: AuditEvent,
    pub notify: Option<OutgoingMail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetTokenRecord {
    pub account_id: StaffId,
    pub expires_at: i64,
}

/// Agencies, staff accounts, passwords and reset tokens.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn ping(&self) -> PortResult<()>;

    async fn create_agency(&self, agency: &Agency) -> PortResult<()>;
    async fn agency(&self, id: &AgencyId) -> PortResult<Option<Agency>>;
    async fn agency_by_slug(&self, slug: &str) -> PortResult<Option<Agency>>;
    async fn count_agencies(&self) -> PortResult<i64>;

    async fn create_staff(&self, account: &StaffAccount) -> PortResult<()>;
    async fn staff_by_id(&self, id: &StaffId) -> PortResult<Option<StaffAccount>>;
    async fn staff_by_email(&self, email: &EmailAddress) -> PortResult<Option<StaffAccount>>;
    async fn list_staff(
        &self,
        agency: &AgencyId,
        filter: &StaffFilter,
    ) -> PortResult<Vec<StaffAccount>>;

    /// Sets a new password: bumps the password version, deletes every reset token of the
    /// account, writes the audit event and queues the notification, all in one transaction.
    async fn set_password(&self, account: &StaffId, change: &PasswordChange) -> PortResult<()>;

    /// Replaces a hash made with old parameters, unless the password changed meanwhile.
    async fn upgrade_hash(
        &self,
        account: &StaffId,
        old_hash: &str,
        new_hash: &str,
    ) -> PortResult<()>;

    /// Stores a reset token digest and deletes the account's older tokens.
    async fn replace_reset_token(
        &self,
        account: &StaffId,
        digest: &str,
        created_at: i64,
        expires_at: i64,
    ) -> PortResult<()>;

    async fn reset_token(&self, digest: &str) -> PortResult<Option<ResetTokenRecord>>;

    /// Consumes the token and sets the password in one transaction. Returns `false`, and
    /// changes nothing, when the token is gone or expired: exactly one of several
    /// concurrent redemptions wins.
    async fn redeem_reset_token(
        &self,
        digest: &str,
        now: i64,
        account: &StaffId,
        change: &PasswordChange,
    ) -> PortResult<bool>;

    /// A value shared by every replica (such as the CSRF key), created on first use.
    async fn instance_secret(&self, name: &str, candidate: &str) -> PortResult<String>;
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record(&self, event: &AuditEvent) -> PortResult<()>;
    async fn recent(&self, agency: &AgencyId, limit: i64) -> PortResult<Vec<StoredAuditEvent>>;
}

/// The durable outbox the mail worker drains.
#[async_trait]
pub trait MailQueue: Send + Sync {
    async fn enqueue(&self, mail: &OutgoingMail, now: i64) -> PortResult<()>;
    /// Leases up to `limit` due mails for `lease_seconds`, so replicas do not send twice.
    async fn claim_due(
        &self,
        now: i64,
        limit: i64,
        lease_seconds: i64,
    ) -> PortResult<Vec<QueuedMail>>;
    async fn mark_sent(&self, id: &str, now: i64) -> PortResult<()>;
    async fn mark_failed(&self, id: &str, retry_at: i64, error: &str) -> PortResult<()>;
    /// Drops mails whose content expired before they could be sent; returns how many.
    async fn drop_expired(&self, now: i64) -> PortResult<u64>;
}

/// Delivers one mail (SMTP, or the development outbox folder).
#[async_trait]
pub trait MailTransport: Send + Sync {
    async fn deliver(&self, mail: &OutgoingMail) -> Result<(), String>;
}

/// Turns a message into subject, text and HTML (implemented over the templates).
pub trait MailComposer: Send + Sync {
    fn compose(&self, to: &EmailAddress, message: &MailMessage) -> Result<OutgoingMail, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailMessage {
    ResetLink {
        name: String,
        agency_name: String,
        link: String,
        valid_minutes: u64,
        expires_at: i64,
    },
    ResetByAdministrator {
        name: String,
        agency_name: String,
    },
    ResetAtSso {
        name: String,
        agency_name: String,
    },
    PasswordChanged {
        name: String,
        agency_name: String,
        when: i64,
        how: &'static str,
    },
}

/// Sessions by the digest of their id, with a per-account index.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn ping(&self) -> PortResult<()>;
    async fn insert(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()>;
    async fn get(&self, key: &str) -> PortResult<Option<SessionRecord>>;
    /// Overwrites a record that still exists; a revoked session stays revoked.
    async fn update(&self, key: &str, record: &SessionRecord, ttl_seconds: i64) -> PortResult<()>;
    async fn remove(&self, key: &str, account: &StaffId) -> PortResult<()>;
    async fn list_for_account(&self, account: &StaffId)
    -> PortResult<Vec<(String, SessionRecord)>>;
    /// Ends every session of the account except `keep`; returns how many ended.
    async fn remove_all_for_account(
        &self,
        account: &StaffId,
        keep: Option<&str>,
    ) -> PortResult<u64>;
}

/// Consecutive failures on one key and the time of the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    pub count: u32,
    pub last_at: i64,
}

/// Counters for throttling sign-in and reset mail.
#[async_trait]
pub trait Counters: Send + Sync {
    async fn failures(&self, key: &str) -> PortResult<FailureCount>;
    async fn add_failure(&self, key: &str, now: i64, ttl_seconds: i64) -> PortResult<FailureCount>;
    async fn clear(&self, key: &str) -> PortResult<()>;
    /// Adds one to a counter that lives `window_seconds` from its first hit; returns the
    /// count including this hit.
    async fn hit(&self, key: &str, window_seconds: i64) -> PortResult<u64>;
    async fn count(&self, key: &str) -> PortResult<u64>;
}

/// Registered OAuth clients.
#[async_trait]
pub trait ClientRegistry: Send + Sync {
    async fn create_client(&self, client: &crate::domain::oauth::Client) -> PortResult<()>;
    async fn client(&self, id: &str) -> PortResult<Option<crate::domain::oauth::Client>>;
}

/// A signing key as stored: the private key sealed under the key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub alg: String,
    pub sealed_private: String,
    pub public_a: String,
    pub public_b: String,
    pub created_at: i64,
    /// Published from creation; used for signing only from this instant.
    pub active_from: i64,
}

#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> PortResult<()>;
    async fn signing_keys(&self) -> PortResult<Vec<StoredSigningKey>>;
    async fn delete_signing_key(&self, kid: &str) -> PortResult<()>;
}

/// Consent a person gave a third-party client, per scope.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    async fn consented_scopes(&self, account: &StaffId, client_id: &str)
    -> PortResult<Vec<String>>;
    async fn record_consent(
        &self,
        account: &StaffId,
        client_id: &str,
        scopes: &[String],
        now: i64,
    ) -> PortResult<()>;
}

/// Short-lived records (authorization codes, tokens, grant families, upstream sign-in
/// attempts), with expiry and an atomic take for single use.
#[async_trait]
pub trait Ephemeral: Send + Sync {
    async fn put(&self, key: &str, value: &str, ttl_seconds: i64) -> PortResult<()>;
    async fn get(&self, key: &str) -> PortResult<Option<String>>;
    /// Reads and deletes in one step: of several concurrent takers, one gets the value.
    async fn take(&self, key: &str) -> PortResult<Option<String>>;
    async fn delete(&self, key: &str) -> PortResult<()>;
    async fn add_member(&self, set: &str, member: &str, ttl_seconds: i64) -> PortResult<()>;
    async fn members(&self, set: &str) -> PortResult<Vec<String>>;
    async fn remove_member(&self, set: &str, member: &str) -> PortResult<()>;
}

/// A connection as stored: the secret sealed.
#[derive(Debug, Clone)]
pub struct StoredSsoConnection {
    pub agency_id: AgencyId,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_sealed: String,
    pub domains: Vec<String>,
    pub scopes: Vec<String>,
    pub enforce: bool,
    pub create_accounts: bool,
    pub updated_at: i64,
}

/// Agencies' SSO connections, their domains, and linked upstream identities.
#[async_trait]
pub trait SsoStore: Send + Sync {
    /// Saves (replaces) the agency's connection and its domains; `Conflict` when a domain
    /// belongs to another agency.
    async fn save_sso_connection(&self, connection: &StoredSsoConnection) -> PortResult<()>;
    async fn sso_connection(&self, agency: &AgencyId) -> PortResult<Option<StoredSsoConnection>>;
    async fn agency_for_domain(&self, domain: &str) -> PortResult<Option<AgencyId>>;
    async fn linked_account(&self, issuer: &str, subject: &str) -> PortResult<Option<StaffId>>;
    async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        account: &StaffId,
        now: i64,
    ) -> PortResult<()>;
}

/// Why an upstream step failed, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider's discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
}

/// The upstream OpenID Connect provider, as a relying party sees it.
#[async_trait]
pub trait UpstreamOidc: Send + Sync {
    /// Fetches and checks the issuer's discovery document (and JWKS).
    async fn discover(&self, issuer: &str) -> Result<(), UpstreamError>;
    #[allow(clippy::too_many_arguments)]
    async fn authorization_url(
        &self,
        connection: &crate::domain::sso::SsoConnection,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        login_hint: Option<&str>,
    ) -> Result<String, UpstreamError>;
    /// Exchanges the code and verifies the ID token (issuer, audience, expiry at `now`,
    /// nonce, signature).
    async fn exchange(
        &self,
        connection: &crate::domain::sso::SsoConnection,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<crate::domain::sso::UpstreamIdentity, UpstreamError>;
}
