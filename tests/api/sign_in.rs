//! Signing in with a password: what an attacker learns (P5), how guessing is slowed (P6),
//! long and Unicode passwords (P2, P3), expiring temporary passwords (R6), where the
//! browser goes afterwards (S6) and the session id it gets (session fixation).

use latchkey::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{
    Browser, Page, TestApp, TestOptions, assert_status, spawn_app, spawn_app_with, unique,
};

const WRONG_EMAIL_OR_PASSWORD: &str = "Wrong email or password.";

/// The body with everything that legitimately differs between two visitors removed: the
/// CSRF token (one per visitor) and the email address they typed (echoed into the form).
fn comparable_body(page: &Page, typed_email: &str) -> String {
    let csrf = page
        .csrf_token()
        .expect("the sign-in form carries a CSRF token");
    assert!(!csrf.is_empty());
    page.body
        .replace(&csrf, "<csrf>")
        .replace(typed_email, "<typed email>")
}

/// The names of the cookies an answer sets.
fn cookie_names(page: &Page) -> Vec<String> {
    let mut names: Vec<String> = page
        .set_cookies()
        .iter()
        .filter_map(|c| c.split_once('=').map(|(name, _)| name.trim().to_owned()))
        .collect();
    names.sort();
    names
}

/// The header names of an answer, sorted.
fn header_names(page: &Page) -> Vec<String> {
    let mut names: Vec<String> = page.headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// The text of the form's error box.
fn error_box(page: &Page) -> String {
    let start = page
        .body
        .find("id=\"form-errors\"")
        .unwrap_or_else(|| panic!("no error box on the page:\n{}", page.body));
    let end = page.body[start..]
        .find("</div>")
        .map_or(page.body.len(), |e| start + e);
    page.body[start..end].to_owned()
}

/// A fresh browser's sign-in attempt.
async fn attempt(app: &TestApp, email: &str, password: &str) -> Page {
    app.browser().sign_in(email, password).await
}

#[track_caller]
fn assert_throttled(page: &Page, retry_after: &str) {
    assert_status(page, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.header("retry-after"), retry_after, "Retry-After");
    assert!(page.contains("Too many attempts"), "{}", page.body);
    assert!(
        page.set_cookies()
            .iter()
            .all(|c| !c.starts_with("latchkey_session=")),
        "a throttled attempt gets no session"
    );
}

fn flip_case_at(text: &str, index: usize) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if i != index {
                c
            } else if c.is_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Changes the signed-in person's password through the change page.
async fn change_password(browser: &Browser, current: &str, new: &str) -> Page {
    browser
        .submit(
            "/password/change",
            &[
                ("current_password", current),
                ("new_password", new),
                ("confirm_password", new),
            ],
        )
        .await
}

#[tokio::test]
async fn p5_unknown_email_and_wrong_password_look_the_same() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    // Same length as Bob's address, so that even the byte count cannot differ.
    let nobody = format!("{}@{agency}.example", unique("ann.other"));
    assert_eq!(nobody.len(), bob.email.len());

    let wrong_password = attempt(&app, &bob.email, "Not-His-Password-1!").await;
    let unknown_email = attempt(&app, &nobody, "Not-His-Password-1!").await;

    assert_status(&wrong_password, StatusCode::UNAUTHORIZED);
    assert_status(&unknown_email, StatusCode::UNAUTHORIZED);
    assert_eq!(
        comparable_body(&wrong_password, &bob.email),
        comparable_body(&unknown_email, &nobody),
        "the two pages differ"
    );
    assert_eq!(cookie_names(&wrong_password), cookie_names(&unknown_email));
    assert!(
        !cookie_names(&wrong_password).contains(&"latchkey_session".to_owned()),
        "a refused sign-in sets no session"
    );
    assert_eq!(header_names(&wrong_password), header_names(&unknown_email));
    assert_eq!(
        wrong_password.header("content-length"),
        unknown_email.header("content-length")
    );
    for page in [&wrong_password, &unknown_email] {
        assert!(page.contains(WRONG_EMAIL_OR_PASSWORD), "{}", page.body);
        assert!(!page.contains("Bob Baker"), "the page names the account");
        assert!(!page.contains(&bob.id()), "the page names the account");
        assert!(
            !error_box(page).contains('@'),
            "the message names an address"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn p6_account_throttle_doubles_the_delay_and_a_success_resets_it() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    // Five free failures.
    for n in 1..=5 {
        let page = attempt(&app, &bob.email, &format!("Wrong-Guess-{n}!")).await;
        assert_status(&page, StatusCode::UNAUTHORIZED);
    }
    // The sixth at once must wait 1 s; even the right password is not tried.
    let sixth = attempt(&app, &bob.email, &bob.password).await;
    assert_throttled(&sixth, "1");
    assert!(
        !error_box(&sixth).contains(&bob.email),
        "the message names the address"
    );
    assert!(!sixth.contains("Bob Baker"));

    // After 1 s one more guess is allowed (and fails); the next must wait 2 s.
    app.clock.advance(1);
    assert_status(
        &attempt(&app, &bob.email, "Wrong-Guess-6!").await,
        StatusCode::UNAUTHORIZED,
    );
    assert_throttled(&attempt(&app, &bob.email, "Wrong-Guess-7!").await, "2");
    app.clock.advance(1);
    assert_throttled(&attempt(&app, &bob.email, &bob.password).await, "1");
    app.clock.advance(1);

    // The right password after the wait signs in and resets the counter.
    let signed_in = attempt(&app, &bob.email, &bob.password).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/account");
    for n in 1..=5 {
        let page = attempt(&app, &bob.email, &format!("Again-Wrong-{n}!")).await;
        assert_status(&page, StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&attempt(&app, &bob.email, &bob.password).await, "1");
    app.stop().await;
}

#[tokio::test]
async fn p6_an_unknown_email_is_throttled_exactly_like_an_existing_one() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let nobody = format!("{}@{agency}.example", unique("ann.other"));
    assert_eq!(nobody.len(), bob.email.len());

    let mut throttled = Vec::new();
    for email in [&bob.email, &nobody] {
        for n in 1..=5 {
            let page = attempt(&app, email, &format!("Wrong-Guess-{n}!")).await;
            assert_status(&page, StatusCode::UNAUTHORIZED);
        }
        let sixth = attempt(&app, email, "Wrong-Guess-6!").await;
        assert_throttled(&sixth, "1");
        assert!(!error_box(&sixth).contains(email.as_str()));
        throttled.push(comparable_body(&sixth, email));
    }
    assert_eq!(
        throttled[0], throttled[1],
        "the throttled pages tell an existing account from a missing one"
    );

    app.clock.advance(1);
    for email in [&bob.email, &nobody] {
        assert_status(
            &attempt(&app, email, "Wrong-Guess-7!").await,
            StatusCode::UNAUTHORIZED,
        );
        assert_throttled(&attempt(&app, email, "Wrong-Guess-8!").await, "2");
    }
    app.stop().await;
}

#[tokio::test]
async fn p6_failures_from_one_ip_across_many_emails_throttle_that_ip() {
    let app = spawn_app_with(TestOptions {
        env: vec![("LATCHKEY_THROTTLE_IP_MAX_FAILURES".into(), "10".into())],
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    // One guess each at ten addresses: no account reaches its own limit.
    for n in 1..=10 {
        let email = format!("{}@{agency}.example", unique(&format!("target{n}.")));
        let page = attempt(&app, &email, "Spray-Guess-1!").await;
        assert_status(&page, StatusCode::UNAUTHORIZED);
    }
    // The eleventh attempt from this IP is refused, even with Bob's right password.
    let eleventh = attempt(&app, &bob.email, &bob.password).await;
    assert_status(&eleventh, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = eleventh
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0, "Retry-After {retry_after}");
    assert!(!error_box(&eleventh).contains(&bob.email));
    app.stop().await;
}

/// A sign-in attempt from a client IP as a trusted proxy reports it.
async fn attempt_from(app: &TestApp, ip: &str, email: &str, password: &str) -> Page {
    let browser = app.browser();
    let form = browser
        .client
        .get(format!("{}/login", app.address))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .expect("GET /login");
    let form = Page {
        status: form.status(),
        headers: form.headers().clone(),
        body: form.text().await.expect("body"),
    };
    let csrf = form.csrf_token().expect("csrf token");
    let response = browser
        .client
        .post(format!("{}/login", app.address))
        .header("x-forwarded-for", ip)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST /login");
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

#[tokio::test]
async fn p6_the_ip_throttle_is_per_ip_and_does_not_lock_the_account_out() {
    let app = spawn_app_with(TestOptions {
        env: vec![
            ("LATCHKEY_THROTTLE_IP_MAX_FAILURES".into(), "10".into()),
            ("LATCHKEY_SERVER_TRUST_FORWARDED_FOR".into(), "true".into()),
        ],
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    let attacker = "203.0.113.66";
    for n in 1..=10 {
        let email = format!("{}@{agency}.example", unique(&format!("target{n}.")));
        let page = attempt_from(&app, attacker, &email, "Spray-Guess-1!").await;
        assert_status(&page, StatusCode::UNAUTHORIZED);
    }
    let from_attacker = attempt_from(&app, attacker, &bob.email, &bob.password).await;
    assert_status(&from_attacker, StatusCode::TOO_MANY_REQUESTS);
    // Bob at his own desk is not affected.
    let from_bob = attempt_from(&app, "198.51.100.7", &bob.email, &bob.password).await;
    assert_status(&from_bob, StatusCode::SEE_OTHER);
    assert_eq!(from_bob.location(), "/account");
    app.stop().await;
}

#[tokio::test]
async fn p2_a_128_character_chosen_password_works_exactly() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let long: String = "Tide-and-Harbour-Lights-7!"
        .chars()
        .cycle()
        .take(128)
        .collect();
    assert_eq!(long.chars().count(), 128);
    let first_127: String = long.chars().take(127).collect();
    let flipped = flip_case_at(&long, 70);
    assert_ne!(flipped, long);
    assert_eq!(flipped.to_lowercase(), long.to_lowercase());

    let browser = app.signed_in(&bob).await;
    let changed = change_password(&browser, &bob.password, &long).await;
    assert_status(&changed, StatusCode::SEE_OTHER);

    let signed_in = attempt(&app, &bob.email, &long).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/account");
    for (what, password) in [
        ("first 127 characters", &first_127),
        ("one flipped case", &flipped),
    ] {
        let page = attempt(&app, &bob.email, password).await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            page.body
        );
        assert!(page.contains(WRONG_EMAIL_OR_PASSWORD), "{what}");
    }
    // The password with one more character is a different password too.
    let longer = format!("{long}x");
    assert_status(
        &attempt(&app, &bob.email, &longer).await,
        StatusCode::UNAUTHORIZED,
    );
    app.stop().await;
}

#[tokio::test]
async fn p2_a_128_character_temporary_password_works_exactly() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let long: String = "Sea.Wall9".chars().cycle().take(128).collect();
    let first_127: String = long.chars().take(127).collect();
    let flipped = flip_case_at(&long, 101);
    assert_ne!(flipped, long);

    let admin = app.signed_in(&owner).await;
    assert_status(
        &app.admin_resets(&admin, &bob, &long).await,
        StatusCode::SEE_OTHER,
    );
    for password in [&first_127, &flipped] {
        assert_status(
            &attempt(&app, &bob.email, password).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    let signed_in = attempt(&app, &bob.email, &long).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/password/change");
    app.stop().await;
}

#[tokio::test]
async fn p2_over_the_maximum_length_is_refused_on_sign_in_and_on_change() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    // 257 characters at sign-in: refused like any wrong password.
    let too_long: String = "Tide-and-Harbour-Lights-7!"
        .chars()
        .cycle()
        .take(257)
        .collect();
    let refused = attempt(&app, &bob.email, &too_long).await;
    assert_status(&refused, StatusCode::UNAUTHORIZED);
    assert!(
        refused.contains(WRONG_EMAIL_OR_PASSWORD),
        "{}",
        refused.body
    );

    // Length is counted in characters: 256 two-byte characters (plus the rules) are fine.
    let browser = app.signed_in(&bob).await;
    let at_max: String = format!("Å1!{}", "é".repeat(253));
    assert_eq!(at_max.chars().count(), 256);
    assert!(at_max.len() > 256);
    let changed = change_password(&browser, &bob.password, &at_max).await;
    assert_status(&changed, StatusCode::SEE_OTHER);
    let signed_in = attempt(&app, &bob.email, &at_max).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);

    // 257 as a new password: refused, naming the maximum; the password stays as it was.
    let browser = app.browser();
    assert_status(
        &browser.sign_in(&bob.email, &at_max).await,
        StatusCode::SEE_OTHER,
    );
    let over = change_password(&browser, &at_max, &too_long).await;
    assert_status(&over, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        over.contains("at most 256 characters"),
        "the page names the maximum: {}",
        over.body
    );
    assert_status(&browser.get("/account").await, StatusCode::OK);
    assert_status(
        &attempt(&app, &bob.email, &at_max).await,
        StatusCode::SEE_OTHER,
    );
    app.stop().await;
}

#[tokio::test]
async fn p3_composed_and_decomposed_a_ring_are_the_same_password() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let composed = "\u{00C5}land-Harbour-42!";
    let decomposed = "A\u{030A}land-Harbour-42!";
    assert_ne!(composed, decomposed);

    let browser = app.signed_in(&bob).await;
    assert_status(
        &change_password(&browser, &bob.password, composed).await,
        StatusCode::SEE_OTHER,
    );
    let typed_decomposed = attempt(&app, &bob.email, decomposed).await;
    assert_status(&typed_decomposed, StatusCode::SEE_OTHER);
    assert_eq!(typed_decomposed.location(), "/account");
    assert_status(
        &attempt(&app, &bob.email, composed).await,
        StatusCode::SEE_OTHER,
    );

    // And the other way round: set decomposed, typed composed.
    let browser = app.browser();
    assert_status(
        &browser.sign_in(&bob.email, composed).await,
        StatusCode::SEE_OTHER,
    );
    assert_status(
        &change_password(&browser, decomposed, "O\u{0308}resund-Bridge-42!").await,
        StatusCode::SEE_OTHER,
    );
    assert_status(
        &attempt(&app, &bob.email, "\u{00D6}resund-Bridge-42!").await,
        StatusCode::SEE_OTHER,
    );
    app.stop().await;
}

#[tokio::test]
async fn r6_a_temporary_password_expires_after_72_hours() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    let admin = app.signed_in(&owner).await;
    assert_status(
        &app.admin_resets(&admin, &bob, "Password.1").await,
        StatusCode::SEE_OTHER,
    );
    assert_status(
        &app.admin_resets(&admin, &carol, "Harbour.Temp9").await,
        StatusCode::SEE_OTHER,
    );

    // Within 72 h the temporary password opens the change page.
    app.clock.advance(71 * 3600);
    let in_time = attempt(&app, &carol.email, "Harbour.Temp9").await;
    assert_status(&in_time, StatusCode::SEE_OTHER);
    assert_eq!(in_time.location(), "/password/change");

    // After 72 h it no longer signs in, and the page says why.
    app.clock.advance(2 * 3600);
    let expired = attempt(&app, &bob.email, "Password.1").await;
    assert_status(&expired, StatusCode::UNAUTHORIZED);
    assert!(
        expired.contains("temporary password has expired"),
        "{}",
        expired.body
    );
    assert!(
        expired
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("latchkey_session=")),
        "an expired temporary password gets no session"
    );
    // Neither does the password Bob had before the reset.
    assert_status(
        &attempt(&app, &bob.email, &bob.password).await,
        StatusCode::UNAUTHORIZED,
    );
    app.stop().await;
}

#[tokio::test]
async fn s6_return_to_outside_the_site_lands_on_the_account_page() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "http:evil.example",
        "///evil.example/account",
    ] {
        let browser = app.browser();
        let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let form = browser.get(&format!("/login?return_to={encoded}")).await;
        assert_status(&form, StatusCode::OK);
        assert!(
            !form.contains("evil.example"),
            "{evil:?} is carried in the form"
        );
        let signed_in = browser
            .post_form(
                "/login",
                &[
                    ("email", &bob.email),
                    ("password", &bob.password),
                    ("return_to", evil),
                ],
            )
            .await;
        assert_status(&signed_in, StatusCode::SEE_OTHER);
        assert_eq!(signed_in.location(), "/account", "return_to={evil:?}");
        // Already signed in, the sign-in page does not bounce there either.
        let again = browser.get(&format!("/login?return_to={encoded}")).await;
        assert_status(&again, StatusCode::SEE_OTHER);
        assert_eq!(again.location(), "/account", "return_to={evil:?}");
    }

    // A path on this site is honoured, query string and all.
    let browser = app.browser();
    let form = browser.get("/login?return_to=%2Faccount%3Fx%3D1").await;
    assert!(form.contains("name=\"return_to\""), "{}", form.body);
    let signed_in = browser
        .post_form(
            "/login",
            &[
                ("email", &bob.email),
                ("password", &bob.password),
                ("return_to", "/account?x=1"),
            ],
        )
        .await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/account?x=1");
    app.stop().await;
}

