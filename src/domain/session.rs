//! What a session is allowed to do, and when it ends.
//!
//! ```text
//!   sign-in (chosen password) ───────────────▶ Full ──▶ (logout | revoke | expiry)
//!   sign-in (temporary password) ─▶ PasswordChangeRequired
//!                                      │ change password (new session id)
//!                                      ▼
//!                                     Full
//! ```
//! A `PasswordChangeRequired` session reaches only the change page and logout; it remembers
//! where the user was going so the flow resumes after the change.

use serde::{Deserialize, Serialize};

use super::{AgencyId, StaffId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    #[serde(rename = "full")]
    Full,
    #[serde(rename = "change")]
    PasswordChangeRequired,
}

/// How the person proved who they are (the OpenID Connect `amr` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "pwd")]
    Password,
    #[serde(rename = "sso")]
    Sso,
}

impl AuthMethod {
    pub fn amr(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::Sso => "sso",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Password => "Password",
            Self::Sso => "Single sign-on",
        }
    }
}

/// The server-side state of one session. It holds no secret of the user's; the session id
/// itself is not stored, only its digest (as the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(rename = "a")]
    pub account_id: String,
    #[serde(rename = "g")]
    pub agency_id: String,
    #[serde(rename = "k")]
    pub kind: SessionKind,
    #[serde(rename = "m")]
    pub method: AuthMethod,
    #[serde(rename = "c")]
    pub created_at: i64,
    #[serde(rename = "l")]
    pub last_seen_at: i64,
    #[serde(rename = "x")]
    pub absolute_expires_at: i64,
    /// The CSRF token of every form of this session.
    #[serde(rename = "t")]
    pub csrf_token: String,
    #[serde(rename = "u", default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(rename = "i", default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Where to resume after a forced password change (a same-origin path).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub resume_to: Option<String>,
}

impl SessionRecord {
    pub fn staff_id(&self) -> StaffId {
        StaffId(self.account_id.clone())
    }

    pub fn agency(&self) -> AgencyId {
        AgencyId(self.agency_id.clone())
    }

    /// Whether the session is still alive at `now` under an idle timeout.
    pub fn is_live(&self, now: i64, idle_timeout: i64) -> bool {
        now < self.absolute_expires_at && now < self.last_seen_at + idle_timeout
    }

    /// Seconds the store should keep the record from `now`: the idle timeout, but never past
    /// the absolute expiry.
    pub fn ttl_seconds(&self, now: i64, idle_timeout: i64) -> i64 {
        (self.last_seen_at + idle_timeout)
            .min(self.absolute_expires_at)
            .saturating_sub(now)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            account_id: "s1".into(),
            agency_id: "a1".into(),
            kind: SessionKind::Full,
            method: AuthMethod::Password,
            created_at: 1_000,
            last_seen_at: 1_000,
            absolute_expires_at: 1_000 + 43_200,
            csrf_token: "t".into(),
            user_agent: String::new(),
            ip: String::new(),
            resume_to: None,
        }
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let mut r = record();
        assert!(r.is_live(1_000 + 1_799, 1_800));
        assert!(!r.is_live(1_000 + 1_800, 1_800));
        r.last_seen_at = 1_000 + 43_000;
        assert!(r.is_live(1_000 + 43_199, 1_800));
        assert!(!r.is_live(1_000 + 43_200, 1_800));
        assert_eq!(r.ttl_seconds(1_000 + 43_100, 1_800), 100);
    }

    #[test]
    fn a_record_stays_small() {
        let mut r = record();
        r.user_agent = "x".repeat(200);
        r.csrf_token = "y".repeat(43);
        assert!(serde_json::to_vec(&r).unwrap().len() < 400);
    }
}
