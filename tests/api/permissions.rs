//! Who may do what to whom (SPEC §1): inside the agency a role that may not do a thing gets
//! 403; an account of another agency is never found (404); an admin does not reset their
//! own password through the admin flow.

use latchkey::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{Person, TestApp, assert_status, spawn_app};

fn reset_path(target: &Person) -> String {
    format!("/settings/staff/{}/reset-password", target.id())
}

/// The account is exactly as it was: same hash, same version, and its password still signs in.
async fn assert_unchanged(app: &TestApp, person: &Person) {
    let now = app.account(person).await;
    assert_eq!(now.password_hash, person.account.password_hash);
    assert_eq!(now.password_state, person.account.password_state);
    assert_eq!(now.password_version, person.account.password_version);
    let signed = app.browser().sign_in(&person.email, &person.password).await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(
        signed.location(),
        "/account",
        "{} still signs in",
        person.email
    );
}

#[tokio::test]
async fn a_client_admin_may_not_reset_an_owner_and_gets_403() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let admin = app.person(&agency, "Cleo Admin", Role::ClientAdmin).await;
    let browser = app.signed_in(&admin).await;

    // The list is open to the client admin, so the CSRF token below is a valid one.
    assert_status(&browser.get("/settings/staff").await, StatusCode::OK);
    let page = browser.get(&reset_path(&owner)).await;
    assert_status(&page, StatusCode::FORBIDDEN);
    assert!(
        page.contains("Your role does not allow this"),
        "{}",
        page.body
    );

    let posted = browser
        .post_form(&reset_path(&owner), &[("temporary_password", "Password.1")])
        .await;
    assert_status(&posted, StatusCode::FORBIDDEN);
    assert_unchanged(&app, &owner).await;
    let events = app.audit_events(&agency).await;
    assert!(
        !events.iter().any(|e| e == "admin_password_reset"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn plain_staff_get_403_on_settings_and_on_the_reset_page() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    let browser = app.signed_in(&bob).await;

    assert_status(&browser.get("/settings/staff").await, StatusCode::FORBIDDEN);
    assert_status(
        &browser.get("/settings/staff?q=carol").await,
        StatusCode::FORBIDDEN,
    );
    assert_status(
        &browser.get(&reset_path(&carol)).await,
        StatusCode::FORBIDDEN,
    );

    // A valid CSRF token from a page Bob may open, then the POST itself.
    assert_status(&browser.get("/account").await, StatusCode::OK);
    let posted = browser
        .post_form(&reset_path(&carol), &[("temporary_password", "Password.1")])
        .await;
    assert_status(&posted, StatusCode::FORBIDDEN);
    assert_unchanged(&app, &carol).await;
    app.stop().await;
}

#[tokio::test]
async fn an_admin_naming_another_agencys_staff_gets_404_and_that_account_is_unchanged() {
    let app = spawn_app().await;
    let ours = app.agency("Harbour Homes", false).await;
    let theirs = app.agency("Rival Realty", false).await;
    let owner = app.person(&ours, "Olivia Owner", Role::Owner).await;
    let client_admin = app.person(&ours, "Cleo Admin", Role::ClientAdmin).await;
    let foreign_staff = app.person(&theirs, "Fred Foreign", Role::Staff).await;
    let foreign_owner = app.person(&theirs, "Fiona Foreign", Role::Owner).await;

    for admin in [&owner, &client_admin] {
        let browser = app.signed_in(admin).await;
        assert_status(&browser.get("/settings/staff").await, StatusCode::OK);
        for target in [&foreign_staff, &foreign_owner] {
            let page = browser.get(&reset_path(target)).await;
            assert_status(&page, StatusCode::NOT_FOUND);
            assert!(!page.contains(&target.email), "the 404 names nobody");
            assert!(!page.contains(&target.account.name));

            assert_status(&browser.get("/account").await, StatusCode::OK);
            let posted = browser
                .post_form(
                    reset_path(target).as_str(),
                    &[("temporary_password", "Password.1")],
                )
                .await;
            assert_status(&posted, StatusCode::NOT_FOUND);
        }
    }
    assert_unchanged(&app, &foreign_staff).await;
    assert_unchanged(&app, &foreign_owner).await;
    let events = app.audit_events(&theirs).await;
    assert!(
        !events.iter().any(|e| e == "admin_password_reset"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_staff_id_gets_404_on_the_reset_page_and_post() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let browser = app.signed_in(&owner).await;
    assert_status(&browser.get("/settings/staff").await, StatusCode::OK);

    let unknown = "/settings/staff/00000000000000000000000000000000/reset-password";
    assert_status(&browser.get(unknown).await, StatusCode::NOT_FOUND);
    let posted = browser
        .post_form(unknown, &[("temporary_password", "Password.1")])
        .await;
    assert_status(&posted, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_resetting_their_own_password_through_the_admin_flow_gets_403() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let client_admin = app.person(&agency, "Cleo Admin", Role::ClientAdmin).await;

    for admin in [&owner, &client_admin] {
        let browser = app.signed_in(admin).await;
        let page = browser.get(&reset_path(admin)).await;
        assert_status(&page, StatusCode::FORBIDDEN);
        assert!(page.contains("Change password"), "{}", page.body);

        assert_status(&browser.get("/settings/staff").await, StatusCode::OK);
        let posted = browser
            .post_form(&reset_path(admin), &[("temporary_password", "Password.1")])
            .await;
        assert_status(&posted, StatusCode::FORBIDDEN);
        // Their own session is untouched and their password is the same.
        assert_status(&browser.get("/account").await, StatusCode::OK);
        assert_unchanged(&app, admin).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_admin_may_reset_another_client_admin_and_a_staff_member() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let admin = app.person(&agency, "Cleo Admin", Role::ClientAdmin).await;
    let other_admin = app.person(&agency, "Dan Deputy", Role::ClientAdmin).await;
    let staff = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&admin).await;

    for target in [&other_admin, &staff] {
        let done = app.admin_resets(&browser, target, "Password.1").await;
        assert_status(&done, StatusCode::SEE_OTHER);
        assert_eq!(
            done.location(),
            format!("/settings/staff?reset={}", target.id())
        );
        assert_ne!(
            app.account(target).await.password_hash,
            target.account.password_hash
        );
        let signed = app.browser().sign_in(&target.email, "Password.1").await;
        assert_status(&signed, StatusCode::SEE_OTHER);
        assert_eq!(signed.location(), "/password/change");
    }
    let events = app.audit_events(&agency).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "admin_password_reset")
            .count(),
        2,
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_staff_list_never_shows_another_agencys_staff() {
    let app = spawn_app().await;
    let ours = app.agency("Harbour Homes", false).await;
    let theirs = app.agency("Rival Realty", false).await;
    let owner = app.person(&ours, "Olivia Owner", Role::Owner).await;
    let client_admin = app.person(&ours, "Cleo Admin", Role::ClientAdmin).await;
    // Same name in both agencies, so a name filter matches both.
    let our_dana = app.person(&ours, "Dana Duplicate", Role::Staff).await;
    let their_dana = app.person(&theirs, "Dana Duplicate", Role::Staff).await;
    let their_owner = app.person(&theirs, "Fiona Foreign", Role::Owner).await;

    for admin in [&owner, &client_admin] {
        let browser = app.signed_in(admin).await;
        for query in [
            "",
            "?q=dana",
            "?q=Dana+Duplicate",
            "?role=staff",
            "?role=owner",
            "?status=active",
            "?q=.example",
        ] {
            let list = browser.get(&format!("/settings/staff{query}")).await;
            assert_status(&list, StatusCode::OK);
            for foreign in [&their_dana, &their_owner] {
                assert!(
                    !list.contains(&foreign.email),
                    "{query}: shows {}",
                    foreign.email
                );
                assert!(
                    !list.contains(&foreign.id()),
                    "{query}: links {}",
                    foreign.id()
                );
            }
        }
        let list = browser.get("/settings/staff?q=dana").await;
        assert!(list.contains(&our_dana.email), "our own Dana is listed");
        assert!(list.contains(&reset_path(&our_dana)));
    }
    app.stop().await;
}
