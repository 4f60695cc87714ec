//! The password policy of SPEC §2, in one place, applied to every password that is set.
//!
//! Passwords are normalised to Unicode NFC before anything else, so the two encodings of
//! "Å" are the same password, and length is counted in characters of that form. A check
//! reports every rule that failed, never only the first.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use unicode_normalization::UnicodeNormalization;

use super::EmailAddress;

/// A password as the user meant it: NFC-normalised, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(raw: &str) -> Self {
        Self(raw.nfc().collect())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// Which rules apply: an administrator's temporary password, or one the holder chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    Temporary,
    Chosen,
}

/// One failed rule. `code` is stable (it appears in JSON); `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TooShort { min: usize },
    TooLong { max: usize },
    MissingUppercase,
    MissingDigit,
    MissingSymbol,
    ControlCharacter,
    SameAsCurrent,
    ContainsEmail,
    CommonPassword,
    ConfirmationMismatch,
}

impl Violation {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLong { .. } => "too_long",
            Self::MissingUppercase => "missing_uppercase",
            Self::MissingDigit => "missing_digit",
            Self::MissingSymbol => "missing_symbol",
            Self::ControlCharacter => "control_character",
            Self::SameAsCurrent => "same_as_current",
            Self::ContainsEmail => "contains_email",
            Self::CommonPassword => "common_password",
            Self::ConfirmationMismatch => "confirmation_mismatch",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::TooShort { min } => {
                format!("The password must be at least {min} characters long.")
            }
            Self::TooLong { max } => format!("The password must be at most {max} characters long."),
            Self::MissingUppercase => {
                "The password must include at least one capital letter.".into()
            }
            Self::MissingDigit => "The password must include at least one number.".into(),
            Self::MissingSymbol => {
                "The password must include at least one symbol, such as , . ? ! @".into()
            }
            Self::ControlCharacter => "The password must not contain control characters.".into(),
            Self::SameAsCurrent => "The new password must differ from the current one.".into(),
            Self::ContainsEmail => {
                "The password must not contain the first part of your email address.".into()
            }
            Self::CommonPassword => {
                "That password is too common; choose one that is harder to guess.".into()
            }
            Self::ConfirmationMismatch => "The two new passwords do not match.".into(),
        }
    }
}

/// Lower-cased passwords that are refused as too common.
#[derive(Clone, Default)]
pub struct CommonPasswords(Arc<HashSet<String>>);

impl CommonPasswords {
    /// One password a line; blank lines and lines starting with `#` are skipped.
    pub fn from_list(text: &str) -> Self {
        let set = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        Self(Arc::new(set))
    }

    pub fn contains(&self, password: &Password) -> bool {
        self.0.contains(&password.expose().to_lowercase())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a password is checked against besides itself.
pub struct PolicyContext<'a> {
    pub email: &'a EmailAddress,
    /// The password being replaced, when the user proved it (temporary or current).
    pub current: Option<&'a Password>,
}

#[derive(Clone)]
pub struct PasswordPolicy {
    pub require_composition: bool,
    pub min_length_temporary: usize,
    pub min_length_chosen: usize,
    pub max_length: usize,
    pub common: CommonPasswords,
}

impl PasswordPolicy {
    pub fn check(
        &self,
        password: &Password,
        kind: PasswordKind,
        context: &PolicyContext<'_>,
    ) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        let text = password.expose();
        let length = password.char_count();
        let min = self.min_length(kind);
        if length < min {
            violations.push(Violation::TooShort { min });
        }
        if length > self.max_length {
            violations.push(Violation::TooLong {
                max: self.max_length,
            });
        }
        if self.require_composition {
            if !text.chars().any(char::is_uppercase) {
                violations.push(Violation::MissingUppercase);
            }
            if !text.chars().any(char::is_numeric) {
                violations.push(Violation::MissingDigit);
            }
            if !text.chars().any(is_symbol) {
                violations.push(Violation::MissingSymbol);
            }
        }
        if text.chars().any(char::is_control) {
            violations.push(Violation::ControlCharacter);
        }
        if kind == PasswordKind::Chosen {
            if context.current.is_some_and(|current| current == password) {
                violations.push(Violation::SameAsCurrent);
            }
            let local = context.email.local_part();
            if local.chars().count() >= 3 && text.to_lowercase().contains(local) {
                violations.push(Violation::ContainsEmail);
            }
            if self.common.contains(password) {
                violations.push(Violation::CommonPassword);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    pub fn min_length(&self, kind: PasswordKind) -> usize {
        match kind {
            PasswordKind::Temporary => self.min_length_temporary,
            PasswordKind::Chosen => self.min_length_chosen,
        }
    }

    /// Whether a password is long enough to be worth hashing at all; longer input is
    /// refused before any argon2 work.
    pub fn within_max_length(&self, password: &Password) -> bool {
        password.char_count() <= self.max_length
    }

    /// The rules as the pages show them before the user types.
    pub fn describe(&self, kind: PasswordKind) -> Vec<String> {
        let mut rules = vec![format!(
            "be at least {} characters long",
            self.min_length(kind)
        )];
        if self.require_composition {
            rules.push("include at least one capital letter".into());
            rules.push("include at least one number".into());
            rules.push("include at least one symbol, such as , . ? ! @".into());
        }
        if kind == PasswordKind::Chosen {
            rules.push("differ from your current or temporary password".into());
            rules.push("not contain the first part of your email address".into());
            rules.push("not be a commonly used password".into());
        }
        rules
    }
}

/// A symbol is any character that is not a letter, a number or white space.
fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            require_composition: true,
            min_length_temporary: 8,
            min_length_chosen: 12,
            max_length: 256,
            common: CommonPasswords::from_list("# test list\npassword123!\nWelcome.2024x\n"),
        }
    }

