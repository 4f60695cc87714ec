//! Corporate single sign-on, with Latchkey as the relying party of an agency's identity
//! provider. The real upstream is npm oidc-provider (a certified OpenID provider, see
//! `UpstreamIdp`); where a real provider cannot be made to misbehave, a small fake one
//! written here (`FakeIdp`, an axum server on loopback) answers with the ID token each
//! test crafts: a wrong nonce, audience or issuer, an expired token, a bad signature,
//! `alg` none, HS256 keyed with the client secret, a key in the header, an unknown `kid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey::crypto::keys::{self, Algorithm, SigningKey};
use latchkey::crypto::tokens;
use latchkey::domain::sso::{SsoConnection, UpstreamIdentity};
use latchkey::domain::{AgencyId, EmailAddress, Role};
use latchkey::idm::ports::{Clock, UpstreamError};
use latchkey::idm::sso::SsoSettingsInput;
use latchkey::idm::staff::NewStaff;
use latchkey::idm::{IdmError, RequestContext};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Browser, Email, IdpClient, IdpOptions, IdpUser, Page, TestApp, TestClock, UpstreamIdp,
    assert_status, free_port, spawn_app, spawn_app_at_own_address, unique,
};

const CLIENT_ID: &str = "latchkey";
const CLIENT_SECRET: &str = "upstream-client-secret-0123456789";

// ---------------------------------------------------------------------------------------
// The misbehaving upstream
// ---------------------------------------------------------------------------------------

/// How the fake upstream signs the next ID tokens.
#[derive(Debug, Clone, Default)]
enum Signing {
    /// With its published key, as an honest provider does.
    #[default]
    Honest,
    /// Signed honestly, then a claim changed: the signature no longer matches.
    ChangedAfterSigned(&'static str, Value),
    /// By a key the upstream never published, under the `kid` of the published one.
    UnpublishedKeyUnderPublishedKid,
    /// By a key the upstream never published, under a `kid` its JWKS does not have.
    UnpublishedKeyWithKid(&'static str),
    /// By the attacker's key, which the token header carries as `jwk`.
    KeyInTheHeader,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the client secret (RS/HS confusion).
    Hs256WithClientSecret,
}

/// What the fake upstream puts in the next ID tokens: claims changed (`null` removes one)
/// and how it signs them.
#[derive(Debug, Clone, Default)]
struct Forgery {
    claims: Vec<(&'static str, Value)>,
    signing: Signing,
    /// `iat` and `auth_time` this long before the app's clock; `exp` five minutes later.
    issued_seconds_ago: i64,
}

impl Forgery {
    fn honest() -> Self {
        Self::default()
    }

    fn claim(name: &'static str, value: Value) -> Self {
        Self {
            claims: vec![(name, value)],
            ..Self::default()
        }
    }

    fn signed(signing: Signing) -> Self {
        Self {
            signing,
            ..Self::default()
        }
    }
}

/// One authorization request the fake upstream answered with a code.
#[derive(Debug, Clone)]
struct IssuedCode {
    nonce: Option<String>,
    code_challenge: String,
    redirect_uri: String,
}

struct FakeIdpInner {
    /// The issuer the discovery document names (another one for the mismatch test).
    advertised_issuer: String,
    /// The `iss` the authorization response names (RFC 9207).
    callback_issuer: String,
    published: Vec<Arc<SigningKey>>,
    /// The published key that signs.
    signer: Arc<SigningKey>,
    user: IdpUser,
    /// Keep `email` and `email_verified` out of the ID token (userinfo still has them).
    email_only_in_userinfo: bool,
    forgery: Forgery,
    codes: HashMap<String, IssuedCode>,
    access_tokens: HashMap<String, IdpUser>,
    jwks_fetches: usize,
    /// Protocol mistakes the relying party made, for the assertions.
    complaints: Vec<String>,
}

struct FakeIdpState {
    issuer: String,
    clock: TestClock,
    inner: Mutex<FakeIdpInner>,
}

/// An OpenID provider on a loopback port that does what the test tells it to: discovery,
/// JWKS, `/authorize` (straight back with a code), `/token` (the crafted ID token) and
/// `/userinfo`. It checks the relying party's side of the protocol (client
/// authentication, redirect URI, PKCE S256) and notes every mistake in `complaints()`.
struct FakeIdp {
    issuer: String,
    state: Arc<FakeIdpState>,
    server: tokio::task::JoinHandle<()>,
}

fn es256_key(kid: &str) -> SigningKey {
    let generated = keys::generate(Algorithm::ES256).expect("EC key");
    SigningKey::from_pkcs8(kid, Algorithm::ES256, &generated.pkcs8, generated.public)
        .expect("signing key")
}

fn base64url_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", base64url_json(header), base64url_json(claims));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn jwk_json(key: &SigningKey) -> Value {
    serde_json::to_value(key.jwk()).expect("JWK")
}

impl FakeIdp {
    async fn start(clock: &TestClock, user: IdpUser) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream");
        let port = listener.local_addr().expect("address").port();
        let issuer = format!("http://127.0.0.1:{port}");
        let signer = Arc::new(es256_key(&unique("fake-")));
        let state = Arc::new(FakeIdpState {
            issuer: issuer.clone(),
            clock: clock.clone(),
            inner: Mutex::new(FakeIdpInner {
                advertised_issuer: issuer.clone(),
                callback_issuer: issuer.clone(),
                published: vec![signer.clone()],
                signer,
                user,
                email_only_in_userinfo: false,
                forgery: Forgery::honest(),
                codes: HashMap::new(),
                access_tokens: HashMap::new(),
                jwks_fetches: 0,
                complaints: Vec::new(),
            }),
        });
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(fake_discovery))
            .route("/jwks", get(fake_jwks))
            .route("/authorize", get(fake_authorize))
            .route("/token", post(fake_token))
            .route("/userinfo", get(fake_userinfo))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            issuer,
            state,
            server,
        }
    }

    fn with<T>(&self, change: impl FnOnce(&mut FakeIdpInner) -> T) -> T {
        change(&mut self.state.inner.lock().expect("fake upstream lock"))
    }

    /// Who the next sign-ins at the upstream are.
    fn sign_in_as(&self, user: IdpUser) {
        self.with(|inner| inner.user = user);
    }

    fn forge(&self, forgery: Forgery) {
        self.with(|inner| inner.forgery = forgery);
    }

    fn advertise_issuer(&self, issuer: &str) {
        self.with(|inner| inner.advertised_issuer = issuer.to_owned());
    }

    fn name_in_callback(&self, issuer: &str) {
        self.with(|inner| inner.callback_issuer = issuer.to_owned());
    }

    fn keep_email_in_userinfo_only(&self) {
        self.with(|inner| inner.email_only_in_userinfo = true);
    }

    /// Publishes a new key and signs with it from now on, as a provider rotating keys does.
    fn rotate_key(&self) {
        let key = Arc::new(es256_key(&unique("rotated-")));
        self.with(|inner| {
            inner.published.push(key.clone());
            inner.signer = key;
        });
    }

    fn jwks_fetches(&self) -> usize {
        self.with(|inner| inner.jwks_fetches)
    }

    fn complaints(&self) -> Vec<String> {
        self.with(|inner| inner.complaints.clone())
    }

    /// Follows the authorization request as a browser would; the upstream signs its user
    /// in at once and answers with the redirect to Latchkey's callback.
    async fn callback_for(&self, authorization_url: &str) -> String {
        let answer = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(authorization_url)
            .send()
            .await
            .expect("the fake upstream answers");
        assert!(
            answer.status().is_redirection(),
            "the fake upstream refused the authorization request: {} {:?}",
            answer.status(),
            self.complaints()
        );
        answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn fake_discovery(State(state): State<Arc<FakeIdpState>>) -> Json<Value> {
    let advertised = state.inner.lock().expect("lock").advertised_issuer.clone();
    let base = &state.issuer;
    Json(json!({
        "issuer": advertised,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "email", "email_verified", "name"],
    }))
}

async fn fake_jwks(State(state): State<Arc<FakeIdpState>>) -> Json<Value> {
    let mut inner = state.inner.lock().expect("lock");
    inner.jwks_fetches += 1;
    let keys: Vec<Value> = inner.published.iter().map(|k| jwk_json(k)).collect();
    Json(json!({ "keys": keys }))
}

