//! Every way a password is set: the forced and the voluntary change, the administrator's
//! temporary password, and the emailed reset link.
//!
//! After any of them the account's other sessions end, an audit record is written and
//! the holder is mailed "your password was changed" (without the password). The audit
//! record and the mail are written in the same transaction as the new hash.
//!
//! Reset link:
//! ```text
//!  request ─▶ (agency has SSO?) ─yes─▶ token issued (older ones deleted) ─▶ mail with link
//!                  └─no─▶ mail: "an administrator resets it"   (unknown email: nothing)
//!  GET link ─▶ form only (never consumes)
//!  POST link ─▶ policy ─▶ hash ─▶ consume token + set password in one transaction
//!                                   └─ token already gone ─▶ InvalidResetToken
//! ```

use crate::crypto::Verification;
use crate::crypto::tokens;
use crate::domain::account::PasswordState;
use crate::domain::password::PolicyContext;
use crate::domain::session::SessionKind;
use crate::domain::{
    Agency, EmailAddress, Password, PasswordKind, StaffAccount, StaffId, Violation,
};

use super::ports::{AuditEvent, MailMessage, OutgoingMail, PasswordChange};
use super::sessions::{CurrentSession, NewSession};
use super::sign_in::account_throttle_key;
use super::sso::PasswordRule;
use super::{Idm, IdmError, RequestContext};

/// What the three form fields of a new password hold.
pub struct NewPasswordForm<'a> {
    pub new_password: &'a str,
    pub confirm_password: &'a str,
}

impl Idm {
    async fn account_and_agency(&self, id: &StaffId) -> Result<(StaffAccount, Agency), IdmError> {
        let account = self
            .directory
            .staff_by_id(id)
            .await?
            .ok_or(IdmError::NotFound)?;
        let agency = self
            .directory
            .agency(&account.agency_id)
            .await?
            .ok_or(IdmError::NotFound)?;
        Ok((account, agency))
    }

    fn changed_mail(
        &self,
        account: &StaffAccount,
        agency: &Agency,
        now: i64,
        how: &'static str,
    ) -> Option<OutgoingMail> {
        let message = MailMessage::PasswordChanged {
            name: account.name.clone(),
            agency_name: agency.name.clone(),
            when: now,
            how,
        };
        match self.composer.compose(&account.email, &message) {
            Ok(mail) => Some(mail),
            Err(err) => {
                tracing::error!(account = %account.id, error = %err, "could not compose mail");
                None
            }
        }
    }

    fn check_new_password(
        &self,
        account: &StaffAccount,
        form: &NewPasswordForm<'_>,
        current: Option<&Password>,
    ) -> (Password, Vec<Violation>) {
        let new = Password::new(form.new_password);
        let context = PolicyContext {
            email: &account.email,
            current,
        };
        let mut violations = self
            .policy
            .check(&new, PasswordKind::Chosen, &context)
            .err()
            .unwrap_or_default();
        if Password::new(form.confirm_password) != new {
            violations.push(Violation::ConfirmationMismatch);
        }
        (new, violations)
    }

    /// Changes the signed-in user's password: the forced change after a temporary
    /// password, or a voluntary one. Every session of the account ends, and the caller
    /// gets a new full session (a new id), resuming where a forced change interrupted.
    pub async fn change_password(
        &self,
        session: &CurrentSession,
        current_input: &str,
        form: &NewPasswordForm<'_>,
        context: &RequestContext,
    ) -> Result<NewSession, IdmError> {
        let now = context.now;
        let (account, agency) = self.account_and_agency(&session.record.staff_id()).await?;
        let current = Password::new(current_input);
        let (new, violations) = self.check_new_password(&account, form, Some(&current));

        let throttle_key = account_throttle_key(account.email.as_str());
        self.take_account_attempt(&throttle_key, now).await?;
        let current_ok = self.policy.within_max_length(&current)
            && matches!(
                self.hasher
                    .verify(&current, account.password_hash.as_deref())
                    .await?,
                Verification::Match { .. }
            );
        if current_ok {
            // The attempt was counted as a failure when taken; the right password clears it.
            self.counters.clear(&throttle_key).await?;
        }
        if !current_ok || !violations.is_empty() {
            return Err(IdmError::PasswordChangeRefused {
                current_wrong: !current_ok,
                violations,
            });
        }
        let forced = matches!(account.password_state, PasswordState::Temporary { .. });
        if let PasswordState::Temporary { expires_at } = account.password_state
            && now >= expires_at
        {
            return Err(IdmError::TemporaryPasswordExpired);
        }

        let hash = self.hasher.hash(&new).await?;
        let how = if forced {
            "changed at sign-in after a temporary password"
        } else {
            "changed by you"
        };
        self.sessions.ping().await?;
        self.directory
            .set_password(
                &account.id,
                &PasswordChange {
                    hash,
                    state: PasswordState::Chosen,
                    changed_at: now,
                    audit: AuditEvent {
                        agency_id: Some(account.agency_id.clone()),
                        at: now,
                        event: "password_changed",
                        actor: Some(account.id.clone()),
                        subject: Some(account.id.clone()),
                        ip: context.ip.clone(),
                        detail: if forced {
                            "forced=true".into()
                        } else {
                            "forced=false".into()
                        },
                    },
                    notify: self.changed_mail(&account, &agency, now, how),
                },
            )
            .await?;
        self.mail_ready.notify_one();
        self.revoke_all_sessions_of(&account.id, None).await?;
        let resume_to = session.record.resume_to.clone();
        let fresh = self
            .start_session(
                &account,
                SessionKind::Full,
                session.record.method,
                resume_to,
                context,
            )
            .await?;
        tracing::info!(account = %account.id, forced, "password changed");
        Ok(fresh)
    }

