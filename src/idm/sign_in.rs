//! Password sign-in.
//!
//! ```text
//!  email + password ─▶ throttled? ──yes──▶ Throttled (429)
//!                         │ no: take the attempt (counted as a failure until it matches)
//!                         ▼
//!            verify (stored hash, or the dummy hash for an unknown email)
//!                 │ mismatch ──▶ count IP failure ──▶ InvalidCredentials (401)
//!                 ▼ match: clear the account count
//!      disabled? ─▶ AccountDisabled     temporary & expired? ─▶ TemporaryPasswordExpired
//!                 ▼
//!      temporary ─▶ session PasswordChangeRequired     chosen ─▶ session Full
//! ```
//! An unknown email walks the same path as a wrong password: same throttle keys, one
//! argon2 verification, same error.

use crate::crypto::Verification;
use crate::crypto::tokens;
use crate::domain::account::PasswordState;
use crate::domain::session::{AuthMethod, SessionKind};
use crate::domain::{EmailAddress, Password, StaffId};

use super::ports::{AuditEvent, FailureCount};
use super::sessions::NewSession;
use super::sso::PasswordRule;
use super::{Idm, IdmError, RequestContext};

/// How long a failure streak is remembered.
const FAILURE_MEMORY_SECONDS: i64 = 24 * 3600;

pub(crate) fn account_throttle_key(email: &str) -> String {
    format!("fail:acct:{}", tokens::digest(&email.trim().to_lowercase()))
}

fn device_throttle_key(device: &str) -> String {
    format!("fail:device:{device}")
}

/// A browser that signed in to this account before (proved by a signed cookie). Its
/// attempts count against its own budget, so a stranger's guessing, which locks the
/// account's shared budget, does not lock the holder out of their usual browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedDevice {
    pub account: StaffId,
    /// A digest of the cookie, naming this browser's counter.
    pub id: String,
}

fn ip_throttle_key(ip: &str) -> String {
    format!("fail:ip:{ip}")
}

impl Idm {
    /// Seconds until an account key with these failures may try again, or 0.
    fn wait_after(&self, failures: FailureCount, now: i64) -> u64 {
        let free = self.rules.account_free_failures;
        if failures.count < free {
            return 0;
        }
        let doublings = (failures.count - free).min(30);
        let delay = self
            .rules
            .account_delay_initial_seconds
            .saturating_mul(1_i64 << doublings)
            .min(self.rules.account_delay_max_seconds);
        let ready_at = failures.last_at + delay;
        u64::try_from(ready_at - now).unwrap_or(0)
    }

    /// Takes one password attempt for the account key, or says how long to wait.
    ///
    /// The attempt is counted as a failure before the password is checked (a match clears
    /// the count), so that concurrent guesses cannot all pass the check before any of them
    /// is counted: past the free failures, of the attempts that read the same count only
    /// the one whose increment follows that count directly goes on.
    pub(crate) async fn take_account_attempt(&self, key: &str, now: i64) -> Result<(), IdmError> {
        let before = self.counters.failures(key).await?;
        let wait = self.wait_after(before, now);
        if wait > 0 {
            return Err(IdmError::Throttled { retry_after: wait });
        }
        let after = self
            .counters
            .add_failure(key, now, FAILURE_MEMORY_SECONDS)
            .await?;
        let taken = after.count.saturating_sub(1);
        if taken >= self.rules.account_free_failures && taken != before.count {
            return Err(IdmError::Throttled {
                retry_after: self.wait_after(after, now).max(1),
            });
        }
        Ok(())
    }

