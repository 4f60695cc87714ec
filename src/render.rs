//! The minijinja environment over `templates/`, built into the binary so that
//! `latchkey serve` runs from an empty folder. It also composes mail.

use minijinja::{Environment, Value, context};
use serde::Serialize;

use crate::domain::EmailAddress;
use crate::idm::ports::{MailComposer, MailMessage, OutgoingMail};

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "macros.html",
    "login.html",
    "logout.html",
    "consent.html",
    "password_change.html",
    "forgot.html",
    "forgot_sent.html",
    "reset.html",
    "reset_invalid.html",
    "reset_done.html",
    "account.html",
    "staff_list.html",
    "staff_reset.html",
    "settings_sso.html",
    "error.html",
    "dev_mail.html",
    "sso_required.html",
    "mail/layout.html",
    "mail/reset_link.txt",
    "mail/reset_link.html",
    "mail/reset_by_admin.txt",
    "mail/reset_by_admin.html",
    "mail/reset_at_sso.txt",
    "mail/reset_at_sso.html",
    "mail/password_changed.txt",
    "mail/password_changed.html",
);

/// The stylesheet, served at `/static/style.css`.
pub const STYLESHEET: &str = include_str!("../templates/static/style.css");

#[derive(Clone)]
pub struct Renderer {
    env: std::sync::Arc<Environment<'static>>,
}

impl Renderer {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        env.add_filter("datetime", |at: i64| format_utc(at));
        Ok(Self {
            env: std::sync::Arc::new(env),
        })
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
        self.env
            .get_template(name)?
            .render(Value::from_serialize(&context))
    }
}

/// `2026-12-03 14:05 UTC` from unix seconds.
pub fn format_utc(at: i64) -> String {
    let days = at.div_euclid(86_400);
    let seconds = at.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        seconds / 3600,
        (seconds % 3600) / 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl MailComposer for Renderer {
    fn compose(&self, to: &EmailAddress, message: &MailMessage) -> Result<OutgoingMail, String> {
        let (template, subject, context, expires_at) = match message {
            MailMessage::ResetLink {
                name,
                agency_name,
                link,
                valid_minutes,
                expires_at,
            } => (
                "reset_link",
                "Reset your Latchkey password",
                context! { name, agency_name, link, valid_minutes },
                Some(*expires_at),
            ),
            MailMessage::ResetByAdministrator { name, agency_name } => (
                "reset_by_admin",
                "About your password reset request",
                context! { name, agency_name },
                None,
            ),
            MailMessage::ResetAtSso { name, agency_name } => (
                "reset_at_sso",
                "Reset your password with your company's sign-in",
                context! { name, agency_name },
                None,
            ),
            MailMessage::PasswordChanged {
                name,
                agency_name,
                when,
                how,
            } => (
                "password_changed",
                "Your Latchkey password was changed",
                context! { name, agency_name, when => format_utc(*when), how },
                None,
            ),
        };
        let render = |ext: &str| {
            self.render(&format!("mail/{template}.{ext}"), &context)
                .map_err(|e| format!("mail template {template}.{ext}: {e}"))
        };
        Ok(OutgoingMail {
            to: to.clone(),
            subject: subject.to_owned(),
            text: render("txt")?,
            html: render("html")?,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_796_300_000), "2026-12-03 12:13 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn every_template_parses_and_mail_composes() {
        let renderer = Renderer::new().unwrap();
        let to = EmailAddress::parse("bob@agency.example").unwrap();
        let mail = renderer
            .compose(
                &to,
                &MailMessage::ResetLink {
                    name: "Bob <b>".into(),
                    agency_name: "Acme".into(),
                    link: "https://id.example/password/reset?token=abc".into(),
                    valid_minutes: 30,
                    expires_at: 99,
                },
            )
            .unwrap();
        assert!(
            mail.text
                .contains("https://id.example/password/reset?token=abc")
        );
        assert!(mail.html.contains("Bob &lt;b&gt;"), "{}", mail.html);
        assert_eq!(mail.expires_at, Some(99));
        let changed = renderer
            .compose(
                &to,
                &MailMessage::PasswordChanged {
                    name: "Bob".into(),
                    agency_name: "Acme".into(),
                    when: 0,
                    how: "reset by an administrator",
                },
            )
            .unwrap();
        assert!(changed.text.contains("1970-01-01 00:00 UTC"));
    }
}
