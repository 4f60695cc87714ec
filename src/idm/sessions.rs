//! Starting, loading and ending sessions.
//!
//! The cookie carries 256 random bits; the store sees only their SHA-256 digest, which is
//! also the handle shown on the account page. A record is touched at most once a minute,
//! so a page behind the session costs one store read.

use crate::crypto::tokens;
use crate::domain::session::{AuthMethod, SessionKind, SessionRecord};
use crate::domain::{Secret, StaffAccount, StaffId};

use super::ports::PortResult;
use super::{Idm, IdmError, RequestContext};

/// How stale `last_seen_at` may get before a request writes it back.
const TOUCH_INTERVAL_SECONDS: i64 = 60;

/// A session just created: the cookie value goes to the browser, once.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie_value: Secret,
    pub key: String,
    pub record: SessionRecord,
    /// An owner signed in with a password while the agency enforces SSO: the page says so.
    pub break_glass: bool,
}

/// The session a request carries.
#[derive(Debug, Clone)]
pub struct CurrentSession {
    pub key: String,
    pub record: SessionRecord,
}

impl CurrentSession {
    pub fn is_restricted(&self) -> bool {
        self.record.kind == SessionKind::PasswordChangeRequired
    }
}

/// A cookie value worth looking up: what `random_token(32)` makes.
fn plausible_session_id(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Idm {
    pub async fn start_session(
        &self,
        account: &StaffAccount,
        kind: SessionKind,
        method: AuthMethod,
        resume_to: Option<String>,
        context: &RequestContext,
    ) -> PortResult<NewSession> {
        let cookie_value = tokens::random_token(32);
        let key = tokens::digest(&cookie_value);
        let record = SessionRecord {
            account_id: account.id.0.clone(),
            agency_id: account.agency_id.0.clone(),
            kind,
            method,
            created_at: context.now,
            last_seen_at: context.now,
            absolute_expires_at: context.now + self.rules.session_absolute_seconds,
            csrf_token: tokens::random_token(32),
            user_agent: context.user_agent.chars().take(160).collect(),
            ip: context.ip.clone(),
            resume_to,
        };
        let ttl = record.ttl_seconds(context.now, self.rules.session_idle_seconds);
        self.sessions.insert(&key, &record, ttl).await?;
        Ok(NewSession {
            cookie_value: Secret::new(cookie_value),
            key,
            record,
            break_glass: false,
        })
    }

    /// The live session behind a cookie value, if any.
    pub async fn load_session(
        &self,
        cookie_value: &str,
        now: i64,
    ) -> PortResult<Option<CurrentSession>> {
        if !plausible_session_id(cookie_value) {
            return Ok(None);
        }
        let key = tokens::digest(cookie_value);
        let Some(mut record) = self.sessions.get(&key).await? else {
            return Ok(None);
        };
        let idle = self.rules.session_idle_seconds;
        if !record.is_live(now, idle) {
            self.sessions.remove(&key, &record.staff_id()).await?;
            return Ok(None);
        }
        if now - record.last_seen_at >= TOUCH_INTERVAL_SECONDS {
            record.last_seen_at = now;
            self.sessions
                .update(&key, &record, record.ttl_seconds(now, idle))
                .await?;
        }
        Ok(Some(CurrentSession { key, record }))
    }

    /// Remembers where a restricted session wanted to go, to resume after the change.
    pub async fn remember_resume_path(
        &self,
        session: &CurrentSession,
        path: String,
        now: i64,
    ) -> PortResult<()> {
        if session.record.resume_to.as_deref() == Some(path.as_str()) {
            return Ok(());
        }
        let mut record = session.record.clone();
        record.resume_to = Some(path);
        let ttl = record.ttl_seconds(now, self.rules.session_idle_seconds);
        self.sessions.update(&session.key, &record, ttl).await
    }

    /// Ends one session and the app grants (refresh tokens) bound to it.
    pub async fn end_session(&self, session: &CurrentSession) -> Result<(), IdmError> {
        let account = session.record.staff_id();
        self.sessions.remove(&session.key, &account).await?;
        self.revoke_grants_of(&account, Some(&session.key)).await?;
        Ok(())
    }

    /// Ends every session of an account and every app grant made from them (after a
    /// password change, or when disabled).
    pub async fn revoke_all_sessions_of(
        &self,
        account: &StaffId,
        keep: Option<&str>,
    ) -> Result<u64, IdmError> {
        // Grants of a kept session survive, so read which sessions go before they go.
        let ending: Vec<String> = match keep {
            None => Vec::new(),
            Some(kept) => self
                .sessions
                .list_for_account(account)
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| key != kept)
                .collect(),
        };
        let ended = self.sessions.remove_all_for_account(account, keep).await?;
        if keep.is_none() {
            self.revoke_grants_of(account, None).await?;
        }
        for key in &ending {
            self.revoke_grants_of(account, Some(key)).await?;
        }
        Ok(ended)
    }

    /// The account's live sessions, newest first.
    pub async fn sessions_of(
        &self,
        account: &StaffId,
        now: i64,
    ) -> PortResult<Vec<(String, SessionRecord)>> {
        let idle = self.rules.session_idle_seconds;
        let mut live: Vec<_> = self
            .sessions
            .list_for_account(account)
            .await?
            .into_iter()
            .filter(|(_, r)| r.is_live(now, idle))
            .collect();
        live.sort_by_key(|(_, record)| std::cmp::Reverse(record.created_at));
        Ok(live)
    }

    /// Ends one of the caller's own sessions, named by its handle.
    pub async fn revoke_own_session(
        &self,
        current: &CurrentSession,
        handle: &str,
    ) -> Result<(), IdmError> {
        let account = current.record.staff_id();
        let owned = self
            .sessions
            .list_for_account(&account)
            .await?
            .into_iter()
            .any(|(key, _)| tokens::constant_time_eq(&key, handle));
        if !owned {
            return Err(IdmError::NotFound);
        }
        self.sessions.remove(handle, &account).await?;
        self.revoke_grants_of(&account, Some(handle)).await?;
        Ok(())
    }
}
