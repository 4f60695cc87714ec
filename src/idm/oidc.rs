//! The OpenID Connect provider's use-cases: authorization, the token endpoint's grants,
//! userinfo, introspection, revocation and sign-out. The diagram is in
//! `domain::oauth`.

use serde::{Deserialize, Serialize};

use crate::crypto::jwt::{IdTokenInput, sign_id_token};
use crate::crypto::keys::Algorithm;
use crate::crypto::tokens;
use crate::domain::oauth::{
    AccessRecord, AuthorizationRequest, Client, CodeRecord, GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GrantRecord, Prompt, RefreshRecord,
    pkce_s256_matches, valid_code_challenge,
};
use crate::domain::{StaffAccount, StaffId};

use super::sessions::CurrentSession;
use super::{Idm, IdmError};

/// An OAuth error as RFC 6749 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// The raw query of `/authorize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
}

pub enum AuthorizeOutcome {
    /// The client or redirect URI cannot be trusted: show an error, never redirect.
    ErrorPage(String),
    /// Tell the client, at its verified redirect URI.
    RedirectError {
        redirect_uri: String,
        error: OAuthError,
        state: Option<String>,
    },
    /// The person must sign in (`reauthenticate`: again, although signed in); resume
    /// with this pending request id.
    NeedsLogin {
        pending: String,
        reauthenticate: bool,
    },
    /// A temporary password must be changed first; then resume.
    NeedsPasswordChange { pending: String },
    NeedsConsent {
        pending: String,
        client_name: String,
        scopes: Vec<String>,
    },
    Code {
        redirect_uri: String,
        code: String,
        state: Option<String>,
    },
}

/// A pending authorization, kept server-side while the person signs in, changes a
/// temporary password or consents; only its id travels through the browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingAuthorization {
    request: AuthorizationRequest,
    created_at: i64,
    /// The session the request arrived with. `prompt=login`, `max_age=0` and an exceeded
    /// `max_age` are met only by another session: one made by signing in again.
    #[serde(default)]
    session_at_request: Option<String>,
}

const PENDING_SECONDS: i64 = 600;

/// How a client proved who it is at the token endpoint.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

fn key_code(code: &str) -> String {
    format!("oidc:code:{}", tokens::digest(code))
}
fn key_code_used(code: &str) -> String {
    format!("oidc:code-used:{}", tokens::digest(code))
}
fn key_grant(family: &str) -> String {
    format!("oidc:grant:{family}")
}
fn key_grants_of(account: &str) -> String {
    format!("oidc:grants-of:{account}")
}
fn key_access(token: &str) -> String {
    format!("oidc:at:{}", tokens::digest(token))
}
fn key_refresh(token: &str) -> String {
    format!("oidc:rt:{}", tokens::digest(token))
}
fn key_refresh_used(token: &str) -> String {
    format!("oidc:rt-used:{}", tokens::digest(token))
}
fn key_pending(id: &str) -> String {
    format!("oidc:pending:{id}")
}

fn parse_prompt(prompt: Option<&str>) -> Result<Option<Prompt>, OAuthError> {
    let Some(prompt) = prompt.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let values: Vec<&str> = prompt.split(' ').filter(|v| !v.is_empty()).collect();
    if values.contains(&"none") && values.len() > 1 {
        return Err(OAuthError::new(
            "invalid_request",
            "prompt=none cannot be combined",
        ));
    }
    let mut strongest = None;
    for value in values {
        let parsed = match value {
            "none" => Prompt::None,
            "login" => Prompt::Login,
            "consent" => Prompt::Consent,
            "select_account" => continue,
            other => {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("unsupported prompt value {other:?}"),
                ));
            }
        };
        // login outranks consent: a fresh sign-in also shows consent when needed.
        strongest = match (strongest, parsed) {
            (Some(Prompt::Login), _) => Some(Prompt::Login),
            (_, p) => Some(p),
        };
    }
    Ok(strongest)
}

