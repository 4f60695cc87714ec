//! The admin JSON API (SPEC §5): an owner gets a `staff:admin` token through the app flow
//! and resets a colleague's password; the same permission rules as the pages; the same
//! policy errors, as JSON; and an OpenAPI document that is valid and matches the router.

use latchkey::domain::Role;
use latchkey::idm::clients::NewClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Browser, Person, Pkce, TestApp, assert_status, required_env, spawn_app, unique,
};

const REDIRECT_URI: &str = "https://admin-tools.example/cb";

/// An admin tool registered for `staff:admin`, and a token from the code flow for the
/// person signed in to `browser`.
async fn admin_token(app: &TestApp, browser: &Browser) -> String {
    let (client, secret) = app
        .idm
        .register_client(
            &NewClient {
                name: "Agency admin tools",
                redirect_uris: &[REDIRECT_URI.to_owned()],
                post_logout_redirect_uris: &[],
                public: false,
                third_party: false,
                grant_types: &[],
                scopes: &["openid".to_owned(), "staff:admin".to_owned()],
                id_token_alg: None,
            },
            app.clock_now(),
        )
        .await
        .unwrap();
    code_flow_token(
        app,
        browser,
        &client.id,
        secret.unwrap().expose(),
        "openid staff:admin",
    )
    .await
}

