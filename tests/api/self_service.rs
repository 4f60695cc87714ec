//! Self-service password reset (SPEC §3, SECURITY R1–R7, P1): a person whose agency has
//! SSO enabled asks for a link at `/password/forgot`, gets it by mail, opens it and sets a
//! new password. Everyone else is told by mail that an administrator resets it.

use std::sync::Arc;

use latchkey::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{
    Browser, Db, Email, PUBLIC_URL, Page, Person, TestApp, TestOptions, assert_status, spawn_app,
    spawn_app_on, spawn_app_with, unique,
};

const LINK_PREFIX: &str = "http://latchkey.test/password/reset?token=";
const INVALID_LINK_TEXT: &str = "invalid, has expired or has already been used";

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

fn is_reset_link_mail(mail: &Email) -> bool {
    mail.text.contains("/password/reset?token=")
}

fn is_password_changed_mail(mail: &Email) -> bool {
    mail.subject.contains("password was changed")
}

/// Waits until at least `n` mails to `address` satisfy `wanted` (other mails, such as the
/// "password changed" one from setting up the account, may arrive in between).
async fn wait_for_matching(
    app: &TestApp,
    address: &str,
    n: usize,
    wanted: fn(&Email) -> bool,
) -> Vec<Email> {
    let mut count = n;
    loop {
        let mails = app.smtp.wait_for(address, count).await;
        let matching: Vec<Email> = mails.into_iter().filter(wanted).collect();
        if matching.len() >= n {
            return matching;
        }
        count += n - matching.len();
    }
}

fn reset_tokens(app: &TestApp, address: &str) -> Vec<String> {
    app.smtp
        .messages_to(address)
        .iter()
        .filter(|m| is_reset_link_mail(m))
        .map(Email::reset_token)
        .collect()
}

/// Waits for a reset-link mail whose token is not among `known`, and returns that mail.
async fn wait_for_new_reset_mail(app: &TestApp, address: &str, known: &[String]) -> Email {
    wait_for_matching(app, address, known.len() + 1, is_reset_link_mail)
        .await
        .into_iter()
        .find(|m| !known.contains(&m.reset_token()))
        .expect("a reset mail with a new token")
}

/// Opens the forgot page in `browser` and asks for a reset mail for `email`.
async fn ask_for_reset(browser: &Browser, email: &str) -> Page {
    let form = browser.get("/password/forgot").await;
    assert_status(&form, StatusCode::OK);
    browser
        .post_form("/password/forgot", &[("email", email)])
        .await
}

/// Asks for a reset and returns the token of the mail it produced. Requests are made one
/// at a time so that "the newer token" is well defined.
async fn request_reset_token(app: &TestApp, browser: &Browser, person: &Person) -> String {
    let known = reset_tokens(app, &person.email);
    let answer = ask_for_reset(browser, &person.email).await;
    assert_status(&answer, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/password/forgot/sent");
    wait_for_new_reset_mail(app, &person.email, &known)
        .await
        .reset_token()
}

fn reset_path(token: &str) -> String {
    format!("/password/reset?token={token}")
}

/// A fresh browser holding a CSRF token (every form of a visitor takes the same one), as
/// someone who has a Latchkey page open when they follow a dead link would have: the
/// invalid-link page itself has no form.
async fn browser_with_csrf(app: &TestApp) -> Browser {
    let browser = app.browser();
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);
    browser
}

/// Opens the link in `browser` (which gives it a CSRF token) and submits the form.
async fn redeem(browser: &Browser, token: &str, new_password: &str, confirm: &str) -> Page {
    browser.get(&reset_path(token)).await;
    post_reset(browser, token, new_password, confirm).await
}

/// Posts the reset form with the browser's current CSRF token, without opening the link.
async fn post_reset(browser: &Browser, token: &str, new_password: &str, confirm: &str) -> Page {
    browser
        .post_form(
            "/password/reset",
            &[
                ("token", token),
                ("new_password", new_password),
                ("confirm_password", confirm),
            ],
        )
        .await
}

#[track_caller]
fn assert_invalid_link_page(page: &Page) {
    assert_status(page, StatusCode::GONE);
    assert!(page.contains(INVALID_LINK_TEXT), "{}", page.body);
    assert!(
        !page.contains("name=\"new_password\""),
        "the invalid-link page offers no form: {}",
        page.body
    );
}

