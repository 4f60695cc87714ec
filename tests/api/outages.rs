//! Dependencies that go away and come back: Latchkey answers clearly while they are gone
//! (503 "Try again shortly", never a 500; forgot-password still answers the same), and
//! recovers by itself once they are back, without a restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::domain::Role;
use reqwest::StatusCode;
use sqlx::Connection;

use crate::helpers::{
    PUBLIC_URL, TestApp, TestOptions, assert_status, free_port, required_env, spawn_app,
    spawn_app_with,
};

/// A private redis-server on its own port, killed when dropped (also on panic).
struct RedisServer {
    port: u16,
    process: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            process: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server again on the same port (with no persistence: its data is gone).
    fn restart(&mut self) {
        let child = Command::new(required_env("LATCHKEY_TEST_REDIS_SERVER"))
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `/readyz` until it answers `expected`; returns its JSON body.
async fn wait_for_readyz(app: &TestApp, expected: StatusCode) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = app.browser().get("/readyz").await;
        if page.status == expected {
            return serde_json::from_str(&page.body).expect("readyz answers JSON");
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {expected}; last {}: {}",
            page.status,
            page.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_answers_503_try_again_shortly_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..TestOptions::default()
    })
    .await;
    let agency = app.agency("Harbour Homes", false).await;
    let bob = app.person(&agency, "Bob Baker", Role::Staff).await;
    let bobs_laptop = app.signed_in(&bob).await;
    assert_status(&bobs_laptop.get("/account").await, StatusCode::OK);
    let ready = wait_for_readyz(&app, StatusCode::OK).await;
    assert_eq!(ready["redis"], "ok", "{ready}");

    redis.kill();

    let not_ready = wait_for_readyz(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_ne!(not_ready["redis"], "ok", "readyz names redis: {not_ready}");
    assert_eq!(not_ready["database"], "ok", "{not_ready}");

    // Sign-in cannot check its throttle counters: a clear page, not a 500.
    let visitor = app.browser();
    assert_status(&visitor.get("/login").await, StatusCode::OK);
    let refused = visitor
        .post_form(
            "/login",
            &[("email", &bob.email), ("password", &bob.password)],
        )
        .await;
    assert_status(&refused, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.contains("Try again shortly"), "{}", refused.body);
    assert!(visitor.session_cookie().is_none());
    assert!(!refused.header("retry-after").is_empty());
    // A page behind a session cannot load it either: the same clear answer.
    let page = bobs_laptop.get("/account").await;
    assert_status(&page, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Try again shortly"), "{}", page.body);

    redis.restart();

    let ready = wait_for_readyz(&app, StatusCode::OK).await;
    assert_eq!(ready["redis"], "ok", "{ready}");
    // The new redis-server has no data: the old session is gone, as expected.
    let page = bobs_laptop.get("/account").await;
    assert_status(&page, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"), "{}", page.location());
    // Signing in works again, on the same running app.
    let again = app.signed_in(&bob).await;
    assert_status(&again.get("/account").await, StatusCode::OK);
    app.stop().await;
}

/// The unsent mails to `address` in the durable outbox, with their delivery attempts.
async fn unsent_attempts(app: &TestApp, address: &str) -> Vec<i64> {
    let mut db = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .expect("open the test database");
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT attempts FROM mail_outbox WHERE to_address = $1 AND sent_at IS NULL",
    )
    .bind(address.to_lowercase())
    .fetch_all(&mut db)
    .await
    .expect("read the outbox");
    rows.into_iter().map(|(n,)| n).collect()
}

#[tokio::test]
async fn an_smtp_outage_keeps_forgot_password_answering_and_the_mail_arrives_after() {
    let mut app = spawn_app().await;
    let agency = app.agency("Cloud Lettings", true).await;
    let sam = app.person(&agency, "Sam Sso", Role::Staff).await;
    // The setup's "password was changed" mail is out before SMTP goes down.
    app.smtp.wait_for(&sam.email, 1).await;

    app.smtp.stop();

    let browser = app.browser();
    let answered = browser
        .submit("/password/forgot", &[("email", &sam.email)])
        .await;
    assert_status(&answered, StatusCode::SEE_OTHER);
    assert_eq!(answered.location(), "/password/forgot/sent");
    assert_status(&browser.get("/password/forgot/sent").await, StatusCode::OK);

    // The worker tried, failed, and kept the mail for a retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempts = unsent_attempts(&app, &sam.email).await;
        if attempts.iter().any(|n| *n >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed delivery recorded: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.smtp.messages_to(&sam.email).len(), 1, "nothing got out");

    app.smtp.restart();
    // The retry is due a second or so later on the app's clock.
    app.clock.advance(10);

    let mails = app.smtp.wait_for(&sam.email, 2).await;
    let reset_mail = mails
        .iter()
        .find(|m| m.subject.contains("Reset your"))
        .unwrap_or_else(|| panic!("no reset mail: {mails:?}"));
    let link = reset_mail.reset_link();
    assert!(
        link.starts_with(&format!("{PUBLIC_URL}/password/reset?token=")),
        "{link}"
    );
    let path = &link[PUBLIC_URL.len()..];

    let visitor = app.browser();
    let form = visitor.get(path).await;
    assert_status(&form, StatusCode::OK);
    let chosen = "Sunny-Harbour-Walk-77";
    let done = visitor
        .post_form(
            "/password/reset",
            &[
                ("token", &reset_mail.reset_token()),
                ("new_password", chosen),
                ("confirm_password", chosen),
            ],
        )
        .await;
    assert_status(&done, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/password/reset/done");
    let signed = app.browser().sign_in(&sam.email, chosen).await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/account");
    let mails = app.smtp.wait_for(&sam.email, 3).await;
    let changed = mails
        .iter()
        .filter(|m| m.subject.contains("password was changed"))
        .count();
    assert_eq!(changed, 2, "setup change, then the reset");
    app.stop().await;
}
