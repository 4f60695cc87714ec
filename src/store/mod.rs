//! Accounts, reset tokens, the audit log and the mail outbox in SQL, through sqlx's `Any`
//! driver: one implementation and one migration set for SQLite and PostgreSQL.

mod oidc;
mod sso;

use std::path::Path;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::crypto::tokens;
use crate::domain::account::PasswordState;
use crate::domain::{Agency, AgencyId, EmailAddress, StaffAccount, StaffId};
use crate::idm::ports::{
    AuditEvent, AuditLog, Directory, MailQueue, OutgoingMail, PasswordChange, PortError,
    PortResult, QueuedMail, ResetTokenRecord, StaffFilter, StoredAuditEvent,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL (expected sqlite://… or postgres://…)")]
    UnsupportedUrl,
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

pub(crate) fn db_error(err: sqlx::Error) -> PortError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        return PortError::Conflict {
            what: "a record with that email or slug",
        };
    }
    PortError::unavailable("database", err)
}

pub(crate) fn corrupt(what: &str) -> PortError {
    PortError::unavailable("database", format!("unreadable {what} row"))
}

/// Adds `mode=rwc` to a SQLite URL and creates the file's folder.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    })
}

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, prepare_sqlite_url(url)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(5));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await.map_err(StoreError::Connect)?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const STAFF_COLUMNS: &str = "id, agency_id, email, name, role, status, password_hash, \
     password_state, temporary_expires_at, password_version, created_at";

fn staff_from_row(row: &AnyRow) -> PortResult<StaffAccount> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(|_| corrupt("staff"));
    let email = EmailAddress::parse(&get_s("email")?).map_err(|_| corrupt("staff"))?;
    let role = get_s("role")?.parse().map_err(|_| corrupt("staff"))?;
    let status = get_s("status")?.parse().map_err(|_| corrupt("staff"))?;
    let expires: Option<i64> = row
        .try_get("temporary_expires_at")
        .map_err(|_| corrupt("staff"))?;
    let password_state = match (get_s("password_state")?.as_str(), expires) {
        ("temporary", Some(expires_at)) => PasswordState::Temporary { expires_at },
        ("chosen", _) => PasswordState::Chosen,
        ("none", _) => PasswordState::None,
        _ => return Err(corrupt("staff")),
    };
    Ok(StaffAccount {
        id: StaffId(get_s("id")?),
        agency_id: AgencyId(get_s("agency_id")?),
        email,
        name: get_s("name")?,
        role,
        status,
        password_hash: row.try_get("password_hash").map_err(|_| corrupt("staff"))?,
        password_state,
        password_version: row
            .try_get("password_version")
            .map_err(|_| corrupt("staff"))?,
        created_at: row.try_get("created_at").map_err(|_| corrupt("staff"))?,
    })
}

fn agency_from_row(row: &AnyRow) -> PortResult<Agency> {
    let read = || -> Result<Agency, sqlx::Error> {
        Ok(Agency {
            id: AgencyId(row.try_get("id")?),
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            sso_enabled: row.try_get::<i64, _>("sso_enabled")? != 0,
        })
    };
    read().map_err(|_| corrupt("agency"))
}

fn state_columns(state: PasswordState) -> (&'static str, Option<i64>) {
    match state {
        PasswordState::None => ("none", None),
        PasswordState::Chosen => ("chosen", None),
        PasswordState::Temporary { expires_at } => ("temporary", Some(expires_at)),
    }
}

fn audit_id(at: i64) -> String {
    format!("{at:012x}{}", &tokens::random_id()[..16])
}

async fn insert_audit<'e, E>(executor: E, event: &AuditEvent) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO audit_events (id, agency_id, at, event, actor_id, subject_id, ip, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(audit_id(event.at))
    .bind(event.agency_id.as_ref().map(|a| a.0.clone()))
    .bind(event.at)
    .bind(event.event)
    .bind(event.actor.as_ref().map(|a| a.0.clone()))
    .bind(event.subject.as_ref().map(|a| a.0.clone()))
    .bind(event.ip.clone())
    .bind(event.detail.clone())
    .execute(executor)
    .await
    .map(|_| ())
}

async fn insert_mail<'e, E>(executor: E, mail: &OutgoingMail, now: i64) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO mail_outbox (id, to_address, subject, text_body, html_body, created_at, \
         expires_at, next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
    )
    .bind(tokens::random_id())
    .bind(mail.to.as_str().to_owned())
    .bind(mail.subject.clone())
    .bind(mail.text.clone())
    .bind(mail.html.clone())
    .bind(now)
    .bind(mail.expires_at)
    .bind(now)
    .execute(executor)
    .await
    .map(|_| ())
}