async fn fake_authorize(
    State(state): State<Arc<FakeIdpState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| query.get(name).cloned().unwrap_or_default();
    let mut inner = state.inner.lock().expect("lock");
    let mut problems = Vec::new();
    if param("response_type") != "code" {
        problems.push(format!("response_type={:?}", param("response_type")));
    }
    if param("client_id") != CLIENT_ID {
        problems.push(format!("client_id={:?}", param("client_id")));
    }
    if !param("scope").split(' ').any(|s| s == "openid") {
        problems.push(format!("scope={:?} without openid", param("scope")));
    }
    if param("code_challenge_method") != "S256" || param("code_challenge").len() < 43 {
        problems.push("no PKCE S256 challenge".to_owned());
    }
    if param("state").len() < 22 || param("nonce").len() < 22 {
        problems.push("state or nonce missing or short".to_owned());
    }
    let redirect_uri = param("redirect_uri");
    let Ok(mut back) = url::Url::parse(&redirect_uri) else {
        inner
            .complaints
            .push(format!("redirect_uri={redirect_uri:?}"));
        return (AxumStatus::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    if !problems.is_empty() {
        inner.complaints.extend(problems);
        return (AxumStatus::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = tokens::random_token(16);
    inner.codes.insert(
        code.clone(),
        IssuedCode {
            nonce: query.get("nonce").cloned(),
            code_challenge: param("code_challenge"),
            redirect_uri,
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &param("state"))
        .append_pair("iss", &inner.callback_issuer);
    Redirect::to(back.as_str()).into_response()
}

fn token_error(status: AxumStatus, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let header = headers.get("authorization")?.to_str().ok()?;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

async fn fake_token(
    State(state): State<Arc<FakeIdpState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let mut inner = state.inner.lock().expect("lock");
    if basic_credentials(&headers) != Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned())) {
        inner
            .complaints
            .push("token request without the client's Basic credentials".into());
        return token_error(AxumStatus::UNAUTHORIZED, "invalid_client");
    }
    if field("grant_type") != "authorization_code" {
        inner
            .complaints
            .push(format!("grant_type={:?}", field("grant_type")));
        return token_error(AxumStatus::BAD_REQUEST, "unsupported_grant_type");
    }
    let Some(issued) = inner.codes.remove(&field("code")) else {
        inner.complaints.push("an unknown or used code".into());
        return token_error(AxumStatus::BAD_REQUEST, "invalid_grant");
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
    if challenge != issued.code_challenge {
        inner
            .complaints
            .push("the code_verifier does not match the challenge".into());
        return token_error(AxumStatus::BAD_REQUEST, "invalid_grant");
    }
    if field("redirect_uri") != issued.redirect_uri {
        inner.complaints.push(format!(
            "redirect_uri={:?} at /token",
            field("redirect_uri")
        ));
        return token_error(AxumStatus::BAD_REQUEST, "invalid_grant");
    }
    let id_token = mint_id_token(&state, &inner, issued.nonce.as_deref());
    let access_token = tokens::random_token(16);
    let user = inner.user.clone();
    inner.access_tokens.insert(access_token.clone(), user);
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

fn mint_id_token(state: &FakeIdpState, inner: &FakeIdpInner, nonce: Option<&str>) -> String {
    let issued = state.clock.now() - inner.forgery.issued_seconds_ago;
    let user = &inner.user;
    let mut claims = json!({
        "iss": state.issuer,
        "sub": user.sub,
        "aud": CLIENT_ID,
        "iat": issued,
        "exp": issued + 300,
        "auth_time": issued,
        "name": user.name,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    if !inner.email_only_in_userinfo {
        claims["email"] = user.email.clone().into();
        claims["email_verified"] = user.email_verified.into();
    }
    let object = claims.as_object_mut().expect("claims object");
    for (name, value) in &inner.forgery.claims {
        if value.is_null() {
            object.remove(*name);
        } else {
            object.insert((*name).to_owned(), value.clone());
        }
    }
    let signer = &inner.signer;
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": signer.kid });
    let honest = |claims: &Value| {
        jws(&header, claims, |input| {
            signer.sign_bytes(input).expect("sign")
        })
    };
    match &inner.forgery.signing {
        Signing::Honest => honest(&claims),
        Signing::ChangedAfterSigned(name, value) => {
            let signed = honest(&claims);
            let signature = signed.rsplit('.').next().unwrap_or_default().to_owned();
            let mut altered = claims.clone();
            altered[*name] = value.clone();
            format!(
                "{}.{}.{signature}",
                base64url_json(&header),
                base64url_json(&altered)
            )
        }
        Signing::UnpublishedKeyUnderPublishedKid => {
            let stranger = es256_key(&signer.kid);
            jws(&header, &claims, |input| {
                stranger.sign_bytes(input).expect("sign")
            })
        }
        Signing::UnpublishedKeyWithKid(kid) => {
            let stranger = es256_key(kid);
            let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
            jws(&header, &claims, |input| {
                stranger.sign_bytes(input).expect("sign")
            })
        }
        Signing::KeyInTheHeader => {
            let attacker = es256_key("attacker");
            let header = json!({
                "alg": "ES256", "typ": "JWT", "kid": "attacker", "jwk": jwk_json(&attacker),
            });
            jws(&header, &claims, |input| {
                attacker.sign_bytes(input).expect("sign")
            })
        }
        Signing::AlgNone => {
            let header = json!({ "alg": "none", "typ": "JWT" });
            format!("{}.{}.", base64url_json(&header), base64url_json(&claims))
        }
        Signing::Hs256WithClientSecret => {
            let header = json!({ "alg": "HS256", "typ": "JWT" });
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, CLIENT_SECRET.as_bytes());
            jws(&header, &claims, |input| {
                ring::hmac::sign(&key, input).as_ref().to_vec()
            })
        }
    }
}

async fn fake_userinfo(State(state): State<Arc<FakeIdpState>>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let inner = state.inner.lock().expect("lock");
    match inner.access_tokens.get(token) {
        Some(user) => Json(json!({
            "sub": user.sub,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name,
        }))
        .into_response(),
        None => token_error(AxumStatus::UNAUTHORIZED, "invalid_token"),
    }
}

// ---------------------------------------------------------------------------------------
// Journeys
// ---------------------------------------------------------------------------------------

fn context(app: &TestApp) -> RequestContext {
    RequestContext {
        now: app.clock.now(),
        ip: "127.0.0.1".into(),
        user_agent: "latchkey-tests/1.0".into(),
    }
}

async fn agency_id(app: &TestApp, slug: &str) -> AgencyId {
    app.idm
        .directory
        .agency_by_slug(slug)
        .await
        .expect("db")
        .expect("agency")
        .id
}

/// The email domain of the people `app.person(slug, …)` makes.
fn domain_of(slug: &str) -> String {
    format!("{slug}.example")
}

/// What an owner sets in Settings → SSO.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    enforce: bool,
    create_accounts: bool,
}

/// Connects the agency to `issuer` as the CLI would (no acting owner).
async fn connect(
    app: &TestApp,
    slug: &str,
    issuer: &str,
    domains: &[String],
    flags: Flags,
) -> Result<SsoConnection, IdmError> {
    let agency = agency_id(app, slug).await;
    app.idm
        .configure_sso(
            None,
            &agency,
            &SsoSettingsInput {
                issuer,
                client_id: CLIENT_ID,
                client_secret: CLIENT_SECRET,
                domains,
                scopes: &["openid email profile".to_owned()],
                enforce: flags.enforce,
                create_accounts: flags.create_accounts,
            },
            &context(app),
        )
        .await
}

fn path_and_query(url: &str) -> String {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Opens `/sso/start?email=…` and returns the upstream authorization URL it redirects to.
async fn start_sso(browser: &Browser, email: &str, upstream_issuer: &str) -> String {
    let page = browser
        .get(&format!("/sso/start?email={}", encoded(email)))
        .await;
    assert_status(&page, StatusCode::SEE_OTHER);
    let location = page.location();
    assert!(
        location.starts_with(upstream_issuer),
        "/sso/start sent the browser to {location:?}, not to {upstream_issuer}"
    );
    location
}

/// Brings the upstream's answer back to Latchkey in `browser` (the callback URL names the
/// public URL, which may not be this server's address).
async fn finish_sso(app: &TestApp, browser: &Browser, callback: &str) -> Page {
    assert!(
        callback.starts_with(&app.idm.sso_redirect_uri()),
        "the upstream answered at {callback:?}, not at Latchkey's callback"
    );
    browser.get(&path_and_query(callback)).await
}

/// The whole round trip through the real upstream.
async fn sign_in_through(app: &TestApp, idp: &UpstreamIdp, browser: &Browser, email: &str) -> Page {
    let authorize = start_sso(browser, email, &idp.issuer).await;
    let callback = idp
        .callback_for(&authorize, &app.idm.sso_redirect_uri())
        .await;
    finish_sso(app, browser, &callback).await
}

/// The answer ended in a session for `email`: 303 to `/account` with a session cookie, and
/// the account page is theirs.
#[track_caller]
fn assert_session_started(page: &Page) {
    assert_status(page, StatusCode::SEE_OTHER);
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("latchkey_session=")),
        "no session cookie: {:?}",
        page.set_cookies()
    );
}

async fn assert_signed_in_as(browser: &Browser, page: &Page, email: &str) {
    assert_session_started(page);
    assert_eq!(page.location(), "/account");
    let account = browser.get("/account").await;
    assert_status(&account, StatusCode::OK);
    assert!(
        account.contains(email),
        "/account is not {email}'s: {}",
        account.body
    );
}

/// A refusal page: the status, the message, a way back to the sign-in page, no session.
#[track_caller]
fn assert_refused(page: &Page, status: StatusCode, message: &str) {
    assert_status(page, status);
    assert!(
        page.contains(message),
        "expected {message:?} on the page: {}",
        page.body
    );
    assert!(
        page.contains("href=\"/login\"") || page.contains("href=\"&#x2f;login\""),
        "no link back to /login: {}",
        page.body
    );
    assert!(
        !page
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("latchkey_session=")),
        "a refused sign-in set a session cookie: {:?}",
        page.set_cookies()
    );
}

async fn assert_not_signed_in(browser: &Browser) {
    assert_eq!(browser.session_cookie(), None);
    let account = browser.get("/account").await;
    assert_status(&account, StatusCode::SEE_OTHER);
    assert!(
        account.location().starts_with("/login"),
        "{}",
        account.location()
    );
}

/// The first mail to `address` that `wanted` picks, waiting for it to arrive.
async fn mail_matching(app: &TestApp, address: &str, wanted: impl Fn(&Email) -> bool) -> Email {
    let mut expected = 1;
    loop {
        let mails = app.smtp.wait_for(address, expected).await;
        if let Some(mail) = mails.iter().find(|m| wanted(m)) {
            return mail.clone();
        }
        expected = mails.len() + 1;
    }
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

async fn linked_account(app: &TestApp, issuer: &str, subject: &str) -> Option<String> {
    app.idm
        .sso
        .linked_account(issuer, subject)
        .await
        .expect("db")
        .map(|id| id.0)
}

async fn account_by_email(app: &TestApp, email: &str) -> Option<latchkey::domain::StaffAccount> {
    app.idm
        .directory
        .staff_by_email(&EmailAddress::parse(email).expect("email"))
        .await
        .expect("db")
}

/// An agency connected to a fake upstream, on its own email domain.
struct FakeSso {
    app: TestApp,
    slug: String,
    domain: String,
    fake: FakeIdp,
}

impl FakeSso {
    async fn start(flags: Flags) -> Self {
        let app = spawn_app().await;
        let slug = app.agency("Harbour Homes", false).await;
        let domain = domain_of(&slug);
        let fake = FakeIdp::start(
            &app.clock,
            IdpUser::new("corp-nobody", &format!("nobody@{domain}"), "Nobody"),
        )
        .await;
        connect(
            &app,
            &slug,
            &fake.issuer,
            std::slice::from_ref(&domain),
            flags,
        )
        .await
        .expect("connect the fake upstream");
        Self {
            app,
            slug,
            domain,
            fake,
        }
    }

    /// Saves the connection again with other settings (people made by `app.person` sign
    /// in with a password once, so enforcement comes after them).
    async fn reconnect(&self, flags: Flags) {
        connect(
            &self.app,
            &self.slug,
            &self.fake.issuer,
            std::slice::from_ref(&self.domain),
            flags,
        )
        .await
        .expect("reconnect the fake upstream");
    }

    async fn sign_in(&self, browser: &Browser, email: &str) -> Page {
        let authorize = start_sso(browser, email, &self.fake.issuer).await;
        let callback = self.fake.callback_for(&authorize).await;
        finish_sso(&self.app, browser, &callback).await
    }

    async fn events(&self) -> Vec<String> {
        self.app.audit_events(&self.slug).await
    }

    /// One round trip through the relying-party port alone (`UpstreamOidc`): what it makes
    /// of the upstream's answer, with its reason when it refuses.
    async fn exchange_at_the_port(&self) -> Result<UpstreamIdentity, UpstreamError> {
        let idm = &self.app.idm;
        let connection = idm
            .sso_connection_of(&agency_id(&self.app, &self.slug).await)
            .await
            .expect("db")
            .expect("connected");
        let redirect_uri = idm.sso_redirect_uri();
        let (state, nonce, verifier) = (
            tokens::random_token(32),
            tokens::random_token(32),
            tokens::random_token(48),
        );
        let authorize = idm
            .upstream
            .authorization_url(&connection, &redirect_uri, &state, &nonce, &verifier, None)
            .await
            .expect("authorization URL");
        let callback = self.fake.callback_for(&authorize).await;
        assert_eq!(query_param(&callback, "state"), Some(state));
        let code = query_param(&callback, "code").expect("code");
        idm.upstream
            .exchange(
                &connection,
                &redirect_uri,
                &code,
                &verifier,
                &nonce,
                self.app.clock.now(),
            )
            .await
    }
}

/// Every forged answer is refused with a clear page and no session; the same upstream,
/// honest again, then signs the same person in, so only the forgery was refused.
/// Each `reason` is a piece of the relying party's own refusal (logged, never shown), so
/// a forgery refused for some other reason does not pass.
async fn assert_id_tokens_refused(forgeries: &[(Forgery, &str)]) {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    for (forgery, reason) in forgeries {
        sso.fake.forge(forgery.clone());
        match sso.exchange_at_the_port().await {
            Err(UpstreamError::Refused(why)) => assert!(
                why.contains(reason),
                "{forgery:?} was refused, but for {why:?}, not for {reason:?}"
            ),
            other => panic!("{forgery:?} was not refused: {other:?}"),
        }
        let browser = sso.app.browser();
        let page = sso.sign_in(&browser, &bob.email).await;
        assert_refused(
            &page,
            StatusCode::FORBIDDEN,
            "Your identity provider&#x27;s answer could not be verified.",
        );
        assert_not_signed_in(&browser).await;
    }
    let events = sso.events().await;
    assert_eq!(count(&events, "sso_sign_in"), 0, "{events:?}");
    assert_eq!(count(&events, "sso_linked"), 0, "{events:?}");
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-bob").await,
        None
    );

    sso.fake.forge(Forgery::honest());
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
    assert_eq!(sso.fake.complaints(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// The real upstream: npm oidc-provider
// ---------------------------------------------------------------------------------------

/// An app at its own address (its clock at wall time, which oidc-provider signs with), an
/// agency whose staff member Alice the real upstream knows, connected through the CLI path.
struct RealSso {
    app: TestApp,
    idp: UpstreamIdp,
    slug: String,
    alice: crate::helpers::Person,
}

impl RealSso {
    async fn start(flags: Flags) -> Self {
        let app = spawn_app_at_own_address().await;
        let slug = app.agency("Harbour Homes", false).await;
        let alice = app.person(&slug, "Alice Aston", Role::Staff).await;
        let idp = UpstreamIdp::start_with(IdpOptions {
            clients: vec![IdpClient::new(
                CLIENT_ID,
                CLIENT_SECRET,
                &app.idm.sso_redirect_uri(),
            )],
            users: vec![IdpUser::new("corp-alice", &alice.email, "Alice Aston")],
            default_user: None,
            port: None,
        })
        .await;
        connect(&app, &slug, &idp.issuer, &[domain_of(&slug)], flags)
            .await
            .expect("connect the upstream");
        Self {
            app,
            idp,
            slug,
            alice,
        }
    }
}

#[tokio::test]
async fn a_staff_member_signs_in_through_the_agencys_corporate_idp_end_to_end() {
    let app = spawn_app_at_own_address().await;
    let slug = app.agency("Harbour Homes", false).await;
    let owner = app.person(&slug, "Olivia Owner", Role::Owner).await;
    let alice = app.person(&slug, "Alice Aston", Role::Staff).await;
    let idp = UpstreamIdp::start(
        vec![IdpClient::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &app.idm.sso_redirect_uri(),
        )],
        vec![IdpUser::new("corp-4711", &alice.email, "Alice Aston")],
    )
    .await;

    // The owner connects the provider in Settings → SSO, with the redirect URI it shows.
    let settings = app.signed_in(&owner).await;
    let form = settings.get("/settings/sso").await;
    assert_status(&form, StatusCode::OK);
    assert!(form.contains("Not connected"), "{}", form.body);
    assert!(
        form.contains(&app.idm.sso_redirect_uri().replace('/', "&#x2f;"))
            || form.contains(&app.idm.sso_redirect_uri()),
        "the redirect URI to register is shown: {}",
        form.body
    );
    let saved = settings
        .post_form(
            "/settings/sso",
            &[
                ("issuer", idp.issuer.as_str()),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("domains", &domain_of(&slug).to_uppercase()),
                ("scopes", "openid email profile"),
            ],
        )
        .await;
    assert_status(&saved, StatusCode::SEE_OTHER);
    assert_eq!(saved.location(), "/settings/sso?saved=1");
    let shown = settings.get(&saved.location()).await;
    assert!(
        shown.contains("Single sign-on settings saved."),
        "{}",
        shown.body
    );
    assert!(shown.contains("Connected"), "{}", shown.body);
    assert!(
        !shown.contains(CLIENT_SECRET),
        "the secret is never shown again"
    );
    let connection = app
        .idm
        .sso_connection_of(&agency_id(&app, &slug).await)
        .await
        .expect("db")
        .expect("saved");
    assert_eq!(connection.issuer, idp.issuer);
    assert_eq!(connection.domains, vec![domain_of(&slug)]);
    assert!(!connection.enforce && !connection.create_accounts);

    // Alice signs in through the provider: code + PKCE + state + nonce, linked by email.
    let browser = app.browser();
    let authorize = start_sso(&browser, &alice.email, &idp.issuer).await;
    for (name, value) in [
        ("client_id", Some(CLIENT_ID.to_owned())),
        ("response_type", Some("code".to_owned())),
        ("redirect_uri", Some(app.idm.sso_redirect_uri())),
        ("code_challenge_method", Some("S256".to_owned())),
        ("login_hint", Some(alice.email.clone())),
    ] {
        assert_eq!(
            query_param(&authorize, name),
            value,
            "{name} in {authorize}"
        );
    }
    let callback = idp
        .callback_for(&authorize, &app.idm.sso_redirect_uri())
        .await;
    assert_eq!(query_param(&callback, "iss"), Some(idp.issuer.clone()));
    let page = finish_sso(&app, &browser, &callback).await;
    assert_signed_in_as(&browser, &page, &alice.email).await;
    assert_eq!(
        linked_account(&app, &idp.issuer, "corp-4711").await,
        Some(alice.id())
    );
    let account = browser.get("/account").await;
    assert!(
        account.contains("Single sign-on"),
        "the session says how: {}",
        account.body
    );

    // Later sign-ins use the link; the link is made once.
    let laptop = app.browser();
    let page = sign_in_through(&app, &idp, &laptop, &alice.email).await;
    assert_signed_in_as(&laptop, &page, &alice.email).await;
    let events = app.audit_events(&slug).await;
    assert_eq!(count(&events, "sso_configured"), 1, "{events:?}");
    assert_eq!(count(&events, "sso_linked"), 1, "{events:?}");
    assert_eq!(count(&events, "sso_sign_in"), 2, "{events:?}");
}

#[tokio::test]
async fn an_app_signed_in_through_latchkey_by_sso_receives_amr_sso() {
    let sso = RealSso::start(Flags {
        enforce: true,
        create_accounts: false,
    })
    .await;
    let (app, alice) = (&sso.app, &sso.alice);
    let oauth = app.oauth_app().await;

    // The app sends the browser to Latchkey, which asks who it is; Alice's domain enforces
    // SSO, so her email sends her to her company's provider and back to the app.
    let browser = app.browser();
    let authorization = oauth.authorization();
    let asked = browser.get(&authorization.path()).await;
    assert_status(&asked, StatusCode::SEE_OTHER);
    assert!(
        asked.location().starts_with("/login"),
        "{}",
        asked.location()
    );
    let sent = browser
        .sign_in_at(&asked.location(), &alice.email, "not-asked-for")
        .await;
    assert_status(&sent, StatusCode::SEE_OTHER);
    assert!(
        sent.location()
            .starts_with(&format!("/sso/start?email={}", encoded(&alice.email))),
        "{}",
        sent.location()
    );
    let to_upstream = browser.get(&sent.location()).await;
    assert_status(&to_upstream, StatusCode::SEE_OTHER);
    let callback = sso
        .idp
        .callback_for(&to_upstream.location(), &app.idm.sso_redirect_uri())
        .await;
    let back = finish_sso(app, &browser, &callback).await;
    assert_session_started(&back);
    assert!(
        back.location().starts_with("/authorize"),
        "{}",
        back.location()
    );
    let at_app = browser.get(&back.location()).await;
    let code = oauth.code_from(&at_app, &authorization);
    let answer = oauth.exchange(&code, &authorization.pkce.verifier).await;
    let tokens = crate::helpers::Tokens::from_answer(&answer);

    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(tokens.id_token.split('.').nth(1).expect("claims"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(claims["amr"], json!(["sso"]));
    assert_eq!(claims["sub"], alice.id());
    assert_eq!(claims["email"], alice.email);
}

#[tokio::test]
async fn u1_an_upstream_that_refuses_the_person_gives_a_clear_page_back_to_sign_in() {
    let sso = RealSso::start(Flags::default()).await;
    // The provider does not know this colleague and answers error=access_denied.
    let stranger = format!("not.at.the.idp@{}", domain_of(&sso.slug));
    let browser = sso.app.browser();
    let authorize = start_sso(&browser, &stranger, &sso.idp.issuer).await;
    let callback = sso
        .idp
        .callback_for(&authorize, &sso.app.idm.sso_redirect_uri())
        .await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let page = finish_sso(&sso.app, &browser, &callback).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "Your identity provider did not sign you in (access_denied).",
    );
    assert!(page.contains("Back to sign in"), "{}", page.body);
    assert_not_signed_in(&browser).await;
    assert_eq!(
        count(&sso.app.audit_events(&sso.slug).await, "sso_sign_in"),
        0
    );
}

#[tokio::test]
async fn u1_a_sign_in_finished_in_another_browser_is_refused() {
    let sso = RealSso::start(Flags::default()).await;
    // Browser A starts; its answer is carried to browser B (login CSRF, or a stolen link).
    let started_here = sso.app.browser();
    let authorize = start_sso(&started_here, &sso.alice.email, &sso.idp.issuer).await;
    let callback = sso
        .idp
        .callback_for(&authorize, &sso.app.idm.sso_redirect_uri())
        .await;
    let elsewhere = sso.app.browser();
    assert_status(&elsewhere.get("/login").await, StatusCode::OK);
    let page = finish_sso(&sso.app, &elsewhere, &callback).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "This sign-in was started in another browser. Start again here.",
    );
    assert_not_signed_in(&elsewhere).await;

    // A browser without any Latchkey cookie yet is refused the same way.
    let fresh = sso.app.browser();
    let authorize = start_sso(&started_here, &sso.alice.email, &sso.idp.issuer).await;
    let callback = sso
        .idp
        .callback_for(&authorize, &sso.app.idm.sso_redirect_uri())
        .await;
    let page = finish_sso(&sso.app, &fresh, &callback).await;
    assert_refused(&page, StatusCode::FORBIDDEN, "started in another browser");
    assert_not_signed_in(&fresh).await;
    assert_eq!(
        count(&sso.app.audit_events(&sso.slug).await, "sso_sign_in"),
        0
    );
}

#[tokio::test]
async fn u1_a_replayed_callback_is_refused() {
    let sso = RealSso::start(Flags::default()).await;
    let browser = sso.app.browser();
    let authorize = start_sso(&browser, &sso.alice.email, &sso.idp.issuer).await;
    let callback = sso
        .idp
        .callback_for(&authorize, &sso.app.idm.sso_redirect_uri())
        .await;
    let first = finish_sso(&sso.app, &browser, &callback).await;
    assert_signed_in_as(&browser, &first, &sso.alice.email).await;

    // The same answer again, in the same browser and in a fresh one: the attempt is used.
    let again = finish_sso(&sso.app, &browser, &callback).await;
    assert_refused(
        &again,
        StatusCode::FORBIDDEN,
        "This sign-in attempt is unknown, expired or already used. Start again.",
    );
    let other = sso.app.browser();
    let replayed = finish_sso(&sso.app, &other, &callback).await;
    assert_refused(&replayed, StatusCode::FORBIDDEN, "already used");
    assert_not_signed_in(&other).await;
    assert_eq!(
        count(&sso.app.audit_events(&sso.slug).await, "sso_sign_in"),
        1
    );
}

#[tokio::test]
async fn u1_a_state_latchkey_never_issued_is_refused() {
    let sso = RealSso::start(Flags::default()).await;
    let browser = sso.app.browser();
    let authorize = start_sso(&browser, &sso.alice.email, &sso.idp.issuer).await;
    let callback = sso
        .idp
        .callback_for(&authorize, &sso.app.idm.sso_redirect_uri())
        .await;
    let code = query_param(&callback, "code").expect("code");
    let iss = query_param(&callback, "iss").expect("iss");
    for query in [
        format!(
            "code={code}&state={}&iss={}",
            tokens::random_token(32),
            encoded(&iss)
        ),
        format!("code={code}&iss={}", encoded(&iss)),
    ] {
        let page = browser.get(&format!("/sso/callback?{query}")).await;
        assert_status(&page, StatusCode::FORBIDDEN);
        assert!(page.contains("Single sign-on failed"), "{}", page.body);
        assert_eq!(browser.session_cookie(), None);
    }
}

#[tokio::test]
async fn u1_state_nonce_and_pkce_are_new_for_every_attempt() {
    let sso = RealSso::start(Flags::default()).await;
    let browser = sso.app.browser();
    let first = start_sso(&browser, &sso.alice.email, &sso.idp.issuer).await;
    let second = start_sso(&browser, &sso.alice.email, &sso.idp.issuer).await;
    for name in ["state", "nonce", "code_challenge"] {
        let (a, b) = (query_param(&first, name), query_param(&second, name));
        assert!(
            a.as_ref().is_some_and(|v| v.len() >= 43),
            "{name} in {first}"
        );
        assert_ne!(a, b, "{name} is reused");
    }
    // Both attempts are open in this browser; each finishes once.
    for authorize in [&second, &first] {
        let callback = sso
            .idp
            .callback_for(authorize, &sso.app.idm.sso_redirect_uri())
            .await;
        let page = finish_sso(&sso.app, &browser, &callback).await;
        assert_session_started(&page);
    }
}

#[tokio::test]
async fn u2_an_unverified_email_at_the_upstream_is_not_linked() {
    let app = spawn_app_at_own_address().await;
    let slug = app.agency("Harbour Homes", false).await;
    let bo = app.person(&slug, "Bo Berg", Role::Staff).await;
    let idp = UpstreamIdp::start_with(IdpOptions {
        clients: vec![IdpClient::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &app.idm.sso_redirect_uri(),
        )],
        users: vec![IdpUser::new("corp-bo", &bo.email, "Bo Berg").unverified()],
        default_user: None,
        port: None,
    })
    .await;
    connect(
        &app,
        &slug,
        &idp.issuer,
        &[domain_of(&slug)],
        Flags {
            enforce: false,
            create_accounts: true,
        },
    )
    .await
    .expect("connect");

    let browser = app.browser();
    let page = sign_in_through(&app, &idp, &browser, &bo.email).await;
    assert_refused(&page, StatusCode::FORBIDDEN, "No Latchkey account");
    assert_not_signed_in(&browser).await;
    assert_eq!(linked_account(&app, &idp.issuer, "corp-bo").await, None);
    let events = app.audit_events(&slug).await;
    assert_eq!(count(&events, "sso_link_refused"), 1, "{events:?}");
    assert_eq!(count(&events, "sso_linked"), 0, "{events:?}");
    assert_eq!(count(&events, "sso_account_created"), 0, "{events:?}");
}

#[tokio::test]
async fn an_upstream_stopped_mid_flow_gives_a_clear_page_and_works_again_once_restarted() {
    let mut sso = RealSso::start(Flags::default()).await;
    let redirect_uri = sso.app.idm.sso_redirect_uri();
    let browser = sso.app.browser();
    let authorize = start_sso(&browser, &sso.alice.email, &sso.idp.issuer).await;
    let callback = sso.idp.callback_for(&authorize, &redirect_uri).await;

    // The provider goes down between its answer and Latchkey's code exchange.
    sso.idp.stop().await;
    let page = finish_sso(&sso.app, &browser, &callback).await;
    assert_refused(
        &page,
        StatusCode::BAD_GATEWAY,
        "Your company&#x27;s identity provider is not answering right now.",
    );
    assert_not_signed_in(&browser).await;

    // Back up: a fresh attempt goes through.
    sso.idp.restart().await;
    let page = sign_in_through(&sso.app, &sso.idp, &browser, &sso.alice.email).await;
    assert_signed_in_as(&browser, &page, &sso.alice.email).await;
}

// ---------------------------------------------------------------------------------------
// The fake upstream: what a real provider will not do
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_honest_id_token_from_the_upstream_signs_the_staff_member_in() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
    assert_eq!(sso.fake.complaints(), Vec::<String>::new());
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-bob").await,
        Some(bob.id())
    );
    let events = sso.events().await;
    for event in ["sso_configured", "sso_linked", "sso_sign_in"] {
        assert_eq!(count(&events, event), 1, "{event} in {events:?}");
    }
}

#[tokio::test]
async fn u1_an_id_token_with_a_wrong_nonce_is_refused() {
    assert_id_tokens_refused(&[
        (
            Forgery::claim(
                "nonce",
                json!("a-nonce-of-another-attempt-0123456789abcdef"),
            ),
            "Invalid nonce: nonce mismatch",
        ),
        (Forgery::claim("nonce", Value::Null), "Invalid nonce"),
    ])
    .await;
}

#[tokio::test]
async fn u1_an_id_token_for_another_audience_is_refused() {
    assert_id_tokens_refused(&[
        (
            Forgery::claim("aud", json!("another-relying-party")),
            "Invalid audiences: must contain `latchkey`",
        ),
        (
            Forgery::claim("aud", json!(["another-relying-party", "and-another"])),
            "Invalid audiences: must contain `latchkey`",
        ),
        (
            Forgery::claim("aud", json!([CLIENT_ID, "another-relying-party"])),
            "Invalid audiences",
        ),
    ])
    .await;
}

#[tokio::test]
async fn u1_an_expired_id_token_is_refused() {
    // Signed an hour ago by the app's clock, valid for five minutes.
    assert_id_tokens_refused(&[(
        Forgery {
            issued_seconds_ago: 3600,
            ..Forgery::honest()
        },
        "Expired: ID token expired",
    )])
    .await;
}

#[tokio::test]
async fn u1_an_id_token_with_a_bad_signature_is_refused() {
    assert_id_tokens_refused(&[
        (
            Forgery::signed(Signing::ChangedAfterSigned(
                "sub",
                json!("corp-someone-else"),
            )),
            "signature: Crypto error",
        ),
        (
            Forgery::signed(Signing::UnpublishedKeyUnderPublishedKid),
            "signature: Crypto error",
        ),
    ])
    .await;
}

#[tokio::test]
async fn u1_an_id_token_from_another_issuer_is_refused() {
    assert_id_tokens_refused(&[(
        Forgery::claim("iss", json!("https://idp.elsewhere.example")),
        "Invalid issuer",
    )])
    .await;
}

#[tokio::test]
async fn u1_an_answer_naming_another_issuer_is_refused() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    // RFC 9207: an authorization response from a mixed-up provider.
    sso.fake.name_in_callback("https://idp.elsewhere.example");
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "The answer came from a different identity provider.",
    );
    assert_not_signed_in(&browser).await;
}

#[tokio::test]
async fn u3_an_unsigned_id_token_with_alg_none_is_refused() {
    assert_id_tokens_refused(&[(
        Forgery::signed(Signing::AlgNone),
        "signature: No signature found",
    )])
    .await;
}

#[tokio::test]
async fn u3_an_id_token_signed_hs256_with_the_client_secret_is_refused() {
    assert_id_tokens_refused(&[(
        Forgery::signed(Signing::Hs256WithClientSecret),
        "Disallowed signature algorithm: algorithm `HS256`",
    )])
    .await;
}

#[tokio::test]
async fn u3_a_key_carried_in_the_token_header_is_never_used() {
    assert_id_tokens_refused(&[(
        Forgery::signed(Signing::KeyInTheHeader),
        "signature: No matching key found",
    )])
    .await;
}

#[tokio::test]
async fn u3_a_kid_not_in_the_upstreams_jwks_is_refused_after_one_refresh() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    sso.fake
        .forge(Forgery::signed(Signing::UnpublishedKeyWithKid(
            "not-published",
        )));
    let fetched_before = sso.fake.jwks_fetches();
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_refused(&page, StatusCode::FORBIDDEN, "could not be verified");
    assert_not_signed_in(&browser).await;
    assert_eq!(
        sso.fake.jwks_fetches(),
        fetched_before + 1,
        "an unknown kid fetches the JWKS again, once"
    );
}

