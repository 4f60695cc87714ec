//! SQL adapter for SSO connections, their domains and linked upstream identities.

use async_trait::async_trait;
use sqlx::Row;

use crate::domain::{AgencyId, StaffId};
use crate::idm::ports::{PortError, PortResult, SsoStore, StoredSsoConnection};

use super::{SqlStore, corrupt, db_error};

fn split(list: &str) -> Vec<String> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[async_trait]
impl SsoStore for SqlStore {
    async fn save_sso_connection(&self, c: &StoredSsoConnection) -> PortResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Writes first (SQLite takes its write lock at once): replace the domain list.
        sqlx::query("DELETE FROM sso_domains WHERE agency_id = $1")
            .bind(c.agency_id.0.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for domain in &c.domains {
            sqlx::query("INSERT INTO sso_domains (domain, agency_id) VALUES ($1, $2)")
                .bind(domain.clone())
                .bind(c.agency_id.0.clone())
                .execute(&mut *tx)
                .await
                .map_err(|e| match db_error(e) {
                    PortError::Conflict { .. } => PortError::Conflict {
                        what: "an SSO connection of another agency for that email domain",
                    },
                    other => other,
                })?;
        }
        sqlx::query("DELETE FROM sso_connections WHERE agency_id = $1")
            .bind(c.agency_id.0.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO sso_connections (agency_id, issuer, client_id, client_secret_sealed, \
             scopes, enforce, create_accounts, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(c.agency_id.0.clone())
        .bind(c.issuer.clone())
        .bind(c.client_id.clone())
        .bind(c.client_secret_sealed.clone())
        .bind(c.scopes.join(" "))
        .bind(i64::from(c.enforce))
        .bind(i64::from(c.create_accounts))
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("UPDATE agencies SET sso_enabled = 1 WHERE id = $1")
            .bind(c.agency_id.0.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn sso_connection(&self, agency: &AgencyId) -> PortResult<Option<StoredSsoConnection>> {
        let Some(row) = sqlx::query(
            "SELECT agency_id, issuer, client_id, client_secret_sealed, scopes, enforce, \
             create_accounts, updated_at FROM sso_connections WHERE agency_id = $1",
        )
        .bind(agency.0.clone())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        else {
            return Ok(None);
        };
        let domains =
            sqlx::query("SELECT domain FROM sso_domains WHERE agency_id = $1 ORDER BY domain")
                .bind(agency.0.clone())
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?
                .iter()
                .map(|r| r.try_get::<String, _>("domain"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| corrupt("sso domain"))?;
        let read = || -> Result<StoredSsoConnection, sqlx::Error> {
            Ok(StoredSsoConnection {
                agency_id: AgencyId(row.try_get("agency_id")?),
                issuer: row.try_get("issuer")?,
                client_id: row.try_get("client_id")?,
                client_secret_sealed: row.try_get("client_secret_sealed")?,
                domains: domains.clone(),
                scopes: split(&row.try_get::<String, _>("scopes")?),
                enforce: row.try_get::<i64, _>("enforce")? != 0,
                create_accounts: row.try_get::<i64, _>("create_accounts")? != 0,
                updated_at: row.try_get("updated_at")?,
            })
        };
        read().map(Some).map_err(|_| corrupt("sso connection"))
    }

    async fn agency_for_domain(&self, domain: &str) -> PortResult<Option<AgencyId>> {
        let row = sqlx::query("SELECT agency_id FROM sso_domains WHERE domain = $1")
            .bind(domain.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| {
            r.try_get("agency_id")
                .map(AgencyId)
                .map_err(|_| corrupt("sso domain"))
        })
        .transpose()
    }

    async fn linked_account(&self, issuer: &str, subject: &str) -> PortResult<Option<StaffId>> {
        let row = sqlx::query(
            "SELECT account_id FROM federated_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer.to_owned())
        .bind(subject.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| {
            r.try_get("account_id")
                .map(StaffId)
                .map_err(|_| corrupt("identity"))
        })
        .transpose()
    }

    async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        account: &StaffId,
        now: i64,
    ) -> PortResult<()> {
        sqlx::query(
            "INSERT INTO federated_identities (issuer, subject, account_id, linked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (issuer, subject) DO NOTHING",
        )
        .bind(issuer.to_owned())
        .bind(subject.to_owned())
        .bind(account.0.clone())
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }
}
