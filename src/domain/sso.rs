//! An agency's corporate single sign-on: the upstream connection and how an upstream
//! identity maps to a staff account.
//!
//! ```text
//!  /sso/start (email domain or agency slug) ─▶ attempt {state, nonce, PKCE verifier,
//!        bound to this browser} ─▶ upstream /authorize
//!  /sso/callback ─▶ take attempt by state (single use; other browser ─▶ refused)
//!        ─▶ error=… from upstream ─▶ page with a way back
//!        ─▶ code + verifier ─▶ ID token checked (iss, aud, exp, nonce, signature by JWKS,
//!           asymmetric algorithms only)
//!        ─▶ linked (issuer, subject)? ─▶ that account
//!           else verified email on one of the agency's domains, account in the agency
//!                ─▶ link, then that account
//!           else create_accounts ─▶ new staff account, linked
//!           else "ask your administrator"
//!        ─▶ session with amr=sso
//! ```

use serde::{Deserialize, Serialize};

use super::{AgencyId, EmailAddress, Secret};

#[derive(Debug, Clone)]
pub struct SsoConnection {
    pub agency_id: AgencyId,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Lower-case email domains this agency owns.
    pub domains: Vec<String>,
    pub scopes: Vec<String>,
    /// Password sign-in and reset are off for these domains (owners keep break-glass).
    pub enforce: bool,
    /// Create a `staff` account for an unknown person on first sign-in.
    pub create_accounts: bool,
    pub updated_at: i64,
}

impl SsoConnection {
    pub fn owns_domain(&self, email: &EmailAddress) -> bool {
        self.domains.iter().any(|d| d == email.domain())
    }
}

/// A domain as an agency lists it: lower case, with at least one dot, no `@`.
pub fn parse_domain(input: &str) -> Result<String, String> {
    let domain = input.trim().trim_start_matches('@').to_lowercase();
    let valid = domain.len() >= 3
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(domain)
    } else {
        Err(format!("{input:?} is not an email domain"))
    }
}

/// One sign-in attempt at the upstream, kept server-side and bound to the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoAttempt {
    pub agency_id: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Digest of the browser's pre-session cookie: another browser cannot finish it.
    pub browser: String,
    pub return_to: Option<String>,
    pub created_at: i64,
}

/// What the upstream vouched for, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(
            parse_domain(" @Harbour-Homes.CO.UK ").unwrap(),
            "harbour-homes.co.uk"
        );
        for bad in ["", "localhost", ".x.com", "x..com", "a b.com", "x.com."] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
    }
}
