//! Corporate single sign-on: an owner connects the agency's upstream provider, staff
//! sign in through it, and "enforce" turns password sign-in and reset off for the
//! agency's domains (owners keep password sign-in as a break-glass account). The flow
//! diagram is in `domain::sso`.

use crate::crypto::tokens;
use crate::domain::session::{AuthMethod, SessionKind};
use crate::domain::sso::{SsoAttempt, SsoConnection, UpstreamIdentity, parse_domain};
use crate::domain::{AgencyId, EmailAddress, Role, Secret, StaffAccount, StaffId};

use super::ports::{AuditEvent, StoredSsoConnection, UpstreamError};
use super::sessions::NewSession;
use super::staff::NewStaff;
use super::{Idm, IdmError, RequestContext};

const ATTEMPT_SECONDS: i64 = 600;

fn attempt_key(state: &str) -> String {
    format!("sso:attempt:{}", tokens::digest(state))
}

fn secret_aad(agency: &AgencyId) -> String {
    format!("sso-client-secret:{agency}")
}

/// What an owner (or the CLI) submits to connect an upstream provider.
pub struct SsoSettingsInput<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Empty keeps the stored secret.
    pub client_secret: &'a str,
    pub domains: &'a [String],
    pub scopes: &'a [String],
    pub enforce: bool,
    pub create_accounts: bool,
}

/// Whether a password may be used for this email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRule {
    Allowed,
    /// The agency enforces SSO for this domain.
    SsoRequired,
    /// Enforced, but this is an owner: password sign-in stays open as break-glass.
    BreakGlass,
}

/// An issuer URL: https, or (when allowed, for development) http on loopback.
fn valid_issuer(issuer: &str, allow_http_loopback: bool) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    url.fragment().is_none()
        && url.query().is_none()
        && url.host_str().is_some()
        && (url.scheme() == "https" || (url.scheme() == "http" && loopback && allow_http_loopback))
}

impl Idm {
    fn unseal_connection(&self, stored: StoredSsoConnection) -> Result<SsoConnection, IdmError> {
        let secret = self
            .key_encryption
            .open(&secret_aad(&stored.agency_id), &stored.client_secret_sealed)
            .map_err(|e| IdmError::Internal(e.to_string()))?;
        Ok(SsoConnection {
            agency_id: stored.agency_id,
            issuer: stored.issuer,
            client_id: stored.client_id,
            client_secret: Secret::new(String::from_utf8_lossy(&secret).into_owned()),
            domains: stored.domains,
            scopes: stored.scopes,
            enforce: stored.enforce,
            create_accounts: stored.create_accounts,
            updated_at: stored.updated_at,
        })
    }

    pub async fn sso_connection_of(
        &self,
        agency: &AgencyId,
    ) -> Result<Option<SsoConnection>, IdmError> {
        self.sso
            .sso_connection(agency)
            .await?
            .map(|stored| self.unseal_connection(stored))
            .transpose()
    }