impl Idm {
    fn decode<T: for<'de> Deserialize<'de>>(raw: Option<String>) -> Option<T> {
        raw.and_then(|json| serde_json::from_str(&json).ok())
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T, ttl: i64) -> Result<(), IdmError> {
        let json = serde_json::to_string(value).map_err(|e| IdmError::Internal(e.to_string()))?;
        self.ephemeral.put(key, &json, ttl).await?;
        Ok(())
    }

    /// Checks an authorization request and decides what happens next.
    pub async fn authorize(
        &self,
        params: &AuthorizeParams,
        session: Option<&CurrentSession>,
        now: i64,
    ) -> Result<AuthorizeOutcome, IdmError> {
        let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "The request names no client_id.".into(),
            ));
        };
        let Some(client) = self.clients.client(client_id).await? else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "The application is not registered.".into(),
            ));
        };
        let Some(redirect_uri) = params
            .redirect_uri
            .as_deref()
            .filter(|uri| client.has_redirect_uri(uri))
        else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "The redirect_uri is missing or is not registered for this application.".into(),
            ));
        };
        let fail = |error: OAuthError| AuthorizeOutcome::RedirectError {
            redirect_uri: redirect_uri.to_owned(),
            error,
            state: params.state.clone(),
        };
        match params.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => {
                return Ok(fail(OAuthError::new(
                    "invalid_request",
                    "response_type is missing",
                )));
            }
            Some(_) => {
                return Ok(fail(OAuthError::new(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                )));
            }
        }
        if !client.allows_grant(GRANT_AUTHORIZATION_CODE) {
            return Ok(fail(OAuthError::new(
                "unauthorized_client",
                "this client may not use the authorization code grant",
            )));
        }
        let challenge = params.code_challenge.as_deref().unwrap_or_default();
        if params.code_challenge_method.as_deref() != Some("S256")
            || !valid_code_challenge(challenge)
        {
            return Ok(fail(OAuthError::new(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            )));
        }
        let scopes = match client.allowed_scopes(params.scope.as_deref().unwrap_or("openid")) {
            Ok(scopes) if !scopes.is_empty() => scopes,
            Ok(_) => return Ok(fail(OAuthError::new("invalid_scope", "no scope requested"))),
            Err(message) => return Ok(fail(OAuthError::new("invalid_scope", message))),
        };
        let prompt = match parse_prompt(params.prompt.as_deref()) {
            Ok(prompt) => prompt,
            Err(error) => return Ok(fail(error)),
        };
        let max_age = match params.max_age.as_deref().filter(|m| !m.is_empty()) {
            None => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(value) if value >= 0 => Some(value),
                _ => {
                    return Ok(fail(OAuthError::new(
                        "invalid_request",
                        "max_age must be a non-negative integer",
                    )));
                }
            },
        };
        let request = AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state: params.state.clone(),
            nonce: params.nonce.clone(),
            code_challenge: challenge.to_owned(),
            prompt,
            max_age,
        };
        let session_at_request = session.map(|s| s.key.as_str());
        self.continue_authorization(&client, request, session, now, now, session_at_request)
            .await
    }

    /// Resumes a pending authorization after sign-in, a forced change or consent.
    pub async fn resume_authorization(
        &self,
        pending_id: &str,
        session: Option<&CurrentSession>,
        now: i64,
    ) -> Result<AuthorizeOutcome, IdmError> {
        let Some(pending) = Self::decode::<PendingAuthorization>(
            self.ephemeral.get(&key_pending(pending_id)).await?,
        ) else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "This sign-in request has expired. Go back to the application and start again."
                    .into(),
            ));
        };
        let Some(client) = self.clients.client(&pending.request.client_id).await? else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "The application is not registered.".into(),
            ));
        };
        let outcome = self
            .continue_authorization(
                &client,
                pending.request,
                session,
                now,
                pending.created_at,
                pending.session_at_request.as_deref(),
            )
            .await?;
        if matches!(
            outcome,
            AuthorizeOutcome::Code { .. } | AuthorizeOutcome::RedirectError { .. }
        ) {
            self.ephemeral.delete(&key_pending(pending_id)).await?;
        }
        Ok(outcome)
    }

    async fn park(
        &self,
        request: &AuthorizationRequest,
        requested_at: i64,
        session_at_request: Option<&str>,
    ) -> Result<String, IdmError> {
        let id = tokens::random_token(24);
        self.put_json(
            &key_pending(&id),
            &PendingAuthorization {
                request: request.clone(),
                created_at: requested_at,
                session_at_request: session_at_request.map(str::to_owned),
            },
            PENDING_SECONDS,
        )
        .await?;
        Ok(id)
    }

    async fn continue_authorization(
        &self,
        client: &Client,
        request: AuthorizationRequest,
        session: Option<&CurrentSession>,
        now: i64,
        requested_at: i64,
        session_at_request: Option<&str>,
    ) -> Result<AuthorizeOutcome, IdmError> {
        let fail = |code: &'static str, description: &str| AuthorizeOutcome::RedirectError {
            redirect_uri: request.redirect_uri.clone(),
            error: OAuthError::new(code, description),
            state: request.state.clone(),
        };
        let silent = request.prompt == Some(Prompt::None);
        let Some(session) = session else {
            if silent {
                return Ok(fail("login_required", "no session"));
            }
            return Ok(AuthorizeOutcome::NeedsLogin {
                pending: self
                    .park(&request, requested_at, session_at_request)
                    .await?,
                reauthenticate: false,
            });
        };
        // prompt=login (and max_age=0, its equal) wants a sign-in made for this request,
        // max_age one no older than that. Only the session the request found can fail
        // them: after signing in again the session is another one, whatever the clock says.
        let authenticated_at = session.record.created_at;
        let found_by_request = session_at_request == Some(session.key.as_str());
        let wants_login = request.prompt == Some(Prompt::Login) || request.max_age == Some(0);
        let too_old = request
            .max_age
            .is_some_and(|max_age| now - authenticated_at > max_age);
        if found_by_request && (wants_login || too_old) {
            if silent {
                return Ok(fail("login_required", "re-authentication required"));
            }
            return Ok(AuthorizeOutcome::NeedsLogin {
                pending: self.park(&request, now, Some(&session.key)).await?,
                reauthenticate: true,
            });
        }
        if session.is_restricted() {
            if silent {
                return Ok(fail(
                    "interaction_required",
                    "the password must be changed first",
                ));
            }
            return Ok(AuthorizeOutcome::NeedsPasswordChange {
                pending: self
                    .park(&request, requested_at, session_at_request)
                    .await?,
            });
        }
        let account_id = session.record.staff_id();
        let Some(account) = self
            .directory
            .staff_by_id(&account_id)
            .await?
            .filter(StaffAccount::is_active)
        else {
            return Ok(fail("access_denied", "the account is not active"));
        };
        if !client.first_party {
            let consented = self
                .consents
                .consented_scopes(&account_id, &client.id)
                .await?;
            let missing = request.scopes.iter().any(|s| !consented.contains(s));
            if missing || request.prompt == Some(Prompt::Consent) {
                if silent {
                    return Ok(fail("consent_required", "consent is required"));
                }
                return Ok(AuthorizeOutcome::NeedsConsent {
                    pending: self
                        .park(&request, requested_at, session_at_request)
                        .await?,
                    client_name: client.name.clone(),
                    scopes: request.scopes.clone(),
                });
            }
        }
        let code = tokens::random_token(32);
        let record = CodeRecord {
            client_id: client.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            account_id: account.id.0.clone(),
            session_key: session.key.clone(),
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            auth_time: authenticated_at,
            amr: session.record.method.amr().to_owned(),
            family: tokens::random_id(),
            expires_at: now + self.rules.code_seconds,
        };
        self.put_json(&key_code(&code), &record, self.rules.code_seconds)
            .await?;
        Ok(AuthorizeOutcome::Code {
            redirect_uri: request.redirect_uri,
            code,
            state: request.state,
        })
    }

    /// Records consent for a pending request, then resumes it.
    pub async fn consent(
        &self,
        pending_id: &str,
        session: &CurrentSession,
        approved: bool,
        now: i64,
    ) -> Result<AuthorizeOutcome, IdmError> {
        let Some(pending) = Self::decode::<PendingAuthorization>(
            self.ephemeral.get(&key_pending(pending_id)).await?,
        ) else {
            return Ok(AuthorizeOutcome::ErrorPage(
                "This sign-in request has expired.".into(),
            ));
        };
        if !approved {
            self.ephemeral.delete(&key_pending(pending_id)).await?;
            return Ok(AuthorizeOutcome::RedirectError {
                redirect_uri: pending.request.redirect_uri,
                error: OAuthError::new("access_denied", "the user declined"),
                state: pending.request.state,
            });
        }
        self.consents
            .record_consent(
                &session.record.staff_id(),
                &pending.request.client_id,
                &pending.request.scopes,
                now,
            )
            .await?;
        let mut request = pending.request;
        if request.prompt == Some(Prompt::Consent) {
            request.prompt = None;
        }
        self.put_json(
            &key_pending(pending_id),
            &PendingAuthorization {
                request,
                created_at: pending.created_at,
                session_at_request: pending.session_at_request,
            },
            PENDING_SECONDS,
        )
        .await?;
        self.resume_authorization(pending_id, Some(session), now)
            .await
    }

    /// Consumes a single-use record (an authorization code or a refresh token). The first
    /// presentation gets it and leaves a marker naming its grant family; a second finds
    /// only the marker, and the whole family is revoked (RFC 9700 §4.2.4 and §4.14.2).
    async fn redeem_once<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        used_key: &str,
        family_of: impl Fn(&T) -> &str,
        remember_seconds: i64,
        what: &'static str,
    ) -> Result<Option<T>, IdmError> {
        if let Some(record) = Self::decode::<T>(self.ephemeral.take(key).await?) {
            self.ephemeral
                .put(used_key, family_of(&record), remember_seconds)
                .await?;
            return Ok(Some(record));
        }
        if let Some(family) = self.ephemeral.get(used_key).await? {
            self.revoke_family(&family).await?;
            tracing::warn!(
                token = what,
                "single-use token presented again; its grant family was revoked"
            );
        }
        Ok(None)
    }

    /// Authenticates a client at the token, introspection and revocation endpoints.
    pub async fn authenticate_client(
        &self,
        credentials: &ClientCredentials,
    ) -> Result<Client, OAuthError> {
        let invalid = || OAuthError::new("invalid_client", "client authentication failed");
        let client = self
            .clients
            .client(&credentials.client_id)
            .await
            .map_err(|_| OAuthError::new("temporarily_unavailable", "try again shortly"))?
            .ok_or_else(invalid)?;
        match (&client.secret_digest, &credentials.secret) {
            (Some(digest), Some(secret))
                if tokens::constant_time_eq(digest, &tokens::digest(secret)) =>
            {
                Ok(client)
            }
            (None, None) => Ok(client),
            _ => Err(invalid()),
        }
    }

    async fn live_grant(&self, family: &str) -> Result<Option<GrantRecord>, IdmError> {
        Ok(Self::decode(self.ephemeral.get(&key_grant(family)).await?))
    }

    /// Ends a grant family: its refresh tokens and access tokens stop working.
    pub async fn revoke_family(&self, family: &str) -> Result<(), IdmError> {
        if let Some(grant) = self.live_grant(family).await? {
            self.ephemeral
                .remove_member(&key_grants_of(&grant.account_id), family)
                .await?;
        }
        self.ephemeral.delete(&key_grant(family)).await?;
        Ok(())
    }

    /// Ends every grant of an account, or only those of one session.
    pub async fn revoke_grants_of(
        &self,
        account: &StaffId,
        only_session: Option<&str>,
    ) -> Result<u64, IdmError> {
        let mut revoked = 0;
        for family in self.ephemeral.members(&key_grants_of(&account.0)).await? {
            let grant = self.live_grant(&family).await?;
            let matches = match (&grant, only_session) {
                (Some(grant), Some(session)) => grant.session_key == session,
                _ => true,
            };
            if matches {
                self.revoke_family(&family).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn issue_tokens(
        &self,
        client: &Client,
        family: &str,
        grant: &GrantRecord,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, IdmError> {
        let account = self
            .directory
            .staff_by_id(&StaffId(grant.account_id.clone()))
            .await?
            .filter(StaffAccount::is_active)
            .ok_or(IdmError::NotFound)?;
        let agency = self
            .directory
            .agency(&account.agency_id)
            .await?
            .ok_or(IdmError::NotFound)?;
        let access_token = tokens::random_token(32);
        let access = AccessRecord {
            client_id: client.id.clone(),
            account_id: Some(account.id.0.clone()),
            family: Some(family.to_owned()),
            scopes: grant.scopes.clone(),
            issued_at: now,
            expires_at: now + self.rules.access_token_seconds,
        };
        self.put_json(
            &key_access(&access_token),
            &access,
            self.rules.access_token_seconds,
        )
        .await?;
        let refresh_token = if client.allows_grant(GRANT_REFRESH_TOKEN) {
            let token = tokens::random_token(32);
            let ttl = self.grant_ttl(grant, now);
            self.put_json(
                &key_refresh(&token),
                &RefreshRecord {
                    client_id: client.id.clone(),
                    family: family.to_owned(),
                    expires_at: now + ttl,
                },
                ttl,
            )
            .await?;
            Some(token)
        } else {
            None
        };
        let id_token = if grant.scopes.iter().any(|s| s == "openid") {
            let alg = Algorithm::parse(&client.id_token_alg).unwrap_or(Algorithm::RS256);
            let key = self.signing_key(alg, now).await?;
            Some(
                sign_id_token(
                    &key,
                    &IdTokenInput {
                        issuer: &self.rules.public_base,
                        client_id: &client.id,
                        subject: &account.id.0,
                        email: account.email.as_str(),
                        name: &account.name,
                        agency: &agency.slug,
                        roles: vec![account.role.as_str().to_owned()],
                        amr: &grant.amr,
                        auth_time: grant.auth_time,
                        nonce,
                        issued_at: now,
                        expires_at: now + self.rules.id_token_seconds,
                        access_token: Some(&access_token),
                    },
                )
                .map_err(IdmError::Internal)?,
            )
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.rules.access_token_seconds,
            refresh_token,
            id_token,
            scope: grant.scopes.join(" "),
        })
    }

    /// A grant lives no longer than its refresh lifetime and its session.
    fn grant_ttl(&self, grant: &GrantRecord, now: i64) -> i64 {
        let session_end = grant.auth_time + self.rules.session_absolute_seconds;
        self.rules
            .refresh_token_seconds
            .min(session_end - now)
            .max(1)
    }

    /// `grant_type=authorization_code`.
    pub async fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let unavailable = |_| OAuthError::new("temporarily_unavailable", "try again shortly");
        if !client.allows_grant(GRANT_AUTHORIZATION_CODE) {
            return Err(OAuthError::new(
                "unauthorized_client",
                "grant not allowed for this client",
            ));
        }
        let Some(record) = self
            .redeem_once::<CodeRecord>(
                &key_code(code),
                &key_code_used(code),
                |r| &r.family,
                600,
                "authorization code",
            )
            .await
            .map_err(|_| OAuthError::new("temporarily_unavailable", "try again shortly"))?
        else {
            return Err(OAuthError::new(
                "invalid_grant",
                "the code is invalid, expired or used",
            ));
        };
        if record.expires_at <= now {
            return Err(OAuthError::new("invalid_grant", "the code has expired"));
        }
        if record.client_id != client.id || record.redirect_uri != redirect_uri {
            return Err(OAuthError::new(
                "invalid_grant",
                "the code was issued to another client or redirect_uri",
            ));
        }
        if !pkce_s256_matches(verifier, &record.code_challenge) {
            return Err(OAuthError::new(
                "invalid_grant",
                "the PKCE code_verifier does not match",
            ));
        }
        let session_live = self
            .sessions
            .get(&record.session_key)
            .await
            .map_err(unavailable)?
            .is_some_and(|s| s.is_live(now, self.rules.session_idle_seconds));
        if !session_live {
            return Err(OAuthError::new(
                "invalid_grant",
                "the sign-in session has ended",
            ));
        }
        let grant = GrantRecord {
            account_id: record.account_id.clone(),
            client_id: client.id.clone(),
            session_key: record.session_key.clone(),
            scopes: record.scopes.clone(),
            auth_time: record.auth_time,
            amr: record.amr.clone(),
        };
        let internal = |e: IdmError| {
            tracing::error!(error = %e, "token issuance failed");
            OAuthError::new("server_error", "token issuance failed")
        };
        let ttl = self.grant_ttl(&grant, now);
        self.put_json(&key_grant(&record.family), &grant, ttl)
            .await
            .map_err(internal)?;
        self.ephemeral
            .add_member(
                &key_grants_of(&grant.account_id),
                &record.family,
                self.rules
                    .refresh_token_seconds
                    .max(self.rules.session_absolute_seconds),
            )
            .await
            .map_err(unavailable)?;
        self.issue_tokens(client, &record.family, &grant, record.nonce.as_deref(), now)
            .await
            .map_err(internal)
    }

    /// `grant_type=refresh_token`, rotating: the presented token dies, a new one is
    /// issued, and presenting a dead one again revokes the whole family.
    pub async fn refresh(
        &self,
        client: &Client,
        refresh_token: &str,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let unavailable = |_| OAuthError::new("temporarily_unavailable", "try again shortly");
        let invalid = || {
            OAuthError::new(
                "invalid_grant",
                "the refresh token is invalid, expired or revoked",
            )
        };
        if !client.allows_grant(GRANT_REFRESH_TOKEN) {
            return Err(OAuthError::new(
                "unauthorized_client",
                "grant not allowed for this client",
            ));
        }
        let Some(record) = self
            .redeem_once::<RefreshRecord>(
                &key_refresh(refresh_token),
                &key_refresh_used(refresh_token),
                |r| &r.family,
                self.rules.refresh_token_seconds,
                "refresh token",
            )
            .await
            .map_err(|_| OAuthError::new("temporarily_unavailable", "try again shortly"))?
        else {
            return Err(invalid());
        };
        if record.client_id != client.id {
            self.revoke_family(&record.family)
                .await
                .map_err(|_| invalid())?;
            return Err(invalid());
        }
        if record.expires_at <= now {
            return Err(invalid());
        }
        let Some(grant) = self
            .live_grant(&record.family)
            .await
            .map_err(|_| invalid())?
        else {
            return Err(invalid());
        };
        let session = self
            .sessions
            .get(&grant.session_key)
            .await
            .map_err(unavailable)?
            .filter(|s| s.is_live(now, self.rules.session_idle_seconds));
        let Some(mut session) = session else {
            self.revoke_family(&record.family)
                .await
                .map_err(|_| invalid())?;
            return Err(invalid());
        };
        // Refreshing is activity in the session it is bound to.
        session.last_seen_at = now;
        let ttl = session.ttl_seconds(now, self.rules.session_idle_seconds);
        self.sessions
            .update(&grant.session_key, &session, ttl)
            .await
            .map_err(unavailable)?;
        self.issue_tokens(client, &record.family, &grant, None, now)
            .await
            .map_err(|_| invalid())
    }

    /// `grant_type=client_credentials`: a token for the client itself, no person.
    pub async fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        if client.is_public() || !client.allows_grant(GRANT_CLIENT_CREDENTIALS) {
            return Err(OAuthError::new(
                "unauthorized_client",
                "grant not allowed for this client",
            ));
        }
        let scopes = client
            .allowed_scopes(scope.unwrap_or_default())
            .map_err(|m| OAuthError::new("invalid_scope", m))?;
        if scopes.iter().any(|s| s == "openid" || s == "staff:admin") {
            return Err(OAuthError::new(
                "invalid_scope",
                "that scope needs a person",
            ));
        }
        let token = tokens::random_token(32);
        let record = AccessRecord {
            client_id: client.id.clone(),
            account_id: None,
            family: None,
            scopes: scopes.clone(),
            issued_at: now,
            expires_at: now + self.rules.access_token_seconds,
        };
        self.put_json(
            &key_access(&token),
            &record,
            self.rules.access_token_seconds,
        )
        .await
        .map_err(|_| OAuthError::new("temporarily_unavailable", "try again shortly"))?;
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.rules.access_token_seconds,
            refresh_token: None,
            id_token: None,
            scope: scopes.join(" "),
        })
    }

    /// A live access token's record: unexpired, and its grant family not revoked.
    pub async fn access_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<AccessRecord>, IdmError> {
        let Some(record) =
            Self::decode::<AccessRecord>(self.ephemeral.get(&key_access(token)).await?)
        else {
            return Ok(None);
        };
        if record.expires_at <= now {
            return Ok(None);
        }
        if let Some(family) = &record.family
            && self.live_grant(family).await?.is_none()
        {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// The person an access token acts for, if it is live and has one.
    pub async fn token_owner(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<(AccessRecord, StaffAccount)>, IdmError> {
        let Some(record) = self.access_token(token, now).await? else {
            return Ok(None);
        };
        let Some(account_id) = record.account_id.clone() else {
            return Ok(None);
        };
        let account = self
            .directory
            .staff_by_id(&StaffId(account_id))
            .await?
            .filter(StaffAccount::is_active);
        Ok(account.map(|a| (record, a)))
    }

    /// RFC 7662: what the calling client may know about a token.
    pub async fn introspect(
        &self,
        client: &Client,
        token: &str,
        now: i64,
    ) -> Result<serde_json::Value, IdmError> {
        if let Some(record) = self.access_token(token, now).await?
            && record.client_id == client.id
        {
            let mut answer = serde_json::json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": record.client_id,
                "scope": record.scopes.join(" "),
                "iat": record.issued_at,
                "exp": record.expires_at,
                "iss": self.rules.public_base,
            });
            if let Some(sub) = record.account_id {
                answer["sub"] = serde_json::Value::String(sub);
            }
            return Ok(answer);
        }
        if let Some(record) =
            Self::decode::<RefreshRecord>(self.ephemeral.get(&key_refresh(token)).await?)
            && record.client_id == client.id
            && record.expires_at > now
            && let Some(grant) = self.live_grant(&record.family).await?
        {
            return Ok(serde_json::json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": record.client_id,
                "scope": grant.scopes.join(" "),
                "sub": grant.account_id,
                "exp": record.expires_at,
                "iss": self.rules.public_base,
            }));
        }
        Ok(serde_json::json!({ "active": false }))
    }

    /// RFC 7009: revoking a refresh token ends its family; an access token just itself.
    pub async fn revoke_token(&self, client: &Client, token: &str) -> Result<(), IdmError> {
        if let Some(record) =
            Self::decode::<RefreshRecord>(self.ephemeral.get(&key_refresh(token)).await?)
        {
            if record.client_id == client.id {
                self.ephemeral.delete(&key_refresh(token)).await?;
                self.revoke_family(&record.family).await?;
            }
            return Ok(());
        }
        if let Some(record) =
            Self::decode::<AccessRecord>(self.ephemeral.get(&key_access(token)).await?)
            && record.client_id == client.id
        {
            self.ephemeral.delete(&key_access(token)).await?;
        }
        Ok(())
    }

    /// The client an `id_token_hint` was issued to and the person it names, if it is a
    /// token this service signed.
    pub async fn read_id_token_hint(
        &self,
        hint: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, IdmError> {
        let published = self.published_keys(now).await?;
        let Some(claims) = crate::crypto::jwt::read_own_token(hint, &published) else {
            return Ok(None);
        };
        if claims["iss"] != self.rules.public_base.as_str() {
            return Ok(None);
        }
        let audience = match &claims["aud"] {
            serde_json::Value::String(a) => Some(a.clone()),
            serde_json::Value::Array(list) => {
                list.first().and_then(|a| a.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        let subject = claims["sub"].as_str().map(str::to_owned);
        Ok(audience.zip(subject))
    }
}
