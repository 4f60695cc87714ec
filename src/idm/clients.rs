//! Registering the company's apps as OAuth clients.

use crate::crypto::tokens;
use crate::domain::Secret;
use crate::domain::oauth::{
    Client, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, KNOWN_SCOPES,
    valid_redirect_uri,
};

use super::{Idm, IdmError};

pub struct NewClient<'a> {
    pub name: &'a str,
    pub redirect_uris: &'a [String],
    pub post_logout_redirect_uris: &'a [String],
    /// A public client (single-page or native app) has no secret and must use PKCE.
    pub public: bool,
    /// Not one of the company's own apps: people are asked for consent.
    pub third_party: bool,
    /// Empty means: authorization_code and refresh_token (+ client_credentials when
    /// confidential).
    pub grant_types: &'a [String],
    /// Empty means: openid profile email offline_access.
    pub scopes: &'a [String],
    /// `RS256` (default) or `ES256`.
    pub id_token_alg: Option<&'a str>,
}

impl Idm {
    /// Registers a client; the secret (confidential clients) is returned once and only
    /// its digest is stored.
    pub async fn register_client(
        &self,
        new: &NewClient<'_>,
        now: i64,
    ) -> Result<(Client, Option<Secret>), IdmError> {
        let invalid = |m: String| IdmError::InvalidInput(m);
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 120 {
            return Err(invalid(
                "the client name must be 1 to 120 characters".into(),
            ));
        }
        if new.redirect_uris.is_empty() {
            return Err(invalid("at least one --redirect-uri is needed".into()));
        }
        for uri in new
            .redirect_uris
            .iter()
            .chain(new.post_logout_redirect_uris)
        {
            if !valid_redirect_uri(uri) {
                return Err(invalid(format!(
                    "{uri:?} is not an absolute https URL (http is allowed only on loopback) without a fragment"
                )));
            }
        }
        let mut grant_types: Vec<String> = if new.grant_types.is_empty() {
            let mut defaults = vec![
                GRANT_AUTHORIZATION_CODE.to_owned(),
                GRANT_REFRESH_TOKEN.to_owned(),
            ];
            if !new.public {
                defaults.push(GRANT_CLIENT_CREDENTIALS.to_owned());
            }
            defaults
        } else {
            new.grant_types.to_vec()
        };
        grant_types.dedup();
        for grant in &grant_types {
            let known = [
                GRANT_AUTHORIZATION_CODE,
                GRANT_REFRESH_TOKEN,
                GRANT_CLIENT_CREDENTIALS,
            ];
            if !known.contains(&grant.as_str()) {
                return Err(invalid(format!("unsupported grant type {grant:?}")));
            }
            if new.public && grant == GRANT_CLIENT_CREDENTIALS {
                return Err(invalid(
                    "a public client cannot use client_credentials".into(),
                ));
            }
        }
        let scopes: Vec<String> = if new.scopes.is_empty() {
            ["openid", "profile", "email", "offline_access"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        } else {
            new.scopes.to_vec()
        };
        if let Some(unknown) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
            return Err(invalid(format!("unknown scope {unknown:?}")));
        }
        let id_token_alg = new.id_token_alg.unwrap_or("RS256");
        if crate::crypto::keys::Algorithm::parse(id_token_alg).is_none() {
            return Err(invalid(format!(
                "unsupported ID token algorithm {id_token_alg:?} (RS256 or ES256)"
            )));
        }
        let secret = (!new.public).then(|| tokens::random_token(32));
        let client = Client {
            id: format!("lk_{}", &tokens::random_id()[..20]),
            name: name.to_owned(),
            secret_digest: secret.as_deref().map(tokens::digest),
            redirect_uris: new.redirect_uris.to_vec(),
            post_logout_redirect_uris: new.post_logout_redirect_uris.to_vec(),
            grant_types,
            scopes,
            first_party: !new.third_party,
            id_token_alg: id_token_alg.to_owned(),
            created_at: now,
        };
        self.clients.create_client(&client).await?;
        Ok((client, secret.map(Secret::new)))
    }
}
