//! The test harness: `spawn_app()` starts the real server on a random port against real
//! Redis (a fresh key prefix per test), a fresh database (SQLite file or PostgreSQL
//! database per test) and a real SMTP server (aiosmtpd, one per test), and hands back
//! helpers that read like the journeys they drive.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use latchkey::config::Settings;
use latchkey::domain::{Role, StaffAccount};
use latchkey::idm::Idm;
use latchkey::idm::ports::Clock;
use latchkey::idm::staff::NewStaff;
use latchkey::startup::{self, Application};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sqlx::Connection;

pub const PUBLIC_URL: &str = "http://latchkey.test";

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/test.sh, which starts the services")
    })
}

/// Which SQL backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> Self {
        // A fixed, realistic instant: 2026-12-03 09:00 UTC.
        Self(Arc::new(AtomicI64::new(1_796_288_400)))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real SMTP server (aiosmtpd) writing a Maildir, on its own port.
pub struct SmtpSink {
    pub port: u16,
    pub maildir: PathBuf,
    process: Option<Child>,
    _dir: Arc<tempfile::TempDir>,
}

impl SmtpSink {
    pub fn start() -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut sink = Self {
            port: free_port(),
            maildir: dir.path().join("maildir"),
            process: None,
            _dir: dir,
        };
        sink.restart();
        sink
    }

    /// Starts the server again on the same port and Maildir.
    pub fn restart(&mut self) {
        let python = required_env("LATCHKEY_TEST_PYTHON");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start aiosmtpd");
        self.process = Some(child);
        wait_for_port(self.port, "aiosmtpd");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Email> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Some(email) = std::fs::read(entry.path())
                    .ok()
                    .and_then(|raw| Email::parse(&raw))
                {
                    out.push(email);
                }
            }
        }
        out
    }

    pub fn messages_to(&self, address: &str) -> Vec<Email> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.eq_ignore_ascii_case(address))
            .collect()
    }

    /// Waits until `count` messages to `address` have arrived, then returns them.
    pub async fn wait_for(&self, address: &str, count: usize) -> Vec<Email> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.messages_to(address);
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} mail(s) to {address}, got {}: {:?}",
                found.len(),
                found.iter().map(|m| &m.subject).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A received mail, decoded.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    fn parse(raw: &[u8]) -> Option<Self> {
        let message = mail_parser::MessageParser::default().parse(raw)?;
        let to = message
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned();
        Some(Self {
            to,
            subject: message.subject().unwrap_or_default().to_owned(),
            text: message
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
            html: message
                .body_html(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        })
    }

    /// The reset link in the text part.
    pub fn reset_link(&self) -> String {
        let start = self
            .text
            .find(&format!("{PUBLIC_URL}/password/reset?token="))
            .or_else(|| self.text.find("/password/reset?token="))
            .unwrap_or_else(|| panic!("no reset link in mail: {}", self.text));
        self.text[start..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn reset_token(&self) -> String {
        let link = self.reset_link();
        link.split("token=").nth(1).unwrap_or_default().to_owned()
    }
}

/// A PostgreSQL database made for one test.
async fn fresh_postgres_database() -> String {
    let admin_url = required_env("LATCHKEY_TEST_POSTGRES_URL");
    let name = format!(
        "latchkey_test_{}",
        &latchkey::crypto::tokens::random_id()[..12]
    );
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("cannot connect to PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("CREATE DATABASE");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

pub struct TestOptions {
    pub db: Db,
    pub public_url: String,
    /// Extra settings as environment-style pairs.
    pub env: Vec<(String, String)>,
    /// Use this Redis URL instead of the shared one (outage tests run their own).
    pub redis_url: Option<String>,
    pub database_url: Option<String>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            db: Db::Sqlite,
            public_url: PUBLIC_URL.into(),
            env: Vec::new(),
            redis_url: None,
            database_url: None,
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub idm: Idm,
    pub clock: TestClock,
    pub smtp: SmtpSink,
    pub settings: Settings,
    pub database_url: String,
    app: Option<Application>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_on(db: Db) -> TestApp {
    spawn_app_with(TestOptions {
        db,
        ..TestOptions::default()
    })
    .await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = SmtpSink::start();
    let database_url = match (&options.database_url, options.db) {
        (Some(url), _) => url.clone(),
        (None, Db::Sqlite) => format!("sqlite://{}/latchkey.db", dir.path().display()),
        (None, Db::Postgres) => fresh_postgres_database().await,
    };
    let redis_url = options
        .redis_url
        .clone()
        .unwrap_or_else(|| required_env("LATCHKEY_TEST_REDIS_URL"));
    let prefix = format!("lk-test-{}:", &latchkey::crypto::tokens::random_id()[..12]);
    let mut env: Vec<(String, String)> = [
        ("LATCHKEY_PUBLIC_URL", options.public_url.as_str()),
        ("LATCHKEY_BIND", "127.0.0.1:0"),
        ("LATCHKEY_DATABASE_URL", database_url.as_str()),
        ("LATCHKEY_REDIS_URL", redis_url.as_str()),
        ("LATCHKEY_REDIS_KEY_PREFIX", prefix.as_str()),
        (
            "LATCHKEY_SMTP_URL",
            &format!("smtp://127.0.0.1:{}", smtp.port),
        ),
        ("LATCHKEY_MAIL_FROM", "Latchkey <no-reply@latchkey.test>"),
        ("LATCHKEY_MAIL_POLL_INTERVAL_MS", "100"),
        ("LATCHKEY_MAIL_RETRY_INITIAL_MS", "200"),
        ("LATCHKEY_MAIL_RETRY_MAX_MS", "1000"),
        // Cheap hashing for tests only (P4 allows it through the test configuration).
        ("LATCHKEY_PASSWORD_ARGON2_MEMORY_KIB", "1024"),
        ("LATCHKEY_PASSWORD_ARGON2_ITERATIONS", "1"),
        ("LATCHKEY_DEV_SEED_DEMO", "false"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(options.env);
    let settings = Settings::from_layers(None, env).expect("test settings");
    let clock = TestClock::new();
    let components = startup::build(settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("build");
    let app = Application::start(components).await.expect("start");
    let port = app.address.port();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        idm: app.idm.clone(),
        clock,
        smtp,
        settings,
        database_url,
        app: Some(app),
        _dir: dir,
    }
}

/// A person's account, with the password they currently know.
#[derive(Debug, Clone)]
pub struct Person {
    pub account: StaffAccount,
    pub email: String,
    pub password: String,
}

impl Person {
    pub fn id(&self) -> String {
        self.account.id.0.clone()
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &latchkey::crypto::tokens::random_id()[..8])
}

impl TestApp {
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// Creates an agency; `sso` turns on self-service reset by email.
    pub async fn agency(&self, name: &str, sso: bool) -> String {
        let slug = unique("agency-");
        self.idm
            .create_agency(name, &slug, sso)
            .await
            .expect("create agency");
        slug
    }

    /// Creates a staff member whose chosen password is already set.
    pub async fn person(&self, agency: &str, name: &str, role: Role) -> Person {
        let email = format!(
            "{}@{agency}.example",
            unique(&name.to_lowercase().replace(' ', "."))
        );
        let temporary = "Temporary.Pass1";
        let account = self
            .idm
            .create_staff(
                &NewStaff {
                    agency_slug: agency,
                    email: &email,
                    name,
                    role,
                    temporary_password: Some(temporary),
                },
                self.clock.now(),
            )
            .await
            .expect("create staff");
        // Replace the temporary password with a chosen one, as the person would.
        let chosen = format!("Chosen-{}-Pw9!", unique(""));
        let browser = self.browser();
        let page = browser.sign_in(&email, temporary).await;
        assert_eq!(page.location(), "/password/change", "setup sign-in");
        let done = browser
            .submit(
                "/password/change",
                &[
                    ("current_password", temporary),
                    ("new_password", &chosen),
                    ("confirm_password", &chosen),
                ],
            )
            .await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "setup change: {}",
            done.body
        );
        let account = self
            .idm
            .directory
            .staff_by_id(&account.id)
            .await
            .expect("db")
            .expect("account");
        Person {
            account,
            email,
            password: chosen,
        }
    }

    /// A signed-in browser for `person`.
    pub async fn signed_in(&self, person: &Person) -> Browser {
        let browser = self.browser();
        let page = browser.sign_in(&person.email, &person.password).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "sign-in of {}: {}",
            person.email,
            page.body
        );
        browser
    }

    /// The admin in `browser` sets `temporary` for `target` through Settings → Staff.
    pub async fn admin_resets(&self, browser: &Browser, target: &Person, temporary: &str) -> Page {
        let path = format!("/settings/staff/{}/reset-password", target.id());
        let form = browser.get(&path).await;
        assert_eq!(form.status, StatusCode::OK, "reset page: {}", form.body);
        browser
            .post_form(&path, &[("temporary_password", temporary)])
            .await
    }

    pub async fn audit_events(&self, agency_slug: &str) -> Vec<String> {
        let agency = self
            .idm
            .directory
            .agency_by_slug(agency_slug)
            .await
            .expect("db")
            .expect("agency");
        self.idm
            .audit
            .recent(&agency.id, 500)
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    pub async fn account(&self, person: &Person) -> StaffAccount {
        self.idm
            .directory
            .staff_by_id(&person.account.id)
            .await
            .expect("db")
            .expect("account")
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The value of the form's CSRF field, if the page has one.
    pub fn csrf_token(&self) -> Option<String> {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_owned())
    }

    pub fn contains(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

/// A browser: its own cookie jar, no automatic redirects, remembers the last CSRF token.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    csrf: std::sync::Mutex<Option<String>>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("latchkey-tests/1.0")
            .build()
            .expect("client");
        Self {
            base: base.to_owned(),
            client,
            jar,
            csrf: std::sync::Mutex::new(None),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url = self.base.parse().ok()?;
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }

    /// Replaces a cookie, as an attacker or a stale browser would.
    pub fn set_cookie(&self, name: &str, value: &str) {
        let url = self.base.parse().expect("url");
        self.jar
            .add_cookie_str(&format!("{name}={value}; Path=/"), &url);
    }

    async fn read(&self, response: reqwest::Response) -> Page {
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        };
        if let Some(token) = page.csrf_token() {
            *self.csrf.lock().expect("lock") = Some(token);
        }
        page
    }

    pub async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        self.read(response).await
    }

    pub fn last_csrf(&self) -> String {
        self.csrf.lock().expect("lock").clone().unwrap_or_default()
    }

    /// Posts a form with the CSRF token of the last page seen.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.last_csrf();
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(fields);
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish();
        self.post_raw(path, body.into_bytes()).await
    }

    /// Posts exactly these bytes as a form.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST");
        self.read(response).await
    }

    /// Opens `path` (for its CSRF token) and submits its form.
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(path).await;
        assert!(
            page.status.is_success(),
            "GET {path} before submitting: {} {}",
            page.status,
            page.body
        );
        self.post_form(path, fields).await
    }

    /// Opens the sign-in page and signs in; returns the answer to the POST.
    pub async fn sign_in(&self, email: &str, password: &str) -> Page {
        self.get("/login").await;
        self.post_form("/login", &[("email", email), ("password", password)])
            .await
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookie("latchkey_session")
    }
}

/// Asserts the status, showing the body when it differs.
#[track_caller]
pub fn assert_status(page: &Page, expected: StatusCode) {
    assert_eq!(
        page.status, expected,
        "unexpected status; body:\n{}",
        page.body
    );
}
