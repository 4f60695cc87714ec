//! Attacks a penetration tester tried, each kept as a test named after the rule it holds.

use latchkey::domain::Role;
use latchkey::idm::ports::{Clock, StoredSsoConnection};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Browser, TestApp, spawn_app, unique};

/// Gives agency `slug` an SSO connection that owns `domain`, straight in the store (the
/// attacks below never reach the upstream).
async fn claim_domain(app: &TestApp, slug: &str, domain: &str, enforce: bool) {
    let agency = app
        .idm
        .directory
        .agency_by_slug(slug)
        .await
        .expect("db")
        .expect("agency");
    app.idm
        .sso
        .save_sso_connection(&StoredSsoConnection {
            agency_id: agency.id,
            issuer: "https://idp.quayside.example".into(),
            client_id: "latchkey".into(),
            client_secret_sealed: "unused".into(),
            domains: vec![domain.to_owned()],
            scopes: vec!["openid".into(), "email".into()],
            enforce,
            create_accounts: true,
            updated_at: app.clock.now(),
        })
        .await
        .expect("save connection");
}

/// `POST /api/v1/staff` from an administrator's browser session.
async fn add_colleague(app: &TestApp, browser: &Browser, body: Value) -> (StatusCode, Value) {
    let csrf = browser.get("/account").await.csrf_token().expect("csrf");
    let response = browser
        .client
        .post(format!("{}/api/v1/staff", app.address))
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An administrator of one agency cannot plant an account on a domain that another
/// agency's corporate SSO owns: that address would then be refused at the other agency's
/// SSO ("other_agency") and would sign in to apps, as that address, in the wrong agency.
#[tokio::test]
async fn u2_an_admin_cannot_add_a_colleague_on_another_agencys_sso_domain() {
    let app = spawn_app().await;
    let harbour = app.agency("Harbour Homes", false).await;
    let quayside = app.agency("Quayside Lettings", true).await;
    let quayside_domain = format!("{}.example", unique("quayside-"));
    claim_domain(&app, &quayside, &quayside_domain, true).await;
    let owner = app.person(&harbour, "Olivia Owner", Role::Owner).await;
    let browser = app.signed_in(&owner).await;

    let victim = format!("ceo@{quayside_domain}");
    let (status, body) = add_colleague(
        &app,
        &browser,
        json!({"email": victim, "name": "Quayside CEO", "role": "staff"}),
    )
    .await;
    assert!(
        status.is_client_error(),
        "planting an address on another agency's SSO domain: {status} {body}"
    );
    assert_eq!(body["error"], "invalid_request", "{body}");
    let planted = app
        .idm
        .directory
        .staff_by_email(&latchkey::domain::EmailAddress::parse(&victim).unwrap())
        .await
        .expect("db");
    assert!(planted.is_none(), "the account was created: {planted:?}");

    // The admin's own agency's addresses, and unclaimed domains, still work.
    let (status, body) = add_colleague(
        &app,
        &browser,
        json!({"email": format!("{}@{harbour}.example", unique("new.")), "name": "New Colleague", "role": "staff"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.stop().await;
}

/// Out of the box an owner cannot point Latchkey's SSO at plain-http ports of this host
/// (only a development setting allows loopback issuers).
#[tokio::test]
async fn u1_a_plain_http_loopback_issuer_is_refused_unless_development_allows_it() {
    let app = crate::helpers::spawn_app_with(crate::helpers::TestOptions {
        env: vec![(
            "LATCHKEY_SSO_ALLOW_HTTP_LOOPBACK_ISSUERS".into(),
            "false".into(),
        )],
        ..crate::helpers::TestOptions::default()
    })
    .await;
    let slug = app.agency("Harbour Homes", true).await;
    let agency = app
        .idm
        .directory
        .agency_by_slug(&slug)
        .await
        .unwrap()
        .unwrap();
    let context = latchkey::idm::RequestContext {
        now: latchkey::idm::ports::Clock::now(&app.clock),
        ip: "127.0.0.1".into(),
        user_agent: String::new(),
    };
    let refused = app
        .idm
        .configure_sso(
            None,
            &agency.id,
            &latchkey::idm::sso::SsoSettingsInput {
                issuer: "http://127.0.0.1:6379",
                client_id: "latchkey",
                client_secret: "secret",
                domains: &["harbour.example".to_owned()],
                scopes: &[],
                enforce: false,
                create_accounts: false,
            },
            &context,
        )
        .await;
    match refused {
        Err(latchkey::idm::IdmError::SsoSetup(problems)) => {
            assert!(problems.iter().any(|p| p.contains("https")), "{problems:?}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.issuer)),
    }
    assert!(
        app.idm
            .sso_connection_of(&agency.id)
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}
