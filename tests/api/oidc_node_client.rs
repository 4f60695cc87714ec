//! Certified npm peers against the real server: openid-client (a relying party) signs a
//! staff member in to an app through Latchkey, and oidc-provider (the upstream corporate
//! SSO provider of the SSO journeys) answers a headless code + PKCE flow.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::tokens;
use latchkey::domain::Role;
use latchkey::idm::clients::NewClient;
use latchkey::idm::ports::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    IdpClient, IdpOptions, IdpUser, NodePeer, UpstreamIdp, assert_status,
    redirect_following_client, spawn_app_at_own_address,
};

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[tokio::test]
async fn a_certified_relying_party_signs_a_staff_member_in_with_code_and_pkce() {
    let app = spawn_app_at_own_address().await;
    let agency = app.agency("Harbour Lettings", false).await;
    let nia = app.person(&agency, "Nia Okafor", Role::Staff).await;
    let redirect_uri = "http://127.0.0.1:9/auth/callback".to_owned();
    let (client, secret) = app
        .idm
        .register_client(
            &NewClient {
                name: "Lettings board (openid-client)",
                redirect_uris: std::slice::from_ref(&redirect_uri),
                post_logout_redirect_uris: &[],
                public: false,
                third_party: false,
                grant_types: &[],
                scopes: &[],
                id_token_alg: None,
            },
            app.clock.now(),
        )
        .await
        .expect("register client");
    let secret = secret.expect("a confidential client gets a secret");
    let laptop = app.signed_in(&nia).await;

    // The app (openid-client) discovers Latchkey and sends Nia's browser to /authorize.
    let log_dir = tempfile::tempdir().expect("tempdir");
    let mut rp = NodePeer::spawn(
        "rp.mjs",
        &json!({
            "issuer": app.address,
            "client_id": client.id,
            "client_secret": secret.expose(),
            "redirect_uri": redirect_uri,
        }),
        &log_dir.path().join("rp.log"),
    );
    let authorize = rp.read_json().await;
    assert_eq!(authorize["step"], "authorize", "{authorize}");
    let authorization_url = authorize["authorization_url"].as_str().expect("URL");
    assert_eq!(
        query_param(authorization_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let path = authorization_url
        .strip_prefix(&app.address)
        .unwrap_or_else(|| panic!("{authorization_url} is not on {}", app.address));
    assert!(path.starts_with("/authorize?"), "{path}");

    // Signed in already, a first-party app gets a code at once.
    let answer = laptop.get(path).await;
    assert_status(&answer, StatusCode::SEE_OTHER);
    let callback = answer.location();
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    assert!(query_param(&callback, "code").is_some(), "{callback}");

    // The app exchanges the code, checks the ID token, asks userinfo and refreshes.
    rp.write_json(&json!({ "callback_url": callback })).await;
    let done = rp.read_json().await;
    assert_eq!(done["step"], "done", "openid-client refused: {done}");

    let claims = &done["id_token_claims"];
    assert_eq!(done["sub"], nia.id());
    assert_eq!(claims["sub"], nia.id());
    assert_eq!(done["userinfo_sub"], nia.id());
    assert_eq!(claims["iss"], app.address);
    assert!(
        claims["aud"] == client.id || claims["aud"] == json!([client.id]),
        "aud: {}",
        claims["aud"]
    );
    assert_eq!(claims["email"], nia.email);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Nia Okafor");
    assert_eq!(claims["agency"], agency);
    assert_eq!(claims["roles"], json!(["staff"]));
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(claims["nonce"], authorize["nonce"]);
    assert!(claims["auth_time"].as_i64().is_some(), "{claims}");
    assert_eq!(done["userinfo"]["email"], nia.email);

    // openid-client verified the signature against the JWKS; the key is the published one.
    let header = &done["id_token_header"];
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = laptop
        .client
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");
    assert!(
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|key| key["kid"] == header["kid"]),
        "kid {} not in {jwks}",
        header["kid"]
    );

    // The refresh rotated the refresh token and kept the person.
    assert_eq!(done["refreshed"], true);
    assert_eq!(done["refresh_rotated"], true, "{done}");
    assert_eq!(done["access_token_changed"], true, "{done}");
    // Its new ID token passed the same checks, signature included.
    assert_eq!(done["refreshed_id_token_claims"]["sub"], nia.id(), "{done}");
}

/// The ID token claims for `code`, exchanged as the `latchkey` client of these tests.
async fn exchange_at_upstream(
    http: &reqwest::Client,
    token_endpoint: &str,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Value {
    let tokens: Value = http
        .post(token_endpoint)
        .basic_auth("latchkey", Some("upstream-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let id_token = tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no ID token: {tokens}"));
    let mut claims = jwt_part(id_token, 1);
    claims["kid"] = jwt_part(id_token, 0)["kid"].clone();
    claims
}

#[tokio::test]
async fn the_upstream_provider_signs_a_user_in_headlessly_with_code_and_pkce() {
    let redirect_uri = "http://127.0.0.1:9/sso/callback";
    let alice = IdpUser::new("corp-4711", "alice.aston@harbour.example", "Alice Aston");
    let bo = IdpUser::new("corp-4712", "bo@harbour.example", "Bo Berg").unverified();
    let idp = UpstreamIdp::start_with(IdpOptions {
        clients: vec![IdpClient::new("latchkey", "upstream-secret", redirect_uri)],
        users: vec![alice.clone(), bo.clone()],
        default_user: Some(alice.sub.clone()),
        port: None,
    })
    .await;
    let http = redirect_following_client(redirect_uri);

    let discovery: Value = http
        .get(idp.discovery_url())
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(discovery["issuer"], idp.issuer);
    assert_eq!(discovery["response_types_supported"], json!(["code"]));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let endpoint = |name: &str| discovery[name].as_str().expect(name).to_owned();
    let token_endpoint = endpoint("token_endpoint");

    let verifier = tokens::random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = tokens::random_token(16);
    let nonce = tokens::random_token(16);
    let authorize = |extra: &[(&str, &str)]| {
        let mut params = vec![
            ("client_id", "latchkey"),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", "openid email profile"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
        ];
        params.extend_from_slice(extra);
        url::Url::parse_with_params(&endpoint("authorization_endpoint"), &params)
            .expect("URL")
            .to_string()
    };
    let with_pkce = |login_hint: &str| {
        authorize(&[
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("login_hint", login_hint),
        ])
    };
    let location = |answer: &reqwest::Response| {
        answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{} {} without a redirect", answer.status(), answer.url()))
            .to_owned()
    };

    // Alice, named by login_hint, ends at the redirect URI with a code.
    let answer = http
        .get(with_pkce(&alice.sub))
        .send()
        .await
        .expect("authorize");
    assert!(answer.status().is_redirection(), "{}", answer.status());
    let callback = location(&answer);
    assert!(
        callback.starts_with(redirect_uri),
        "{callback}\n{}",
        idp.log()
    );
    assert_eq!(query_param(&callback, "state"), Some(state.clone()));
    assert_eq!(query_param(&callback, "iss"), Some(idp.issuer.clone()));
    let code = query_param(&callback, "code").expect("code");
    let claims = exchange_at_upstream(&http, &token_endpoint, &code, &verifier, redirect_uri).await;
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["aud"], "latchkey");
    assert_eq!(claims["sub"], alice.sub);
    assert_eq!(claims["email"], alice.email);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], alice.name);
    assert_eq!(claims["nonce"], nonce.as_str());
    let jwks: Value = http
        .get(endpoint("jwks_uri"))
        .send()
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");
    assert!(
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == claims["kid"]),
        "{} not in {jwks}",
        claims["kid"]
    );

    // In the same cookie jar, a hint naming Bo (by email) signs Bo in instead.
    let answer = http
        .get(with_pkce(&bo.email))
        .send()
        .await
        .expect("authorize");
    let code = query_param(&location(&answer), "code").expect("code for Bo");
    let claims = exchange_at_upstream(&http, &token_endpoint, &code, &verifier, redirect_uri).await;
    assert_eq!(claims["sub"], bo.sub);
    assert_eq!(claims["email_verified"], false);

    // A fresh browser without a hint gets the default user.
    let callback = idp
        .callback_for(
            &authorize(&[
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ]),
            redirect_uri,
        )
        .await;
    let code = query_param(&callback, "code").expect("code for the default user");
    let claims = exchange_at_upstream(&http, &token_endpoint, &code, &verifier, redirect_uri).await;
    assert_eq!(claims["sub"], alice.sub);

    // Without PKCE, or for someone it does not know, the provider says no.
    let without_pkce = authorize(&[("login_hint", alice.sub.as_str())]);
    let refused = idp.callback_for(&without_pkce, redirect_uri).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("invalid_request")
    );
    let stranger = idp
        .callback_for(&with_pkce("nobody@elsewhere.example"), redirect_uri)
        .await;
    assert_eq!(
        query_param(&stranger, "error").as_deref(),
        Some("access_denied")
    );
}

