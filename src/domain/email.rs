//! Email addresses as Latchkey compares them: Unicode NFC, then lower case. Two addresses
//! are the same account only when these forms are equal; nothing is matched by
//! "looks alike".

use std::fmt;

use unicode_normalization::UnicodeNormalization;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter an email address.")]
    Empty,
    #[error("That email address is too long.")]
    TooLong,
    #[error("That does not look like an email address.")]
    Malformed,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let normalized: String = input.trim().nfc().collect::<String>().to_lowercase();
        if normalized.is_empty() {
            return Err(EmailError::Empty);
        }
        if normalized.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = normalized.rsplit_once('@') else {
            return Err(EmailError::Malformed);
        };
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c);
        if local.is_empty()
            || local.chars().count() > 64
            || local.contains('@')
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || normalized.chars().any(bad_char)
        {
            return Err(EmailError::Malformed);
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_unicode_forms_compare_equal() {
        let composed = EmailAddress::parse("J\u{00C5}NE@Example.COM").unwrap();
        let decomposed = EmailAddress::parse("  ja\u{030A}ne@example.com ").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "j\u{00E5}ne@example.com");
        assert_eq!(composed.local_part(), "j\u{00E5}ne");
        assert_eq!(composed.domain(), "example.com");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "nobody",
            "@x.com",
            "a@",
            "a@b",
            "a b@c.com",
            "a@.com",
            "a@c..com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            EmailAddress::parse(&format!("{}@x.com", "a".repeat(300))),
            Err(EmailError::TooLong)
        );
    }
}
