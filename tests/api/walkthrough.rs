//! The agency help article, step by step: an owner resets a colleague's password in
//! Settings → Staff → Actions → Reset Password, and the colleague must change it at the
//! next sign-in (current password = the temporary one).

use latchkey::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{Browser, Db, assert_status, spawn_app_on};

async fn help_article_walkthrough(db: Db) {
    let app = spawn_app_on(db).await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let carol = app.person(&agency, "Carol Clark", Role::Staff).await;
    let bobs_laptop = app.signed_in(&bob).await;
    assert_status(&bobs_laptop.get("/account").await, StatusCode::OK);

    // Step 1–2: Settings → Staff, filtered for the colleague.
    let admin = app.signed_in(&owner).await;
    let list = admin.get("/settings/staff?q=bob").await;
    assert_status(&list, StatusCode::OK);
    assert!(list.contains(&bob.email), "Bob is listed");
    assert!(!list.contains(&carol.email), "the filter hides Carol");
    assert!(!list.contains(&owner.email), "the filter hides the owner");
    let by_role = admin.get("/settings/staff?role=owner").await;
    assert!(by_role.contains(&owner.email) && !by_role.contains(&bob.email));
    assert!(list.contains(&format!("/settings/staff/{}/reset-password", bob.id())));

    // Step 3: Actions → Reset Password shows the rules and offers a strong password.
    let form = admin
        .get(&format!("/settings/staff/{}/reset-password", bob.id()))
        .await;
    assert_status(&form, StatusCode::OK);
    assert!(form.contains("capital letter") && form.contains("symbol"));
    assert!(form.contains("Suggested"));

    // A temporary password without a capital letter or a symbol: both named, nothing changes.
    let refused = app.admin_resets(&admin, &bob, "password1").await;
    assert_status(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.contains("at least one capital letter"),
        "{}",
        refused.body
    );
    assert!(refused.contains("at least one symbol"), "{}", refused.body);
    assert_status(&bobs_laptop.get("/account").await, StatusCode::OK);
    assert_eq!(
        app.account(&bob).await.password_hash,
        bob.account.password_hash
    );

    // `Password.1` is accepted.
    let accepted = app.admin_resets(&admin, &bob, "Password.1").await;
    assert_status(&accepted, StatusCode::SEE_OTHER);
    assert_eq!(
        accepted.location(),
        format!("/settings/staff?reset={}", bob.id())
    );
    let notice = admin.get(&accepted.location()).await;
    assert!(notice.contains("Temporary password set for Bob Baker"));

    // The colleague's existing session is gone.
    let old_session = bobs_laptop.get("/account").await;
    assert_status(&old_session, StatusCode::SEE_OTHER);
    assert!(old_session.location().starts_with("/login"));

    // Step 4: Bob signs in with the temporary password and is made to change it.
    let bob_now = app.browser();
    let signed = bob_now.sign_in(&bob.email, "Password.1").await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/password/change");
    let restricted_id = bob_now.session_cookie().expect("restricted session cookie");

    // The restricted session reaches nothing but the change page; the last page it asked
    // for is where it resumes after the change.
    for path in [
        "/settings/staff",
        &format!("/settings/staff/{}/reset-password", carol.id()),
        "/account",
    ] {
        let page = bob_now.get(path).await;
        assert_status(&page, StatusCode::SEE_OTHER);
        assert_eq!(page.location(), "/password/change", "{path}");
    }
    let change_page = bob_now.get("/password/change").await;
    assert_status(&change_page, StatusCode::OK);
    assert!(change_page.contains("temporary password"));

    // Keeping `Password.1` is refused, and so is a wrong current password.
    let kept = bob_now
        .post_form(
            "/password/change",
            &[
                ("current_password", "Password.1"),
                ("new_password", "Password.1"),
                ("confirm_password", "Password.1"),
            ],
        )
        .await;
    assert_status(&kept, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        kept.contains("must differ from the current one"),
        "{}",
        kept.body
    );
    let wrong_current = bob_now
        .post_form(
            "/password/change",
            &[
                ("current_password", "Password.2"),
                ("new_password", "Harbour-Lights-42"),
                ("confirm_password", "Harbour-Lights-42"),
            ],
        )
        .await;
    assert_status(&wrong_current, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong_current.contains("current password is wrong"));

    // The change: current = the temporary password.
    let changed = bob_now
        .post_form(
            "/password/change",
            &[
                ("current_password", "Password.1"),
                ("new_password", "Harbour-Lights-42"),
                ("confirm_password", "Harbour-Lights-42"),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);
    assert_eq!(changed.location(), "/account");
    let full_id = bob_now.session_cookie().expect("new session cookie");
    assert_ne!(full_id, restricted_id, "the change issues a new session id");
    assert_status(&bob_now.get("/account").await, StatusCode::OK);

    // The restricted session's id is dead.
    let replay = Browser::new(&app.address);
    replay.set_cookie("latchkey_session", &restricted_id);
    assert_status(&replay.get("/account").await, StatusCode::SEE_OTHER);

    // Afterwards only the new password signs in.
    let with_temporary = app.browser().sign_in(&bob.email, "Password.1").await;
    assert_status(&with_temporary, StatusCode::UNAUTHORIZED);
    let with_old = app.browser().sign_in(&bob.email, &bob.password).await;
    assert_status(&with_old, StatusCode::UNAUTHORIZED);
    let with_new = app.browser().sign_in(&bob.email, "Harbour-Lights-42").await;
    assert_status(&with_new, StatusCode::SEE_OTHER);
    assert_eq!(with_new.location(), "/account");

    // Audited, and Bob was told twice (reset by the admin, then his own change).
    let events = app.audit_events(&agency).await;
    assert!(
        events.iter().any(|e| e == "admin_password_reset"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "password_changed"), "{events:?}");
    let mails = app.smtp.wait_for(&bob.email, 3).await;
    let changed_mails: Vec<_> = mails
        .iter()
        .filter(|m| m.subject.contains("password was changed"))
        .collect();
    assert_eq!(
        changed_mails.len(),
        3,
        "setup change, admin reset, forced change"
    );
    for mail in &changed_mails {
        assert!(!mail.text.contains("Password.1") && !mail.text.contains("Harbour-Lights-42"));
    }
    app.stop().await;
}

#[tokio::test]
async fn help_article_walkthrough_on_sqlite() {
    help_article_walkthrough(Db::Sqlite).await;
}

#[tokio::test]
async fn help_article_walkthrough_on_postgres() {
    help_article_walkthrough(Db::Postgres).await;
}