#[tokio::test]
async fn u3_a_key_the_upstream_rotated_in_is_fetched_and_accepted() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
    let fetched = sso.fake.jwks_fetches();

    sso.fake.rotate_key();
    let laptop = sso.app.browser();
    let page = sso.sign_in(&laptop, &bob.email).await;
    assert_signed_in_as(&laptop, &page, &bob.email).await;
    assert_eq!(sso.fake.jwks_fetches(), fetched + 1);
}

#[tokio::test]
async fn u2_a_verified_email_on_a_domain_the_agency_does_not_own_is_not_linked() {
    let sso = FakeSso::start(Flags {
        enforce: false,
        create_accounts: true,
    })
    .await;
    // Another agency, with its own staff on its own domain.
    let other = sso.app.agency("Quayside Lettings", false).await;
    let carol = sso.app.person(&other, "Carol Clark", Role::Staff).await;
    assert_ne!(domain_of(&other), sso.domain);
    // Harbour Homes' provider vouches for Carol's address.
    sso.fake
        .sign_in_as(IdpUser::new("corp-carol", &carol.email, "Carol Clark"));
    let browser = sso.app.browser();
    let authorize = start_sso(&browser, &format!("x@{}", sso.domain), &sso.fake.issuer).await;
    let callback = sso.fake.callback_for(&authorize).await;
    let page = finish_sso(&sso.app, &browser, &callback).await;
    assert_refused(&page, StatusCode::FORBIDDEN, "No Latchkey account");
    assert_not_signed_in(&browser).await;
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-carol").await,
        None
    );
    let events = sso.events().await;
    assert_eq!(count(&events, "sso_link_refused"), 1, "{events:?}");
    assert_eq!(count(&events, "sso_account_created"), 0, "{events:?}");
    assert_eq!(count(&sso.app.audit_events(&other).await, "sso_sign_in"), 0);
}

