//! Sessions: the cookie (S1), idle and absolute expiry (S3), ending sessions (S4), CSRF
//! tokens bound to the session (S5), security headers (S7), and the machine endpoints.

use latchkey::domain::Role;
use latchkey::idm::ports::Clock;
use latchkey::idm::staff::NewStaff;
use reqwest::StatusCode;

use crate::helpers::{
    Browser, Page, Person, TestApp, TestOptions, assert_status, spawn_app, spawn_app_with, unique,
};

/// One `Set-Cookie` value taken apart: name, value and attributes.
struct SetCookie {
    name: String,
    value: String,
    attributes: Vec<String>,
}

impl SetCookie {
    fn parse(header: &str) -> Self {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|p| p.split_once('='))
            .unwrap_or_else(|| panic!("not a cookie: {header}"));
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            attributes: parts.map(str::to_owned).collect(),
        }
    }

    fn has(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }

    fn has_named(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| {
            a.split('=')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
        })
    }
}

fn set_cookie_named(page: &Page, name: &str) -> SetCookie {
    page.set_cookies()
        .iter()
        .map(|c| SetCookie::parse(c))
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} cookie set: {:?}", page.set_cookies()))
}

/// Posts a form with exactly this CSRF token (or none).
async fn post_with_token(
    browser: &Browser,
    path: &str,
    token: Option<&str>,
    fields: &[(&str, &str)],
) -> Page {
    let mut all: Vec<(&str, &str)> = Vec::new();
    if let Some(token) = token {
        all.push(("csrf_token", token));
    }
    all.extend_from_slice(fields);
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(all)
        .finish();
    browser.post_raw(path, body.into_bytes()).await
}

/// The handles in the "End session" forms of an account page.
fn revocable_handles(page: &Page) -> Vec<String> {
    let marker = "action=\"/account/sessions/";
    page.body
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &page.body[at + marker.len()..];
            rest.find("/revoke\"").map(|end| rest[..end].to_owned())
        })
        .collect()
}

/// Ends the session the setup left behind, so the test knows every session there is.
async fn without_setup_sessions(app: &TestApp, person: &Person) {
    app.idm
        .revoke_all_sessions_of(&person.account.id, None)
        .await
        .expect("revoke");
}

#[track_caller]
fn assert_signed_out(page: &Page) {
    assert_status(page, StatusCode::SEE_OTHER);
    assert!(
        page.location().starts_with("/login"),
        "sent to {}",
        page.location()
    );
}

/// The CSRF token a signed-in page shows.
async fn token_of(browser: &Browser, path: &str) -> String {
    let page = browser.get(path).await;
    assert_status(&page, StatusCode::OK);
    page.csrf_token()
        .unwrap_or_else(|| panic!("no CSRF token on {path}"))
}

#[tokio::test]
async fn s1_the_session_cookie_is_http_only_lax_and_random() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    let browser = app.browser();
    let signed_in = browser.sign_in(&bob.email, &bob.password).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    let cookie = set_cookie_named(&signed_in, "latchkey_session");
    assert!(cookie.has("HttpOnly"), "{:?}", cookie.attributes);
    assert!(cookie.has("SameSite=Lax"), "{:?}", cookie.attributes);
    assert!(cookie.has("Path=/"), "{:?}", cookie.attributes);
    assert!(
        !cookie.has("Secure"),
        "no Secure over http: {:?}",
        cookie.attributes
    );
    assert!(!cookie.has_named("Domain"), "{:?}", cookie.attributes);
    assert!(
        cookie.value.len() >= 43,
        "at least 256 bits: {}",
        cookie.value
    );
    assert!(
        cookie
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: {}",
        cookie.value
    );
    // It holds no personal data.
    assert!(!cookie.value.contains(&bob.id()) && !cookie.value.contains(&bob.email));
    assert_eq!(
        browser.session_cookie().as_deref(),
        Some(cookie.value.as_str())
    );

    // Two sign-ins never get the same id.
    let again = app.browser().sign_in(&bob.email, &bob.password).await;
    assert_ne!(
        set_cookie_named(&again, "latchkey_session").value,
        cookie.value
    );
    // No HSTS over plain http.
    assert_eq!(signed_in.header("strict-transport-security"), "");
    app.stop().await;
}

