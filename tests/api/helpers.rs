//! The test harness: `spawn_app()` starts the real server on a random port against real
//! Redis (a fresh key prefix per test), a fresh database (SQLite file or PostgreSQL
//! database per test) and a real SMTP server (aiosmtpd, one per test), and hands back
//! helpers that read like the journeys they drive.

use std::collections::HashMap;
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
        // The test identity providers listen on loopback over plain http.
        ("LATCHKEY_SSO_ALLOW_HTTP_LOOPBACK_ISSUERS", "true"),
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

/// An app whose public URL is its real address, for peers that fetch discovery and check
/// the issuer (OpenID Connect relying parties). Its clock starts at the wall-clock time,
/// because those peers check `iat` and `exp` against their own clocks.
pub async fn spawn_app_at_own_address() -> TestApp {
    let port = free_port();
    let app = spawn_app_with(TestOptions {
        public_url: format!("http://127.0.0.1:{port}"),
        env: vec![("LATCHKEY_BIND".into(), format!("127.0.0.1:{port}"))],
        ..TestOptions::default()
    })
    .await;
    let wall_clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    app.clock.advance((wall_clock - app.clock.now()).max(0));
    app
}

/// How long a peer may take to start or to answer one step.
const PEER_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A node script of tests/peers, spoken to in JSON lines over stdin and stdout; its stderr
/// goes to a log file that failures quote. Killed when dropped, and it exits by itself when
/// its stdin closes (so a test process that dies leaves nothing behind).
pub struct NodePeer {
    script: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    log: PathBuf,
}

impl NodePeer {
    /// Starts `node tests/peers/<script> '<config>'`, appending its stderr to `log`.
    pub fn spawn(script: &str, config: &serde_json::Value, log: &std::path::Path) -> Self {
        use tokio::io::AsyncBufReadExt;
        let peers = PathBuf::from(required_env("LATCHKEY_TEST_PEERS"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("peer log file");
        let mut child = tokio::process::Command::new(required_env("LATCHKEY_TEST_NODE"))
            .arg(peers.join(script))
            .arg(config.to_string())
            .current_dir(&peers)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
        let stdin = child.stdin.take();
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("peer stdout")).lines();
        Self {
            script: script.to_owned(),
            child,
            stdin,
            stdout,
            log: log.to_path_buf(),
        }
    }

    /// What the peer wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next JSON line on stdout; panics (quoting the log) on timeout, exit or garbage.
    pub async fn read_json(&mut self) -> serde_json::Value {
        let line = match tokio::time::timeout(PEER_STEP_TIMEOUT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = self.child.wait().await.ok();
                panic!(
                    "{} exited ({status:?}) without answering; its log:\n{}",
                    self.script,
                    self.log()
                )
            }
            Ok(Err(e)) => panic!(
                "reading from {}: {e}; its log:\n{}",
                self.script,
                self.log()
            ),
            Err(_) => panic!(
                "{} said nothing for {PEER_STEP_TIMEOUT:?}; its log:\n{}",
                self.script,
                self.log()
            ),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{} wrote a line that is not JSON ({e}): {line}",
                self.script
            )
        })
    }

    pub async fn write_json(&mut self, value: &serde_json::Value) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("peer stdin is open");
        stdin
            .write_all(format!("{value}\n").as_bytes())
            .await
            .expect("write to peer");
        stdin.flush().await.expect("flush peer stdin");
    }

    /// Kills the process and waits until it is gone.
    pub async fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill().await;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A client for an identity provider: follows its redirects with its own cookie jar and
/// stops at `redirect_uri` (the relying party's callback, where nothing need listen),
/// returning that redirect as the answer.
pub fn redirect_following_client(redirect_uri: &str) -> reqwest::Client {
    let stop_at = redirect_uri.to_owned();
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.url().as_str().starts_with(&stop_at) {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .expect("client")
}

/// A client registered at the upstream provider.
#[derive(Debug, Clone)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

impl IdpClient {
    /// A confidential client (client_secret_basic) with one redirect URI.
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
        }
    }
}

/// A person the upstream provider can sign in.
#[derive(Debug, Clone)]
pub struct IdpUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