#[track_caller]
fn assert_reset_form(page: &Page, token: &str) {
    assert_status(page, StatusCode::OK);
    assert!(page.contains("name=\"new_password\""), "{}", page.body);
    assert!(page.contains("name=\"confirm_password\""), "{}", page.body);
    assert!(
        page.contains(&format!("name=\"token\" value=\"{token}\"")),
        "{}",
        page.body
    );
}

/// The text of the error box of a re-rendered form (empty when there is none), so that
/// assertions do not match the list of rules every password page shows up front.
fn form_errors(page: &Page) -> String {
    let Some(start) = page.body.find("id=\"form-errors\"") else {
        return String::new();
    };
    let rest = &page.body[start..];
    let end = rest.find("</div>").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// Decodes the character references minijinja's HTML escaping produces.
fn html_unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

async fn signs_in(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.browser().sign_in(email, password).await.status
}

/// A person in a new agency with SSO enabled (so they get emailed reset links).
async fn sso_person(app: &TestApp, name: &str) -> (String, Person) {
    let agency = app.agency("Harbour Homes", true).await;
    let person = app.person(&agency, name, Role::Staff).await;
    (agency, person)
}

// ---------------------------------------------------------------------------------------
// 1. The journey
// ---------------------------------------------------------------------------------------

async fn reset_journey(db: Db) {
    let app = spawn_app_on(db).await;
    let (agency, dana) = sso_person(&app, "Dana Doyle").await;
    let laptop = app.signed_in(&dana).await;
    let phone = app.signed_in(&dana).await;
    assert_status(&laptop.get("/account").await, StatusCode::OK);
    assert_status(&phone.get("/account").await, StatusCode::OK);

    // Forgot, with a forged Host and X-Forwarded-Host: the link must still use PUBLIC_URL.
    let visitor = app.browser();
    let form = visitor.get("/password/forgot").await;
    assert_status(&form, StatusCode::OK);
    assert_eq!(form.header("referrer-policy"), "no-referrer");
    let csrf = form.csrf_token().expect("csrf token on the forgot page");
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf_token", &csrf)
        .append_pair("email", &dana.email)
        .finish();
    let forged = visitor
        .client
        .post(format!("{}/password/forgot", visitor.base))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST /password/forgot");
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        forged
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/password/forgot/sent")
    );
    let sent = visitor.get("/password/forgot/sent").await;
    assert_status(&sent, StatusCode::OK);
    assert!(sent.contains("Check your email"), "{}", sent.body);

    let mail = wait_for_new_reset_mail(&app, &dana.email, &[]).await;
    let link = mail.reset_link();
    assert!(
        link.starts_with(LINK_PREFIX),
        "link built from the public URL: {link}"
    );
    assert!(!mail.text.contains("evil.example") && !mail.html.contains("evil.example"));
    assert!(
        html_unescape(&mail.html).contains(&format!("href=\"{link}\"")),
        "the HTML part has the same link: {}",
        mail.html
    );
    let token = mail.reset_token();
    // 32 random bytes in base64url; at least 128 bits is 22 characters.
    assert!(token.len() >= 22, "token too short: {token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{token}"
    );
    // Stored by digest only: the raw token is not a key of the store.
    let directory = &app.idm.directory;
    assert!(directory.reset_token(&token).await.expect("db").is_none());
    assert!(
        directory
            .reset_token(&latchkey::crypto::tokens::digest(&token))
            .await
            .expect("db")
            .is_some()
    );

    // Opening the link (twice, as a mail scanner would) only shows the form.
    let path = link.strip_prefix(PUBLIC_URL).expect("link on PUBLIC_URL");
    let browser = app.browser();
    for _ in 0..2 {
        let page = browser.get(path).await;
        assert_reset_form(&page, &token);
        assert_eq!(page.header("referrer-policy"), "no-referrer");
    }

    // Setting the password does not sign the user in.
    let new_password = "Harbour-Lights-42";
    let done = post_reset(&browser, &token, new_password, new_password).await;
    assert_status(&done, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/password/reset/done");
    assert!(
        !done
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("latchkey_session=")),
        "{:?}",
        done.set_cookies()
    );
    assert_eq!(browser.session_cookie(), None);
    let done_page = browser.get("/password/reset/done").await;
    assert_status(&done_page, StatusCode::OK);
    assert!(done_page.contains("Sign in with your new password"));
    let account = browser.get("/account").await;
    assert_status(&account, StatusCode::SEE_OTHER);
    assert!(account.location().starts_with("/login"));

    // Every earlier session is dead.
    for device in [&laptop, &phone] {
        let page = device.get("/account").await;
        assert_status(&page, StatusCode::SEE_OTHER);
        assert!(page.location().starts_with("/login"), "{}", page.location());
    }

    // Only the new password signs in.
    assert_eq!(
        signs_in(&app, &dana.email, &dana.password).await,
        StatusCode::UNAUTHORIZED
    );
    let signed = app.browser().sign_in(&dana.email, new_password).await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/account");

    // "Your password was changed" (the second one: the first is from setting up the
    // account), with no password in it.
    let changed = wait_for_matching(&app, &dana.email, 2, is_password_changed_mail).await;
    assert_eq!(changed.len(), 2, "setup change and the reset");
    for mail in &changed {
        for secret in [new_password, dana.password.as_str(), token.as_str()] {
            assert!(!mail.text.contains(secret) && !mail.html.contains(secret));
        }
    }

    let events = app.audit_events(&agency).await;
    assert!(
        events.iter().any(|e| e == "password_reset_requested"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "password_reset_completed"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn r4_r5_reset_journey_uses_public_url_and_signs_out_everywhere_on_sqlite() {
    reset_journey(Db::Sqlite).await;
}

#[tokio::test]
async fn r4_r5_reset_journey_uses_public_url_and_signs_out_everywhere_on_postgres() {
    reset_journey(Db::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// 2–6. The token's life (R2)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn r2_reset_token_is_single_use() {
    let app = spawn_app().await;
    let (_, erin) = sso_person(&app, "Erin Ellis").await;
    let token = request_reset_token(&app, &app.browser(), &erin).await;

    let first = redeem(
        &app.browser(),
        &token,
        "Harbour-Lights-42",
        "Harbour-Lights-42",
    )
    .await;
    assert_status(&first, StatusCode::SEE_OTHER);
    assert_eq!(first.location(), "/password/reset/done");
    let hash_after_first = app.account(&erin).await.password_hash;

    // The same token again, from another browser: refused, nothing changes.
    let again = browser_with_csrf(&app).await;
    assert_invalid_link_page(&again.get(&reset_path(&token)).await);
    let replay = post_reset(&again, &token, "Second-Try-Pass-77", "Second-Try-Pass-77").await;
    assert_invalid_link_page(&replay);
    assert_eq!(app.account(&erin).await.password_hash, hash_after_first);
    assert_eq!(
        signs_in(&app, &erin.email, "Second-Try-Pass-77").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        signs_in(&app, &erin.email, "Harbour-Lights-42").await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

#[tokio::test]
async fn r2_newer_reset_request_supersedes_the_older_token() {
    let app = spawn_app().await;
    let (_, finn) = sso_person(&app, "Finn Ford").await;
    let visitor = app.browser();
    let older = request_reset_token(&app, &visitor, &finn).await;
    let newer = request_reset_token(&app, &visitor, &finn).await;
    assert_ne!(older, newer);

    let browser = browser_with_csrf(&app).await;
    assert_invalid_link_page(&browser.get(&reset_path(&older)).await);
    let refused = post_reset(&browser, &older, "Older-Link-Pass-1", "Older-Link-Pass-1").await;
    assert_invalid_link_page(&refused);
    assert_eq!(
        app.account(&finn).await.password_hash,
        finn.account.password_hash
    );

    let accepted = redeem(&browser, &newer, "Newer-Link-Pass-2", "Newer-Link-Pass-2").await;
    assert_status(&accepted, StatusCode::SEE_OTHER);
    assert_eq!(accepted.location(), "/password/reset/done");
    assert_eq!(
        signs_in(&app, &finn.email, "Older-Link-Pass-1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        signs_in(&app, &finn.email, "Newer-Link-Pass-2").await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

async fn eight_redemptions_race(db: Db) {
    let app = spawn_app_on(db).await;
    let (_, gail) = sso_person(&app, "Gail Grant").await;
    let token = request_reset_token(&app, &app.browser(), &gail).await;

    // Eight browsers, each with its own CSRF token from opening the link.
    let passwords: Vec<String> = (0..8).map(|i| format!("Racing-Pass-{i}-Zq!")).collect();
    let start = Arc::new(tokio::sync::Barrier::new(passwords.len()));
    let mut racers = Vec::new();
    for (index, password) in passwords.iter().cloned().enumerate() {
        let browser = app.browser();
        assert_reset_form(&browser.get(&reset_path(&token)).await, &token);
        let start = start.clone();
        let token = token.clone();
        racers.push(tokio::spawn(async move {
            start.wait().await;
            let page = post_reset(&browser, &token, &password, &password).await;
            (index, page)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    for racer in racers {
        let (index, page) = racer.await.expect("racer");
        match page.status {
            StatusCode::SEE_OTHER => {
                assert_eq!(page.location(), "/password/reset/done");
                winners.push(index);
            }
            StatusCode::GONE => {
                assert!(page.contains(INVALID_LINK_TEXT), "{}", page.body);
                losers += 1;
            }
            other => panic!("unexpected {other} for racer {index}: {}", page.body),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption wins: {winners:?}");
    assert_eq!(losers, 7);

    // Exactly the winner's password signs in. The clock moves past the per-account
    // slow-down (at most 300 s) before each attempt, so seven failures cannot hide a 429.
    let mut signing_in = Vec::new();
    for (index, password) in passwords.iter().enumerate() {
        app.clock.advance(301);
        let status = signs_in(&app, &gail.email, password).await;
        assert!(
            status == StatusCode::SEE_OTHER || status == StatusCode::UNAUTHORIZED,
            "sign-in {index}: {status}"
        );
        if status == StatusCode::SEE_OTHER {
            signing_in.push(index);
        }
    }
    assert_eq!(signing_in, winners);
    app.clock.advance(301);
    assert_eq!(
        signs_in(&app, &gail.email, &gail.password).await,
        StatusCode::UNAUTHORIZED
    );
    // One change, one notification (plus the one from setting up the account).
    let changed = wait_for_matching(&app, &gail.email, 2, is_password_changed_mail).await;
    assert_eq!(changed.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r2_reset_token_is_single_use_when_eight_redemptions_race_on_sqlite() {
    eight_redemptions_race(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r2_reset_token_is_single_use_when_eight_redemptions_race_on_postgres() {
    eight_redemptions_race(Db::Postgres).await;
}

#[tokio::test]
async fn r2_reset_token_is_refused_after_thirty_minutes() {
    let app = spawn_app().await;
    let (_, hana) = sso_person(&app, "Hana Hill").await;
    let token = request_reset_token(&app, &app.browser(), &hana).await;

    app.clock.advance(31 * 60);
    let browser = browser_with_csrf(&app).await;
    assert_invalid_link_page(&browser.get(&reset_path(&token)).await);
    let refused = post_reset(&browser, &token, "Too-Late-Pass-31", "Too-Late-Pass-31").await;
    assert_invalid_link_page(&refused);
    assert_eq!(
        app.account(&hana).await.password_hash,
        hana.account.password_hash
    );
    assert_eq!(
        signs_in(&app, &hana.email, &hana.password).await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

#[tokio::test]
async fn r2_reset_token_still_works_at_twenty_nine_minutes() {
    let app = spawn_app().await;
    let (_, ivan) = sso_person(&app, "Ivan Innes").await;
    let token = request_reset_token(&app, &app.browser(), &ivan).await;

    app.clock.advance(29 * 60);
    let browser = app.browser();
    assert_reset_form(&browser.get(&reset_path(&token)).await, &token);
    let done = post_reset(&browser, &token, "Just-In-Time-29", "Just-In-Time-29").await;
    assert_status(&done, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/password/reset/done");
    assert_eq!(
        signs_in(&app, &ivan.email, "Just-In-Time-29").await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

#[tokio::test]
async fn r2_reset_token_dies_when_the_password_is_changed_voluntarily() {
    let app = spawn_app().await;
    let (_, jack) = sso_person(&app, "Jack Jones").await;
    let token = request_reset_token(&app, &app.browser(), &jack).await;

    let own = app.signed_in(&jack).await;
    let changed = own
        .submit(
            "/password/change",
            &[
                ("current_password", &jack.password),
                ("new_password", "Changed-Myself-55"),
                ("confirm_password", "Changed-Myself-55"),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);

    let browser = browser_with_csrf(&app).await;
    assert_invalid_link_page(&browser.get(&reset_path(&token)).await);
    let refused = post_reset(&browser, &token, "From-Old-Link-66", "From-Old-Link-66").await;
    assert_invalid_link_page(&refused);
    assert_eq!(
        signs_in(&app, &jack.email, "From-Old-Link-66").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        signs_in(&app, &jack.email, "Changed-Myself-55").await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

#[tokio::test]
async fn r2_reset_token_dies_when_an_admin_sets_a_temporary_password() {
    let app = spawn_app().await;
    let (agency, kate) = sso_person(&app, "Kate King").await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let token = request_reset_token(&app, &app.browser(), &kate).await;

    let admin = app.signed_in(&owner).await;
    let reset = app.admin_resets(&admin, &kate, "Password.1").await;
    assert_status(&reset, StatusCode::SEE_OTHER);

    let browser = browser_with_csrf(&app).await;
    assert_invalid_link_page(&browser.get(&reset_path(&token)).await);
    let refused = post_reset(&browser, &token, "From-Old-Link-66", "From-Old-Link-66").await;
    assert_invalid_link_page(&refused);
    assert_eq!(
        signs_in(&app, &kate.email, "From-Old-Link-66").await,
        StatusCode::UNAUTHORIZED
    );
    let temporary = app.browser().sign_in(&kate.email, "Password.1").await;
    assert_status(&temporary, StatusCode::SEE_OTHER);
    assert_eq!(temporary.location(), "/password/change");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. The policy on reset (P1)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn p1_reset_refuses_a_weak_or_unconfirmed_password_naming_every_problem() {
    let app = spawn_app().await;
    let (_, liam) = sso_person(&app, "Liam Lowe").await;
    let token = request_reset_token(&app, &app.browser(), &liam).await;
    let browser = app.browser();
    let form = browser.get(&reset_path(&token)).await;
    assert_reset_form(&form, &token);
    assert!(
        form.contains("capital letter") && form.contains("symbol"),
        "rules shown first"
    );

    // "abc" fails length, capital, number and symbol: all four are named.
    let weak = post_reset(&browser, &token, "abc", "abc").await;
    assert_status(&weak, StatusCode::UNPROCESSABLE_ENTITY);
    assert_reset_form_again(&weak, &token);
    let errors = form_errors(&weak);
    for rule in [
        "at least 12 characters",
        "at least one capital letter",
        "at least one number",
        "at least one symbol",
    ] {
        assert!(errors.contains(rule), "{rule:?} not named in: {errors}");
    }
    assert!(!errors.contains("do not match"), "{errors}");

    // A strong password with a different confirmation: only the mismatch is named.
    let mismatched = post_reset(&browser, &token, "Harbour-Lights-42", "Harbour-Lights-43").await;
    assert_status(&mismatched, StatusCode::UNPROCESSABLE_ENTITY);
    assert_reset_form_again(&mismatched, &token);
    let errors = form_errors(&mismatched);
    assert!(errors.contains("do not match"), "{errors}");
    for rule in ["characters", "capital letter", "number", "symbol"] {
        assert!(
            !errors.contains(rule),
            "{rule:?} wrongly named in: {errors}"
        );
    }

    // A weak password with a mismatch: both kinds of problem are named.
    let both = post_reset(&browser, &token, "abc", "abd").await;
    assert_status(&both, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = form_errors(&both);
    assert!(errors.contains("at least one capital letter") && errors.contains("do not match"));

    // Nothing changed, and the link still works.
    assert_eq!(
        app.account(&liam).await.password_hash,
        liam.account.password_hash
    );
    assert_eq!(
        signs_in(&app, &liam.email, &liam.password).await,
        StatusCode::SEE_OTHER
    );
    let done = redeem(&browser, &token, "Harbour-Lights-42", "Harbour-Lights-42").await;
    assert_status(&done, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/password/reset/done");
    assert_eq!(
        signs_in(&app, &liam.email, "Harbour-Lights-42").await,
        StatusCode::SEE_OTHER
    );
    app.stop().await;
}

#[track_caller]
fn assert_reset_form_again(page: &Page, token: &str) {
    assert!(page.contains("name=\"new_password\""), "{}", page.body);
    assert!(
        page.contains(&format!("name=\"token\" value=\"{token}\"")),
        "the re-rendered form keeps the token: {}",
        page.body
    );
}

// ---------------------------------------------------------------------------------------
// 8. Same answer for everyone (R1), nothing changes (R3)
// ---------------------------------------------------------------------------------------

/// What a visitor sees of one forgot request: the answer (minus the per-request headers)
/// and the page it leads to.
#[derive(Debug, PartialEq, Eq)]
struct ForgotAnswer {
    status: StatusCode,
    location: String,
    headers: Vec<(String, String)>,
    body: String,
    next_status: StatusCode,
    next_body: String,
}

async fn forgot_answer(browser: &Browser, email: &str) -> ForgotAnswer {
    let answer = browser
        .post_form("/password/forgot", &[("email", email)])
        .await;
    let mut headers: Vec<(String, String)> = answer
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    headers.sort();
    let next = browser.get(&answer.location()).await;
    ForgotAnswer {
        status: answer.status,
        location: answer.location(),
        headers,
        body: answer.body,
        next_status: next.status,
        next_body: next.body,
    }
}

#[tokio::test]
async fn r1_forgot_answers_identically_for_sso_non_sso_and_unknown_accounts() {
    let app = spawn_app().await;
    let (_, sso) = sso_person(&app, "Mia Moss").await;
    let plain_agency = app.agency("Corner Lettings", false).await;
    let plain = app.person(&plain_agency, "Noah Nash", Role::Staff).await;
    let unknown = format!("{}@nowhere.example", unique("nobody."));

    let browser = app.browser();
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);
    let for_unknown = forgot_answer(&browser, &unknown).await;
    let for_plain = forgot_answer(&browser, &plain.email).await;
    let for_sso = forgot_answer(&browser, &sso.email).await;
    assert_eq!(for_unknown.status, StatusCode::SEE_OTHER);
    assert_eq!(for_unknown.location, "/password/forgot/sent");
    assert_eq!(for_unknown.next_status, StatusCode::OK);
    assert_eq!(for_plain, for_unknown, "non-SSO account vs unknown email");
    assert_eq!(for_sso, for_unknown, "SSO account vs unknown email");

    // The SSO person gets a link; the other is told that an administrator resets it.
    let link_mail = wait_for_new_reset_mail(&app, &sso.email, &[]).await;
    assert!(link_mail.reset_link().starts_with(LINK_PREFIX));
    let plain_mails = wait_for_matching(&app, &plain.email, 1, |m| {
        !m.subject.contains("password was changed")
    })
    .await;
    assert_eq!(plain_mails.len(), 1);
    let told = &plain_mails[0];
    for part in [&told.text, &told.html] {
        assert!(!part.contains("/password/reset"), "no reset link: {part}");
        assert!(!part.contains("token="), "no token: {part}");
    }
    assert!(told.text.contains("administrator"), "{}", told.text);

    // The unknown address got nothing. Its request was answered before the two above were
    // made, and their mails have arrived, so its (empty) work is long done.
    assert!(
        app.smtp
            .messages()
            .iter()
            .all(|m| !m.to.eq_ignore_ascii_case(&unknown)),
        "mail sent to an unknown address"
    );
    app.stop().await;
}

#[tokio::test]
async fn r3_requesting_a_reset_changes_nothing_about_the_account() {
    let app = spawn_app().await;
    let (_, olga) = sso_person(&app, "Olga Ortiz").await;
    let plain_agency = app.agency("Corner Lettings", false).await;
    let pete = app.person(&plain_agency, "Pete Park", Role::Staff).await;
    let olgas_laptop = app.signed_in(&olga).await;
    let petes_laptop = app.signed_in(&pete).await;

    let visitor = app.browser();
    for _ in 0..3 {
        request_reset_token(&app, &visitor, &olga).await;
    }
    for _ in 0..3 {
        assert_status(
            &ask_for_reset(&visitor, &pete.email).await,
            StatusCode::SEE_OTHER,
        );
    }
    wait_for_matching(&app, &pete.email, 3, |m| {
        m.subject.contains("password reset request")
    })
    .await;

    for (person, laptop) in [(&olga, &olgas_laptop), (&pete, &petes_laptop)] {
        let account = app.account(person).await;
        assert_eq!(account.password_hash, person.account.password_hash);
        assert_eq!(account.password_state, person.account.password_state);
        // The existing session lives on, and the old password still signs in at once.
        assert_status(&laptop.get("/account").await, StatusCode::OK);
        let signed = app.browser().sign_in(&person.email, &person.password).await;
        assert_status(&signed, StatusCode::SEE_OTHER);
        assert_eq!(signed.location(), "/account");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 9. Rate limits (R7)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn r7_reset_mail_is_limited_to_five_per_address_per_hour_with_the_same_answer() {
    let app = spawn_app().await;
    let (_, quinn) = sso_person(&app, "Quinn Quade").await;
    let (_, rosa) = sso_person(&app, "Rosa Reid").await;
    let browser = app.browser();
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);

    // Five requests, one at a time, each mailed.
    let mut answers = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..5 {
        answers.push(forgot_answer(&browser, &quinn.email).await);
        let mail = wait_for_new_reset_mail(&app, &quinn.email, &tokens).await;
        tokens.push(mail.reset_token());
    }
    // The sixth is answered the same, but no mail is sent.
    answers.push(forgot_answer(&browser, &quinn.email).await);
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }
    assert_eq!(answers[0].status, StatusCode::SEE_OTHER);
    assert_eq!(answers[0].location, "/password/forgot/sent");

    // A later request for someone else is mailed; by the time it arrives the sixth
    // request (made before it) has long been handled.
    let for_rosa = forgot_answer(&browser, &rosa.email).await;
    assert_eq!(for_rosa, answers[0]);
    wait_for_new_reset_mail(&app, &rosa.email, &[]).await;
    assert_eq!(
        reset_tokens(&app, &quinn.email).len(),
        5,
        "exactly five reset mails"
    );
    // The suppressed request changed nothing: the fifth link is still good.
    assert_reset_form(
        &app.browser().get(&reset_path(&tokens[4])).await,
        &tokens[4],
    );
    app.stop().await;
}

#[tokio::test]
async fn r7_reset_mail_is_limited_per_client_ip_with_the_same_answer() {
    let app = spawn_app_with(TestOptions {
        env: vec![(
            "LATCHKEY_THROTTLE_RESET_MAILS_PER_IP_PER_HOUR".into(),
            "3".into(),
        )],
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", true).await;
    let mut people = Vec::new();
    for name in ["Sam Stone", "Tess Todd", "Uma Upton", "Vic Vance"] {
        people.push(app.person(&agency, name, Role::Staff).await);
    }
    let browser = app.browser();
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);
    let mut answers = Vec::new();
    for person in &people[..3] {
        answers.push(forgot_answer(&browser, &person.email).await);
        wait_for_new_reset_mail(&app, &person.email, &[]).await;
    }
    let last = &people[3];
    answers.push(forgot_answer(&browser, &last.email).await);
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }

    // Prove the fourth mail is not coming: the person then changes their password, and
    // that later mail arrives while no reset mail has.
    let own = app.signed_in(last).await;
    let changed = own
        .submit(
            "/password/change",
            &[
                ("current_password", &last.password),
                ("new_password", "Changed-Myself-55"),
                ("confirm_password", "Changed-Myself-55"),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);
    wait_for_matching(&app, &last.email, 2, is_password_changed_mail).await;
    assert!(reset_tokens(&app, &last.email).is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 10. Bad forgot forms
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn forgot_with_an_empty_email_is_refused_naming_the_problem() {
    let app = spawn_app().await;
    let browser = app.browser();
    for email in ["", "   "] {
        let refused = ask_for_reset(&browser, email).await;
        assert_status(&refused, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refused.contains("action=\"/password/forgot\""),
            "{}",
            refused.body
        );
        assert!(
            form_errors(&refused).contains("Enter your email address"),
            "{}",
            refused.body
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn s5_forgot_without_a_valid_csrf_token_is_forbidden_and_sends_nothing() {
    let app = spawn_app().await;
    let (_, will) = sso_person(&app, "Will Webb").await;
    let browser = app.browser();
    assert_status(&browser.get("/password/forgot").await, StatusCode::OK);

    let body = format!(
        "email={}",
        url::form_urlencoded::byte_serialize(will.email.as_bytes()).collect::<String>()
    );
    let missing = browser
        .post_raw("/password/forgot", body.into_bytes())
        .await;
    assert_status(&missing, StatusCode::FORBIDDEN);

    let other = app.browser();
    other.get("/password/forgot").await;
    let foreign: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf_token", &other.last_csrf())
        .append_pair("email", &will.email)
        .finish();
    let wrong = browser
        .post_raw("/password/forgot", foreign.into_bytes())
        .await;
    assert_status(&wrong, StatusCode::FORBIDDEN);

    // A proper request afterwards gives exactly one reset mail.
    request_reset_token(&app, &browser, &will).await;
    assert_eq!(reset_tokens(&app, &will.email).len(), 1);
    app.stop().await;
}