#[tokio::test]
async fn u2_an_account_of_another_agency_is_never_linked_even_on_the_agencys_domain() {
    let sso = FakeSso::start(Flags {
        enforce: false,
        create_accounts: true,
    })
    .await;
    // Quayside Lettings has a staff member whose address is on Harbour Homes' domain.
    let other = sso.app.agency("Quayside Lettings", false).await;
    let dan_email = format!("dan.dale@{}", sso.domain);
    let dan = sso
        .app
        .idm
        .create_staff(
            &NewStaff {
                agency_slug: &other,
                email: &dan_email,
                name: "Dan Dale",
                role: Role::Staff,
                temporary_password: Some("Temporary.Pass1"),
            },
            sso.app.clock.now(),
        )
        .await
        .expect("create staff");
    sso.fake
        .sign_in_as(IdpUser::new("corp-dan", &dan_email, "Dan Dale"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &dan_email).await;
    assert_refused(&page, StatusCode::FORBIDDEN, "No Latchkey account");
    assert_not_signed_in(&browser).await;
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-dan").await,
        None
    );
    let still = account_by_email(&sso.app, &dan_email).await.expect("Dan");
    assert_eq!(still.id, dan.id);
    assert_eq!(still.agency_id, agency_id(&sso.app, &other).await);
    assert_eq!(count(&sso.events().await, "sso_link_refused"), 1);
}