#[tokio::test]
async fn s1_over_https_the_cookie_is_host_prefixed_and_secure_and_pages_send_hsts() {
    let app = spawn_app_with(TestOptions {
        public_url: "https://id.latchkey.test".into(),
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", false).await;
    let email = format!("{}@{agency}.example", unique("bob."));
    app.idm
        .create_staff(
            &NewStaff {
                agency_slug: &agency,
                email: &email,
                name: "Bob Baker",
                role: Role::Staff,
                temporary_password: Some("Temporary.Pass1"),
            },
            app.clock.now(),
        )
        .await
        .expect("create staff");
    // A cookie jar would not send Secure cookies back over http, so cookies go by hand.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let read = |response: reqwest::Response| async move {
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    };

    let form = read(
        client
            .get(format!("{}/login", app.address))
            .send()
            .await
            .expect("GET /login"),
    )
    .await;
    assert_status(&form, StatusCode::OK);
    assert!(
        form.header("strict-transport-security")
            .starts_with("max-age="),
        "HSTS: {:?}",
        form.headers
    );
    let presession = set_cookie_named(&form, "__Host-latchkey_csrf");
    assert!(presession.has("Secure") && presession.has("Path=/"));
    assert!(!presession.has_named("Domain"));

    let csrf = form.csrf_token().expect("csrf token");
    let signed_in = read(
        client
            .post(format!("{}/login", app.address))
            .header(
                "cookie",
                format!("__Host-latchkey_csrf={}", presession.value),
            )
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("email", email.as_str()),
                ("password", "Temporary.Pass1"),
            ])
            .send()
            .await
            .expect("POST /login"),
    )
    .await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/password/change");
    assert!(
        signed_in
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("latchkey_session=")),
        "no unprefixed cookie over https: {:?}",
        signed_in.set_cookies()
    );
    let session = set_cookie_named(&signed_in, "__Host-latchkey_session");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            session.has(attribute),
            "{attribute}: {:?}",
            session.attributes
        );
    }
    assert!(
        !session.has_named("Domain"),
        "__Host- forbids Domain: {:?}",
        session.attributes
    );
    assert!(session.value.len() >= 43);
    assert!(
        signed_in
            .header("strict-transport-security")
            .starts_with("max-age=")
    );

    // The prefixed cookie is the session.
    let change = read(
        client
            .get(format!("{}/password/change", app.address))
            .header(
                "cookie",
                format!(
                    "__Host-latchkey_csrf={}; __Host-latchkey_session={}",
                    presession.value, session.value
                ),
            )
            .send()
            .await
            .expect("GET /password/change"),
    )
    .await;
    assert_status(&change, StatusCode::OK);
    assert!(
        change
            .header("strict-transport-security")
            .starts_with("max-age=")
    );
    app.stop().await;
}

#[tokio::test]
async fn s3_a_session_ends_after_30_idle_minutes() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&bob).await;
    let cookie = browser.session_cookie().expect("session cookie");

    app.clock.advance(29 * 60);
    assert_status(&browser.get("/account").await, StatusCode::OK);
    // 31 minutes after the last activity it is over, for good.
    app.clock.advance(31 * 60);
    let page = browser.get("/account").await;
    assert_signed_out(&page);
    assert_eq!(page.location(), "/login?return_to=%2Faccount");
    let replay = Browser::new(&app.address);
    replay.set_cookie("latchkey_session", &cookie);
    assert_signed_out(&replay.get("/account").await);
    app.stop().await;
}

#[tokio::test]
async fn s3_activity_keeps_a_session_alive_only_up_to_12_hours() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&bob).await;

    // A page every 20 minutes for 11 h 40 min.
    for step in 1..=35 {
        app.clock.advance(20 * 60);
        let page = browser.get("/account").await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "after {} minutes: {}",
            step * 20,
            page.location()
        );
    }
    app.clock.advance(19 * 60);
    assert_status(&browser.get("/account").await, StatusCode::OK);
    // 12 h after sign-in it ends, active or not.
    app.clock.advance(60);
    assert_signed_out(&browser.get("/account").await);
    app.stop().await;
}