/// The statements of a password change that follow the (already applied) first one.
async fn finish_password_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &StaffId,
    change: &PasswordChange,
) -> Result<(), sqlx::Error> {
    let (state, expires) = state_columns(change.state);
    sqlx::query(
        "UPDATE staff SET password_hash = $1, password_state = $2, temporary_expires_at = $3, \
         password_changed_at = $4, password_version = password_version + 1 WHERE id = $5",
    )
    .bind(change.hash.clone())
    .bind(state)
    .bind(expires)
    .bind(change.changed_at)
    .bind(account.0.clone())
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM reset_tokens WHERE account_id = $1")
        .bind(account.0.clone())
        .execute(&mut **tx)
        .await?;
    insert_audit(&mut **tx, &change.audit).await?;
    if let Some(mail) = &change.notify {
        insert_mail(&mut **tx, mail, change.changed_at).await?;
    }
    Ok(())
}

#[async_trait]
impl Directory for SqlStore {
    async fn ping(&self) -> PortResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn create_agency(&self, agency: &Agency) -> PortResult<()> {
        sqlx::query(
            "INSERT INTO agencies (id, slug, name, sso_enabled, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(agency.id.0.clone())
        .bind(agency.slug.clone())
        .bind(agency.name.clone())
        .bind(i64::from(agency.sso_enabled))
        .bind(0_i64)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn agency(&self, id: &AgencyId) -> PortResult<Option<Agency>> {
        sqlx::query("SELECT id, slug, name, sso_enabled FROM agencies WHERE id = $1")
            .bind(id.0.clone())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(agency_from_row)
            .transpose()
    }

    async fn agency_by_slug(&self, slug: &str) -> PortResult<Option<Agency>> {
        sqlx::query("SELECT id, slug, name, sso_enabled FROM agencies WHERE slug = $1")
            .bind(slug.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(agency_from_row)
            .transpose()
    }

    async fn count_agencies(&self) -> PortResult<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM agencies")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?
            .try_get("n")
            .map_err(|_| corrupt("count"))
    }

    async fn create_staff(&self, account: &StaffAccount) -> PortResult<()> {
        let (state, expires) = state_columns(account.password_state);
        sqlx::query(
            "INSERT INTO staff (id, agency_id, email, name, role, status, password_hash, \
             password_state, temporary_expires_at, password_version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(account.id.0.clone())
        .bind(account.agency_id.0.clone())
        .bind(account.email.as_str().to_owned())
        .bind(account.name.clone())
        .bind(account.role.as_str())
        .bind(account.status.as_str())
        .bind(account.password_hash.clone())
        .bind(state)
        .bind(expires)
        .bind(account.password_version)
        .bind(account.created_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn staff_by_id(&self, id: &StaffId) -> PortResult<Option<StaffAccount>> {
        sqlx::query(&format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"))
            .bind(id.0.clone())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(staff_from_row)
            .transpose()
    }

    async fn staff_by_email(&self, email: &EmailAddress) -> PortResult<Option<StaffAccount>> {
        sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE email = $1"
        ))
        .bind(email.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(staff_from_row)
        .transpose()
    }

    async fn list_staff(
        &self,
        agency: &AgencyId,
        filter: &StaffFilter,
    ) -> PortResult<Vec<StaffAccount>> {
        let rows = sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE agency_id = $1 \
             AND ($2 = '' OR role = $2) AND ($3 = '' OR status = $3) ORDER BY name, email"
        ))
        .bind(agency.0.clone())
        .bind(filter.role.map_or("", |r| r.as_str()))
        .bind(filter.status.map_or("", |s| s.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        // Name and email matching is done here, with Unicode-aware lower case.
        let query = filter.query.as_deref().map(str::to_lowercase);
        let mut staff = Vec::with_capacity(rows.len());
        for row in &rows {
            let account = staff_from_row(row)?;
            let matches = query.as_deref().is_none_or(|q| {
                account.name.to_lowercase().contains(q) || account.email.as_str().contains(q)
            });
            if matches {
                staff.push(account);
            }
        }
        Ok(staff)
    }

    async fn set_password(&self, account: &StaffId, change: &PasswordChange) -> PortResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        finish_password_change(&mut tx, account, change)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn upgrade_hash(
        &self,
        account: &StaffId,
        old_hash: &str,
        new_hash: &str,
    ) -> PortResult<()> {
        sqlx::query("UPDATE staff SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new_hash.to_owned())
            .bind(account.0.clone())
            .bind(old_hash.to_owned())
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    async fn replace_reset_token(
        &self,
        account: &StaffId,
        digest: &str,
        created_at: i64,
        expires_at: i64,
    ) -> PortResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM reset_tokens WHERE account_id = $1")
            .bind(account.0.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO reset_tokens (digest, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(digest.to_owned())
        .bind(account.0.clone())
        .bind(created_at)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn reset_token(&self, digest: &str) -> PortResult<Option<ResetTokenRecord>> {
        let row = sqlx::query("SELECT account_id, expires_at FROM reset_tokens WHERE digest = $1")
            .bind(digest.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(ResetTokenRecord {
                account_id: StaffId(row.try_get("account_id").map_err(|_| corrupt("token"))?),
                expires_at: row.try_get("expires_at").map_err(|_| corrupt("token"))?,
            })
        })
        .transpose()
    }

    async fn redeem_reset_token(
        &self,
        digest: &str,
        now: i64,
        account: &StaffId,
        change: &PasswordChange,
    ) -> PortResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The consuming DELETE comes first: it takes the write lock, so of several
        // concurrent redemptions exactly one sees the row.
        let consumed = sqlx::query(
            "DELETE FROM reset_tokens WHERE digest = $1 AND account_id = $2 AND expires_at > $3",
        )
        .bind(digest.to_owned())
        .bind(account.0.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if consumed != 1 {
            tx.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        finish_password_change(&mut tx, account, change)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn instance_secret(&self, name: &str, candidate: &str) -> PortResult<String> {
        sqlx::query("INSERT INTO instance_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name.to_owned())
            .bind(candidate.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        sqlx::query("SELECT value FROM instance_secrets WHERE name = $1")
            .bind(name.to_owned())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?
            .try_get("value")
            .map_err(|_| corrupt("secret"))
    }
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn record(&self, event: &AuditEvent) -> PortResult<()> {
        insert_audit(&self.pool, event).await.map_err(db_error)
    }

    async fn recent(&self, agency: &AgencyId, limit: i64) -> PortResult<Vec<StoredAuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, event, actor_id, subject_id, ip, detail FROM audit_events \
             WHERE agency_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(agency.0.clone())
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let read = || -> Result<StoredAuditEvent, sqlx::Error> {
                    Ok(StoredAuditEvent {
                        at: row.try_get("at")?,
                        event: row.try_get("event")?,
                        actor: row.try_get("actor_id")?,
                        subject: row.try_get("subject_id")?,
                        ip: row.try_get("ip")?,
                        detail: row.try_get("detail")?,
                    })
                };
                read().map_err(|_| corrupt("audit"))
            })
            .collect()
    }
}

#[async_trait]
impl MailQueue for SqlStore {
    async fn enqueue(&self, mail: &OutgoingMail, now: i64) -> PortResult<()> {
        insert_mail(&self.pool, mail, now).await.map_err(db_error)
    }

    async fn claim_due(
        &self,
        now: i64,
        limit: i64,
        lease_seconds: i64,
    ) -> PortResult<Vec<QueuedMail>> {
        let rows = sqlx::query(
            "SELECT id, to_address, subject, text_body, html_body, expires_at, next_attempt_at, attempts \
             FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> Result<(QueuedMail, i64), sqlx::Error> {
                let to: String = row.try_get("to_address")?;
                Ok((
                    QueuedMail {
                        id: row.try_get("id")?,
                        attempts: row.try_get("attempts")?,
                        mail: OutgoingMail {
                            to: EmailAddress::parse(&to)
                                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
                            subject: row.try_get("subject")?,
                            text: row.try_get("text_body")?,
                            html: row.try_get("html_body")?,
                            expires_at: row.try_get("expires_at")?,
                        },
                    },
                    row.try_get("next_attempt_at")?,
                ))
            };
            let (queued, due_at) = read().map_err(|_| corrupt("mail"))?;
            // Lease it: only the replica whose update matches sends it.
            let leased = sqlx::query(
                "UPDATE mail_outbox SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3 AND sent_at IS NULL",
            )
            .bind(now + lease_seconds)
            .bind(queued.id.clone())
            .bind(due_at)
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
            if leased == 1 {
                claimed.push(queued);
            }
        }
        Ok(claimed)
    }

    async fn mark_sent(&self, id: &str, now: i64) -> PortResult<()> {
        sqlx::query(
            "UPDATE mail_outbox SET sent_at = $1, text_body = '', html_body = '', last_error = NULL WHERE id = $2",
        )
        .bind(now)
        .bind(id.to_owned())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn mark_failed(&self, id: &str, retry_at: i64, error: &str) -> PortResult<()> {
        sqlx::query(
            "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3",
        )
        .bind(retry_at)
        .bind(error.chars().take(500).collect::<String>())
        .bind(id.to_owned())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn drop_expired(&self, now: i64) -> PortResult<u64> {
        let expired = sqlx::query(
            "DELETE FROM mail_outbox WHERE sent_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        // Sent rows (already blanked) are kept a week for troubleshooting.
        sqlx::query("DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at <= $1")
            .bind(now - 7 * 24 * 3600)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(expired)
    }
}