#[tokio::test]
async fn u2_a_linked_subject_whose_email_changes_at_the_upstream_keeps_its_account() {
    let sso = FakeSso::start(Flags {
        enforce: false,
        create_accounts: true,
    })
    .await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;

    // Bob's address changes at the upstream (a new name, even another domain, and not yet
    // verified): the (issuer, subject) link still says Bob, and no account is made.
    for email in [
        format!("robert.baker@{}", sso.domain),
        "bob@elsewhere.example".to_owned(),
    ] {
        sso.fake
            .sign_in_as(IdpUser::new("corp-bob", &email, "Robert Baker").unverified());
        let laptop = sso.app.browser();
        let authorize = laptop.get(&format!("/sso/start?agency={}", sso.slug)).await;
        assert_status(&authorize, StatusCode::SEE_OTHER);
        let callback = sso.fake.callback_for(&authorize.location()).await;
        let page = finish_sso(&sso.app, &laptop, &callback).await;
        assert_signed_in_as(&laptop, &page, &bob.email).await;
        assert!(account_by_email(&sso.app, &email).await.is_none());
    }
    let events = sso.events().await;
    assert_eq!(count(&events, "sso_linked"), 1, "{events:?}");
    assert_eq!(count(&events, "sso_sign_in"), 3, "{events:?}");
    assert_eq!(count(&events, "sso_account_created"), 0, "{events:?}");
}