/// The code flow with PKCE in a signed-in `browser`, then the token endpoint: the access
/// token, after checking the granted scope is the one asked for.
async fn code_flow_token(
    app: &TestApp,
    browser: &Browser,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> String {
    let pkce = Pkce::new();
    let state = unique("state-");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", scope),
            ("state", state.as_str()),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let page = browser.get(&format!("/authorize?{query}")).await;
    assert_status(&page, StatusCode::SEE_OTHER);
    let location = url::Url::parse(&page.location()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/token", app.address))
        .basic_auth(client_id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["scope"], scope, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

struct Api<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl<'a> Api<'a> {
    /// The API as `person`, with a `staff:admin` token from the app flow.
    async fn signed_in_as(app: &'a TestApp, person: &Person) -> Api<'a> {
        Api {
            app,
            token: Some(admin_token(app, &app.signed_in(person).await).await),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request =
            reqwest::Client::new().request(method, format!("{}{path}", self.app.address));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn reset(&self, person: &Person, temporary: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/staff/{}/reset-password", person.id()),
            Some(json!({ "temporary_password": temporary })),
        )
        .await
    }
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        latchkey::idm::ports::Clock::now(&self.clock)
    }
}

#[tokio::test]
async fn an_owner_resets_a_colleague_with_a_staff_admin_token_from_the_app_flow() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let bobs_laptop = app.signed_in(&bob).await;
    let token = admin_token(&app, &app.signed_in(&owner).await).await;
    let api = Api {
        app: &app,
        token: Some(token),
    };

    let (status, body) = api.reset(&bob, "Password.1").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // The colleague's sessions ended, and the next sign-in must change the password.
    assert_status(&bobs_laptop.get("/account").await, StatusCode::SEE_OTHER);
    let signed = app.browser().sign_in(&bob.email, "Password.1").await;
    assert_eq!(signed.location(), "/password/change");
    assert!(
        app.audit_events(&agency)
            .await
            .iter()
            .any(|e| e == "admin_password_reset")
    );

    let (status, body) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/staff/{}", bob.id()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["must_change_password"], true);
    assert_eq!(body["email"], bob.email.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_api_applies_the_same_policy_and_names_every_violation_as_json() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let api = Api::signed_in_as(&app, &owner).await;
    let (status, body) = api.reset(&bob, "password1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "password_policy");
    assert_eq!(
        body["violations"],
        json!(["missing_uppercase", "missing_symbol"])
    );
    assert!(body["message"].as_str().unwrap().contains("capital letter"));
    assert_eq!(
        app.account(&bob).await.password_hash,
        bob.account.password_hash,
        "nothing changed"
    );
    app.stop().await;
}

#[tokio::test]
async fn staff_tokens_get_403_and_another_agencys_account_404() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let other = app.agency("Other Lets", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let admin = app.person(&agency, "Cleo Admin", Role::ClientAdmin).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let stranger = app.person(&other, "Sam Stranger", Role::Staff).await;

    let staff_api = Api::signed_in_as(&app, &bob).await;
    let (status, body) = staff_api
        .call(reqwest::Method::GET, "/api/v1/staff", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        staff_api.reset(&owner, "Password.1").await.0,
        StatusCode::FORBIDDEN
    );

    let owner_api = Api::signed_in_as(&app, &owner).await;
    let (status, body) = owner_api.reset(&stranger, "Password.1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert_eq!(
        owner_api
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/staff/{}", stranger.id()),
                None
            )
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.account(&stranger).await.password_hash,
        stranger.account.password_hash
    );

    // A client administrator may not reset an owner, nor themselves through this route.
    let admin_api = Api::signed_in_as(&app, &admin).await;
    assert_eq!(
        admin_api.reset(&owner, "Password.1").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_api.reset(&admin, "Password.1").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin_api.reset(&bob, "Password.1").await.0,
        StatusCode::NO_CONTENT
    );
    app.stop().await;
}

#[tokio::test]
async fn tokens_without_the_scope_or_revoked_and_anonymous_calls_are_refused() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let anonymous = Api {
        app: &app,
        token: None,
    };
    let (status, body) = anonymous
        .call(reqwest::Method::GET, "/api/v1/staff", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let bogus = Api {
        app: &app,
        token: Some("not-a-token".into()),
    };
    assert_eq!(
        bogus
            .call(reqwest::Method::GET, "/api/v1/staff", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // An owner's token without staff:admin (the app asked only for openid).
    let browser = app.signed_in(&owner).await;
    let (client, secret) = app
        .idm
        .register_client(
            &NewClient {
                name: "Plain app",
                redirect_uris: &[REDIRECT_URI.to_owned()],
                post_logout_redirect_uris: &[],
                public: false,
                third_party: false,
                grant_types: &[],
                scopes: &[],
                id_token_alg: None,
            },
            app.clock_now(),
        )
        .await
        .unwrap();
    let token = code_flow_token(
        &app,
        &browser,
        &client.id,
        secret.unwrap().expose(),
        "openid",
    )
    .await;
    let plain = Api {
        app: &app,
        token: Some(token),
    };
    let (status, body) = plain
        .call(reqwest::Method::GET, "/api/v1/staff", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "insufficient_scope");

    // After the owner's password changes, the admin token is dead too.
    let admin = Api {
        app: &app,
        token: Some(admin_token(&app, &browser).await),
    };
    assert_eq!(
        admin
            .call(reqwest::Method::GET, "/api/v1/staff", None)
            .await
            .0,
        StatusCode::OK
    );
    app.idm
        .revoke_all_sessions_of(&owner.account.id, None)
        .await
        .unwrap();
    assert_eq!(
        admin
            .call(reqwest::Method::GET, "/api/v1/staff", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn admins_list_and_add_staff_of_their_own_agency_only() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let other = app.agency("Other Lets", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let admin = app.person(&agency, "Cleo Admin", Role::ClientAdmin).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let stranger = app.person(&other, "Bob Stranger", Role::Staff).await;
    let api = Api::signed_in_as(&app, &owner).await;

    let (status, body) = api
        .call(reqwest::Method::GET, "/api/v1/staff?q=bob", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let emails: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        vec![bob.email.as_str()],
        "never another agency's {}",
        stranger.email
    );
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/v1/staff?role=admin", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let email = format!("{}@harbour.example", unique("dana."));
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/staff",
            Some(json!({"email": email, "name": "Dana Day", "role": "staff"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "staff");
    assert_eq!(created["must_change_password"], false);
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/staff",
            Some(json!({"email": email.to_uppercase(), "name": "Dana Again", "role": "staff"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/staff",
            Some(json!({"email": "x@y.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");

    let admin_api = Api::signed_in_as(&app, &admin).await;
    let (status, _) = admin_api
        .call(reqwest::Method::POST, "/api/v1/staff", Some(json!({"email": format!("{}@harbour.example", unique("o.")), "name": "New Owner", "role": "owner"})))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a client administrator cannot create an owner"
    );

    let (status, events) = api
        .call(reqwest::Method::GET, "/api/v1/audit?limit=50", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "staff_added")
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_session_needs_the_csrf_header_to_change_anything() {
    let app = spawn_app().await;
    let agency = app.agency("Harbour Homes", false).await;
    let owner = app.person(&agency, "Olivia Owner", Role::Owner).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let browser = app.signed_in(&owner).await;
    let csrf = browser.get("/account").await.csrf_token().unwrap();
    let url = format!("{}/api/v1/staff/{}/reset-password", app.address, bob.id());
    let listed = browser
        .client
        .get(format!("{}/api/v1/staff", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "a session may read");
    let without = browser
        .client
        .post(&url)
        .json(&json!({"temporary_password": "Password.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.account(&bob).await.password_hash,
        bob.account.password_hash
    );
    let with = browser
        .client
        .post(&url)
        .header("x-csrf-token", csrf)
        .json(&json!({"temporary_password": "Password.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), StatusCode::NO_CONTENT);
    app.stop().await;
}

/// The document validates as OpenAPI 3 (with a real validator), and every operation in
/// it answers as documented: each answers an anonymous call with its documented 401.
#[tokio::test]
async fn the_openapi_document_is_valid_and_agrees_with_the_router() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("{}/api/openapi.json", app.address))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let validator = std::process::Command::new(required_env("LATCHKEY_TEST_PYTHON"))
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        validator.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&validator.stdout),
        String::from_utf8_lossy(&validator.stderr)
    );

    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push(format!("{} {path}", method.to_uppercase()));
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents 401"
            );
            let concrete = path.replace("{id}", "0123456789abcdef");
            let answer = reqwest::Client::new()
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", app.address),
                )
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        vec![
            "GET /api/v1/audit",
            "GET /api/v1/staff",
            "GET /api/v1/staff/{id}",
            "POST /api/v1/staff",
            "POST /api/v1/staff/{id}/reset-password",
        ],
        "SPEC §5 lists exactly these"
    );
    app.stop().await;
}