impl IdpUser {
    /// A user whose email is verified.
    pub fn new(sub: &str, email: &str, name: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            email: email.to_owned(),
            email_verified: true,
            name: name.to_owned(),
        }
    }

    pub fn unverified(mut self) -> Self {
        self.email_verified = false;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct IdpOptions {
    pub clients: Vec<IdpClient>,
    pub users: Vec<IdpUser>,
    /// Signed in when the authorization request has no `login_hint`.
    pub default_user: Option<String>,
    /// A fixed port; `None` takes an ephemeral one.
    pub port: Option<u16>,
}

/// An upstream corporate identity provider: npm oidc-provider (tests/peers/idp.mjs) on a
/// loopback port, with a headless sign-in: `/auth?...&login_hint=<sub or email>` (or the
/// default user) signs the user in and grants the requested scopes, so a client that follows
/// redirects with a cookie jar ends at the redirect URI with a code. An unknown hint ends
/// with `error=access_denied`. ID tokens carry `email`, `email_verified` and `name`.
/// PKCE (S256) is required; only `response_type=code`.
pub struct UpstreamIdp {
    /// `http://127.0.0.1:<port>`, the same across restarts.
    pub issuer: String,
    pub port: u16,
    config: serde_json::Value,
    process: Option<NodePeer>,
    dir: tempfile::TempDir,
}

impl UpstreamIdp {
    pub async fn start(clients: Vec<IdpClient>, users: Vec<IdpUser>) -> Self {
        Self::start_with(IdpOptions {
            clients,
            users,
            ..IdpOptions::default()
        })
        .await
    }

    pub async fn start_with(options: IdpOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients: Vec<serde_json::Value> = options
            .clients
            .iter()
            .map(|c| {
                serde_json::json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                })
            })
            .collect();
        let users: Vec<serde_json::Value> = options
            .users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "sub": u.sub,
                    "email": u.email,
                    "email_verified": u.email_verified,
                    "name": u.name,
                })
            })
            .collect();
        let config = serde_json::json!({
            "port": options.port.unwrap_or(0),
            // Keys survive a restart, as a real provider's do.
            "state_file": dir.path().join("idp-state.json"),
            "clients": clients,
            "users": users,
            "default_user": options.default_user,
        });
        let mut idp = Self {
            issuer: String::new(),
            port: 0,
            config,
            process: None,
            dir,
        };
        idp.launch().await;
        idp
    }

    async fn launch(&mut self) {
        let log = self.dir.path().join("idp.log");
        let mut process = NodePeer::spawn("idp.mjs", &self.config, &log);
        let ready = process.read_json().await;
        let issuer = ready["issuer"].as_str().unwrap_or_default().to_owned();
        let port = ready["port"].as_u64().unwrap_or_default() as u16;
        assert!(
            !issuer.is_empty() && port != 0,
            "idp.mjs did not announce itself: {ready}; its log:\n{}",
            process.log()
        );
        self.issuer = issuer;
        self.port = port;
        // A restart comes back on the same port.
        self.config["port"] = port.into();
        self.process = Some(process);
    }

    /// Kills the provider (as a crash would); its port stops answering.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }

    /// Starts it again on the same port with the same issuer, keys, clients and users;
    /// sessions, interactions and codes of the old process are gone.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(NodePeer::is_running)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// Runs the headless sign-in from `authorization_url` as a fresh browser would and
    /// returns where the provider sends it back: `redirect_uri?code=…&state=…&iss=…`, or
    /// `redirect_uri?error=…`.
    pub async fn callback_for(&self, authorization_url: &str, redirect_uri: &str) -> String {
        let answer = redirect_following_client(redirect_uri)
            .get(authorization_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("upstream provider at {}: {e}", self.issuer));
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            location.starts_with(redirect_uri),
            "the upstream provider answered {} without sending the browser to {redirect_uri}; \
             its log:\n{}",
            answer.status(),
            self.log()
        );
        location
    }

    /// The provider's stderr (one JSON line per sign-in, warnings, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("idp.log")).unwrap_or_default()
    }
}

impl TestApp {
    /// The issuer the provider names: the public URL without a trailing slash.
    pub fn issuer(&self) -> String {
        self.settings.public_base().to_owned()
    }

    /// A staff member who has only the temporary password an administrator gave them.
    pub async fn person_with_temporary_password(
        &self,
        agency: &str,
        name: &str,
        role: Role,
        temporary: &str,
    ) -> Person {
        let email = format!(
            "{}@{agency}.example",
            unique(&name.to_lowercase().replace(' ', "."))
        );
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
        Person {
            account,
            email,
            password: temporary.to_owned(),
        }
    }

