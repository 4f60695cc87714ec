//! Agencies and staff accounts: creating them (CLI, demo seed) and listing them for
//! Settings → Staff.

use crate::crypto::tokens;
use crate::domain::account::PasswordState;
use crate::domain::password::PolicyContext;
use crate::domain::{
    Agency, AgencyId, EmailAddress, Password, PasswordKind, Role, StaffAccount, StaffId,
    StaffStatus,
};

use super::ports::{AuditEvent, StaffFilter};
use super::{Idm, IdmError};

pub struct NewStaff<'a> {
    pub agency_slug: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub temporary_password: Option<&'a str>,
}

/// The demo accounts made on an empty database, with their temporary passwords.
pub struct DemoSeed {
    pub agency: Agency,
    pub owner: (StaffAccount, String),
    pub colleague: (StaffAccount, String),
    /// A confidential demo app and its secret, for trying the provider with curl.
    pub client: (crate::domain::oauth::Client, String),
}

fn valid_slug(slug: &str) -> bool {
    (2..=40).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

impl Idm {
    pub async fn create_agency(
        &self,
        name: &str,
        slug: &str,
        sso_enabled: bool,
    ) -> Result<Agency, IdmError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 120 {
            return Err(IdmError::InvalidInput(
                "the agency name must be 1 to 120 characters".into(),
            ));
        }
        if !valid_slug(slug) {
            return Err(IdmError::InvalidInput(
                "the slug must be 2 to 40 characters of a-z, 0-9 and '-'".into(),
            ));
        }
        let agency = Agency {
            id: AgencyId(tokens::random_id()),
            slug: slug.to_owned(),
            name: name.to_owned(),
            sso_enabled,
        };
        self.directory.create_agency(&agency).await?;
        Ok(agency)
    }

    pub async fn create_staff(
        &self,
        new: &NewStaff<'_>,
        now: i64,
    ) -> Result<StaffAccount, IdmError> {
        let agency = self
            .directory
            .agency_by_slug(new.agency_slug)
            .await?
            .ok_or_else(|| {
                IdmError::InvalidInput(format!("no agency with slug {:?}", new.agency_slug))
            })?;
        let email =
            EmailAddress::parse(new.email).map_err(|e| IdmError::InvalidInput(e.to_string()))?;
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 120 {
            return Err(IdmError::InvalidInput(
                "the name must be 1 to 120 characters".into(),
            ));
        }
        let (password_hash, password_state) = match new.temporary_password {
            Some(input) => {
                let password = Password::new(input);
                self.policy
                    .check(
                        &password,
                        PasswordKind::Temporary,
                        &PolicyContext {
                            email: &email,
                            current: None,
                        },
                    )
                    .map_err(IdmError::PasswordPolicy)?;
                (
                    Some(self.hasher.hash(&password).await?),
                    PasswordState::Temporary {
                        expires_at: now + self.rules.temporary_valid_seconds,
                    },
                )
            }
            None => (None, PasswordState::None),
        };
        let account = StaffAccount {
            id: StaffId(tokens::random_id()),
            agency_id: agency.id.clone(),
            email,
            name: name.to_owned(),
            role: new.role,
            status: StaffStatus::Active,
            password_hash,
            password_state,
            password_version: 0,
            created_at: now,
        };
        self.directory.create_staff(&account).await?;
        self.audit(AuditEvent {
            agency_id: Some(agency.id.clone()),
            at: now,
            event: "staff_created",
            actor: None,
            subject: Some(account.id.clone()),
            ip: String::new(),
            detail: format!("role={}", account.role),
        })
        .await;
        Ok(account)
    }

    /// Settings → Staff: the caller's agency, filtered.
    pub async fn list_staff(
        &self,
        actor: &StaffId,
        filter: &StaffFilter,
    ) -> Result<(StaffAccount, Vec<StaffAccount>), IdmError> {
        let actor = self
            .directory
            .staff_by_id(actor)
            .await?
            .ok_or(IdmError::NotFound)?;
        if !actor.role.is_admin() || !actor.is_active() {
            return Err(IdmError::Forbidden);
        }
        let staff = self.directory.list_staff(&actor.agency_id, filter).await?;
        Ok((actor, staff))
    }

    /// On an empty database, creates a demo agency (with self-service reset on), its
    /// owner and a colleague, both with temporary passwords to be printed once.
    pub async fn seed_demo_if_empty(&self, now: i64) -> Result<Option<DemoSeed>, IdmError> {
        if self.directory.count_agencies().await? > 0 {
            return Ok(None);
        }
        let agency = self.create_agency("Demo Estates", "demo", true).await?;
        let make = async |email: &str, name: &str, role: Role| {
            let password = tokens::generate_temporary_password();
            let account = self
                .create_staff(
                    &NewStaff {
                        agency_slug: &agency.slug,
                        email,
                        name,
                        role,
                        temporary_password: Some(&password),
                    },
                    now,
                )
                .await?;
            Ok::<_, IdmError>((account, password))
        };
        let owner = make("owner@demo.example", "Olivia Owner", Role::Owner).await?;
        let colleague = make("alex@demo.example", "Alex Agent", Role::Staff).await?;
        let (client, secret) = self
            .register_client(
                &crate::idm::clients::NewClient {
                    name: "Demo app",
                    redirect_uris: &["http://127.0.0.1:9000/callback".to_owned()],
                    post_logout_redirect_uris: &["http://127.0.0.1:9000/".to_owned()],
                    public: false,
                    third_party: false,
                    grant_types: &[],
                    scopes: &[
                        "openid".to_owned(),
                        "profile".to_owned(),
                        "email".to_owned(),
                        "offline_access".to_owned(),
                        "staff:admin".to_owned(),
                    ],
                    id_token_alg: None,
                },
                now,
            )
            .await?;
        let secret = secret.map(|s| s.expose().to_owned()).unwrap_or_default();
        Ok(Some(DemoSeed {
            agency,
            owner,
            colleague,
            client: (client, secret),
        }))
    }
}

