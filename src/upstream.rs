//! The upstream OpenID Connect providers of agencies (Latchkey as the relying party),
//! through the openidconnect crate.
//!
//! Discovery documents and JWKS are cached per issuer for a few minutes and fetched
//! again when a token names a key the cache does not know. Only asymmetric signature
//! algorithms are accepted: never `none`, never an HMAC keyed with the client secret, and
//! never a key taken from a token header.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdTokenVerifier,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, SubjectIdentifier, TokenResponse,
};

use crate::domain::sso::{SsoConnection, UpstreamIdentity};
use crate::idm::ports::{UpstreamError, UpstreamOidc};

const CACHE_FOR: Duration = Duration::from_secs(300);

const ASYMMETRIC: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

pub struct OpenIdUpstream {
    http: openidconnect::reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

fn unreachable(err: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unreachable(err.to_string())
}

/// Names the signature problem too (the crate's message alone does not say which).
fn id_token_refused(err: ClaimsVerificationError) -> UpstreamError {
    UpstreamError::Refused(match err {
        ClaimsVerificationError::SignatureVerification(inner) => {
            format!("ID token: signature: {inner}")
        }
        other => format!("ID token: {other}"),
    })
}

impl OpenIdUpstream {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open SSRF holes (the crate's advice too).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, issuer: &str) -> Option<CoreProviderMetadata> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(issuer)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, m)| m.clone())
    }

    /// The issuer's metadata with its JWKS, from the cache unless `refresh`.
    async fn metadata(
        &self,
        issuer: &str,
        refresh: bool,
    ) -> Result<CoreProviderMetadata, UpstreamError> {
        if !refresh && let Some(metadata) = self.cached(issuer) {
            return Ok(metadata);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let response = self.http.get(&url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(UpstreamError::Unreachable(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let body = response.bytes().await.map_err(unreachable)?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Refused(format!("not a discovery document: {e}")))?;
        if metadata.issuer().as_str() != issuer {
            return Err(UpstreamError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: metadata.issuer().to_string(),
            });
        }
        let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("JWKS: {e}")))?;
        let metadata = metadata.set_jwks(jwks);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(issuer.to_owned(), (Instant::now(), metadata.clone()));
        }
        Ok(metadata)
    }

    fn client(
        metadata: CoreProviderMetadata,
        connection: &SsoConnection,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        UpstreamError,
    > {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| UpstreamError::Refused(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(connection.client_id.clone()),
            Some(ClientSecret::new(
                connection.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect))
    }
}

#[async_trait]
impl UpstreamOidc for OpenIdUpstream {
    async fn discover(&self, issuer: &str) -> Result<(), UpstreamError> {
        self.metadata(issuer, true).await.map(|_| ())
    }

    async fn authorization_url(
        &self,
        connection: &SsoConnection,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        login_hint: Option<&str>,
    ) -> Result<String, UpstreamError> {
        let metadata = self.metadata(&connection.issuer, false).await?;
        let client = Self::client(metadata, connection, redirect_uri)?;
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_owned(),
        ));
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in connection.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(hint) = login_hint {
            request = request.add_extra_param("login_hint", hint.to_owned());
        }
        let (url, _, _) = request.url();
        Ok(url.to_string())
    }

    async fn exchange(
        &self,
        connection: &SsoConnection,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let metadata = self.metadata(&connection.issuer, false).await?;
        let jwks = metadata.jwks().clone();
        let client = Self::client(metadata, connection, redirect_uri)?;
        let issuer = IssuerUrl::new(connection.issuer.clone())
            .map_err(|e| UpstreamError::Refused(e.to_string()))?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| UpstreamError::Refused(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    UpstreamError::Refused(format!("token endpoint: {}", r.error()))
                }
                RequestTokenError::Parse(e, _) => {
                    UpstreamError::Refused(format!("token response: {e}"))
                }
                other => unreachable(other),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| UpstreamError::Refused("no ID token in the token response".into()))?;
        let expected_nonce = Nonce::new(nonce.to_owned());
        let verify = |jwks: CoreJsonWebKeySet| {
            let time = DateTime::<Utc>::from_timestamp(now, 0).unwrap_or_default();
            let verifier = IdTokenVerifier::new_public_client(
                ClientId::new(connection.client_id.clone()),
                issuer.clone(),
                jwks,
            )
            .set_allowed_algs(ASYMMETRIC)
            .set_time_fn(move || time);
            id_token.claims(&verifier, &expected_nonce).cloned()
        };
        let claims = match verify(jwks) {
            Ok(claims) => claims,
            // An unknown key (or a kid-less token that no cached key verifies) may be a
            // rotation at the upstream: refresh its JWKS once. A disallowed algorithm never
            // gets that far.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
                | SignatureVerificationError::CryptoError(_),
            )) => {
                let fresh = self.metadata(&connection.issuer, true).await?;
                verify(fresh.jwks().clone()).map_err(id_token_refused)?
            }
            Err(e) => return Err(id_token_refused(e)),
        };
        let subject = claims.subject().to_string();
        let mut email = claims.email().map(|e| e.to_string());
        let mut email_verified = claims.email_verified().unwrap_or(false);
        let mut name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string());
        if email.is_none() {
            // Many providers keep profile claims out of the ID token: ask userinfo, for
            // the same subject.
            let metadata = self.metadata(&connection.issuer, false).await?;
            let client = Self::client(metadata, connection, redirect_uri)?;
            let info: openidconnect::core::CoreUserInfoClaims = client
                .user_info(
                    response.access_token().clone(),
                    Some(SubjectIdentifier::new(subject.clone())),
                )
                .map_err(|e| UpstreamError::Refused(e.to_string()))?
                .request_async(&self.http)
                .await
                .map_err(|e| UpstreamError::Refused(format!("userinfo: {e}")))?;
            email = info.email().map(|e| e.to_string());
            email_verified = info.email_verified().unwrap_or(false);
            if name.is_none() {
                name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
            }
        }
        Ok(UpstreamIdentity {
            issuer: connection.issuer.clone(),
            subject,
            email,
            email_verified,
            name,
        })
    }
}
