//! The Rust `openidconnect` crate as the relying party, the way one of the company's Rust
//! apps would use Latchkey: discovery, code + PKCE + nonce, ID token verification with the
//! crate's verifier, userinfo and refresh, all through the crate's own HTTP calls.

use chrono::{DateTime, Utc};
use latchkey::domain::Role;
use latchkey::idm::ports::Clock;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreGenderClaim,
    CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthType, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl,
    RequestTokenError, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use crate::helpers::{
    OAUTH_REDIRECT_URI, OAuthApp, OAuthAppOptions, Person, TestApp, TestClock,
    spawn_app_at_own_address,
};

/// Latchkey's own claims, as an app declares them to the crate.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgencyClaims {
    agency: String,
    roles: Vec<String>,
}

impl AdditionalClaims for AgencyClaims {}

fn http_client() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        // Following redirects would open the client up to SSRF (the crate's advice).
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// The relying party checks times against the clock the provider runs on.
fn test_time(clock: &TestClock) -> impl Fn() -> DateTime<Utc> + Send + Sync + use<> {
    let clock = clock.clone();
    move || DateTime::from_timestamp(clock.now(), 0).expect("instant")
}

/// Discovers the provider at its issuer URL and sets the app up as the crate's client.
async fn relying_party(
    app: &TestApp,
    registered: &OAuthApp,
    http: &openidconnect::reqwest::Client,
) -> openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
> {
    let issuer = IssuerUrl::new(app.issuer()).expect("issuer URL");
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .expect("discovery (the crate checks that the issuer matches)");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(registered.client_id.clone()),
        registered.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(OAUTH_REDIRECT_URI.into()).expect("redirect URL"))
}

async fn setup() -> (TestApp, String, Person) {
    let app = spawn_app_at_own_address().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    (app, agency, bob)
}

#[tokio::test]
async fn the_openidconnect_crate_signs_a_person_in_with_code_pkce_and_nonce_then_refreshes() {
    let (app, agency, bob) = setup().await;
    let registered = app.oauth_app().await;
    let http = http_client();
    let client = relying_party(&app, &registered, &http).await;

    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf_state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();

    // Bob, already signed in, follows the app's link.
    let browser = app.signed_in(&bob).await;
    let path = auth_url
        .as_str()
        .strip_prefix(&app.issuer())
        .expect("the authorization URL is the provider's");
    let page = browser.get(path).await;
    let callback = OAuthApp::callback_at(&page, OAUTH_REDIRECT_URI);
    assert_eq!(callback.get("state"), Some(csrf_state.secret()));
    // RFC 9207: the crate does not check `iss`; the app does.
    assert_eq!(callback.get("iss"), Some(&app.issuer()));
    let code = callback.get("code").expect("code").clone();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("discovery named a token endpoint")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("code exchange (client_secret_basic)");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client
        .id_token_verifier()
        .set_time_fn(test_time(&app.clock));
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("signature, issuer, audience, expiry and nonce verify");
    assert_eq!(claims.subject().as_str(), bob.id());
    assert_eq!(claims.email().map(|e| e.as_str()), Some(bob.email.as_str()));
    assert_eq!(claims.email_verified(), Some(true));
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .into_iter()
        .flatten()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(amr, ["pwd"]);
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("signing alg"),
        id_token.signing_key(&verifier).expect("signing key"),
    )
    .expect("hash");
    assert_eq!(actual_hash, *expected_hash);
    // The verifier is not a rubber stamp: another nonce is refused.
    assert!(
        id_token
            .claims(&verifier, &Nonce::new("someone-elses-nonce".into()))
            .is_err()
    );

    let info: UserInfoClaims<AgencyClaims, CoreGenderClaim> = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .expect("discovery named a userinfo endpoint")
        .request_async(&http)
        .await
        .expect("userinfo (the crate checks that sub matches)");
    assert_eq!(info.subject(), claims.subject());
    assert_eq!(info.additional_claims().agency, agency);
    assert_eq!(info.additional_claims().roles, ["staff"]);

    // Refresh through the crate: the refresh token rotates.
    let first_refresh = tokens.refresh_token().expect("a refresh token").clone();
    app.clock.advance(60);
    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .expect("token endpoint")
        .request_async(&http)
        .await
        .expect("refresh");
    let second_refresh = refreshed.refresh_token().expect("a new refresh token");
    assert_ne!(second_refresh.secret(), first_refresh.secret());
    assert_ne!(
        refreshed.access_token().secret(),
        tokens.access_token().secret()
    );
    // OIDC Core §12.2: a refreshed ID token names the same person and the original
    // authentication; it has no nonce to check.
    let refreshed_claims = refreshed
        .id_token()
        .expect("a refreshed ID token")
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("the refreshed ID token verifies");
    assert_eq!(refreshed_claims.subject(), claims.subject());
    assert_eq!(refreshed_claims.auth_time(), claims.auth_time());

    // The old refresh token is dead, and presenting it ends the new one as well.
    for dead in [&first_refresh, second_refresh] {
        match client
            .exchange_refresh_token(dead)
            .expect("token endpoint")
            .request_async(&http)
            .await
        {
            Err(RequestTokenError::ServerResponse(response)) => {
                assert_eq!(*response.error(), CoreErrorResponseType::InvalidGrant);
            }
            other => panic!("expected invalid_grant, got {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openidconnect_crate_as_a_public_client_uses_pkce_without_a_secret() {
    let (app, _, bob) = setup().await;
    let registered = app
        .oauth_app_with(OAuthAppOptions {
            name: "Viewing Planner".into(),
            public: true,
            ..OAuthAppOptions::default()
        })
        .await;
    let http = http_client();
    let client = relying_party(&app, &registered, &http).await;
    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf_state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let browser = app.signed_in(&bob).await;
    let page = browser
        .get(
            auth_url
                .as_str()
                .strip_prefix(&app.issuer())
                .expect("provider URL"),
        )
        .await;
    let callback = OAuthApp::callback_at(&page, OAUTH_REDIRECT_URI);
    assert_eq!(callback.get("state"), Some(csrf_state.secret()));
    let tokens = client
        .exchange_code(AuthorizationCode::new(callback["code"].clone()))
        .expect("token endpoint")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("code exchange with client_id only");
    let verifier = client
        .id_token_verifier()
        .set_time_fn(test_time(&app.clock));
    let claims = tokens
        .id_token()
        .expect("an ID token")
        .claims(&verifier, &nonce)
        .expect("verifies");
    assert_eq!(claims.subject().as_str(), bob.id());
    app.stop().await;
}

#[tokio::test]
async fn the_openidconnect_crate_with_client_secret_post_gets_tokens() {
    let (app, _, bob) = setup().await;
    let registered = app.oauth_app().await;
    let http = http_client();
    let client = relying_party(&app, &registered, &http)
        .await
        .set_auth_type(AuthType::RequestBody);
    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let browser = app.signed_in(&bob).await;
    let page = browser
        .get(
            auth_url
                .as_str()
                .strip_prefix(&app.issuer())
                .expect("provider URL"),
        )
        .await;
    let callback = OAuthApp::callback_at(&page, OAUTH_REDIRECT_URI);
    let tokens = client
        .exchange_code(AuthorizationCode::new(callback["code"].clone()))
        .expect("token endpoint")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("code exchange (client_secret_post)");
    let verifier = client
        .id_token_verifier()
        .set_time_fn(test_time(&app.clock));
    tokens
        .id_token()
        .expect("an ID token")
        .claims(&verifier, &nonce)
        .expect("verifies");
    app.stop().await;
}