impl Idm {
    /// The caller, if an active owner or client administrator.
    async fn admin(&self, actor: &StaffId) -> Result<StaffAccount, IdmError> {
        let actor = self
            .directory
            .staff_by_id(actor)
            .await?
            .ok_or(IdmError::NotFound)?;
        if !actor.role.is_admin() || !actor.is_active() {
            return Err(IdmError::Forbidden);
        }
        Ok(actor)
    }

    /// An administrator adds a colleague to their own agency. The account has no password
    /// yet: an administrator sets a temporary one, or (SSO agencies) the person resets it.
    /// A client administrator cannot create an owner.
    pub async fn add_colleague(
        &self,
        actor: &StaffId,
        email: &str,
        name: &str,
        role: Role,
        now: i64,
    ) -> Result<StaffAccount, IdmError> {
        let actor = self.admin(actor).await?;
        if !actor.role.may_reset_password_of(role) {
            return Err(IdmError::Forbidden);
        }
        // A domain another agency's SSO owns is that agency's: an address planted there
        // would block its person at their own SSO and sign in to apps under their name.
        if let Ok(parsed) = EmailAddress::parse(email)
            && let Some(owner) = self.sso.agency_for_domain(parsed.domain()).await?
            && owner != actor.agency_id
        {
            return Err(IdmError::InvalidInput(
                "That email domain belongs to another agency's single sign-on.".into(),
            ));
        }
        let agency = self
            .directory
            .agency(&actor.agency_id)
            .await?
            .ok_or(IdmError::NotFound)?;
        let account = self
            .create_staff(
                &NewStaff {
                    agency_slug: &agency.slug,
                    email,
                    name,
                    role,
                    temporary_password: None,
                },
                now,
            )
            .await?;
        self.audit(AuditEvent {
            agency_id: Some(agency.id.clone()),
            at: now,
            event: "staff_added",
            actor: Some(actor.id.clone()),
            subject: Some(account.id.clone()),
            ip: String::new(),
            detail: format!("role={role}"),
        })
        .await;
        Ok(account)
    }

    /// One account of the administrator's agency (another agency's is `NotFound`).
    pub async fn colleague(&self, actor: &StaffId, id: &str) -> Result<StaffAccount, IdmError> {
        let actor = self.admin(actor).await?;
        self.admin_target(&actor, id).await
    }

    /// The agency's security events, newest first.
    pub async fn audit_log(
        &self,
        actor: &StaffId,
        limit: i64,
    ) -> Result<Vec<super::ports::StoredAuditEvent>, IdmError> {
        let actor = self.admin(actor).await?;
        Ok(self.audit.recent(&actor.agency_id, limit).await?)
    }
}