#[tokio::test]
async fn the_upstream_provider_comes_back_at_the_same_issuer_with_the_same_keys() {
    let redirect_uri = "http://127.0.0.1:9/sso/callback";
    let mut idp = UpstreamIdp::start(
        vec![IdpClient::new("latchkey", "upstream-secret", redirect_uri)],
        vec![IdpUser::new("corp-1", "cy@harbour.example", "Cy Cole")],
    )
    .await;
    // No idle connections: each request must reach the process running at that moment.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let jwks_url = format!("{}/jwks", idp.issuer);
    let keys_before: Value = http
        .get(&jwks_url)
        .send()
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");

    idp.stop().await;
    assert!(!idp.is_running());
    assert!(http.get(idp.discovery_url()).send().await.is_err());

    let issuer = idp.issuer.clone();
    idp.restart().await;
    assert!(idp.is_running());
    assert_eq!(idp.issuer, issuer);
    let discovery: Value = http
        .get(idp.discovery_url())
        .send()
        .await
        .expect("discovery after restart")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(discovery["issuer"], issuer);
    let keys_after: Value = http
        .get(&jwks_url)
        .send()
        .await
        .expect("JWKS")
        .json()
        .await
        .expect("JWKS JSON");
    assert_eq!(keys_after, keys_before);
}