#[tokio::test]
async fn s2_a_session_id_planted_before_sign_in_is_replaced_and_never_becomes_a_session() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let planted = latchkey::crypto::tokens::random_token(32);

    let victim = app.browser();
    victim.set_cookie("latchkey_session", &planted);
    let signed_in = victim.sign_in(&bob.email, &bob.password).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    let issued = signed_in
        .set_cookies()
        .iter()
        .find_map(|c| c.strip_prefix("latchkey_session=").map(str::to_owned))
        .expect("sign-in sets a session cookie");
    let issued = issued.split(';').next().unwrap_or_default().to_owned();
    assert_ne!(issued, planted);
    assert_eq!(victim.session_cookie().as_deref(), Some(issued.as_str()));
    let page = victim.get("/account").await;
    assert_status(&page, StatusCode::OK);
    assert!(page.contains(&bob.email));

    // The attacker who kept the planted value has nothing.
    let attacker = Browser::new(&app.address);
    attacker.set_cookie("latchkey_session", &planted);
    let page = attacker.get("/account").await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"), "{}", page.location());
    app.stop().await;
}

#[tokio::test]
async fn empty_email_or_password_re_renders_the_form_without_a_session() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    for (email, password) in [
        ("", bob.password.as_str()),
        ("   ", bob.password.as_str()),
        (bob.email.as_str(), ""),
        ("", ""),
    ] {
        let browser = app.browser();
        browser.get("/login").await;
        let page = browser
            .post_form("/login", &[("email", email), ("password", password)])
            .await;
        assert!(
            page.status.is_client_error(),
            "email={email:?} password empty={}: {} {}",
            password.is_empty(),
            page.status,
            page.body
        );
        assert!(
            page.contains("action=\"/login\""),
            "the form is shown again"
        );
        let asked_for = if email.trim().is_empty() {
            "Enter your email address and your password."
        } else {
            "Enter your password."
        };
        assert!(page.contains(asked_for), "{}", page.body);
        assert!(page.csrf_token().is_some_and(|t| !t.is_empty()));
        assert!(
            page.set_cookies()
                .iter()
                .all(|c| !c.starts_with("latchkey_session=")),
            "no session cookie"
        );
        assert_eq!(browser.session_cookie(), None);
        let account = browser.get("/account").await;
        assert_status(&account, StatusCode::SEE_OTHER);
        assert!(account.location().starts_with("/login"));
    }

    // What was typed is kept: the email stays in the form when only the password is missing.
    let browser = app.browser();
    browser.get("/login").await;
    let page = browser
        .post_form("/login", &[("email", &bob.email), ("password", "")])
        .await;
    assert!(
        page.contains(&format!("value=\"{}\"", bob.email)),
        "{}",
        page.body
    );
    app.stop().await;
}