    pub async fn sign_in(
        &self,
        email_input: &str,
        password_input: &str,
        resume_to: Option<String>,
        device: Option<&TrustedDevice>,
        context: &RequestContext,
    ) -> Result<NewSession, IdmError> {
        let now = context.now;
        let password = Password::new(password_input);
        if !self.policy.within_max_length(&password) {
            // No stored password can be this long; refuse before any hashing.
            return Err(IdmError::InvalidCredentials);
        }
        let ip_key = ip_throttle_key(&context.ip);
        if self.counters.count(&ip_key).await? >= self.rules.ip_max_failures {
            return Err(IdmError::Throttled {
                retry_after: u64::try_from(self.rules.ip_window_seconds).unwrap_or(60),
            });
        }
        let email = EmailAddress::parse(email_input).ok();
        // Identifier-first: an enforcing agency's staff go to their identity provider, and
        // no password of theirs is checked here.
        let break_glass = match &email {
            Some(email) => match self.password_rule(email).await? {
                PasswordRule::SsoRequired => {
                    return Err(IdmError::SsoRequired {
                        email: email.to_string(),
                    });
                }
                PasswordRule::BreakGlass => true,
                PasswordRule::Allowed => false,
            },
            None => false,
        };
        let account = match &email {
            Some(email) => self.directory.staff_by_email(email).await?,
            None => None,
        };
        let account_key = match (&account, device) {
            (Some(account), Some(device)) if device.account == account.id => {
                device_throttle_key(&device.id)
            }
            _ => account_throttle_key(email.as_ref().map_or(email_input, EmailAddress::as_str)),
        };
        self.take_account_attempt(&account_key, now).await?;

        let stored = account.as_ref().and_then(|a| a.password_hash.as_deref());
        let verification = self.hasher.verify(&password, stored).await?;

        let (Verification::Match { needs_rehash }, Some(account)) = (verification, account.clone())
        else {
            // The failure was counted when the attempt was taken.
            self.counters
                .hit(&ip_key, self.rules.ip_window_seconds)
                .await?;
            if let Some(account) = account {
                self.audit(
                    AuditEvent::about(&account, "sign_in_failed", context)
                        .detail("method=password"),
                )
                .await;
            }
            tracing::info!(ip = %context.ip, "sign-in refused: wrong email or password");
            return Err(IdmError::InvalidCredentials);
        };
        self.counters.clear(&account_key).await?;

        if !account.is_active() {
            return Err(IdmError::AccountDisabled);
        }
        let kind = match account.password_state {
            PasswordState::Temporary { expires_at } if now >= expires_at => {
                self.audit(AuditEvent::about(
                    &account,
                    "sign_in_refused_temporary_expired",
                    context,
                ))
                .await;
                return Err(IdmError::TemporaryPasswordExpired);
            }
            PasswordState::Temporary { .. } => SessionKind::PasswordChangeRequired,
            PasswordState::Chosen | PasswordState::None => SessionKind::Full,
        };
        if needs_rehash
            && let (Some(old), Ok(new)) = (stored, self.hasher.hash(&password).await)
            && let Err(err) = self.directory.upgrade_hash(&account.id, old, &new).await
        {
            tracing::warn!(account = %account.id, error = %err, "hash upgrade failed");
        }
        if kind == SessionKind::PasswordChangeRequired {
            // A temporary password opens one change session at a time.
            self.revoke_all_sessions_of(&account.id, None).await?;
        }
        let session = self
            .start_session(&account, kind, AuthMethod::Password, resume_to, context)
            .await?;
        self.audit(AuditEvent {
            agency_id: Some(account.agency_id.clone()),
            at: now,
            event: "sign_in_succeeded",
            actor: Some(account.id.clone()),
            subject: Some(account.id.clone()),
            ip: context.ip.clone(),
            detail: match kind {
                SessionKind::Full => "method=password".into(),
                SessionKind::PasswordChangeRequired => "method=password temporary=true".into(),
            },
        })
        .await;
        if break_glass {
            self.audit(
                AuditEvent::about(&account, "break_glass_sign_in", context)
                    .by(&account.id)
                    .detail("owner password sign-in while single sign-on is enforced"),
            )
            .await;
            tracing::warn!(account = %account.id, "break-glass password sign-in");
        }
        tracing::info!(account = %account.id, "signed in");
        Ok(NewSession {
            break_glass,
            ..session
        })
    }
}