    /// Registers an app as an OAuth client, as `latchkey clients add` would.
    pub async fn oauth_app_with(&self, options: OAuthAppOptions) -> OAuthApp {
        let redirect_uris = if options.redirect_uris.is_empty() {
            vec![OAUTH_REDIRECT_URI.to_owned()]
        } else {
            options.redirect_uris.clone()
        };
        let post_logout = vec![OAUTH_POST_LOGOUT_URI.to_owned()];
        let (client, secret) = self
            .idm
            .register_client(
                &latchkey::idm::clients::NewClient {
                    name: &options.name,
                    redirect_uris: &redirect_uris,
                    post_logout_redirect_uris: &post_logout,
                    public: options.public,
                    third_party: options.third_party,
                    grant_types: &options.grant_types,
                    scopes: &[],
                    id_token_alg: options.id_token_alg.as_deref(),
                },
                self.clock.now(),
            )
            .await
            .expect("register client");
        OAuthApp {
            client_id: client.id.clone(),
            secret: secret.map(|s| s.expose().to_owned()),
            redirect_uri: redirect_uris[0].clone(),
            post_logout_redirect_uri: OAUTH_POST_LOGOUT_URI.to_owned(),
            issuer: self.issuer(),
            base: self.address.clone(),
            client,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// A confidential first-party app (the company's own).
    pub async fn oauth_app(&self) -> OAuthApp {
        self.oauth_app_with(OAuthAppOptions::default()).await
    }
}

pub const OAUTH_REDIRECT_URI: &str = "https://app.example/cb";
pub const OAUTH_POST_LOGOUT_URI: &str = "https://app.example/signed-out";
pub const OAUTH_SCOPE: &str = "openid profile email offline_access";

pub struct OAuthAppOptions {
    pub name: String,
    pub public: bool,
    pub third_party: bool,
    /// Empty: the first is `OAUTH_REDIRECT_URI`.
    pub redirect_uris: Vec<String>,
    /// Empty: the defaults of registration.
    pub grant_types: Vec<String>,
    /// `None`: RS256.
    pub id_token_alg: Option<String>,
}

impl Default for OAuthAppOptions {
    fn default() -> Self {
        Self {
            name: "Lettings Desk".into(),
            public: false,
            third_party: false,
            redirect_uris: Vec::new(),
            grant_types: Vec::new(),
            id_token_alg: None,
        }
    }
}

/// A PKCE pair (RFC 7636), computed here rather than by the code under test.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        use base64::Engine;
        use sha2::Digest;
        // 64 unreserved characters: within the 43–128 RFC 7636 allows.
        let verifier = latchkey::crypto::tokens::random_token(48);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

/// One `/authorize` request as an app builds it; parameters can be changed or dropped.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub state: String,
    pub nonce: String,
    pub pkce: Pkce,
    pub params: Vec<(String, String)>,
}

impl Authorization {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        match name {
            "state" => self.state = value.to_owned(),
            "nonce" => self.nonce = value.to_owned(),
            _ => {}
        }
        self.params.retain(|(n, _)| n != name);
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.params.retain(|(n, _)| n != name);
        self
    }

    /// `/authorize?…`, to open in a [`Browser`].
    pub fn path(&self) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.params)
            .finish();
        format!("/authorize?{query}")
    }
}

/// How a client proves who it is at the token, introspection and revocation endpoints.
pub enum ClientAuth<'a> {
    /// `client_secret_basic` with the app's own secret (`none` for a public client).
    Own,
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
    /// `none`: only `client_id` in the body.
    IdOnly(&'a str),
    Nothing,
}

/// A JSON answer of the token, introspection, revocation or userinfo endpoint.
#[derive(Debug)]
pub struct JsonAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
}

impl JsonAnswer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn str(&self, field: &str) -> String {
        self.json[field].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (status, Some(error)),
            "answer: {}",
            self.json
        );
    }
}

/// Tokens from a successful exchange.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    pub json: serde_json::Value,
}

impl Tokens {
    #[track_caller]
    pub fn from_answer(answer: &JsonAnswer) -> Self {
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "token answer: {}",
            answer.json
        );
        Self {
            access_token: answer.str("access_token"),
            refresh_token: answer.str("refresh_token"),
            id_token: answer.str("id_token"),
            json: answer.json.clone(),
        }
    }
}

/// A registered app, talking to the provider the way a relying party does.
pub struct OAuthApp {
    pub client: latchkey::domain::oauth::Client,
    pub client_id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
    pub issuer: String,
    pub base: String,
    http: reqwest::Client,
}