    /// An owner or client administrator sets a temporary password for a colleague. The
    /// colleague must change it at the next sign-in; their sessions end now.
    pub async fn admin_reset(
        &self,
        actor: &StaffId,
        target_id: &str,
        temporary_input: &str,
        context: &RequestContext,
    ) -> Result<StaffAccount, IdmError> {
        let now = context.now;
        let (actor, _) = self.account_and_agency(actor).await?;
        let target = self.admin_target(&actor, target_id).await?;
        actor.may_admin_reset(&target)?;
        let agency = self
            .directory
            .agency(&target.agency_id)
            .await?
            .ok_or(IdmError::NotFound)?;
        let temporary = Password::new(temporary_input);
        let context_for_policy = PolicyContext {
            email: &target.email,
            current: None,
        };
        self.policy
            .check(&temporary, PasswordKind::Temporary, &context_for_policy)
            .map_err(IdmError::PasswordPolicy)?;
        let hash = self.hasher.hash(&temporary).await?;
        // Make sure sessions can be ended before anything changes.
        self.revoke_all_sessions_of(&target.id, None).await?;
        self.directory
            .set_password(
                &target.id,
                &PasswordChange {
                    hash,
                    state: PasswordState::Temporary {
                        expires_at: now + self.rules.temporary_valid_seconds,
                    },
                    changed_at: now,
                    audit: AuditEvent::about(&target, "admin_password_reset", context)
                        .by(&actor.id)
                        .detail(format!("actor_role={}", actor.role)),
                    notify: self.changed_mail(
                        &target,
                        &agency,
                        now,
                        "reset by an administrator of your agency",
                    ),
                },
            )
            .await?;
        self.mail_ready.notify_one();
        // A sign-in may have slipped in between; end it too.
        self.revoke_all_sessions_of(&target.id, None).await?;
        // The colleague can sign in with the new temporary password at once.
        self.counters
            .clear(&account_throttle_key(target.email.as_str()))
            .await?;
        tracing::info!(actor = %actor.id, account = %target.id, "temporary password set");
        Ok(target)
    }

    /// The account an administrator names, if it is theirs to see: another agency's
    /// account is `NotFound`, as is an unknown id.
    pub async fn admin_target(
        &self,
        actor: &StaffAccount,
        target_id: &str,
    ) -> Result<StaffAccount, IdmError> {
        if !actor.role.is_admin() || !actor.is_active() {
            return Err(IdmError::Forbidden);
        }
        let target = self
            .directory
            .staff_by_id(&StaffId(target_id.to_owned()))
            .await?
            .filter(|t| t.agency_id == actor.agency_id)
            .ok_or(IdmError::NotFound)?;
        Ok(target)
    }

    /// Handles "forgot password". It never fails visibly: the caller answers the same
    /// page for every address before this runs, and rate limits only suppress the mail.
    pub async fn request_reset(&self, email_input: &str, context: &RequestContext) {
        if let Err(err) = self.try_request_reset(email_input, context).await {
            tracing::error!(error = %err, "reset request failed");
        }
    }

