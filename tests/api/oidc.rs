//! The OpenID Connect provider, rule by rule (SECURITY.md O1–O9), and the journeys around
//! it: an app signing a person in with code + PKCE, a forced password change in the middle
//! of it, consent for a third-party app, key rotation, sign-out and client_credentials.
//! Expected values come from the RFCs (6749, 7636, 7662, 7009, 9207, 9700) and OpenID
//! Connect Core / Discovery / RP-Initiated Logout, not from the code under test.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::keys::{self, Algorithm, PublicParts};
use latchkey::domain::Role;
use latchkey::idm::ports::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Authorization, Browser, ClientAuth, OAUTH_POST_LOGOUT_URI, OAUTH_REDIRECT_URI, OAUTH_SCOPE,
    OAuthApp, OAuthAppOptions, Page, Person, Pkce, TestApp, TestOptions, Tokens, assert_status,
    spawn_app, spawn_app_at_own_address, spawn_app_with,
};

// ── Shared steps ────────────────────────────────────────────────────────────

/// An agency with one staff member, Bob, whose chosen password is set.
async fn harbour() -> (TestApp, String, Person) {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    (app, agency, bob)
}

/// The header and the claims of a JWT, without checking anything.
fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = || {
        let part = parts.next().expect("JWT part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    let header = decode();
    let claims = decode();
    (header, claims)
}

fn claims(token: &str) -> Value {
    jwt_parts(token).1
}

fn kid_of(token: &str) -> String {
    jwt_parts(token).0["kid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let page = app.browser().get(path).await;
    assert_status(&page, StatusCode::OK);
    serde_json::from_str(&page.body).expect("JSON")
}

async fn jwks(app: &TestApp) -> Value {
    get_json(app, "/.well-known/jwks.json").await
}

fn published_kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Whether the JWS signature verifies against the JWKS key named by the header's `kid`,
/// with the algorithm the header names and the key type that algorithm needs.
fn signature_verifies(token: &str, jwks: &Value) -> bool {
    let (header, _) = jwt_parts(token);
    let Some(key) = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    let part = |name: &str| key[name].as_str().unwrap_or_default().to_owned();
    let (alg, public) = match (header["alg"].as_str(), key["kty"].as_str()) {
        (Some("RS256"), Some("RSA")) => (
            Algorithm::RS256,
            PublicParts {
                a: part("n"),
                b: part("e"),
            },
        ),
        (Some("ES256"), Some("EC")) if key["crv"] == "P-256" => (
            Algorithm::ES256,
            PublicParts {
                a: part("x"),
                b: part("y"),
            },
        ),
        _ => return false,
    };
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    keys::verify(alg, &public, signed.as_bytes(), &signature)
}

/// OIDC Core §3.1.3.6: base64url of the left half of SHA-256 of the access token (RS256).
fn expected_at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// RFC 6749 §4.1.2.1 + RFC 9207: the error goes back to the verified redirect URI with
/// the request's `state` and the issuer, and no code.
#[track_caller]
fn assert_error_redirect(
    client: &OAuthApp,
    page: &Page,
    authorization: &Authorization,
    error: &str,
) {
    let params = client.callback(page);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some(error),
        "{params:?}"
    );
    assert_eq!(
        params.get("state"),
        Some(&authorization.state),
        "state echoed"
    );
    assert_eq!(params.get("iss"), Some(&client.issuer), "RFC 9207 iss");
    assert_eq!(params.get("code"), None, "no code with an error");
}

#[track_caller]
fn assert_inactive(introspection: &Value) {
    // RFC 7662 §2.2: an inactive token's answer should say nothing more.
    assert_eq!(*introspection, json!({ "active": false }));
}

#[track_caller]
fn assert_bearer_refused(answer: &crate::helpers::JsonAnswer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.json);
    assert!(
        answer.header("www-authenticate").starts_with("Bearer"),
        "RFC 6750 §3: {:?}",
        answer.header("www-authenticate")
    );
}

/// Everything a grant produced is dead: access token, refresh token, userinfo.
async fn assert_tokens_dead(client: &OAuthApp, tokens: &Tokens) {
    assert_inactive(&client.introspect(&tokens.access_token).await);
    assert_inactive(&client.introspect(&tokens.refresh_token).await);
    assert_bearer_refused(&client.userinfo(&tokens.access_token).await);
    client
        .refresh(&tokens.refresh_token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

async fn assert_tokens_live(client: &OAuthApp, tokens: &Tokens) {
    assert_eq!(
        client.introspect(&tokens.access_token).await["active"],
        true
    );
    assert_eq!(
        client.introspect(&tokens.refresh_token).await["active"],
        true
    );
    assert_eq!(
        client.userinfo(&tokens.access_token).await.status,
        StatusCode::OK
    );
}

/// A 303 to the sign-in page, carrying only a server-side request id back to /authorize.
#[track_caller]
fn assert_sent_to_sign_in(page: &Page, reauthenticate: bool) {
    assert_status(page, StatusCode::SEE_OTHER);
    let location = page.location();
    assert!(location.starts_with("/login?"), "{location}");
    assert_eq!(
        location.contains("reauth=1"),
        reauthenticate,
        "re-authentication asked for: {location}"
    );
    assert!(
        location.contains("return_to=%2Fauthorize%2Fresume"),
        "{location}"
    );
}

async fn public_app(app: &TestApp) -> OAuthApp {
    app.oauth_app_with(OAuthAppOptions {
        name: "Viewing Planner".into(),
        public: true,
        ..OAuthAppOptions::default()
    })
    .await
}

// ── O1: exact redirect_uri ──────────────────────────────────────────────────

/// A signed-in person (who would get a code at once) follows a request with `redirect_uri`
/// replaced by `variant` (or left out): an error page, never a redirect.
async fn assert_redirect_uri_refused(variant: Option<&str>) {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = match variant {
        Some(uri) => client.authorization().set("redirect_uri", uri),
        None => client.authorization().without("redirect_uri"),
    };
    let page = browser.get(&request.path()).await;
    assert!(
        page.status.is_client_error(),
        "{variant:?}: {} {}",
        page.status,
        page.body
    );
    assert!(
        page.headers.get("location").is_none(),
        "{variant:?} must not redirect, got {:?}",
        page.location()
    );
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{variant:?}: an error page for the person, not JSON: {:?}",
        page.header("content-type")
    );
    assert!(page.contains("redirect_uri"), "the page names the problem");
    assert!(!page.contains(&request.state), "the state is not reflected");
    // The registered URI itself gets a code: only the URI was wrong.
    let control = client.authorization();
    client.code_for(&browser, &control).await;
    app.stop().await;
}

#[tokio::test]
async fn o1_redirect_uri_with_trailing_slash_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/cb/")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_a_longer_path_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/cb/evil")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_an_added_query_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/cb?x=1")).await;
}