    fn email() -> EmailAddress {
        EmailAddress::parse("bob.smith@agency.example").unwrap()
    }

    fn check(pw: &str, kind: PasswordKind, current: Option<&str>) -> Vec<&'static str> {
        let current = current.map(Password::new);
        let email = email();
        let context = PolicyContext {
            email: &email,
            current: current.as_ref(),
        };
        match policy().check(&Password::new(pw), kind, &context) {
            Ok(()) => vec![],
            Err(v) => v.iter().map(Violation::code).collect(),
        }
    }

    #[test]
    fn the_help_article_example_is_a_valid_temporary_password() {
        assert_eq!(
            check("Password.1", PasswordKind::Temporary, None),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn every_failed_rule_is_named() {
        assert_eq!(
            check("password1", PasswordKind::Temporary, None),
            vec!["missing_uppercase", "missing_symbol"]
        );
        assert_eq!(
            check("abc", PasswordKind::Chosen, None),
            vec![
                "too_short",
                "missing_uppercase",
                "missing_digit",
                "missing_symbol"
            ]
        );
    }

    #[test]
    fn unicode_capitals_digits_and_symbols_count() {
        assert_eq!(
            check("Ärger-über٣", PasswordKind::Temporary, None),
            Vec::<&str>::new()
        );
        assert_eq!(
            check("ça va 1 ÉTÉ ?", PasswordKind::Chosen, None),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn spaces_do_not_count_as_symbols_but_are_allowed() {
        assert_eq!(
            check("Correct horse 12", PasswordKind::Chosen, None),
            vec!["missing_symbol"]
        );
    }

    #[test]
    fn length_is_counted_in_nfc_characters() {
        // Seven "Å" written as A + combining ring are seven characters after NFC, plus "1.".
        let decomposed = format!("{}1.", "A\u{030A}".repeat(6));
        assert_eq!(
            check(&decomposed, PasswordKind::Temporary, None),
            Vec::<&str>::new()
        );
        assert_eq!(Password::new(&decomposed).char_count(), 8);
        assert_eq!(Password::new("A\u{030A}"), Password::new("\u{00C5}"));
    }

    #[test]
    fn chosen_passwords_must_differ_avoid_the_email_and_common_words() {
        assert_eq!(
            check("Password.1xyz", PasswordKind::Chosen, Some("Password.1xyz")),
            vec!["same_as_current"]
        );
        assert_eq!(
            check("My-Bob.Smith-9!", PasswordKind::Chosen, None),
            vec!["contains_email"]
        );
        assert_eq!(
            check("WELCOME.2024X", PasswordKind::Chosen, None),
            vec!["common_password"]
        );
    }

    #[test]
    fn too_long_is_refused() {
        let long = format!("Aa1.{}", "x".repeat(253));
        assert_eq!(check(&long, PasswordKind::Chosen, None), vec!["too_long"]);
        let exact = format!("Aa1.{}", "x".repeat(252));
        assert_eq!(
            check(&exact, PasswordKind::Chosen, None),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn composition_can_be_turned_off() {
        let mut p = policy();
        p.require_composition = false;
        let email = email();
        let context = PolicyContext {
            email: &email,
            current: None,
        };
        assert!(
            p.check(
                &Password::new("correct horse battery"),
                PasswordKind::Chosen,
                &context
            )
            .is_ok()
        );
    }
}
