//! Malformed, oversized or incomplete requests get a clear 4xx, never a 500, and change
//! nothing (SPEC §3: "nothing is changed by a refused form"): the target's hash stays the
//! same and its password still signs in.

use latchkey::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{Browser, Page, Person, TestApp, assert_status, spawn_app};

fn reset_path(target: &Person) -> String {
    format!("/settings/staff/{}/reset-password", target.id())
}

/// An agency with an owner (signed in, on the reset page of Bob) and Bob.
struct Scene {
    app: TestApp,
    owner: Person,
    bob: Person,
    admin: Browser,
}

async fn scene() -> Scene {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let admin = app.signed_in(&owner).await;
    assert_status(&admin.get(&reset_path(&bob)).await, StatusCode::OK);
    Scene {
        app,
        owner,
        bob,
        admin,
    }
}

#[track_caller]
fn assert_client_error(page: &Page, expected: StatusCode) {
    assert!(
        page.status.is_client_error(),
        "expected a 4xx, got {}: {}",
        page.status,
        page.body
    );
    assert_status(page, expected);
}

/// Nothing about the account changed, and its password still signs in.
async fn assert_unchanged(app: &TestApp, person: &Person) {
    let now = app.account(person).await;
    assert_eq!(
        now.password_hash, person.account.password_hash,
        "hash unchanged"
    );
    assert_eq!(now.password_state, person.account.password_state);
    assert_eq!(now.password_version, person.account.password_version);
    let signed = app.browser().sign_in(&person.email, &person.password).await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/account");
}

fn form_body(fields: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}

#[tokio::test]
async fn an_empty_sign_in_form_is_400_and_signs_nobody_in() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.browser();
    assert_status(&browser.get("/login").await, StatusCode::OK);

    let refused = browser.post_form("/login", &[]).await;
    assert_client_error(&refused, StatusCode::BAD_REQUEST);
    assert!(refused.contains("Enter your email address and your password"));
    assert!(browser.session_cookie().is_none(), "no session was made");
    let blank = browser
        .post_form("/login", &[("email", ""), ("password", "")])
        .await;
    assert_client_error(&blank, StatusCode::BAD_REQUEST);
    assert_unchanged(&app, &bob).await;
    app.stop().await;
}

#[tokio::test]
async fn an_empty_change_password_form_is_refused_and_keeps_the_password() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&bob).await;
    assert_status(&browser.get("/password/change").await, StatusCode::OK);

    let refused = browser.post_form("/password/change", &[]).await;
    assert_client_error(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.contains("current password is wrong"),
        "{}",
        refused.body
    );
    // The session survives a refused form, and the password is the same.
    assert_status(&browser.get("/account").await, StatusCode::OK);
    assert_unchanged(&app, &bob).await;
    app.stop().await;
}

#[tokio::test]
async fn an_empty_admin_reset_form_is_422_and_changes_nothing() {
    let s = scene().await;
    let refused = s.admin.post_form(&reset_path(&s.bob), &[]).await;
    assert_client_error(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.contains("at least one capital letter"),
        "{}",
        refused.body
    );
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}

#[tokio::test]
async fn a_one_mebibyte_temporary_password_is_413_and_changes_nothing() {
    let s = scene().await;
    let huge = format!("Aa1.{}", "x".repeat(1024 * 1024));
    let refused = s
        .admin
        .post_form(&reset_path(&s.bob), &[("temporary_password", &huge)])
        .await;
    assert_client_error(&refused, StatusCode::PAYLOAD_TOO_LARGE);
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}

#[tokio::test]
async fn a_temporary_password_that_is_not_utf8_is_400_naming_the_field() {
    let s = scene().await;
    let csrf = s.admin.last_csrf();
    assert!(!csrf.is_empty());
    // `%FF` is not UTF-8; a lossy decoder would store U+FFFD in the password.
    let body = format!("csrf_token={csrf}&temporary_password=Pass%FFword.1").into_bytes();
    let refused = s.admin.post_raw(&reset_path(&s.bob), body).await;
    assert_client_error(&refused, StatusCode::BAD_REQUEST);
    assert!(refused.contains("temporary_password"), "{}", refused.body);
    assert!(refused.contains("UTF-8"), "{}", refused.body);
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_403_and_changes_nothing() {
    let s = scene().await;
    let body = form_body(&[("temporary_password", "Password.1")]);
    let refused = s.admin.post_raw(&reset_path(&s.bob), body).await;
    assert_client_error(&refused, StatusCode::FORBIDDEN);
    assert!(refused.contains("Form expired"), "{}", refused.body);
    let wrong = form_body(&[
        ("csrf_token", "not-the-token"),
        ("temporary_password", "Password.1"),
    ]);
    let refused = s.admin.post_raw(&reset_path(&s.bob), wrong).await;
    assert_client_error(&refused, StatusCode::FORBIDDEN);
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}

#[tokio::test]
async fn a_field_sent_twice_is_400_naming_it() {
    let s = scene().await;
    let csrf = s.admin.last_csrf();
    let body = form_body(&[
        ("csrf_token", &csrf),
        ("temporary_password", "Password.1"),
        ("temporary_password", "Password.2"),
    ]);
    let refused = s.admin.post_raw(&reset_path(&s.bob), body).await;
    assert_client_error(&refused, StatusCode::BAD_REQUEST);
    assert!(refused.contains("temporary_password"), "{}", refused.body);
    assert!(refused.contains("more than once"), "{}", refused.body);
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}

#[tokio::test]
async fn an_unknown_staff_id_is_404_for_the_page_and_the_form() {
    let s = scene().await;
    for id in ["00000000000000000000000000000000", "nobody", "%20"] {
        let path = format!("/settings/staff/{id}/reset-password");
        assert_client_error(&s.admin.get(&path).await, StatusCode::NOT_FOUND);
        let posted = s
            .admin
            .post_form(&path, &[("temporary_password", "Password.1")])
            .await;
        assert_client_error(&posted, StatusCode::NOT_FOUND);
    }
    assert_unchanged(&s.app, &s.bob).await;
    assert_unchanged(&s.app, &s.owner).await;
    s.app.stop().await;
}

#[tokio::test]
async fn an_unknown_role_or_status_in_the_staff_filter_is_400() {
    let s = scene().await;
    let refused = s.admin.get("/settings/staff?role=superuser").await;
    assert_client_error(&refused, StatusCode::BAD_REQUEST);
    assert!(refused.contains("superuser"), "{}", refused.body);
    let refused = s.admin.get("/settings/staff?status=sleeping").await;
    assert_client_error(&refused, StatusCode::BAD_REQUEST);
    // The known values still work.
    assert_status(
        &s.admin
            .get("/settings/staff?role=staff&status=active")
            .await,
        StatusCode::OK,
    );
    s.app.stop().await;
}

#[tokio::test]
async fn a_multipart_form_is_refused_with_a_4xx_and_changes_nothing() {
    let s = scene().await;
    let csrf = s.admin.last_csrf();
    let boundary = "latchkey-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"temporary_password\"\r\n\r\nPassword.1\r\n\
         --{boundary}--\r\n"
    );
    let response = s
        .admin
        .client
        .post(format!("{}{}", s.admin.base, reset_path(&s.bob)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_client_error(), "{status}: {text}");
    assert!(text.contains("x-www-form-urlencoded"), "{text}");
    assert_unchanged(&s.app, &s.bob).await;
    s.app.stop().await;
}