impl OAuthApp {
    /// A request for a code with PKCE S256, a fresh state and nonce, and every default scope.
    pub fn authorization(&self) -> Authorization {
        let pkce = Pkce::new();
        let state = unique("state-");
        let nonce = unique("nonce-");
        let params = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", OAUTH_SCOPE),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        Authorization {
            state,
            nonce,
            pkce,
            params,
        }
    }

    /// The query the provider sent back to `redirect_uri`; panics unless `page` is a
    /// redirect there.
    #[track_caller]
    pub fn callback_at(page: &Page, redirect_uri: &str) -> HashMap<String, String> {
        assert!(
            page.status.is_redirection(),
            "expected a redirect to {redirect_uri}, got {}: {}",
            page.status,
            page.body
        );
        let location = url::Url::parse(&page.location())
            .unwrap_or_else(|e| panic!("Location {:?}: {e}", page.location()));
        let mut bare = location.clone();
        bare.set_query(None);
        assert_eq!(bare.as_str(), redirect_uri, "redirected elsewhere");
        location.query_pairs().into_owned().collect()
    }

    #[track_caller]
    pub fn callback(&self, page: &Page) -> HashMap<String, String> {
        Self::callback_at(page, &self.redirect_uri)
    }

    /// The code in a redirect to the app, after checking `state` and the RFC 9207 `iss`.
    #[track_caller]
    pub fn code_from(&self, page: &Page, authorization: &Authorization) -> String {
        let params = self.callback(page);
        assert_eq!(params.get("error"), None, "callback: {params:?}");
        assert_eq!(params.get("state"), Some(&authorization.state));
        assert_eq!(params.get("iss"), Some(&self.issuer));
        params.get("code").cloned().expect("code in the callback")
    }

    /// Asks for a code in a signed-in browser that needs no interaction.
    pub async fn code_for(&self, browser: &Browser, authorization: &Authorization) -> String {
        let page = browser.get(&authorization.path()).await;
        self.code_from(&page, authorization)
    }

    pub async fn post(
        &self,
        path: &str,
        auth: ClientAuth<'_>,
        fields: &[(&str, &str)],
    ) -> JsonAnswer {
        use base64::Engine;
        let encode =
            |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        let mut request = self.http.post(format!("{}{path}", self.base));
        let own_secret = self.secret.clone();
        let basic = match auth {
            ClientAuth::Own => match own_secret.as_deref() {
                Some(secret) => Some((self.client_id.clone(), secret.to_owned())),
                None => {
                    all.push(("client_id", self.client_id.as_str()));
                    None
                }
            },
            ClientAuth::Basic(id, secret) => Some((id.to_owned(), secret.to_owned())),
            ClientAuth::Post(id, secret) => {
                all.push(("client_id", id));
                all.push(("client_secret", secret));
                None
            }
            ClientAuth::IdOnly(id) => {
                all.push(("client_id", id));
                None
            }
            ClientAuth::Nothing => None,
        };
        if let Some((id, secret)) = basic {
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                encode(&id),
                encode(&secret)
            ));
            request = request.header("authorization", format!("Basic {credentials}"));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish();
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST");
        Self::json_answer(response).await
    }

    async fn json_answer(response: reqwest::Response) -> JsonAnswer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        JsonAnswer {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        }
    }

    pub async fn token(&self, fields: &[(&str, &str)]) -> JsonAnswer {
        self.post("/token", ClientAuth::Own, fields).await
    }

    pub async fn exchange(&self, code: &str, verifier: &str) -> JsonAnswer {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> JsonAnswer {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// RFC 7662, as this app (a resource server asking about its tokens).
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let answer = self
            .post("/introspect", ClientAuth::Own, &[("token", token)])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "introspect: {}", answer.json);
        answer.json
    }

    pub async fn revoke(&self, token: &str) -> JsonAnswer {
        self.post("/revoke", ClientAuth::Own, &[("token", token)])
            .await
    }

    pub async fn userinfo(&self, access_token: &str) -> JsonAnswer {
        let response = self
            .http
            .get(format!("{}/userinfo", self.base))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET /userinfo");
        Self::json_answer(response).await
    }

    /// The whole code flow in a signed-in browser: authorize, then exchange the code.
    pub async fn sign_in_through(&self, browser: &Browser) -> (Authorization, Tokens) {
        let authorization = self.authorization();
        let code = self.code_for(browser, &authorization).await;
        let answer = self.exchange(&code, &authorization.pkce.verifier).await;
        (authorization, Tokens::from_answer(&answer))
    }
}

impl Page {
    /// The value of a form field (`name="…" value="…"`), HTML entities decoded.
    pub fn field_value(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(
            self.body[start..end]
                .replace("&#x2f;", "/")
                .replace("&#x27;", "'")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }
}

impl Browser {
    /// Follows a redirect to the sign-in page and signs in there, as a person would.
    pub async fn sign_in_at(&self, login_location: &str, email: &str, password: &str) -> Page {
        let form = self.get(login_location).await;
        assert_eq!(form.status, StatusCode::OK, "sign-in form: {}", form.body);
        let return_to = form.field_value("return_to").unwrap_or_default();
        self.post_form(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("return_to", &return_to),
            ],
        )
        .await
    }
}