    /// The connection that owns an email's domain.
    pub async fn sso_connection_for(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<SsoConnection>, IdmError> {
        match self.sso.agency_for_domain(email.domain()).await? {
            Some(agency) => self.sso_connection_of(&agency).await,
            None => Ok(None),
        }
    }

    /// Saves an agency's connection after checking the issuer's discovery document.
    /// `actor` is the owner doing it (`None` for the CLI).
    pub async fn configure_sso(
        &self,
        actor: Option<&StaffId>,
        agency: &AgencyId,
        input: &SsoSettingsInput<'_>,
        context: &RequestContext,
    ) -> Result<SsoConnection, IdmError> {
        if let Some(actor) = actor {
            let owner = self
                .directory
                .staff_by_id(actor)
                .await?
                .ok_or(IdmError::NotFound)?;
            if owner.agency_id != *agency || owner.role != Role::Owner || !owner.is_active() {
                return Err(IdmError::Forbidden);
            }
        }
        let mut problems = Vec::new();
        let issuer = input.issuer.trim();
        if !valid_issuer(issuer, self.rules.allow_http_loopback_issuers) {
            problems.push("The issuer must be an https URL without query or fragment.".to_owned());
        }
        if input.client_id.trim().is_empty() {
            problems.push("Enter the client ID the identity provider gave you.".to_owned());
        }
        let mut domains = Vec::new();
        for domain in input.domains {
            match parse_domain(domain) {
                Ok(d) if !domains.contains(&d) => domains.push(d),
                Ok(_) => {}
                Err(message) => problems.push(message),
            }
        }
        if domains.is_empty() && problems.is_empty() {
            problems.push("Enter at least one email domain.".to_owned());
        }
        let existing = self.sso.sso_connection(agency).await?;
        let secret = if input.client_secret.is_empty() {
            match &existing {
                Some(stored) => self
                    .key_encryption
                    .open(&secret_aad(agency), &stored.client_secret_sealed)
                    .map(|s| String::from_utf8_lossy(&s).into_owned())
                    .map_err(|e| IdmError::Internal(e.to_string()))?,
                None => {
                    problems.push("Enter the client secret.".to_owned());
                    String::new()
                }
            }
        } else {
            input.client_secret.to_owned()
        };
        if !problems.is_empty() {
            return Err(IdmError::SsoSetup(problems));
        }
        if let Err(err) = self.upstream.discover(issuer).await {
            return Err(IdmError::SsoSetup(vec![match err {
                UpstreamError::IssuerMismatch { expected, found } => format!(
                    "The discovery document at {expected} names a different issuer ({found}). Enter the issuer exactly as the provider publishes it."
                ),
                other => format!("Could not use that issuer: {other}."),
            }]));
        }
        let mut scopes: Vec<String> = vec!["openid".into()];
        for scope in input.scopes.iter().flat_map(|s| s.split([' ', ','])) {
            let scope = scope.trim();
            if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        if scopes.len() == 1 {
            scopes.extend(["email".to_owned(), "profile".to_owned()]);
        }
        let sealed = self
            .key_encryption
            .seal(&secret_aad(agency), secret.as_bytes())
            .map_err(|e| IdmError::Internal(e.to_string()))?;
        let stored = StoredSsoConnection {
            agency_id: agency.clone(),
            issuer: issuer.to_owned(),
            client_id: input.client_id.trim().to_owned(),
            client_secret_sealed: sealed,
            domains: domains.clone(),
            scopes,
            enforce: input.enforce,
            create_accounts: input.create_accounts,
            updated_at: context.now,
        };
        self.sso.save_sso_connection(&stored).await?;
        self.audit(AuditEvent {
            agency_id: Some(agency.clone()),
            at: context.now,
            event: "sso_configured",
            actor: actor.cloned(),
            subject: None,
            ip: context.ip.clone(),
            detail: format!(
                "issuer={issuer} domains={} enforce={} create_accounts={}",
                domains.join(","),
                input.enforce,
                input.create_accounts
            ),
        })
        .await;
        self.unseal_connection(stored)
    }

    /// Whether password sign-in (or reset) is open for this email.
    pub async fn password_rule(&self, email: &EmailAddress) -> Result<PasswordRule, IdmError> {
        let Some(agency) = self.sso.agency_for_domain(email.domain()).await? else {
            return Ok(PasswordRule::Allowed);
        };
        let Some(connection) = self.sso.sso_connection(&agency).await? else {
            return Ok(PasswordRule::Allowed);
        };
        if !connection.enforce {
            return Ok(PasswordRule::Allowed);
        }
        // Enforcement is the connecting agency's rule for its own staff (and for unknown
        // addresses, which must walk the same path); another agency's account on the
        // domain keeps its password.
        Ok(match self.directory.staff_by_email(email).await? {
            Some(account) if account.agency_id != agency => PasswordRule::Allowed,
            Some(account) if account.role == Role::Owner => PasswordRule::BreakGlass,
            _ => PasswordRule::SsoRequired,
        })
    }

    /// Starts a sign-in at the agency's upstream provider: by email domain or agency slug.
    pub async fn sso_start(
        &self,
        email: Option<&str>,
        agency_slug: Option<&str>,
        browser: &str,
        return_to: Option<String>,
        now: i64,
    ) -> Result<String, IdmError> {
        let no_sso = || {
            IdmError::InvalidInput(
                "Single sign-on is not set up for that address or agency.".into(),
            )
        };
        let email = email
            .filter(|e| !e.trim().is_empty())
            .map(EmailAddress::parse)
            .transpose()
            .map_err(|e| IdmError::InvalidInput(e.to_string()))?;
        let connection = match (&email, agency_slug.filter(|s| !s.is_empty())) {
            (Some(email), _) => self.sso_connection_for(email).await?,
            (None, Some(slug)) => match self.directory.agency_by_slug(slug).await? {
                Some(agency) => self.sso_connection_of(&agency.id).await?,
                None => None,
            },
            (None, None) => None,
        }
        .ok_or_else(no_sso)?;
        let state = tokens::random_token(32);
        let nonce = tokens::random_token(32);
        let verifier = tokens::random_token(48);
        let attempt = SsoAttempt {
            agency_id: connection.agency_id.0.clone(),
            nonce: nonce.clone(),
            pkce_verifier: verifier.clone(),
            browser: tokens::digest(browser),
            return_to,
            created_at: now,
        };
        let json =
            serde_json::to_string(&attempt).map_err(|e| IdmError::Internal(e.to_string()))?;
        self.ephemeral
            .put(&attempt_key(&state), &json, ATTEMPT_SECONDS)
            .await?;
        self.upstream
            .authorization_url(
                &connection,
                &self.sso_redirect_uri(),
                &state,
                &nonce,
                &verifier,
                email.as_ref().map(EmailAddress::as_str),
            )
            .await
            .map_err(|e| IdmError::UpstreamUnavailable(e.to_string()))
    }

    pub fn sso_redirect_uri(&self) -> String {
        format!("{}/sso/callback", self.rules.public_base)
    }

    /// Finishes a sign-in at the upstream: every check of U1, then the account (U2).
    #[allow(clippy::too_many_arguments)]
    pub async fn sso_callback(
        &self,
        code: Option<&str>,
        state: Option<&str>,
        iss: Option<&str>,
        upstream_error: Option<&str>,
        browser: &str,
        context: &RequestContext,
    ) -> Result<(NewSession, Option<String>), IdmError> {
        let now = context.now;
        let refused = |m: &str| IdmError::SsoRefused(m.to_owned());
        let state = state
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("The answer from your identity provider carried no state."))?;
        let raw = self.ephemeral.take(&attempt_key(state)).await?;
        let attempt: SsoAttempt = raw
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or_else(|| {
                refused("This sign-in attempt is unknown, expired or already used. Start again.")
            })?;
        if !tokens::constant_time_eq(&attempt.browser, &tokens::digest(browser)) {
            return Err(refused(
                "This sign-in was started in another browser. Start again here.",
            ));
        }
        if let Some(error) = upstream_error.filter(|e| !e.is_empty()) {
            return Err(IdmError::SsoRefused(format!(
                "Your identity provider did not sign you in ({error})."
            )));
        }
        let agency_id = AgencyId(attempt.agency_id.clone());
        let connection = self
            .sso_connection_of(&agency_id)
            .await?
            .ok_or_else(|| refused("Single sign-on is no longer set up for this agency."))?;
        // RFC 9207: when the upstream names itself, it must be the one we asked.
        if iss.is_some_and(|iss| iss != connection.issuer) {
            return Err(refused(
                "The answer came from a different identity provider.",
            ));
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| refused("The answer carried no code."))?;
        let identity = self
            .upstream
            .exchange(
                &connection,
                &self.sso_redirect_uri(),
                code,
                &attempt.pkce_verifier,
                &attempt.nonce,
                now,
            )
            .await
            .map_err(|e| match e {
                UpstreamError::Unreachable(m) => IdmError::UpstreamUnavailable(m),
                other => {
                    tracing::warn!(agency = %agency_id, error = %other, "upstream answer refused");
                    IdmError::SsoRefused(
                        "Your identity provider's answer could not be verified.".into(),
                    )
                }
            })?;
        let account = self.sso_account(&connection, &identity, context).await?;
        let session = self
            .start_session(
                &account,
                SessionKind::Full,
                AuthMethod::Sso,
                attempt.return_to.clone(),
                context,
            )
            .await?;
        self.audit(
            AuditEvent::about(&account, "sso_sign_in", context)
                .by(&account.id)
                .detail(format!("issuer={}", identity.issuer)),
        )
        .await;
        Ok((session, attempt.return_to))
    }

    async fn refuse_link(
        &self,
        connection: &SsoConnection,
        identity: &UpstreamIdentity,
        reason: &str,
        context: &RequestContext,
    ) -> IdmError {
        self.audit(AuditEvent {
            agency_id: Some(connection.agency_id.clone()),
            at: context.now,
            event: "sso_link_refused",
            actor: None,
            subject: None,
            ip: context.ip.clone(),
            detail: format!("issuer={} reason={reason}", identity.issuer),
        })
        .await;
        let agency_name = self
            .directory
            .agency(&connection.agency_id)
            .await
            .ok()
            .flatten()
            .map(|a| a.name)
            .unwrap_or_default();
        IdmError::SsoNoAccount { agency_name }
    }

    /// The staff account an upstream identity signs in as (U2).
    async fn sso_account(
        &self,
        connection: &SsoConnection,
        identity: &UpstreamIdentity,
        context: &RequestContext,
    ) -> Result<StaffAccount, IdmError> {
        if let Some(id) = self
            .sso
            .linked_account(&identity.issuer, &identity.subject)
            .await?
        {
            let account = self
                .directory
                .staff_by_id(&id)
                .await?
                .filter(|a| a.agency_id == connection.agency_id);
            return match account {
                Some(a) if a.is_active() => Ok(a),
                Some(_) => Err(IdmError::AccountDisabled),
                None => Err(self
                    .refuse_link(connection, identity, "linked_elsewhere", context)
                    .await),
            };
        }
        if !identity.email_verified {
            return Err(self
                .refuse_link(connection, identity, "email_unverified", context)
                .await);
        }
        let Some(email) = identity
            .email
            .as_deref()
            .and_then(|e| EmailAddress::parse(e).ok())
        else {
            return Err(self
                .refuse_link(connection, identity, "no_email", context)
                .await);
        };
        if !connection.owns_domain(&email) {
            return Err(self
                .refuse_link(connection, identity, "foreign_domain", context)
                .await);
        }
        let account = match self.directory.staff_by_email(&email).await? {
            Some(a) if a.agency_id == connection.agency_id => a,
            Some(_) => {
                return Err(self
                    .refuse_link(connection, identity, "other_agency", context)
                    .await);
            }
            None if connection.create_accounts => {
                let agency = self
                    .directory
                    .agency(&connection.agency_id)
                    .await?
                    .ok_or(IdmError::NotFound)?;
                let name = identity
                    .name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| email.local_part().to_owned());
                let created = self
                    .create_staff(
                        &NewStaff {
                            agency_slug: &agency.slug,
                            email: email.as_str(),
                            name: &name,
                            role: Role::Staff,
                            temporary_password: None,
                        },
                        context.now,
                    )
                    .await?;
                self.audit(AuditEvent {
                    agency_id: Some(connection.agency_id.clone()),
                    at: context.now,
                    event: "sso_account_created",
                    actor: None,
                    subject: Some(created.id.clone()),
                    ip: context.ip.clone(),
                    detail: format!("issuer={}", identity.issuer),
                })
                .await;
                created
            }
            None => {
                return Err(self
                    .refuse_link(connection, identity, "no_account", context)
                    .await);
            }
        };
        if !account.is_active() {
            return Err(IdmError::AccountDisabled);
        }
        self.sso
            .link_identity(
                &identity.issuer,
                &identity.subject,
                &account.id,
                context.now,
            )
            .await?;
        self.audit(
            AuditEvent::about(&account, "sso_linked", context)
                .detail(format!("issuer={}", identity.issuer)),
        )
        .await;
        Ok(account)
    }
}