#[tokio::test]
async fn o1_redirect_uri_in_other_letter_case_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/CB")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_another_scheme_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("http://app.example/cb")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_another_host_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://evil.example/cb")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_a_suffixed_host_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example.evil.example/cb")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_another_port_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example:8443/cb")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_dot_segments_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/cb/../cb")).await;
}

#[tokio::test]
async fn o1_redirect_uri_with_a_fragment_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(Some("https://app.example/cb#x")).await;
}

#[tokio::test]
async fn o1_missing_redirect_uri_shows_an_error_and_does_not_redirect() {
    assert_redirect_uri_refused(None).await;
}

#[tokio::test]
async fn o1_an_unknown_client_id_shows_an_error_and_does_not_redirect() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    for request in [
        client.authorization().set("client_id", "lk_not_registered"),
        client.authorization().without("client_id"),
    ] {
        let page = browser.get(&request.path()).await;
        assert!(page.status.is_client_error(), "{}", page.status);
        assert!(
            page.headers.get("location").is_none(),
            "{}",
            page.location()
        );
        assert!(page.header("content-type").starts_with("text/html"));
    }
    app.stop().await;
}

// ── O2: PKCE S256 required ──────────────────────────────────────────────────

#[tokio::test]
async fn o2_authorize_without_code_challenge_redirects_with_invalid_request() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    for request in [
        client.authorization().without("code_challenge"),
        client
            .authorization()
            .without("code_challenge")
            .without("code_challenge_method"),
        client.authorization().set("code_challenge", ""),
    ] {
        let page = browser.get(&request.path()).await;
        assert_error_redirect(&client, &page, &request, "invalid_request");
    }
    app.stop().await;
}

#[tokio::test]
async fn o2_code_challenge_method_plain_redirects_with_invalid_request() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    // `plain` with a challenge equal to the verifier (RFC 7636 §4.2), and with a challenge
    // shaped like an S256 one: both refused, as is an unknown method.
    let plain = client.authorization();
    let verifier = plain.pkce.verifier.clone();
    for request in [
        plain
            .set("code_challenge", &verifier)
            .set("code_challenge_method", "plain"),
        client.authorization().set("code_challenge_method", "plain"),
        client.authorization().set("code_challenge_method", "s256"),
        client.authorization().set("code_challenge_method", "S512"),
    ] {
        let page = browser.get(&request.path()).await;
        assert_error_redirect(&client, &page, &request, "invalid_request");
    }
    app.stop().await;
}

#[tokio::test]
async fn o2_code_challenge_without_a_method_redirects_with_invalid_request() {
    // RFC 7636 §4.3: a missing method means `plain`, which is not supported.
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization().without("code_challenge_method");
    let page = browser.get(&request.path()).await;
    assert_error_redirect(&client, &page, &request, "invalid_request");
    app.stop().await;
}

#[tokio::test]
async fn o2_a_wrong_code_verifier_gets_invalid_grant_and_the_code_is_then_dead() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let wrong = client.exchange(&code, &Pkce::new().verifier).await;
    wrong.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(wrong.json.get("access_token").is_none());
    // An attacker guessing verifiers cannot keep trying: the right one now fails too.
    client
        .exchange(&code, &request.pkce.verifier)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    // The challenge itself is not a verifier either.
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    client
        .exchange(&code, &request.pkce.challenge)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    app.stop().await;
}

// ── O3: codes are single use, 60 s, bound ───────────────────────────────────

#[tokio::test]
async fn o3_a_replayed_code_gets_invalid_grant_and_the_tokens_it_produced_die() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let tokens = Tokens::from_answer(&client.exchange(&code, &request.pkce.verifier).await);
    assert_tokens_live(&client, &tokens).await;

    client
        .exchange(&code, &request.pkce.verifier)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // RFC 6749 §4.1.2 / RFC 9700 §4.2.4: the tokens of the first exchange are revoked.
    assert_tokens_dead(&client, &tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn o3_a_code_older_than_60_seconds_gets_invalid_grant() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;

    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    app.clock.advance(59);
    let in_time = client.exchange(&code, &request.pkce.verifier).await;
    assert_eq!(in_time.status, StatusCode::OK, "59 s old: {}", in_time.json);

    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    app.clock.advance(61);
    client
        .exchange(&code, &request.pkce.verifier)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn o3_a_code_is_bound_to_the_client_it_was_issued_to() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    // Another app that registered the very same redirect URI.
    let other = app
        .oauth_app_with(OAuthAppOptions {
            name: "Other App".into(),
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let stolen = other.exchange(&code, &request.pkce.verifier).await;
    stolen.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(stolen.json.get("access_token").is_none());
    app.stop().await;
}

#[tokio::test]
async fn o3_a_code_is_bound_to_its_redirect_uri() {
    let (app, _, bob) = harbour().await;
    let second = "https://app.example/other-cb";
    let client = app
        .oauth_app_with(OAuthAppOptions {
            redirect_uris: vec![OAUTH_REDIRECT_URI.into(), second.into()],
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;

    // RFC 6749 §4.1.3: redirect_uri at /token must be identical to the one authorized.
    for redirect_uri in [Some(second), None, Some("https://app.example/cb/")] {
        let request = client.authorization();
        let code = client.code_for(&browser, &request).await;
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", request.pkce.verifier.as_str()),
        ];
        if let Some(uri) = redirect_uri {
            fields.push(("redirect_uri", uri));
        }
        client
            .token(&fields)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }

    // A code issued for the second URI is redeemed with the second URI.
    let request = client.authorization().set("redirect_uri", second);
    let page = browser.get(&request.path()).await;
    let params = OAuthApp::callback_at(&page, second);
    let answer = client
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &params["code"]),
            ("redirect_uri", second),
            ("code_verifier", &request.pkce.verifier),
        ])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    app.stop().await;
}

// ── O4: only response_type=code; no implicit or password grant ──────────────

