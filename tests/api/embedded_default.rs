//! SPEC §6: `latchkey serve` with no configuration at all runs on the embedded defaults
//! (SQLite under ./data, in-process sessions, mail to an outbox shown at /dev/mail), says
//! loudly that it is a development setup, and prints a demo owner and colleague to sign in
//! with. This runs the real binary and walks the help article against it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{Browser, assert_status, free_port};

/// Kills the server when the test ends, also when it panics.
struct ServerProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    fn logs(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo accounts as `serve` prints them on an empty database.
struct DemoAccounts {
    owner_email: String,
    owner_password: String,
    colleague_email: String,
    colleague_password: String,
}

/// `  owner:     owner@demo.example  temporary password: <pw>` → (email, pw).
fn demo_line(line: &str, label: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix(label)?;
    let (email, password) = rest.split_once("temporary password:")?;
    Some((email.trim().to_owned(), password.trim().to_owned()))
}

fn read_demo_accounts(lines: &mpsc::Receiver<String>, server: &ServerProcess) -> DemoAccounts {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let (mut owner, mut colleague) = (None, None);
    while owner.is_none() || colleague.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no demo accounts on stdout; stdout: {seen:?}\nstderr: {}",
                server.logs()
            )
        });
        owner = owner.or_else(|| demo_line(&line, "owner:"));
        colleague = colleague.or_else(|| demo_line(&line, "colleague:"));
        seen.push(line);
    }
    let (owner_email, owner_password) = owner.expect("owner line");
    let (colleague_email, colleague_password) = colleague.expect("colleague line");
    DemoAccounts {
        owner_email,
        owner_password,
        colleague_email,
        colleague_password,
    }
}

async fn wait_until_serving(browser: &Browser, server: &ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = browser
            .client
            .get(format!("{}/healthz", browser.base))
            .send()
            .await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "latchkey serve never answered /healthz; stderr: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The id in the first `/settings/staff/{id}/reset-password` link of a page.
fn first_reset_link(body: &str) -> String {
    let start = body
        .find("/settings/staff/")
        .and_then(|i| body[i..].find("/reset-password").map(|end| (i, i + end)))
        .unwrap_or_else(|| panic!("no reset link in: {body}"));
    body[start.0..start.1 + "/reset-password".len()].to_owned()
}

#[tokio::test]
async fn serve_with_no_configuration_runs_the_demo_on_embedded_defaults() {
    let folder = tempfile::tempdir().expect("tempdir");
    // The default bind is 127.0.0.1:8080; a free port avoids clashing with anything else
    // on the machine (or a parallel test). The public URL follows it so links work.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .arg("serve")
        .current_dir(folder.path())
        // No LATCHKEY_* variable from the test environment leaks in: only these two.
        .env_clear()
        .env("LATCHKEY_BIND", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_PUBLIC_URL", &base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().expect("start latchkey serve");

    // Drain both pipes on their own threads so the server never blocks on a full pipe.
    let stdout = child.stdout.take().expect("stdout");
    let (line_sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let sink = stderr_text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let server = ServerProcess {
        child,
        stderr: stderr_text,
    };

    let demo = read_demo_accounts(&lines, &server);
    assert_eq!(demo.owner_email, "owner@demo.example");
    assert_eq!(demo.colleague_email, "alex@demo.example");
    assert!(
        demo.owner_password.chars().count() >= 8,
        "{}",
        demo.owner_password
    );
    let owner = Browser::new(&base);
    wait_until_serving(&owner, &server).await;
    assert!(
        server.logs().contains("DEVELOPMENT SETUP"),
        "a loud development warning: {}",
        server.logs()
    );
    assert!(
        folder.path().join("data/latchkey.db").is_file(),
        "the SQLite file is created under ./data"
    );

    // The owner signs in with the printed temporary password and must change it.
    let signed = owner.sign_in(&demo.owner_email, &demo.owner_password).await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/password/change");
    let chosen = "Harbour-Lights-42!";
    let changed = owner
        .submit(
            "/password/change",
            &[
                ("current_password", &demo.owner_password),
                ("new_password", chosen),
                ("confirm_password", chosen),
            ],
        )
        .await;
    assert_status(&changed, StatusCode::SEE_OTHER);

    // Settings → Staff → the colleague → Reset Password.
    let list = owner.get("/settings/staff?q=alex").await;
    assert_status(&list, StatusCode::OK);
    assert!(list.contains(&demo.colleague_email), "{}", list.body);
    assert!(
        !list.contains(&demo.owner_email),
        "the filter hides the owner"
    );
    let reset_path = first_reset_link(&list.body);
    assert_status(&owner.get(&reset_path).await, StatusCode::OK);
    let reset = owner
        .post_form(&reset_path, &[("temporary_password", "Password.1")])
        .await;
    assert_status(&reset, StatusCode::SEE_OTHER);
    assert!(reset.location().starts_with("/settings/staff?reset="));

    // The colleague's printed password is dead; Password.1 leads to the forced change.
    let colleague = Browser::new(&base);
    let old = colleague
        .sign_in(&demo.colleague_email, &demo.colleague_password)
        .await;
    assert_status(&old, StatusCode::UNAUTHORIZED);
    let signed = colleague.sign_in(&demo.colleague_email, "Password.1").await;
    assert_status(&signed, StatusCode::SEE_OTHER);
    assert_eq!(signed.location(), "/password/change");
    let change_page = colleague.get("/password/change").await;
    assert_status(&change_page, StatusCode::OK);
    assert!(change_page.contains("temporary password"));

    // The outbox shows the "password was changed" mail.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outbox = owner.get("/dev/mail").await;
        assert_status(&outbox, StatusCode::OK);
        if outbox.contains("password was changed") && outbox.contains(&demo.colleague_email) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no \"password was changed\" mail at /dev/mail: {}",
            outbox.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}