#[tokio::test]
async fn u2_an_email_only_in_userinfo_links_like_one_in_the_id_token() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    sso.fake.keep_email_in_userinfo_only();
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &bob.email).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-bob").await,
        Some(bob.id())
    );
}

#[tokio::test]
async fn create_accounts_on_makes_a_staff_account_on_first_sign_in() {
    let sso = FakeSso::start(Flags {
        enforce: false,
        create_accounts: true,
    })
    .await;
    let erin = format!("erin.east@{}", sso.domain);
    sso.fake
        .sign_in_as(IdpUser::new("corp-erin", &erin, "Erin East"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &erin).await;
    assert_signed_in_as(&browser, &page, &erin).await;
    let account = account_by_email(&sso.app, &erin).await.expect("created");
    assert_eq!(account.role, Role::Staff);
    assert_eq!(account.name, "Erin East");
    assert_eq!(account.agency_id, agency_id(&sso.app, &sso.slug).await);
    assert_eq!(account.password_hash, None, "no password to sign in with");
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-erin").await,
        Some(account.id.0.clone())
    );
    let events = sso.events().await;
    for event in ["sso_account_created", "sso_linked", "sso_sign_in"] {
        assert_eq!(count(&events, event), 1, "{event} in {events:?}");
    }
}

#[tokio::test]
async fn create_accounts_off_tells_the_person_to_ask_their_administrator() {
    let sso = FakeSso::start(Flags::default()).await;
    let erin = format!("erin.east@{}", sso.domain);
    sso.fake
        .sign_in_as(IdpUser::new("corp-erin", &erin, "Erin East"));
    let browser = sso.app.browser();
    let page = sso.sign_in(&browser, &erin).await;
    assert_refused(
        &page,
        StatusCode::FORBIDDEN,
        "Ask an owner or client administrator at your agency to add you.",
    );
    assert!(page.contains("at Harbour Homes"), "{}", page.body);
    assert_not_signed_in(&browser).await;
    assert!(account_by_email(&sso.app, &erin).await.is_none());
    assert_eq!(
        linked_account(&sso.app, &sso.fake.issuer, "corp-erin").await,
        None
    );
    assert_eq!(count(&sso.events().await, "sso_link_refused"), 1);
}

#[tokio::test]
async fn enforce_sends_password_sign_in_to_sso_and_refuses_a_direct_post_with_the_right_password() {
    let sso = FakeSso::start(Flags::default()).await;
    let bob = sso.app.person(&sso.slug, "Bob Baker", Role::Staff).await;
    sso.reconnect(Flags {
        enforce: true,
        create_accounts: false,
    })
    .await;
    let before = sso.events().await;

    // The right password and a wrong one get the same answer: off to single sign-on, no
    // session, the password never looked at.
    for password in [bob.password.as_str(), "Wrong-Password-1!"] {
        let browser = sso.app.browser();
        let page = browser.sign_in(&bob.email, password).await;
        assert_status(&page, StatusCode::SEE_OTHER);
        assert_eq!(
            page.location(),
            format!("/sso/start?email={}", encoded(&bob.email))
        );
        assert!(
            !page
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("latchkey_session=")),
            "{:?}",
            page.set_cookies()
        );
        assert_not_signed_in(&browser).await;
    }
    // Identifier-first: the email alone is enough, and so is the single sign-on button.
    let browser = sso.app.browser();
    browser.get("/login").await;
    let email_only = browser
        .post_form("/login", &[("email", &bob.email), ("password", "")])
        .await;
    assert_eq!(
        email_only.location(),
        format!("/sso/start?email={}", encoded(&bob.email))
    );
    let button = browser
        .post_form("/login", &[("email", &bob.email), ("sso", "1")])
        .await;
    assert_eq!(
        button.location(),
        format!("/sso/start?email={}", encoded(&bob.email))
    );
    // An email on the domain with no account walks the same path.
    let page = sso
        .app
        .browser()
        .sign_in(&format!("nobody.here@{}", sso.domain), "Whatever-1!")
        .await;
    assert_eq!(
        page.location(),
        format!(
            "/sso/start?email={}",
            encoded(&format!("nobody.here@{}", sso.domain))
        )
    );
    let after = sso.events().await;
    assert_eq!(
        count(&after, "sign_in_succeeded"),
        count(&before, "sign_in_succeeded")
    );
    assert_eq!(
        count(&after, "sign_in_failed"),
        count(&before, "sign_in_failed")
    );

    // Following the redirect signs Bob in at his company instead.
    sso.fake
        .sign_in_as(IdpUser::new("corp-bob", &bob.email, "Bob Baker"));
    let browser = sso.app.browser();
    let page = browser.sign_in(&bob.email, &bob.password).await;
    let to_upstream = browser.get(&page.location()).await;
    assert_status(&to_upstream, StatusCode::SEE_OTHER);
    let callback = sso.fake.callback_for(&to_upstream.location()).await;
    let page = finish_sso(&sso.app, &browser, &callback).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
}