#[tokio::test]
async fn o4_implicit_and_hybrid_response_types_redirect_with_unsupported_response_type() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    for response_type in [
        "token",
        "id_token",
        "id_token token",
        "code id_token",
        "code token",
        "code id_token token",
    ] {
        let request = client.authorization().set("response_type", response_type);
        let page = browser.get(&request.path()).await;
        assert_error_redirect(&client, &page, &request, "unsupported_response_type");
        assert!(
            !page.location().contains("access_token") && !page.location().contains("id_token="),
            "{response_type}: no token in the redirect: {}",
            page.location()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn o4_a_missing_response_type_redirects_with_invalid_request() {
    // RFC 6749 §4.1.2.1: a missing required parameter is `invalid_request`.
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization().without("response_type");
    let page = browser.get(&request.path()).await;
    assert_error_redirect(&client, &page, &request, "invalid_request");
    app.stop().await;
}

#[tokio::test]
async fn o4_the_password_grant_gets_unsupported_grant_type() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let answer = client
        .token(&[
            ("grant_type", "password"),
            ("username", &bob.email),
            ("password", &bob.password),
            ("scope", "openid"),
        ])
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    assert!(answer.json.get("access_token").is_none());
    app.stop().await;
}

#[tokio::test]
async fn o4_an_unknown_grant_type_gets_unsupported_grant_type() {
    let (app, _, _) = harbour().await;
    let client = app.oauth_app().await;
    for grant_type in [
        "implicit",
        "token",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "AUTHORIZATION_CODE",
        "magic",
    ] {
        client
            .token(&[("grant_type", grant_type)])
            .await
            .assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    app.stop().await;
}

// ── O5: refresh rotation, reuse detection, binding ──────────────────────────

#[tokio::test]
async fn o5_refresh_rotates_the_refresh_token_and_the_old_one_stops_working() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, first) = client.sign_in_through(&browser).await;
    assert!(!first.refresh_token.is_empty(), "{}", first.json);

    let second = Tokens::from_answer(&client.refresh(&first.refresh_token).await);
    assert!(!second.refresh_token.is_empty(), "a new refresh token");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_tokens_live(&client, &second).await;
    assert_inactive(&client.introspect(&first.refresh_token).await);

    client
        .refresh(&first.refresh_token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    app.stop().await;
}

#[tokio::test]
async fn o5_reusing_an_old_refresh_token_revokes_the_whole_family() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, first) = client.sign_in_through(&browser).await;
    // Bob's phone: another grant of the same person and app, a family of its own.
    let phone = app.signed_in(&bob).await;
    let (_, phone_tokens) = client.sign_in_through(&phone).await;

    let second = Tokens::from_answer(&client.refresh(&first.refresh_token).await);
    let third = Tokens::from_answer(&client.refresh(&second.refresh_token).await);
    assert_tokens_live(&client, &third).await;

    // The first refresh token comes back (stolen and replayed, or a confused client).
    client
        .refresh(&first.refresh_token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    // RFC 9700 §4.14.2: the newest refresh token and the live access token die with it.
    assert_tokens_dead(&client, &third).await;
    assert_inactive(&client.introspect(&second.access_token).await);
    // Only that family: the phone's grant lives on.
    assert_tokens_live(&client, &phone_tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn o5_a_refresh_token_presented_by_another_client_gets_invalid_grant() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let other = app
        .oauth_app_with(OAuthAppOptions {
            name: "Other App".into(),
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let answer = other.refresh(&tokens.refresh_token).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(answer.json.get("access_token").is_none());
    app.stop().await;
}

#[tokio::test]
async fn o5_an_admin_reset_ends_the_persons_refresh_and_access_tokens() {
    let (app, agency, bob) = harbour().await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    // The owner's own grant is not Bob's and must survive.
    let admin = app.signed_in(&owner).await;
    let (_, owners_tokens) = client.sign_in_through(&admin).await;
    assert_tokens_live(&client, &tokens).await;

    let reset = app.admin_resets(&admin, &bob, "Password.1").await;
    assert_status(&reset, StatusCode::SEE_OTHER);

    assert_tokens_dead(&client, &tokens).await;
    assert_tokens_live(&client, &owners_tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn o5_a_password_change_ends_the_persons_refresh_and_access_tokens() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let laptop = app.signed_in(&bob).await;
    let (_, laptop_tokens) = client.sign_in_through(&laptop).await;

    let changed = browser
        .submit(
            "/password/change",
            &[
                ("current_password", &bob.password),
                ("new_password", "Harbour-Lights-42"),
                ("confirm_password", "Harbour-Lights-42"),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);

    // The grant of the session that changed the password, and of every other one.
    assert_tokens_dead(&client, &tokens).await;
    assert_tokens_dead(&client, &laptop_tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn o5_a_refresh_token_past_its_lifetime_gets_invalid_grant() {
    let app = spawn_app_with(TestOptions {
        env: vec![("LATCHKEY_OIDC_REFRESH_TOKEN_SECONDS".into(), "900".into())],
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, first) = client.sign_in_through(&browser).await;
    // Each refresh token lives 15 min from its issue; refreshing keeps the session alive.
    app.clock.advance(899);
    let second = Tokens::from_answer(&client.refresh(&first.refresh_token).await);
    assert_eq!(
        client.introspect(&second.refresh_token).await["exp"],
        app.clock.now() + 900
    );
    // Still within the session's idle timeout (30 min), but past the token's 15 min.
    app.clock.advance(900);
    assert_inactive(&client.introspect(&second.refresh_token).await);
    client
        .refresh(&second.refresh_token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    app.stop().await;
}

// ── O6: the ID token ────────────────────────────────────────────────────────

#[tokio::test]
async fn o6_the_id_token_is_signed_by_a_published_key_and_carries_the_right_claims() {
    let (app, agency, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let signed_in_at = app.clock.now();
    app.clock.advance(30);
    let discovery = get_json(&app, "/.well-known/openid-configuration").await;

    // A nonce with characters that need encoding must come back byte for byte.
    let nonce = "n-0S6_WzA2Mj ü+/=&\"<x>";
    let request = client.authorization().set("nonce", nonce);
    let code = client.code_for(&browser, &request).await;
    let answer = client.exchange(&code, &request.pkce.verifier).await;
    let tokens = Tokens::from_answer(&answer);
    assert_eq!(answer.str("token_type"), "Bearer");
    let issued_at = app.clock.now();

    let (header, id) = jwt_parts(&tokens.id_token);
    let advertised = discovery["id_token_signing_alg_values_supported"]
        .as_array()
        .expect("advertised algorithms");
    assert!(
        advertised.contains(&header["alg"]),
        "{header} vs {advertised:?}"
    );
    assert_ne!(header["alg"], "none");
    let published = jwks(&app).await;
    assert!(
        published_kids(&published).contains(header["kid"].as_str().unwrap_or_default()),
        "kid {} is in the JWKS",
        header["kid"]
    );
    assert!(signature_verifies(&tokens.id_token, &published));

    assert_eq!(id["iss"], discovery["issuer"]);
    assert_eq!(id["iss"], app.issuer());
    let audience_ok = match &id["aud"] {
        Value::String(aud) => *aud == client.client_id,
        Value::Array(list) => list.contains(&json!(client.client_id)),
        _ => false,
    };
    assert!(audience_ok, "aud {} contains the client id", id["aud"]);
    assert_eq!(id["sub"], bob.id());
    assert_eq!(id["nonce"], nonce);
    assert_eq!(id["at_hash"], expected_at_hash(&tokens.access_token));
    assert_eq!(id["amr"], json!(["pwd"]));
    assert_eq!(id["auth_time"], signed_in_at);
    assert_eq!(id["iat"], issued_at);
    assert!(id["exp"].as_i64().unwrap_or_default() > issued_at);
    assert_eq!(id["email"], bob.email);
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["name"], "Bob Baker");
    assert_eq!(id["agency"], agency);
    assert_eq!(id["roles"], json!(["staff"]));

    // The check above is not vacuous: a token whose payload was changed does not verify.
    let (head, rest) = tokens.id_token.split_once('.').expect("JWT");
    let (_, signature) = rest.split_once('.').expect("JWT");
    let mut forged = id.clone();
    forged["roles"] = json!(["owner"]);
    let forged_payload = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert!(!signature_verifies(
        &format!("{head}.{forged_payload}.{signature}"),
        &published
    ));

    // Userinfo speaks of the same person.
    let info = client.userinfo(&tokens.access_token).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.json);
    assert_eq!(info.json["sub"], id["sub"]);
    assert_eq!(info.json["email"], bob.email);
    assert_eq!(info.json["agency"], agency);
    app.stop().await;
}

#[tokio::test]
async fn o6_an_app_registered_for_es256_gets_id_tokens_signed_by_the_published_es256_key() {
    let (app, _agency, bob) = harbour().await;
    let client = app
        .oauth_app_with(OAuthAppOptions {
            id_token_alg: Some("ES256".into()),
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let (header, id) = jwt_parts(&tokens.id_token);
    assert_eq!(header["alg"], "ES256");
    assert!(kid_of(&tokens.id_token).starts_with("es256-"));
    assert!(signature_verifies(&tokens.id_token, &jwks(&app).await));
    assert_eq!(id["at_hash"], expected_at_hash(&tokens.access_token));
    assert_eq!(id["sub"], bob.id().as_str());
    app.stop().await;
}

#[tokio::test]
async fn o6_a_refreshed_id_token_names_the_same_person_and_original_auth_time() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let signed_in_at = app.clock.now();
    let (_, first) = client.sign_in_through(&browser).await;
    app.clock.advance(120);
    let refreshed = Tokens::from_answer(&client.refresh(&first.refresh_token).await);
    let (before, after) = (claims(&first.id_token), claims(&refreshed.id_token));
    // OIDC Core §12.2.
    for claim in ["iss", "sub", "aud"] {
        assert_eq!(before[claim], after[claim], "{claim}");
    }
    assert_eq!(after["auth_time"], signed_in_at);
    assert_eq!(after["iat"], app.clock.now());
    assert_eq!(after["at_hash"], expected_at_hash(&refreshed.access_token));
    assert!(signature_verifies(&refreshed.id_token, &jwks(&app).await));
    app.stop().await;
}

// ── O7: client authentication at /token ─────────────────────────────────────

#[track_caller]
fn assert_invalid_client(answer: &crate::helpers::JsonAnswer) {
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        !answer.header("www-authenticate").is_empty(),
        "RFC 6749 §5.2: a 401 carries WWW-Authenticate"
    );
    assert!(answer.json.get("access_token").is_none());
}

#[tokio::test]
async fn o7_a_wrong_client_secret_gets_401_invalid_client_with_www_authenticate() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", OAUTH_REDIRECT_URI),
        ("code_verifier", request.pkce.verifier.as_str()),
    ];
    let secret = client.secret.clone().expect("confidential");
    let almost = format!("{}x", &secret[..secret.len() - 1]);
    let basic = client
        .post(
            "/token",
            ClientAuth::Basic(&client.client_id, &almost),
            &fields,
        )
        .await;
    assert_invalid_client(&basic);
    assert!(
        basic.header("www-authenticate").starts_with("Basic"),
        "the scheme the client used: {:?}",
        basic.header("www-authenticate")
    );
    assert_invalid_client(
        &client
            .post(
                "/token",
                ClientAuth::Post(&client.client_id, &almost),
                &fields,
            )
            .await,
    );
    // The refused attempts did not use the code up.
    let answer = client.post("/token", ClientAuth::Own, &fields).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    app.stop().await;
}

#[tokio::test]
async fn o7_an_unknown_client_gets_401_invalid_client() {
    let (app, _, _) = harbour().await;
    let client = app.oauth_app().await;
    let secret = client.secret.clone().expect("secret");
    for auth in [
        ClientAuth::Basic("lk_not_registered", &secret),
        ClientAuth::Post("lk_not_registered", &secret),
        ClientAuth::IdOnly("lk_not_registered"),
    ] {
        assert_invalid_client(
            &client
                .post("/token", auth, &[("grant_type", "client_credentials")])
                .await,
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn o7_a_token_request_without_client_authentication_gets_401_invalid_client() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens.refresh_token.as_str()),
    ];
    assert_invalid_client(&client.post("/token", ClientAuth::Nothing, &fields).await);
    // A confidential client that leaves its secret out is not authenticated either.
    assert_invalid_client(
        &client
            .post("/token", ClientAuth::IdOnly(&client.client_id), &fields)
            .await,
    );
    assert_invalid_client(
        &client
            .post("/token", ClientAuth::Basic(&client.client_id, ""), &fields)
            .await,
    );
    app.stop().await;
}

#[tokio::test]
async fn o7_token_answers_are_never_cached() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let success = client.exchange(&code, &request.pkce.verifier).await;
    assert_eq!(success.status, StatusCode::OK);
    let replay = client.exchange(&code, &request.pkce.verifier).await;
    let unauthenticated = client
        .post(
            "/token",
            ClientAuth::Nothing,
            &[("grant_type", "refresh_token")],
        )
        .await;
    let unsupported = client.token(&[("grant_type", "password")]).await;
    let credentials = client.token(&[("grant_type", "client_credentials")]).await;
    // RFC 6749 §5.1 / §5.2.
    for (what, answer) in [
        ("success", &success),
        ("invalid_grant", &replay),
        ("invalid_client", &unauthenticated),
        ("unsupported_grant_type", &unsupported),
        ("client_credentials", &credentials),
    ] {
        assert!(
            answer.header("cache-control").contains("no-store"),
            "{what}: {:?}",
            answer.header("cache-control")
        );
        assert_eq!(answer.header("pragma"), "no-cache", "{what}");
        assert!(
            answer
                .header("content-type")
                .starts_with("application/json"),
            "{what}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn o7_client_secret_basic_and_client_secret_post_both_work() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let secret = client.secret.clone().expect("secret");
    for auth in [
        ClientAuth::Basic(&client.client_id, &secret),
        ClientAuth::Post(&client.client_id, &secret),
    ] {
        let request = client.authorization();
        let code = client.code_for(&browser, &request).await;
        let answer = client
            .post(
                "/token",
                auth,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", OAUTH_REDIRECT_URI),
                    ("code_verifier", &request.pkce.verifier),
                ],
            )
            .await;
        let tokens = Tokens::from_answer(&answer);
        assert!(!tokens.id_token.is_empty() && !tokens.refresh_token.is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn o7_a_public_client_authenticates_with_none_and_pkce() {
    let (app, _, bob) = harbour().await;
    let client = public_app(&app).await;
    assert!(client.secret.is_none(), "a public client gets no secret");
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    assert_eq!(claims(&tokens.id_token)["sub"], bob.id());
    let refreshed = client.refresh(&tokens.refresh_token).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.json);
    app.stop().await;
}

#[tokio::test]
async fn o7_a_public_client_sending_a_secret_is_refused() {
    let (app, _, bob) = harbour().await;
    let client = public_app(&app).await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", OAUTH_REDIRECT_URI),
        ("code_verifier", request.pkce.verifier.as_str()),
    ];
    for auth in [
        ClientAuth::Post(&client.client_id, "made-up-secret"),
        ClientAuth::Basic(&client.client_id, "made-up-secret"),
    ] {
        assert_invalid_client(&client.post("/token", auth, &fields).await);
    }
    app.stop().await;
}

#[tokio::test]
async fn o7_client_secrets_are_long_random_values_stored_as_digests() {
    let (app, _, _) = harbour().await;
    let first = app.oauth_app().await;
    let second = app.oauth_app().await;
    let secret = first.secret.clone().expect("secret");
    assert!(
        secret.len() >= 43,
        "at least 256 bits, base64url: {}",
        secret.len()
    );
    assert_ne!(first.secret, second.secret);
    let stored = app
        .idm
        .clients
        .client(&first.client_id)
        .await
        .expect("db")
        .expect("client");
    let digest = stored.secret_digest.expect("a digest is stored");
    assert!(!digest.contains(&secret), "the secret itself is not stored");
    app.stop().await;
}

// ── O8: introspection and revocation ────────────────────────────────────────

#[tokio::test]
async fn o8_introspection_without_client_authentication_gets_401() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let token = [("token", tokens.access_token.as_str())];
    assert_invalid_client(
        &client
            .post("/introspect", ClientAuth::Nothing, &token)
            .await,
    );
    assert_invalid_client(
        &client
            .post(
                "/introspect",
                ClientAuth::Basic(&client.client_id, "wrong"),
                &token,
            )
            .await,
    );
    // Naming a public client is not authentication (RFC 7662 §2.1).
    let public = public_app(&app).await;
    assert_invalid_client(
        &client
            .post("/introspect", ClientAuth::IdOnly(&public.client_id), &token)
            .await,
    );
    app.stop().await;
}

#[tokio::test]
async fn o8_a_live_access_token_introspects_as_active_with_subject_client_scope_and_expiry() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let issued_at = app.clock.now();
    let expires_in = tokens.json["expires_in"].as_i64().expect("expires_in");
    let answer = client.introspect(&tokens.access_token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["sub"], bob.id());
    assert_eq!(answer["client_id"], client.client_id);
    let scopes: BTreeSet<&str> = answer["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    assert_eq!(scopes, OAUTH_SCOPE.split(' ').collect());
    assert_eq!(answer["exp"], issued_at + expires_in);
    app.stop().await;
}

#[tokio::test]
async fn o8_an_expired_access_token_introspects_as_inactive() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let expires_in = tokens.json["expires_in"].as_i64().expect("expires_in");
    app.clock.advance(expires_in - 1);
    assert_eq!(
        client.introspect(&tokens.access_token).await["active"],
        true
    );
    app.clock.advance(1);
    assert_inactive(&client.introspect(&tokens.access_token).await);
    assert_bearer_refused(&client.userinfo(&tokens.access_token).await);
    app.stop().await;
}

#[tokio::test]
async fn o8_a_revoked_access_token_introspects_as_inactive() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let revoked = client.revoke(&tokens.access_token).await;
    assert_eq!(revoked.status, StatusCode::OK, "RFC 7009 §2.2");
    assert_inactive(&client.introspect(&tokens.access_token).await);
    assert_bearer_refused(&client.userinfo(&tokens.access_token).await);
    app.stop().await;
}

#[tokio::test]
async fn o8_revoking_a_refresh_token_ends_its_family() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, first) = client.sign_in_through(&browser).await;
    let tokens = Tokens::from_answer(&client.refresh(&first.refresh_token).await);
    let revoked = client.revoke(&tokens.refresh_token).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_tokens_dead(&client, &tokens).await;
    assert_inactive(&client.introspect(&first.access_token).await);
    app.stop().await;
}

#[tokio::test]
async fn o8_revocation_needs_client_authentication_and_only_touches_the_clients_own_tokens() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let other = app
        .oauth_app_with(OAuthAppOptions {
            name: "Other App".into(),
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let token = [("token", tokens.refresh_token.as_str())];
    assert_invalid_client(&client.post("/revoke", ClientAuth::Nothing, &token).await);
    other.revoke(&tokens.refresh_token).await;
    other.revoke(&tokens.access_token).await;
    assert_tokens_live(&client, &tokens).await;
    // An unknown token is not an error (RFC 7009 §2.2).
    assert_eq!(client.revoke("not-a-token").await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn o8_a_public_client_revokes_its_refresh_token_by_naming_itself() {
    // RFC 7009 §2.1: a public client identifies itself with client_id.
    let (app, _, bob) = harbour().await;
    let client = public_app(&app).await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let revoked = client.revoke(&tokens.refresh_token).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.json);
    client
        .refresh(&tokens.refresh_token)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_bearer_refused(&client.userinfo(&tokens.access_token).await);
    app.stop().await;
}

// ── O9: prompt, max_age and auth_time ───────────────────────────────────────

#[tokio::test]
async fn o9_prompt_none_without_a_session_returns_login_required_to_the_app() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let request = client.authorization().set("prompt", "none");
    let page = app.browser().get(&request.path()).await;
    assert_error_redirect(&client, &page, &request, "login_required");

    // With a session the same silent request gets a code, without any page.
    let browser = app.signed_in(&bob).await;
    let request = client.authorization().set("prompt", "none");
    client.code_for(&browser, &request).await;
    app.stop().await;
}

#[tokio::test]
async fn o9_prompt_none_for_a_restricted_session_returns_interaction_required() {
    let (app, agency, _) = harbour().await;
    let client = app.oauth_app().await;
    let carol = app
        .person_with_temporary_password(&agency, "Carol Clark", Role::Staff, "Password.1")
        .await;
    let browser = app.browser();
    let signed = browser.sign_in(&carol.email, "Password.1").await;
    assert_eq!(
        signed.location(),
        "/password/change",
        "a restricted session"
    );
    let request = client.authorization().set("prompt", "none");
    let page = browser.get(&request.path()).await;
    assert_error_redirect(&client, &page, &request, "interaction_required");
    app.stop().await;
}

/// Signs in again at the sign-in page `page` sent the browser to, follows the resume
/// redirect, and returns the code the app receives.
async fn reauthenticate(
    client: &OAuthApp,
    browser: &Browser,
    page: &Page,
    person: &Person,
    request: &Authorization,
) -> String {
    let form = browser.get(&page.location()).await;
    assert_status(&form, StatusCode::OK);
    assert!(
        form.contains("name=\"password\""),
        "the sign-in form is shown"
    );
    let signed = browser
        .sign_in_at(&page.location(), &person.email, &person.password)
        .await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert!(
        signed.location().starts_with("/authorize/resume?"),
        "{}",
        signed.location()
    );
    let back = browser.get(&signed.location()).await;
    client.code_from(&back, request)
}

async fn auth_time_of(client: &OAuthApp, code: &str, request: &Authorization) -> i64 {
    let tokens = Tokens::from_answer(&client.exchange(code, &request.pkce.verifier).await);
    claims(&tokens.id_token)["auth_time"]
        .as_i64()
        .expect("auth_time")
}

#[tokio::test]
async fn o9_prompt_login_shows_the_sign_in_form_again_and_auth_time_moves_on() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let first_sign_in = app.clock.now();
    app.clock.advance(120);

    let request = client.authorization().set("prompt", "login");
    let page = browser.get(&request.path()).await;
    assert_sent_to_sign_in(&page, true);
    let code = reauthenticate(&client, &browser, &page, &bob, &request).await;
    let auth_time = auth_time_of(&client, &code, &request).await;
    assert_eq!(auth_time, app.clock.now());
    assert!(auth_time > first_sign_in);
    app.stop().await;
}

#[tokio::test]
async fn o9_prompt_login_right_after_signing_in_still_shows_the_sign_in_form() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    // Same second as the sign-in: the session still predates the request.
    let request = client.authorization().set("prompt", "login");
    let page = browser.get(&request.path()).await;
    assert_sent_to_sign_in(&page, true);
    let code = reauthenticate(&client, &browser, &page, &bob, &request).await;
    assert_eq!(
        auth_time_of(&client, &code, &request).await,
        app.clock.now()
    );
    app.stop().await;
}

#[tokio::test]
async fn o9_max_age_0_forces_re_authentication() {
    // OIDC Core §3.1.2.1: max_age=0 is equivalent to prompt=login.
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    for advance in [0, 5] {
        app.clock.advance(advance);
        let request = client.authorization().set("max_age", "0");
        let page = browser.get(&request.path()).await;
        assert_sent_to_sign_in(&page, true);
        let code = reauthenticate(&client, &browser, &page, &bob, &request).await;
        assert_eq!(
            auth_time_of(&client, &code, &request).await,
            app.clock.now()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn o9_max_age_forces_re_authentication_when_the_sign_in_is_older() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let signed_in_at = app.clock.now();
    app.clock.advance(600);

    // Young enough: a code at once, with the original auth_time.
    let request = client.authorization().set("max_age", "3600");
    let code = client.code_for(&browser, &request).await;
    assert_eq!(auth_time_of(&client, &code, &request).await, signed_in_at);

    // Too old, silently: the app is told to ask for a sign-in.
    let request = client
        .authorization()
        .set("max_age", "300")
        .set("prompt", "none");
    let page = browser.get(&request.path()).await;
    assert_error_redirect(&client, &page, &request, "login_required");

    // Too old: sign in again, and the new auth_time is the new sign-in.
    let request = client.authorization().set("max_age", "300");
    let page = browser.get(&request.path()).await;
    assert_sent_to_sign_in(&page, true);
    let code = reauthenticate(&client, &browser, &page, &bob, &request).await;
    assert_eq!(
        auth_time_of(&client, &code, &request).await,
        signed_in_at + 600
    );
    app.stop().await;
}

#[tokio::test]
async fn o9_auth_time_is_the_sign_in_instant() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    app.clock.advance(17);
    let browser = app.signed_in(&bob).await;
    let signed_in_at = app.clock.now();
    app.clock.advance(45);
    let request = client.authorization();
    let code = client.code_for(&browser, &request).await;
    assert_eq!(auth_time_of(&client, &code, &request).await, signed_in_at);

    // Signing in through the app's request (no session yet) gives the instant of that
    // sign-in.
    let fresh = app.browser();
    app.clock.advance(33);
    let request = client.authorization();
    let page = fresh.get(&request.path()).await;
    assert_sent_to_sign_in(&page, false);
    let code = reauthenticate(&client, &fresh, &page, &bob, &request).await;
    assert_eq!(
        auth_time_of(&client, &code, &request).await,
        app.clock.now()
    );
    app.stop().await;
}

// ── Journeys ────────────────────────────────────────────────────────────────

#[tokio::test]
async fn forced_change_from_an_app_ends_back_at_the_app_with_a_code_and_the_original_state() {
    let (app, agency, _) = harbour().await;
    let client = app.oauth_app().await;
    let dan = app
        .person_with_temporary_password(&agency, "Dan Dale", Role::Staff, "Password.1")
        .await;
    let browser = app.browser();

    // Dan opens the app, which sends him to /authorize; he has no session.
    let request = client.authorization();
    let page = browser.get(&request.path()).await;
    assert_sent_to_sign_in(&page, false);
    // Only a server-side id travels through the browser, not the request itself.
    for secret_part in [&request.state, &request.nonce, &request.pkce.challenge] {
        assert!(!page.location().contains(secret_part.as_str()));
    }
    assert!(!page.location().contains("app.example"));

    let signed = browser
        .sign_in_at(&page.location(), &dan.email, "Password.1")
        .await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/password/change");
    let changed = browser
        .submit(
            "/password/change",
            &[
                ("current_password", "Password.1"),
                ("new_password", "Harbour-Lights-42"),
                ("confirm_password", "Harbour-Lights-42"),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);
    assert!(
        changed.location().starts_with("/authorize/resume?"),
        "back to the authorization: {}",
        changed.location()
    );

    let back = browser.get(&changed.location()).await;
    let code = client.code_from(&back, &request);
    let tokens = Tokens::from_answer(&client.exchange(&code, &request.pkce.verifier).await);
    let id = claims(&tokens.id_token);
    assert_eq!(id["sub"], dan.id());
    assert_eq!(id["nonce"], request.nonce);
    // The pending request is used up.
    let again = browser.get(&changed.location()).await;
    assert!(again.status.is_client_error(), "{}", again.status);
    assert!(again.headers.get("location").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_third_party_app_asks_for_consent_once_and_a_refusal_returns_access_denied() {
    let (app, agency, bob) = harbour().await;
    let client = app
        .oauth_app_with(OAuthAppOptions {
            name: "Moving Partner".into(),
            third_party: true,
            ..OAuthAppOptions::default()
        })
        .await;
    let browser = app.signed_in(&bob).await;

    let request = client.authorization();
    let consent = browser.get(&request.path()).await;
    assert_status(&consent, StatusCode::OK);
    assert!(consent.contains("Moving Partner"), "{}", consent.body);
    for scope in OAUTH_SCOPE.split(' ') {
        assert!(consent.contains(scope), "{scope} is listed");
    }
    let pending = consent.field_value("request").expect("pending request id");
    assert!(!pending.contains(&request.state));
    let allowed = browser
        .post_form(
            "/authorize/consent",
            &[("request", &pending), ("decision", "allow")],
        )
        .await;
    let code = client.code_from(&allowed, &request);
    let tokens = Tokens::from_answer(&client.exchange(&code, &request.pkce.verifier).await);
    assert_eq!(claims(&tokens.id_token)["sub"], bob.id());

    // Next time: no consent page.
    let request = client.authorization();
    client.code_for(&browser, &request).await;
    let silent = client.authorization().set("prompt", "none");
    client.code_for(&browser, &silent).await;

    // Carol has not consented: a silent request is told so, and she refuses.
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    let carols = app.signed_in(&carol).await;
    let silent = client.authorization().set("prompt", "none");
    let page = carols.get(&silent.path()).await;
    assert_error_redirect(&client, &page, &silent, "consent_required");
    let request = client.authorization();
    let consent = carols.get(&request.path()).await;
    assert_status(&consent, StatusCode::OK);
    let pending = consent.field_value("request").expect("pending request id");
    let denied = carols
        .post_form(
            "/authorize/consent",
            &[("request", &pending), ("decision", "deny")],
        )
        .await;
    assert_error_redirect(&client, &denied, &request, "access_denied");
    // Refusing is not remembered as consent.
    let again = carols.get(&client.authorization().path()).await;
    assert_status(&again, StatusCode::OK);
    assert!(again.contains("Moving Partner"));
    app.stop().await;
}

#[tokio::test]
async fn a_first_party_app_never_shows_a_consent_page() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let request = client.authorization();
    let page = browser.get(&request.path()).await;
    client.code_from(&page, &request);
    app.stop().await;
}

#[tokio::test]
async fn key_rotation_publishes_new_keys_first_signs_with_them_after_the_delay_and_retires_old_ones_after_their_tokens_expire()
 {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let delay = i64::try_from(app.settings.oidc.key_activation_delay_seconds).expect("delay");
    let lifetime = i64::try_from(
        app.settings
            .oidc
            .id_token_seconds
            .max(app.settings.oidc.access_token_seconds),
    )
    .expect("lifetime");

    let browser = app.signed_in(&bob).await;
    let (_, before) = client.sign_in_through(&browser).await;
    let old_kid = kid_of(&before.id_token);
    let old_kids = published_kids(&jwks(&app).await);
    assert!(old_kids.contains(&old_kid));

    let rotated_at = app.clock.now();
    let new_kids: BTreeSet<String> = app
        .idm
        .rotate_keys(rotated_at)
        .await
        .expect("rotate")
        .into_iter()
        .collect();
    assert_eq!(new_kids.len(), 2, "one ES256 and one RS256 key");
    // Published at once, beside the old ones.
    let published = published_kids(&jwks(&app).await);
    assert!(published.is_superset(&new_kids), "{published:?}");
    assert!(published.is_superset(&old_kids), "{published:?}");
    // Not signing yet.
    let (_, during) = client.sign_in_through(&browser).await;
    assert_eq!(kid_of(&during.id_token), old_kid);

    // One second before the delay ends (a fresh sign-in: the first session idled out).
    app.clock.advance(delay - 1);
    let browser = app.signed_in(&bob).await;
    let (_, last_old) = client.sign_in_through(&browser).await;
    assert_eq!(kid_of(&last_old.id_token), old_kid);

    app.clock.advance(1);
    let (_, after) = client.sign_in_through(&browser).await;
    let new_kid = kid_of(&after.id_token);
    assert!(
        new_kids.contains(&new_kid),
        "{new_kid} is one of {new_kids:?}"
    );
    let published = jwks(&app).await;
    for token in [&before, &during, &last_old, &after] {
        assert!(
            signature_verifies(&token.id_token, &published),
            "a token of kid {} still verifies",
            kid_of(&token.id_token)
        );
    }

    // The old keys stay while a token they signed may still be valid…
    app.clock.advance(lifetime - 1);
    assert!(published_kids(&jwks(&app).await).is_superset(&old_kids));
    assert!(signature_verifies(&last_old.id_token, &jwks(&app).await));
    // …and leave once the newest keys have signed for longer than any token lives.
    app.clock.advance(1);
    let published = published_kids(&jwks(&app).await);
    assert!(published.is_disjoint(&old_kids), "{published:?}");
    assert!(published.is_superset(&new_kids));
    let (_, later) = client.sign_in_through(&browser).await;
    assert_eq!(kid_of(&later.id_token), new_kid);

    // Rotating again prunes the stored old keys and publishes the next ones.
    let next: BTreeSet<String> = app
        .idm
        .rotate_keys(app.clock.now())
        .await
        .expect("rotate")
        .into_iter()
        .collect();
    let published = published_kids(&jwks(&app).await);
    assert_eq!(
        published,
        new_kids.union(&next).cloned().collect::<BTreeSet<_>>()
    );
    app.stop().await;
}

#[tokio::test]
async fn end_session_with_id_token_hint_signs_out_and_returns_to_the_app_with_state() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let elsewhere = app.signed_in(&bob).await;
    let (_, elsewhere_tokens) = client.sign_in_through(&elsewhere).await;

    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("id_token_hint", &tokens.id_token)
        .append_pair("post_logout_redirect_uri", OAUTH_POST_LOGOUT_URI)
        .append_pair("state", "bye & see you")
        .finish();
    let page = browser.get(&format!("/logout?{query}")).await;
    assert_status(&page, StatusCode::SEE_OTHER);
    let params = OAuthApp::callback_at(&page, OAUTH_POST_LOGOUT_URI);
    assert_eq!(
        params,
        HashMap::from([("state".to_owned(), "bye & see you".to_owned())])
    );

    // The session is over, and so is the grant bound to it.
    let account = browser.get("/account").await;
    assert_status(&account, StatusCode::SEE_OTHER);
    assert!(account.location().starts_with("/login"));
    assert_tokens_dead(&client, &tokens).await;
    // Bob's other session and its grant are not this sign-out's business.
    assert_status(&elsewhere.get("/account").await, StatusCode::OK);
    assert_tokens_live(&client, &elsewhere_tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn end_session_to_an_unregistered_post_logout_redirect_uri_shows_an_error_page() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    for uri in [
        "https://evil.example/signed-out",
        "https://app.example/signed-out/",
        OAUTH_REDIRECT_URI,
    ] {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("id_token_hint", &tokens.id_token)
            .append_pair("post_logout_redirect_uri", uri)
            .append_pair("state", "s")
            .finish();
        let page = browser.get(&format!("/logout?{query}")).await;
        assert!(page.status.is_client_error(), "{uri}: {}", page.status);
        assert!(
            page.headers.get("location").is_none(),
            "{uri}: {}",
            page.location()
        );
        assert!(page.header("content-type").starts_with("text/html"));
    }
    // Nothing was ended by the refused requests.
    assert_status(&browser.get("/account").await, StatusCode::OK);
    assert_tokens_live(&client, &tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn end_session_without_id_token_hint_asks_for_confirmation_first() {
    let (app, _, bob) = harbour().await;
    let client = app.oauth_app().await;
    let browser = app.signed_in(&bob).await;
    let (_, tokens) = client.sign_in_through(&browser).await;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &client.client_id)
        .append_pair("post_logout_redirect_uri", OAUTH_POST_LOGOUT_URI)
        .append_pair("state", "xyz")
        .finish();
    let page = browser.get(&format!("/logout?{query}")).await;
    assert_status(&page, StatusCode::OK);
    assert!(page.contains("action=\"/logout\""), "{}", page.body);
    // Merely opening the page (which any site can make a browser do) signs nobody out.
    assert_status(&browser.get("/account").await, StatusCode::OK);
    assert_tokens_live(&client, &tokens).await;

    let confirmed = browser
        .post_form(
            "/logout",
            &[
                (
                    "client_id",
                    &page.field_value("client_id").unwrap_or_default(),
                ),
                (
                    "post_logout_redirect_uri",
                    &page
                        .field_value("post_logout_redirect_uri")
                        .unwrap_or_default(),
                ),
                ("state", &page.field_value("state").unwrap_or_default()),
            ],
        )
        .await;
    let params = OAuthApp::callback_at(&confirmed, OAUTH_POST_LOGOUT_URI);
    assert_eq!(params.get("state").map(String::as_str), Some("xyz"));
    assert_status(&browser.get("/account").await, StatusCode::SEE_OTHER);
    assert_tokens_dead(&client, &tokens).await;
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_gives_a_confidential_client_an_access_token_only() {
    let (app, _, _) = harbour().await;
    let client = app.oauth_app().await;
    let answer = client.token(&[("grant_type", "client_credentials")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(answer.str("token_type"), "Bearer");
    assert!(!answer.str("access_token").is_empty());
    assert!(
        answer.json.get("id_token").is_none(),
        "no person, no ID token"
    );
    // RFC 6749 §4.4.3: a refresh token should not be included.
    assert!(answer.json.get("refresh_token").is_none());
    let introspection = client.introspect(&answer.str("access_token")).await;
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["client_id"], client.client_id);
    assert!(introspection.get("sub").is_none(), "{introspection}");
    // It acts for no person: userinfo has nobody to describe.
    assert_bearer_refused(&client.userinfo(&answer.str("access_token")).await);
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_for_a_public_client_is_unauthorized_client() {
    let (app, _, _) = harbour().await;
    let client = public_app(&app).await;
    let answer = client.token(&[("grant_type", "client_credentials")]).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
    assert!(answer.json.get("access_token").is_none());
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_with_scope_openid_is_invalid_scope() {
    let (app, _, _) = harbour().await;
    let client = app.oauth_app().await;
    for scope in ["openid", "openid email", "staff:admin", "no-such-scope"] {
        let answer = client
            .token(&[("grant_type", "client_credentials"), ("scope", scope)])
            .await;
        answer.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_discovery_document_is_truthful() {
    let app = spawn_app_at_own_address().await;
    let issuer = app.issuer();
    let page = app.browser().get("/.well-known/openid-configuration").await;
    assert_status(&page, StatusCode::OK);
    assert!(page.header("content-type").starts_with("application/json"));
    let document: Value = serde_json::from_str(&page.body).expect("JSON");
    // OIDC Discovery §4.3: the issuer is exactly the URL discovery was fetched under.
    assert_eq!(document["issuer"], issuer);
    assert_eq!(document["response_types_supported"], json!(["code"]));
    assert_eq!(
        document["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let set = |name: &str| -> BTreeSet<String> {
        document[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is a list"))
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    let strings =
        |list: &[&str]| -> BTreeSet<String> { list.iter().map(|s| (*s).to_owned()).collect() };
    assert_eq!(
        set("grant_types_supported"),
        strings(&["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        set("token_endpoint_auth_methods_supported"),
        strings(&["client_secret_basic", "client_secret_post", "none"])
    );
    assert!(set("id_token_signing_alg_values_supported").contains("RS256"));
    assert!(!set("id_token_signing_alg_values_supported").contains("none"));
    assert!(set("scopes_supported").contains("openid"));
    assert_eq!(set("subject_types_supported"), strings(&["public"]));
    assert_eq!(
        document["authorization_response_iss_parameter_supported"],
        true
    );
    // Introspection is for confidential clients; a public one may revoke its own tokens.
    assert_eq!(
        set("introspection_endpoint_auth_methods_supported"),
        strings(&["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        set("revocation_endpoint_auth_methods_supported"),
        strings(&["client_secret_basic", "client_secret_post", "none"])
    );

    // Every endpoint is under the issuer and answers there.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (field, method) in [
        ("authorization_endpoint", "GET"),
        ("token_endpoint", "POST"),
        ("userinfo_endpoint", "GET"),
        ("jwks_uri", "GET"),
        ("end_session_endpoint", "GET"),
        ("introspection_endpoint", "POST"),
        ("revocation_endpoint", "POST"),
    ] {
        let url = document[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}"));
        assert!(url.starts_with(&format!("{issuer}/")), "{field}: {url}");
        let request = match method {
            "GET" => http.get(url),
            _ => http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded"),
        };
        let status = request.send().await.expect(field).status();
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{field} {method} {url}: {status}"
        );
    }
    let jwks: Value = http
        .get(document["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JSON");
    assert!(!published_kids(&jwks).is_empty());
    app.stop().await;
}