    async fn try_request_reset(
        &self,
        email_input: &str,
        context: &RequestContext,
    ) -> Result<(), IdmError> {
        let now = context.now;
        let Ok(email) = EmailAddress::parse(email_input) else {
            return Ok(());
        };
        let per_address = self
            .counters
            .hit(
                &format!("reset:addr:{}", tokens::digest(email.as_str())),
                3600,
            )
            .await?;
        let per_ip = self
            .counters
            .hit(&format!("reset:ip:{}", context.ip), 3600)
            .await?;
        if per_address > self.rules.reset_mails_per_address_per_hour
            || per_ip > self.rules.reset_mails_per_ip_per_hour
        {
            tracing::info!(ip = %context.ip, "reset mail suppressed by rate limit");
            return Ok(());
        }
        let Some(account) = self.directory.staff_by_email(&email).await? else {
            return Ok(());
        };
        if !account.is_active() {
            return Ok(());
        }
        let agency = self
            .directory
            .agency(&account.agency_id)
            .await?
            .ok_or(IdmError::NotFound)?;
        let enforced = self.password_rule(&account.email).await? == PasswordRule::SsoRequired;
        let message = if enforced {
            // The password lives at the company's identity provider: reset it there.
            MailMessage::ResetAtSso {
                name: account.name.clone(),
                agency_name: agency.name.clone(),
            }
        } else if agency.sso_enabled {
            let token = tokens::random_token(32);
            let expires_at = now + self.rules.reset_valid_seconds;
            self.directory
                .replace_reset_token(&account.id, &tokens::digest(&token), now, expires_at)
                .await?;
            MailMessage::ResetLink {
                name: account.name.clone(),
                agency_name: agency.name.clone(),
                link: format!("{}/password/reset?token={token}", self.rules.public_base),
                valid_minutes: u64::try_from(self.rules.reset_valid_seconds / 60).unwrap_or(30),
                expires_at,
            }
        } else {
            MailMessage::ResetByAdministrator {
                name: account.name.clone(),
                agency_name: agency.name.clone(),
            }
        };
        let self_service = matches!(message, MailMessage::ResetLink { .. });
        let mail = self
            .composer
            .compose(&account.email, &message)
            .map_err(IdmError::Internal)?;
        self.mail_queue.enqueue(&mail, now).await?;
        self.mail_ready.notify_one();
        self.audit(
            AuditEvent::about(&account, "password_reset_requested", context)
                .detail(format!("self_service={self_service}")),
        )
        .await;
        Ok(())
    }

    /// Whether a reset link is still good; showing the form never consumes it.
    pub async fn check_reset_token(&self, token: &str, now: i64) -> Result<StaffId, IdmError> {
        if token.is_empty() || token.len() > 128 {
            return Err(IdmError::InvalidResetToken);
        }
        let account_id = match self.directory.reset_token(&tokens::digest(token)).await? {
            Some(record) if record.expires_at > now => record.account_id,
            _ => return Err(IdmError::InvalidResetToken),
        };
        // A link issued before the agency enforced single sign-on is dead, on GET too.
        if let Some(account) = self.directory.staff_by_id(&account_id).await?
            && self.password_rule(&account.email).await? == PasswordRule::SsoRequired
        {
            return Err(IdmError::InvalidResetToken);
        }
        Ok(account_id)
    }

    /// Sets a new password from a reset link. It does not sign the user in.
    pub async fn redeem_reset(
        &self,
        token: &str,
        form: &NewPasswordForm<'_>,
        context: &RequestContext,
    ) -> Result<StaffAccount, IdmError> {
        let now = context.now;
        let account_id = self.check_reset_token(token, now).await?;
        let (account, agency) = self.account_and_agency(&account_id).await?;
        let enforced = self.password_rule(&account.email).await? == PasswordRule::SsoRequired;
        if !account.is_active() || enforced {
            return Err(IdmError::InvalidResetToken);
        }
        let (new, mut violations) = self.check_new_password(&account, form, None);
        // The holder did not type the current password, so compare against its hash.
        let reused = self.policy.within_max_length(&new)
            && matches!(
                self.hasher
                    .verify(&new, account.password_hash.as_deref())
                    .await?,
                Verification::Match { .. }
            );
        if reused {
            violations.push(Violation::SameAsCurrent);
        }
        if !violations.is_empty() {
            return Err(IdmError::PasswordPolicy(violations));
        }
        let hash = self.hasher.hash(&new).await?;
        self.sessions.ping().await?;
        let won = self
            .directory
            .redeem_reset_token(
                &tokens::digest(token),
                now,
                &account.id,
                &PasswordChange {
                    hash,
                    state: PasswordState::Chosen,
                    changed_at: now,
                    audit: AuditEvent::about(&account, "password_reset_completed", context)
                        .by(&account.id)
                        .detail("method=email_link"),
                    notify: self.changed_mail(&account, &agency, now, "reset with an emailed link"),
                },
            )
            .await?;
        if !won {
            return Err(IdmError::InvalidResetToken);
        }
        self.mail_ready.notify_one();
        self.revoke_all_sessions_of(&account.id, None).await?;
        // The person proved control of the mailbox: earlier guessing no longer slows them.
        self.counters
            .clear(&account_throttle_key(account.email.as_str()))
            .await?;
        tracing::info!(account = %account.id, "password reset by email link");
        Ok(account)
    }
}
