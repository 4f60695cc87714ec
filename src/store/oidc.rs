//! SQL adapters for the provider's clients, signing keys and consent.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::StaffId;
use crate::domain::oauth::Client;
use crate::idm::ports::{
    ClientRegistry, ConsentStore, PortResult, SigningKeyStore, StoredSigningKey,
};

use super::{SqlStore, corrupt, db_error};

fn split(list: &str) -> Vec<String> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn client_from_row(row: &AnyRow) -> Result<Client, sqlx::Error> {
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_digest: row.try_get("secret_digest")?,
        redirect_uris: split(&row.try_get::<String, _>("redirect_uris")?),
        post_logout_redirect_uris: split(&row.try_get::<String, _>("post_logout_redirect_uris")?),
        grant_types: split(&row.try_get::<String, _>("grant_types")?),
        scopes: split(&row.try_get::<String, _>("scopes")?),
        first_party: row.try_get::<i64, _>("first_party")? != 0,
        id_token_alg: row.try_get("id_token_signed_response_alg")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl ClientRegistry for SqlStore {
    async fn create_client(&self, client: &Client) -> PortResult<()> {
        sqlx::query(
            "INSERT INTO oauth_clients (id, name, secret_digest, redirect_uris, \
             post_logout_redirect_uris, grant_types, scopes, first_party, created_at, \
             id_token_signed_response_alg) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(client.id.clone())
        .bind(client.name.clone())
        .bind(client.secret_digest.clone())
        .bind(client.redirect_uris.join(" "))
        .bind(client.post_logout_redirect_uris.join(" "))
        .bind(client.grant_types.join(" "))
        .bind(client.scopes.join(" "))
        .bind(i64::from(client.first_party))
        .bind(client.created_at)
        .bind(client.id_token_alg.clone())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn client(&self, id: &str) -> PortResult<Option<Client>> {
        let row = sqlx::query(
            "SELECT id, name, secret_digest, redirect_uris, post_logout_redirect_uris, \
             grant_types, scopes, first_party, created_at, id_token_signed_response_alg \
             FROM oauth_clients WHERE id = $1",
        )
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(|row| client_from_row(row).map_err(|_| corrupt("client")))
            .transpose()
    }
}

#[async_trait]
impl SigningKeyStore for SqlStore {
    async fn insert_signing_key(&self, key: &StoredSigningKey) -> PortResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_private, public_a, public_b, created_at, active_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.kid.clone())
        .bind(key.alg.clone())
        .bind(key.sealed_private.clone())
        .bind(key.public_a.clone())
        .bind(key.public_b.clone())
        .bind(key.created_at)
        .bind(key.active_from)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    async fn signing_keys(&self) -> PortResult<Vec<StoredSigningKey>> {
        let rows = sqlx::query(
            "SELECT kid, alg, sealed_private, public_a, public_b, created_at, active_from \
             FROM signing_keys ORDER BY active_from, created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let read = || -> Result<StoredSigningKey, sqlx::Error> {
                    Ok(StoredSigningKey {
                        kid: row.try_get("kid")?,
                        alg: row.try_get("alg")?,
                        sealed_private: row.try_get("sealed_private")?,
                        public_a: row.try_get("public_a")?,
                        public_b: row.try_get("public_b")?,
                        created_at: row.try_get("created_at")?,
                        active_from: row.try_get("active_from")?,
                    })
                };
                read().map_err(|_| corrupt("signing key"))
            })
            .collect()
    }

    async fn delete_signing_key(&self, kid: &str) -> PortResult<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid.to_owned())
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }
}

#[async_trait]
impl ConsentStore for SqlStore {
    async fn consented_scopes(
        &self,
        account: &StaffId,
        client_id: &str,
    ) -> PortResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT scope FROM oauth_consents WHERE account_id = $1 AND client_id = $2",
        )
        .bind(account.0.clone())
        .bind(client_id.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get("scope").map_err(|_| corrupt("consent")))
            .collect()
    }

    async fn record_consent(
        &self,
        account: &StaffId,
        client_id: &str,
        scopes: &[String],
        now: i64,
    ) -> PortResult<()> {
        for scope in scopes {
            sqlx::query(
                "INSERT INTO oauth_consents (account_id, client_id, scope, granted_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, client_id, scope) DO NOTHING",
            )
            .bind(account.0.clone())
            .bind(client_id.to_owned())
            .bind(scope.clone())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }
}