#[tokio::test]
async fn s4_logout_ends_the_server_side_session() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&bob).await;
    let cookie = browser.session_cookie().expect("session cookie");
    let other_device = app.signed_in(&bob).await;

    let token = token_of(&browser, "/account").await;
    let out = post_with_token(&browser, "/logout", Some(&token), &[]).await;
    assert_status(&out, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    let cleared = set_cookie_named(&out, "latchkey_session");
    assert!(cleared.value.is_empty() && cleared.has("Max-Age=0"));
    assert_signed_out(&browser.get("/account").await);

    // The old cookie value, kept by someone, is dead on the server.
    let replay = Browser::new(&app.address);
    replay.set_cookie("latchkey_session", &cookie);
    assert_signed_out(&replay.get("/account").await);
    // Logout ends this session only.
    assert_status(&other_device.get("/account").await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn s4_the_account_page_lists_sessions_and_ends_another_one() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    // The setup's own sign-in is not one of Bob's devices.
    without_setup_sessions(&app, &bob).await;
    let laptop = app.signed_in(&bob).await;
    let phone = app.signed_in(&bob).await;

    let page = laptop.get("/account").await;
    assert_status(&page, StatusCode::OK);
    assert_eq!(
        page.body.matches("This session").count(),
        1,
        "{}",
        page.body
    );
    let handles = revocable_handles(&page);
    assert_eq!(handles.len(), 1, "two sessions, one of them this one");
    let phone_handle = &handles[0];
    // The handle is not the phone's cookie value.
    assert_ne!(Some(phone_handle.clone()), phone.session_cookie());

    let ended = laptop
        .post_form(&format!("/account/sessions/{phone_handle}/revoke"), &[])
        .await;
    assert_status(&ended, StatusCode::SEE_OTHER);
    assert_eq!(ended.location(), "/account?notice=session_ended");
    assert_signed_out(&phone.get("/account").await);

    let page = laptop.get(&ended.location()).await;
    assert_status(&page, StatusCode::OK);
    assert!(page.contains("The session was ended."));
    assert!(revocable_handles(&page).is_empty(), "{}", page.body);
    app.stop().await;
}

#[tokio::test]
async fn s4_a_handle_of_someone_elses_session_is_not_found() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    without_setup_sessions(&app, &carol).await;
    let bobs = app.signed_in(&bob).await;
    let carols_laptop = app.signed_in(&carol).await;
    let carols_phone = app.signed_in(&carol).await;
    let handles = revocable_handles(&carols_laptop.get("/account").await);
    assert_eq!(handles.len(), 1);
    let carols_phone_handle = &handles[0];

    token_of(&bobs, "/account").await;
    for handle in [
        carols_phone_handle.as_str(),
        "0123456789abcdef",
        "..%2F..%2Fx",
    ] {
        let refused = bobs
            .post_form(&format!("/account/sessions/{handle}/revoke"), &[])
            .await;
        assert_status(&refused, StatusCode::NOT_FOUND);
    }
    assert_status(&carols_phone.get("/account").await, StatusCode::OK);
    assert_status(&bobs.get("/account").await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn s5_a_post_without_a_csrf_token_is_refused() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    without_setup_sessions(&app, &bob).await;
    let laptop = app.signed_in(&bob).await;
    let phone = app.signed_in(&bob).await;
    let phone_handle = revocable_handles(&laptop.get("/account").await)
        .pop()
        .expect("the phone's session");

    for (path, fields) in [
        ("/logout", vec![]),
        (
            &format!("/account/sessions/{phone_handle}/revoke") as &str,
            vec![],
        ),
        (
            "/password/change",
            vec![
                ("current_password", bob.password.as_str()),
                ("new_password", "Harbour-Lights-42"),
                ("confirm_password", "Harbour-Lights-42"),
            ],
        ),
    ] {
        let refused = post_with_token(&laptop, path, None, &fields).await;
        assert_status(&refused, StatusCode::FORBIDDEN);
        let empty = post_with_token(&laptop, path, Some(""), &fields).await;
        assert_status(&empty, StatusCode::FORBIDDEN);
    }
    // Nothing happened: both sessions live and the password is unchanged.
    assert_status(&laptop.get("/account").await, StatusCode::OK);
    assert_status(&phone.get("/account").await, StatusCode::OK);

    // Signing in needs the token too.
    let visitor = app.browser();
    visitor.get("/login").await;
    let refused = post_with_token(
        &visitor,
        "/login",
        None,
        &[("email", &bob.email), ("password", &bob.password)],
    )
    .await;
    assert_status(&refused, StatusCode::FORBIDDEN);
    assert_eq!(visitor.session_cookie(), None);
    assert_status(
        &app.browser().sign_in(&bob.email, &bob.password).await,
        StatusCode::SEE_OTHER,
    );
    app.stop().await;
}

#[tokio::test]
async fn s5_the_csrf_token_of_another_session_is_refused() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    let laptop = app.signed_in(&bob).await;
    let phone = app.signed_in(&bob).await;
    let carols = app.signed_in(&carol).await;
    let laptop_token = token_of(&laptop, "/account").await;
    let phone_token = token_of(&phone, "/account").await;
    let carols_token = token_of(&carols, "/account").await;
    assert_ne!(laptop_token, phone_token, "one token per session");
    assert_ne!(laptop_token, carols_token);

    for foreign in [&phone_token, &carols_token] {
        let refused = post_with_token(&laptop, "/logout", Some(foreign), &[]).await;
        assert_status(&refused, StatusCode::FORBIDDEN);
    }
    // A visitor without a session cannot use a session's token either.
    let visitor = app.browser();
    visitor.get("/login").await;
    let refused = post_with_token(
        &visitor,
        "/login",
        Some(&laptop_token),
        &[("email", &bob.email), ("password", &bob.password)],
    )
    .await;
    assert_status(&refused, StatusCode::FORBIDDEN);

    for browser in [&laptop, &phone, &carols] {
        assert_status(&browser.get("/account").await, StatusCode::OK);
    }
    assert_status(
        &post_with_token(&laptop, "/logout", Some(&laptop_token), &[]).await,
        StatusCode::SEE_OTHER,
    );
    app.stop().await;
}