#[tokio::test]
async fn p6_concurrent_guesses_cannot_outrun_the_account_throttle() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;

    // Forty browsers, each with its form open, submit a guess at the same moment.
    let mut browsers = Vec::new();
    for _ in 0..40 {
        let browser = app.browser();
        assert_status(&browser.get("/login").await, StatusCode::OK);
        browsers.push(browser);
    }
    let mut guesses = tokio::task::JoinSet::new();
    for (n, browser) in browsers.into_iter().enumerate() {
        let email = bob.email.clone();
        guesses.spawn(async move {
            let guess = format!("Burst-Guess-{n}!");
            browser
                .post_form("/login", &[("email", &email), ("password", &guess)])
                .await
                .status
        });
    }
    let statuses = guesses.join_all().await;
    let tried = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (tried, throttled),
        (5, 35),
        "only the five free guesses may be tried: {statuses:?}"
    );

    // The burst does not lock Bob out for longer than the maximum delay. How long within
    // that depends on how many of the burst were counted before the rest saw the delay.
    let waiting = attempt(&app, &bob.email, &bob.password).await;
    assert_status(&waiting, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = waiting.header("retry-after").parse().expect("Retry-After");
    assert!(
        (1..=300).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    app.clock.advance(300);
    let signed_in = attempt(&app, &bob.email, &bob.password).await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn s2_signing_in_over_another_persons_session_ends_that_session() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;

    // A shared computer: Bob is signed in, and Carol signs in over his session.
    let shared = app.signed_in(&bob).await;
    let bobs_id = shared.session_cookie().expect("Bob's session");
    assert_status(&shared.get("/account").await, StatusCode::OK);
    let signed_in = shared
        .post_form(
            "/login",
            &[("email", &carol.email), ("password", &carol.password)],
        )
        .await;
    assert_status(&signed_in, StatusCode::SEE_OTHER);
    let carols_id = shared.session_cookie().expect("Carol's session");
    assert_ne!(carols_id, bobs_id);
    let page = shared.get("/account").await;
    assert!(page.contains(&carol.email) && !page.contains(&bob.email));

    // Bob's id, which the browser no longer holds, is dead on the server.
    let replay = Browser::new(&app.address);
    replay.set_cookie("latchkey_session", &bobs_id);
    let page = replay.get("/account").await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"));
    app.stop().await;
}

/// P6: a stranger who keeps the account's shared budget exhausted (one wrong guess at
/// every delay) does not lock the holder out of a browser they signed in with before.
#[tokio::test]
async fn p6_guessing_from_elsewhere_does_not_lock_the_holder_out_of_their_own_browser() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let bobs_laptop = app.signed_in(&bob).await;
    assert!(
        bobs_laptop.cookie("latchkey_device").is_some(),
        "a password sign-in marks the browser"
    );
    bobs_laptop.submit("/logout", &[]).await;

    let attacker = app.browser();
    for _ in 0..5 {
        let page = attacker.sign_in(&bob.email, "Wrong-Guess-1!").await;
        assert_eq!(page.status, reqwest::StatusCode::UNAUTHORIZED);
    }
    let locked = attacker.sign_in(&bob.email, &bob.password).await;
    assert_eq!(
        locked.status,
        reqwest::StatusCode::TOO_MANY_REQUESTS,
        "a browser without the device cookie waits, even with the right password"
    );

    let back = bobs_laptop.sign_in(&bob.email, &bob.password).await;
    assert_eq!(back.status, reqwest::StatusCode::SEE_OTHER, "{}", back.body);
    assert_eq!(back.location(), "/account");

    // A forged device cookie is worth nothing.
    let forger = app.browser();
    forger.set_cookie("latchkey_device", &format!("{}.1.forged", bob.id()));
    let forged = forger.sign_in(&bob.email, &bob.password).await;
    assert_eq!(forged.status, reqwest::StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}