#[tokio::test]
async fn enforce_turns_password_reset_into_a_reset_at_sso_mail_and_refuses_reset_links() {
    let app = spawn_app().await;
    // Self-service reset is on for the agency.
    let slug = app.agency("Harbour Homes", true).await;
    let bob = app.person(&slug, "Bob Baker", Role::Staff).await;
    let browser = app.browser();

    // Before enforcement Bob gets a link…
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);
    let asked = browser
        .post_form("/password/forgot", &[("email", &bob.email)])
        .await;
    assert_status(&asked, StatusCode::SEE_OTHER);
    let link_mail = mail_matching(&app, &bob.email, |m| {
        m.text.contains("/password/reset?token=")
    })
    .await;
    let token = link_mail.reset_token();
    assert!(!token.is_empty());

    let fake = FakeIdp::start(
        &app.clock,
        IdpUser::new("corp-bob", &bob.email, "Bob Baker"),
    )
    .await;
    connect(
        &app,
        &slug,
        &fake.issuer,
        &[domain_of(&slug)],
        Flags {
            enforce: true,
            create_accounts: false,
        },
    )
    .await
    .expect("connect");

    // …which stops working once the agency enforces SSO.
    let reset_page = browser.get(&format!("/password/reset?token={token}")).await;
    assert_status(&reset_page, StatusCode::GONE);
    assert!(
        !reset_page.contains("name=\"new_password\""),
        "no form for a dead link"
    );
    let csrf = reset_page
        .csrf_token()
        .unwrap_or_else(|| browser.last_csrf());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf_token", csrf.as_str()),
            ("token", token.as_str()),
            ("new_password", "Brand-New-Pass-9!"),
            ("confirm_password", "Brand-New-Pass-9!"),
        ])
        .finish();
    let refused = browser.post_raw("/password/reset", body.into_bytes()).await;
    assert!(
        refused.status.is_client_error(),
        "a reset link of an enforced account is refused: {} {}",
        refused.status,
        refused.body
    );
    assert_eq!(
        app.account(&bob).await.password_hash,
        bob.account.password_hash,
        "the password did not change"
    );

    // Asking again sends the "reset it at your company's SSO" mail, with no link.
    let asked = browser
        .post_form("/password/forgot", &[("email", &bob.email)])
        .await;
    assert_status(&asked, StatusCode::SEE_OTHER);
    assert_eq!(asked.location(), "/password/forgot/sent");
    let at_sso = mail_matching(&app, &bob.email, |m| m.text.contains("single sign-on")).await;
    assert!(
        at_sso
            .text
            .contains("signs in through its corporate single sign-on"),
        "{}",
        at_sso.text
    );
    assert!(!at_sso.text.contains("token="), "{}", at_sso.text);
    assert!(!at_sso.html.contains("token="), "{}", at_sso.html);
    // Bob's password still does not sign in: his sign-in goes to SSO.
    let page = app.browser().sign_in(&bob.email, &bob.password).await;
    assert!(
        page.location().starts_with("/sso/start"),
        "{}",
        page.location()
    );
}

#[tokio::test]
async fn enforce_keeps_the_owners_break_glass_password_sign_in_and_audits_it() {
    let sso = FakeSso::start(Flags::default()).await;
    let owner = sso.app.person(&sso.slug, "Olivia Owner", Role::Owner).await;
    let admin = sso
        .app
        .person(&sso.slug, "Clara Admin", Role::ClientAdmin)
        .await;
    sso.reconnect(Flags {
        enforce: true,
        create_accounts: false,
    })
    .await;

    let browser = sso.app.browser();
    let page = browser.sign_in(&owner.email, &owner.password).await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/account?notice=break_glass");
    let account = browser.get(&page.location()).await;
    assert!(
        account.contains("break-glass"),
        "the owner is told this was a break-glass sign-in"
    );
    assert!(browser.session_cookie().is_some());
    assert_status(&browser.get("/account").await, StatusCode::OK);
    let events = sso.events().await;
    assert_eq!(count(&events, "break_glass_sign_in"), 1, "{events:?}");

    // The break-glass account still needs its password: a wrong one is refused.
    let wrong = sso
        .app
        .browser()
        .sign_in(&owner.email, "Wrong-Password-1!")
        .await;
    assert_status(&wrong, StatusCode::UNAUTHORIZED);

    // The settings page says owners keep password sign-in.
    let settings = browser.get("/settings/sso").await;
    assert_status(&settings, StatusCode::OK);
    assert!(
        settings.contains("Connected, enforced"),
        "{}",
        settings.body
    );
    assert!(settings.contains("break-glass"), "{}", settings.body);

    // A client administrator is not an owner: off to SSO.
    let page = sso
        .app
        .browser()
        .sign_in(&admin.email, &admin.password)
        .await;
    assert!(
        page.location().starts_with("/sso/start"),
        "{}",
        page.location()
    );
    assert_eq!(count(&sso.events().await, "break_glass_sign_in"), 1);
}

#[tokio::test]
async fn u2_enforcement_reaches_only_the_connecting_agencys_staff() {
    let sso = FakeSso::start(Flags {
        enforce: true,
        create_accounts: false,
    })
    .await;
    // Quayside Lettings has staff on the domain Harbour Homes connected and enforces.
    let other = sso.app.agency("Quayside Lettings", false).await;
    let dan = format!("dan.dale@{}", sso.domain);
    sso.app
        .idm
        .create_staff(
            &NewStaff {
                agency_slug: &other,
                email: &dan,
                name: "Dan Dale",
                role: Role::Staff,
                temporary_password: Some("Temporary.Pass1"),
            },
            sso.app.clock.now(),
        )
        .await
        .expect("create staff");
    // Harbour Homes' settings do not take Dan's password sign-in away.
    let page = sso.app.browser().sign_in(&dan, "Temporary.Pass1").await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/password/change");
}

// ---------------------------------------------------------------------------------------
// Settings → SSO
// ---------------------------------------------------------------------------------------

async fn post_settings(browser: &Browser, issuer: &str, domains: &str, flags: Flags) -> Page {
    let form = browser.get("/settings/sso").await;
    assert_status(&form, StatusCode::OK);
    let mut fields = vec![
        ("issuer", issuer),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("domains", domains),
        ("scopes", "openid email profile"),
    ];
    if flags.enforce {
        fields.push(("enforce", "on"));
    }
    if flags.create_accounts {
        fields.push(("create_accounts", "on"));
    }
    browser.post_form("/settings/sso", &fields).await
}