#[tokio::test]
async fn s5_the_pre_session_token_is_dead_once_signed_in() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.browser();
    let pre_session = token_of(&browser, "/login").await;
    let signed_in = browser
        .post_form(
            "/login",
            &[("email", &bob.email), ("password", &bob.password)],
        )
        .await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    let session_token = token_of(&browser, "/account").await;
    assert_ne!(
        session_token, pre_session,
        "the token is renewed at sign-in"
    );

    let refused = post_with_token(&browser, "/logout", Some(&pre_session), &[]).await;
    assert_status(&refused, StatusCode::FORBIDDEN);
    assert_status(&browser.get("/account").await, StatusCode::OK);
    let out = post_with_token(&browser, "/logout", Some(&session_token), &[]).await;
    assert_status(&out, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn s5_the_session_token_works_for_every_form_and_is_renewed_with_the_session_id() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    without_setup_sessions(&app, &owner).await;
    let admin = app.signed_in(&owner).await;
    let owners_phone = app.signed_in(&owner).await;

    let token = token_of(&admin, "/account").await;
    let reset_path = format!("/settings/staff/{}/reset-password", bob.id());
    for path in [
        "/password/change",
        "/settings/staff",
        reset_path.as_str(),
        "/logout",
    ] {
        assert_eq!(token_of(&admin, path).await, token, "the token on {path}");
    }

    let reset = post_with_token(
        &admin,
        &reset_path,
        Some(&token),
        &[("temporary_password", "Password.1")],
    )
    .await;
    assert_status(&reset, StatusCode::SEE_OTHER);
    let phone_handle = revocable_handles(&admin.get("/account").await)
        .pop()
        .expect("the phone's session");
    let ended = post_with_token(
        &admin,
        &format!("/account/sessions/{phone_handle}/revoke"),
        Some(&token),
        &[],
    )
    .await;
    assert_status(&ended, StatusCode::SEE_OTHER);
    assert_signed_out(&owners_phone.get("/account").await);
    let changed = post_with_token(
        &admin,
        "/password/change",
        Some(&token),
        &[
            ("current_password", &owner.password),
            ("new_password", "Harbour-Lights-42"),
            ("confirm_password", "Harbour-Lights-42"),
        ],
    )
    .await;
    assert_status(&changed, StatusCode::SEE_OTHER);

    // A new session id after the change, and with it a new token; the old one is dead.
    let renewed = token_of(&admin, "/account").await;
    assert_ne!(renewed, token);
    let stale = post_with_token(&admin, "/logout", Some(&token), &[]).await;
    assert_status(&stale, StatusCode::FORBIDDEN);
    let out = post_with_token(&admin, "/logout", Some(&renewed), &[]).await;
    assert_status(&out, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    app.stop().await;
}

#[tokio::test]
async fn s7_every_page_sends_the_security_headers() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let visitor = app.browser();
    let signed_in = app.signed_in(&bob).await;

    let mut pages = vec![
        ("login", visitor.get("/login").await),
        ("forgot", visitor.get("/password/forgot").await),
        ("404", visitor.get("/no-such-page").await),
        ("redirect", visitor.get("/account").await),
        (
            "failed sign-in",
            visitor.sign_in(&bob.email, "Wrong-Guess-1!").await,
        ),
        (
            "csrf refusal",
            post_with_token(&visitor, "/login", None, &[]).await,
        ),
        ("account", signed_in.get("/account").await),
        ("change", signed_in.get("/password/change").await),
        ("404 signed in", signed_in.get("/account/nothing").await),
    ];
    pages.push(("staff 403", signed_in.get("/settings/staff").await));
    assert_status(&pages[2].1, StatusCode::NOT_FOUND);
    assert!(pages[2].1.contains("Not found"), "{}", pages[2].1.body);
    assert_status(&pages[6].1, StatusCode::OK);

    for (what, page) in &pages {
        let csp = page.header("content-security-policy");
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "{what}: CSP {csp:?}"
        );
        assert!(!csp.contains("unsafe-inline"), "{what}: CSP {csp:?}");
        assert!(!csp.contains("unsafe-eval"), "{what}: CSP {csp:?}");
        let scripts_limited = csp.contains("script-src") || csp.contains("default-src 'none'");
        assert!(scripts_limited, "{what}: CSP {csp:?}");
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{what}");
        assert!(
            page.header("cache-control").contains("no-store"),
            "{what}: {:?}",
            page.header("cache-control")
        );
        assert!(!page.body.contains("<script>"), "{what}: inline script");
    }
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_for_machines() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", app.address)).send();

    let health = get("/healthz").await.expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.expect("body"), "ok");

    let ready = get("/readyz").await.expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        ready
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    );
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["redis"], "ok", "{body}");

    // One refused sign-in shows up in the counter.
    let refused = app
        .browser()
        .sign_in("nobody@nowhere.example", "Wrong-Guess-1!")
        .await;
    assert_status(&refused, StatusCode::UNAUTHORIZED);
    let metrics = get("/metrics").await.expect("GET /metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"))
    );
    let text = metrics.text().await.expect("body");
    assert!(
        text.contains("# TYPE latchkey_sign_ins_total counter"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "latchkey_sign_ins_total{outcome=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "latchkey_sign_ins_total{outcome=\"succeeded\"} 0"),
        "{text}"
    );
    app.stop().await;
}

/// The session check answers from the session store alone: who the cookie belongs to,
/// and 401 once it is gone or while only a password change is allowed.
#[tokio::test]
async fn s4_the_session_check_names_the_person_and_ends_with_the_session() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    assert_eq!(
        app.browser().get("/session").await.status,
        StatusCode::UNAUTHORIZED
    );

    let browser = app.signed_in(&bob).await;
    let check = browser.get("/session").await;
    assert_status(&check, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&check.body).unwrap();
    assert_eq!(body["sub"], bob.id().as_str());
    assert_eq!(body["amr"], serde_json::json!(["pwd"]));

    browser.submit("/logout", &[]).await;
    assert_eq!(
        browser.get("/session").await.status,
        StatusCode::UNAUTHORIZED
    );

    let admin = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let admin_browser = app.signed_in(&admin).await;
    app.admin_resets(&admin_browser, &bob, "Password.1").await;
    let restricted = app.browser();
    restricted.sign_in(&bob.email, "Password.1").await;
    assert_eq!(
        restricted.get("/session").await.status,
        StatusCode::UNAUTHORIZED,
        "a forced-change session is not a signed-in person yet"
    );
    app.stop().await;
}
