//! Strict `application/x-www-form-urlencoded` parsing.
//!
//! Unlike a lossy decoder, invalid UTF-8 is an error here: a password must never be
//! silently changed into U+FFFD and stored. A field given twice is an error too.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct FormFields(HashMap<String, String>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("The form field {0:?} is not valid UTF-8.")]
    InvalidUtf8(String),
    #[error("The form field {0:?} was sent more than once.")]
    Duplicate(String),
}

fn decode(raw: &[u8]) -> Result<String, ()> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ())
}

impl FormFields {
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        let mut fields = HashMap::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode(raw_name)
                .map_err(|()| FormError::InvalidUtf8(String::from_utf8_lossy(raw_name).into()))?;
            let value = decode(raw_value).map_err(|()| FormError::InvalidUtf8(name.clone()))?;
            if fields.insert(name.clone(), value).is_some() {
                return Err(FormError::Duplicate(name));
            }
        }
        Ok(Self(fields))
    }

    /// The field's value, or "" when it was not sent.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        let f = FormFields::parse(b"email=a%40b.example&password=Pass+word.1%21&empty=").unwrap();
        assert_eq!(f.get("email"), "a@b.example");
        assert_eq!(f.get("password"), "Pass word.1!");
        assert_eq!(f.get("empty"), "");
        assert_eq!(f.get("missing"), "");
    }

    #[test]
    fn refuses_malformed_utf8_and_duplicates() {
        assert_eq!(
            FormFields::parse(b"temporary_password=Pass%FFword.1").unwrap_err(),
            FormError::InvalidUtf8("temporary_password".into())
        );
        assert_eq!(
            FormFields::parse(b"a=1&a=2").unwrap_err(),
            FormError::Duplicate("a".into())
        );
    }

    #[test]
    fn keeps_unicode() {
        let f = FormFields::parse("p=%C3%85se.1".as_bytes()).unwrap();
        assert_eq!(f.get("p"), "Åse.1");
    }
}
