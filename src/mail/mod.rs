//! Mail delivery: SMTP through lettre, or the development outbox folder. Use-cases never
//! call these directly: they queue mail in the durable outbox and `worker` delivers it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::idm::ports::{MailTransport, OutgoingMail};

#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("invalid mail.smtp_url: {0}")]
    Url(String),
    #[error("invalid mail.from address: {0}")]
    From(String),
    #[error("cannot create the outbox folder {0}: {1}")]
    Folder(String, std::io::Error),
}

/// Where mail goes, from `mail.smtp_url`.
pub enum MailTarget {
    Smtp(SmtpTransport),
    Outbox(OutboxFolder),
}

impl MailTarget {
    pub fn from_settings(url: &str, from: &str) -> Result<Self, MailSetupError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailSetupError::From(e.to_string()))?;
        if let Some(folder) = url.strip_prefix("outbox://") {
            let folder = PathBuf::from(if folder.is_empty() {
                "data/outbox"
            } else {
                folder
            });
            std::fs::create_dir_all(&folder)
                .map_err(|e| MailSetupError::Folder(folder.display().to_string(), e))?;
            return Ok(Self::Outbox(OutboxFolder { folder, from }));
        }
        Ok(Self::Smtp(SmtpTransport::new(url, from)?))
    }

    /// The outbox folder, when mail is written to files (`/dev/mail` lists it).
    pub fn outbox_folder(&self) -> Option<&Path> {
        match self {
            Self::Outbox(outbox) => Some(&outbox.folder),
            Self::Smtp(_) => None,
        }
    }
}

#[async_trait]
impl MailTransport for MailTarget {
    async fn deliver(&self, mail: &OutgoingMail) -> Result<(), String> {
        match self {
            Self::Smtp(smtp) => smtp.deliver(mail).await,
            Self::Outbox(outbox) => outbox.deliver(mail).await,
        }
    }
}

fn build_message(from: &Mailbox, mail: &OutgoingMail) -> Result<Message, String> {
    let to: Mailbox = mail
        .to
        .as_str()
        .parse()
        .map_err(|e: lettre::address::AddressError| format!("recipient: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))
        .map_err(|e| e.to_string())
}

pub struct SmtpTransport {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpTransport {
    /// `smtp://[user:pass@]host[:port]` (STARTTLS when the server offers it) or
    /// `smtps://…` (TLS from the first byte).
    pub fn new(url: &str, from: Mailbox) -> Result<Self, MailSetupError> {
        let parsed = url::Url::parse(url).map_err(|e| MailSetupError::Url(e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| MailSetupError::Url("no host".into()))?
            .to_owned();
        let tls_parameters =
            || TlsParameters::new(host.clone()).map_err(|e| MailSetupError::Url(e.to_string()));
        let (tls, default_port) = match parsed.scheme() {
            "smtp" => (Tls::Opportunistic(tls_parameters()?), 25),
            "smtps" => (Tls::Wrapper(tls_parameters()?), 465),
            other => {
                return Err(MailSetupError::Url(format!(
                    "unsupported scheme {other:?} (expected smtp, smtps or outbox)"
                )));
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(parsed.port().unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
        if !parsed.username().is_empty() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            builder = builder.credentials(Credentials::new(
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default()),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    async fn deliver(&self, mail: &OutgoingMail) -> Result<(), String> {
        let message = build_message(&self.from, mail)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// One delivered mail in the development outbox, as `/dev/mail` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub file: String,
    pub to: String,
    pub subject: String,
    pub date: String,
    pub text: String,
    /// The links in the text, so the page can make them clickable.
    #[serde(default)]
    pub links: Vec<String>,
}

/// Writes each mail as an `.eml` file, with a `.json` beside it for `/dev/mail`.
pub struct OutboxFolder {
    folder: PathBuf,
    from: Mailbox,
}

impl OutboxFolder {
    async fn deliver(&self, mail: &OutgoingMail) -> Result<(), String> {
        let message = build_message(&self.from, mail)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let stem = format!(
            "{:013}-{}",
            now.as_millis(),
            &crate::crypto::tokens::random_id()[..8]
        );
        let entry = OutboxEntry {
            file: format!("{stem}.eml"),
            to: mail.to.to_string(),
            subject: mail.subject.clone(),
            date: crate::render::format_utc(i64::try_from(now.as_secs()).unwrap_or(0)),
            text: mail.text.clone(),
            links: links_in(&mail.text),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| e.to_string())?;
        tokio::fs::write(self.folder.join(&entry.file), message.formatted())
            .await
            .map_err(|e| e.to_string())?;
        tokio::fs::write(self.folder.join(format!("{stem}.json")), json)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The http(s) links in a text mail.
fn links_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|word| word.trim_start_matches('('))
        .filter(|word| word.starts_with("https://") || word.starts_with("http://"))
        .map(|word| word.trim_end_matches(['.', ',', ')', '>']).to_owned())
        .collect()
}

/// The newest mails of an outbox folder, newest first.
pub async fn read_outbox(folder: &Path, limit: usize) -> Vec<OutboxEntry> {
    let Ok(mut dir) = tokio::fs::read_dir(folder).await else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut entries = Vec::new();
    for name in names.into_iter().take(limit) {
        if let Ok(bytes) = tokio::fs::read(folder.join(&name)).await
            && let Ok(entry) = serde_json::from_slice::<OutboxEntry>(&bytes)
        {
            entries.push(entry);
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_text_mail() {
        let text = "Reset it here:\nhttps://id.example/password/reset?token=abc.\nOr see (http://127.0.0.1:8080/login), thanks";
        assert_eq!(
            links_in(text),
            vec![
                "https://id.example/password/reset?token=abc",
                "http://127.0.0.1:8080/login"
            ]
        );
    }
}