#[tokio::test]
async fn settings_sso_saves_a_connection_that_takes_effect_at_once() {
    let app = spawn_app().await;
    let slug = app.agency("Harbour Homes", false).await;
    let owner = app.person(&slug, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&slug, "Bob Baker", Role::Staff).await;
    let fake = FakeIdp::start(
        &app.clock,
        IdpUser::new("corp-bob", &bob.email, "Bob Baker"),
    )
    .await;
    let settings = app.signed_in(&owner).await;
    let saved = post_settings(
        &settings,
        &fake.issuer,
        &domain_of(&slug),
        Flags {
            enforce: true,
            create_accounts: true,
        },
    )
    .await;
    assert_status(&saved, StatusCode::SEE_OTHER);
    let shown = settings.get(&saved.location()).await;
    assert!(shown.contains("Connected, enforced"), "{}", shown.body);
    let connection = app
        .idm
        .sso_connection_of(&agency_id(&app, &slug).await)
        .await
        .expect("db")
        .expect("saved");
    assert!(connection.enforce && connection.create_accounts);
    assert_eq!(connection.client_secret.expose(), CLIENT_SECRET);
    assert_eq!(connection.scopes, ["openid", "email", "profile"]);

    // Saved again with an empty secret: the stored one is kept.
    let form = settings.get("/settings/sso").await;
    assert_status(&form, StatusCode::OK);
    let kept = settings
        .post_form(
            "/settings/sso",
            &[
                ("issuer", fake.issuer.as_str()),
                ("client_id", CLIENT_ID),
                ("client_secret", ""),
                ("domains", &domain_of(&slug)),
                ("scopes", "openid email profile"),
            ],
        )
        .await;
    assert_status(&kept, StatusCode::SEE_OTHER);
    let connection = app
        .idm
        .sso_connection_of(&agency_id(&app, &slug).await)
        .await
        .expect("db")
        .expect("saved");
    assert_eq!(connection.client_secret.expose(), CLIENT_SECRET);
    assert!(!connection.enforce, "enforce unticked is off");

    // Bob signs in through it straight away.
    let browser = app.browser();
    let authorize = start_sso(&browser, &bob.email, &fake.issuer).await;
    let callback = fake.callback_for(&authorize).await;
    let page = finish_sso(&app, &browser, &callback).await;
    assert_signed_in_as(&browser, &page, &bob.email).await;
    let events = app.audit_events(&slug).await;
    assert_eq!(count(&events, "sso_configured"), 2, "{events:?}");
}

#[tokio::test]
async fn settings_sso_refuses_an_issuer_whose_discovery_names_another_issuer() {
    let app = spawn_app().await;
    let slug = app.agency("Harbour Homes", false).await;
    let owner = app.person(&slug, "Olivia Owner", Role::Owner).await;
    let fake = FakeIdp::start(&app.clock, IdpUser::new("x", "x@x.example", "X")).await;
    fake.advertise_issuer("https://login.elsewhere.example/tenant");
    let settings = app.signed_in(&owner).await;
    let page = post_settings(&settings, &fake.issuer, &domain_of(&slug), Flags::default()).await;
    assert_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("names a different issuer"), "{}", page.body);
    assert!(
        page.contains("login.elsewhere.example"),
        "the issuer it found is named: {}",
        page.body
    );
    // The form keeps what the owner typed; nothing was saved.
    assert_eq!(page.field_value("issuer"), Some(fake.issuer.clone()));
    let agency = agency_id(&app, &slug).await;
    assert!(
        app.idm
            .sso_connection_of(&agency)
            .await
            .expect("db")
            .is_none()
    );
    assert_eq!(count(&app.audit_events(&slug).await, "sso_configured"), 0);

    // The same through the CLI path.
    let refused = connect(
        &app,
        &slug,
        &fake.issuer,
        &[domain_of(&slug)],
        Flags::default(),
    )
    .await;
    assert!(
        matches!(&refused, Err(IdmError::SsoSetup(problems)) if problems.iter().any(|p| p.contains("names a different issuer"))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn settings_sso_refuses_an_unreachable_issuer() {
    let app = spawn_app().await;
    let slug = app.agency("Harbour Homes", false).await;
    let owner = app.person(&slug, "Olivia Owner", Role::Owner).await;
    let settings = app.signed_in(&owner).await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let page = post_settings(&settings, &nobody, &domain_of(&slug), Flags::default()).await;
    assert_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Could not use that issuer"), "{}", page.body);
    let agency = agency_id(&app, &slug).await;
    assert!(
        app.idm
            .sso_connection_of(&agency)
            .await
            .expect("db")
            .is_none()
    );

    // Neither is a plain-http issuer off loopback, nor a form without domains.
    let page = post_settings(
        &settings,
        "http://idp.example.com",
        &domain_of(&slug),
        Flags::default(),
    )
    .await;
    assert_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("must be an https URL"), "{}", page.body);
    let page = post_settings(&settings, &nobody, "", Flags::default()).await;
    assert_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("Enter at least one email domain."),
        "{}",
        page.body
    );
    assert!(
        app.idm
            .sso_connection_of(&agency)
            .await
            .expect("db")
            .is_none()
    );
}

#[tokio::test]
async fn settings_sso_is_for_owners_only() {
    let app = spawn_app().await;
    let slug = app.agency("Harbour Homes", false).await;
    let owner = app.person(&slug, "Olivia Owner", Role::Owner).await;
    let admin = app.person(&slug, "Clara Admin", Role::ClientAdmin).await;
    let staff = app.person(&slug, "Bob Baker", Role::Staff).await;
    let fake = FakeIdp::start(&app.clock, IdpUser::new("x", "x@x.example", "X")).await;

    for person in [&admin, &staff] {
        let browser = app.signed_in(person).await;
        assert_status(&browser.get("/settings/sso").await, StatusCode::FORBIDDEN);
        // A form posted anyway (the CSRF token of another page) is refused too.
        assert_status(&browser.get("/account").await, StatusCode::OK);
        let page = browser
            .post_form(
                "/settings/sso",
                &[
                    ("issuer", fake.issuer.as_str()),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                    ("domains", &domain_of(&slug)),
                    ("enforce", "on"),
                ],
            )
            .await;
        assert_status(&page, StatusCode::FORBIDDEN);
    }
    let agency = agency_id(&app, &slug).await;
    assert!(
        app.idm
            .sso_connection_of(&agency)
            .await
            .expect("db")
            .is_none()
    );

    // Signed out, the page asks for a sign-in.
    let page = app.browser().get("/settings/sso").await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"), "{}", page.location());

    // The use-case itself refuses a client administrator and another agency's owner.
    let other = app.agency("Quayside Lettings", false).await;
    let other_owner = app.person(&other, "Quinn Owner", Role::Owner).await;
    for actor in [&admin, &other_owner] {
        let refused = app
            .idm
            .configure_sso(
                Some(&actor.account.id),
                &agency,
                &SsoSettingsInput {
                    issuer: &fake.issuer,
                    client_id: CLIENT_ID,
                    client_secret: CLIENT_SECRET,
                    domains: &[domain_of(&slug)],
                    scopes: &[],
                    enforce: true,
                    create_accounts: true,
                },
                &context(&app),
            )
            .await;
        assert!(matches!(refused, Err(IdmError::Forbidden)), "{refused:?}");
    }
    let owners = app.signed_in(&owner).await;
    assert_status(&owners.get("/settings/sso").await, StatusCode::OK);
}

#[tokio::test]
async fn settings_sso_refuses_a_domain_another_agency_already_connected() {
    let app = spawn_app().await;
    let harbour = app.agency("Harbour Homes", false).await;
    let quayside = app.agency("Quayside Lettings", false).await;
    let quinn = app.person(&quayside, "Quinn Owner", Role::Owner).await;
    let harbour_idp = FakeIdp::start(&app.clock, IdpUser::new("x", "x@x.example", "X")).await;
    let quayside_idp = FakeIdp::start(&app.clock, IdpUser::new("y", "y@y.example", "Y")).await;
    connect(
        &app,
        &harbour,
        &harbour_idp.issuer,
        &[domain_of(&harbour)],
        Flags::default(),
    )
    .await
    .expect("Harbour Homes connects its domain");

    let settings = app.signed_in(&quinn).await;
    let domains = format!("{} {}", domain_of(&quayside), domain_of(&harbour));
    let page = post_settings(&settings, &quayside_idp.issuer, &domains, Flags::default()).await;
    assert_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("already belongs to another agency"),
        "{}",
        page.body
    );
    assert!(
        app.idm
            .sso_connection_of(&agency_id(&app, &quayside).await)
            .await
            .expect("db")
            .is_none()
    );
    // Harbour Homes keeps its domain.
    let harbours = app
        .idm
        .sso_connection_of(&agency_id(&app, &harbour).await)
        .await
        .expect("db")
        .expect("kept");
    assert_eq!(harbours.domains, vec![domain_of(&harbour)]);
    assert_eq!(harbours.issuer, harbour_idp.issuer);
    assert_eq!(
        count(&app.audit_events(&quayside).await, "sso_configured"),
        0
    );

    // Its own domain alone is fine.
    let page = post_settings(
        &settings,
        &quayside_idp.issuer,
        &domain_of(&quayside),
        Flags::default(),
    )
    .await;
    assert_status(&page, StatusCode::SEE_OTHER);
}
