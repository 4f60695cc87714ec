//! OAuth 2.0 / OpenID Connect values and rules for the provider side: registered clients,
//! the checks an authorization request must pass, PKCE, and the records behind codes and
//! tokens.
//!
//! ```text
//!  /authorize ─▶ client known? redirect_uri exact? ──no──▶ error page (never redirect)
//!       │ yes
//!       ▼
//!  response_type=code? PKCE S256? scope allowed? ──no──▶ redirect with error=…
//!       ▼
//!  session? (prompt=none → login_required) ─▶ restricted? ─▶ forced change, then resume
//!       ▼
//!  consent (third-party only) ─▶ code (60 s, single use) ─▶ /token
//!  /token: code + verifier ─▶ grant family { access, refresh(rotating), id_token }
//!  refresh reuse, code replay, password change ─▶ the whole family is revoked
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A registered application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client (PKCE only).
    pub secret_digest: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    /// The company's own apps: no consent page.
    pub first_party: bool,
    /// `RS256` (the OpenID Connect default) or `ES256`.
    pub id_token_alg: String,
    pub created_at: i64,
}

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";

/// Scopes Latchkey knows.
pub const KNOWN_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "offline_access",
    "staff:admin",
];

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_digest.is_none()
    }

    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// Exact string match, as RFC 9700 requires: no prefix, case or path tricks.
    pub fn has_redirect_uri(&self, candidate: &str) -> bool {
        self.redirect_uris.iter().any(|uri| uri == candidate)
    }

    pub fn has_post_logout_redirect_uri(&self, candidate: &str) -> bool {
        self.post_logout_redirect_uris
            .iter()
            .any(|uri| uri == candidate)
    }

    /// The requested scopes if every one is allowed for this client.
    pub fn allowed_scopes(&self, requested: &str) -> Result<Vec<String>, String> {
        let mut scopes: Vec<String> = Vec::new();
        for scope in requested.split(' ').filter(|s| !s.is_empty()) {
            if !self.scopes.iter().any(|s| s == scope) {
                return Err(format!("scope {scope:?} is not allowed for this client"));
            }
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        Ok(scopes)
    }
}

/// A redirect URI as registered: absolute https (or http on loopback for development
/// and native apps), no fragment.
pub fn valid_redirect_uri(uri: &str) -> bool {
    let Ok(parsed) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    parsed.fragment().is_none()
        && parsed.host_str().is_some()
        && (parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback))
}

/// RFC 7636: `code_verifier` is 43–128 unreserved characters and its S256 digest must
/// equal the challenge.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            computed.as_bytes(),
            challenge.as_bytes(),
        ))
}

/// A well-formed S256 challenge: 43 base64url characters (a SHA-256 digest).
pub fn valid_code_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prompt {
    None,
    Login,
    Consent,
}

/// An authorization request that passed every check: it can be stored while the user
/// signs in or changes a temporary password, and resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub prompt: Option<Prompt>,
    pub max_age: Option<i64>,
}

/// What an authorization code stands for (stored by digest, 60 s, single use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub account_id: String,
    pub session_key: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub auth_time: i64,
    pub amr: String,
    /// The grant family the code's tokens will belong to.
    pub family: String,
    /// Checked against the clock: the store's own expiry is only a backstop.
    pub expires_at: i64,
}

/// A grant family: every access and refresh token issued from one authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub account_id: String,
    pub client_id: String,
    pub session_key: String,
    pub scopes: Vec<String>,
    pub auth_time: i64,
    pub amr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub client_id: String,
    /// `None` for client_credentials tokens, which act for the client itself.
    pub account_id: Option<String>,
    pub family: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub client_id: String,
    pub family: String,
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client {
            id: "c".into(),
            name: "App".into(),
            secret_digest: None,
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GRANT_AUTHORIZATION_CODE.into()],
            scopes: vec!["openid".into(), "email".into()],
            first_party: true,
            id_token_alg: "RS256".into(),
            created_at: 0,
        }
    }

    #[test]
    fn redirect_uris_match_exactly() {
        let c = client();
        assert!(c.has_redirect_uri("https://app.example/cb"));
        for variant in [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/CB",
            "http://app.example/cb",
            "https://app.example:444/cb",
            "https://evil.example/cb",
            "https://app.example/cb/../cb",
            "https://app.example/cb#frag",
        ] {
            assert!(!c.has_redirect_uri(variant), "{variant}");
        }
    }

    #[test]
    fn registered_redirect_uris_must_be_https_or_loopback() {
        assert!(valid_redirect_uri("https://app.example/cb"));
        assert!(valid_redirect_uri("http://127.0.0.1:9000/cb"));
        assert!(!valid_redirect_uri("http://app.example/cb"));
        assert!(!valid_redirect_uri("https://app.example/cb#x"));
        assert!(!valid_redirect_uri("javascript:alert(1)"));
    }

    #[test]
    fn pkce_s256_example_from_rfc_7636() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_code_challenge(challenge));
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!pkce_s256_matches(challenge, challenge));
        assert!(!pkce_s256_matches("short", challenge));
    }

    #[test]
    fn scopes_must_be_allowed() {
        let c = client();
        assert_eq!(
            c.allowed_scopes("openid email openid").unwrap(),
            vec!["openid", "email"]
        );
        assert!(c.allowed_scopes("openid staff:admin").is_err());
    }
}
