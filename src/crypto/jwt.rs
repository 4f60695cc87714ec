//! ID tokens: built and signed through the openidconnect crate (which also computes
//! `at_hash`), and read back when an app presents one as `id_token_hint`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use openidconnect::core::{CoreGenderClaim, CoreJweContentEncryptionAlgorithm};
use openidconnect::{
    AccessToken, AdditionalClaims, Audience, AuthenticationMethodReference, EndUserEmail,
    EndUserName, IdToken, IdTokenClaims, IssuerUrl, LocalizedClaim, Nonce, StandardClaims,
    SubjectIdentifier,
};
use serde::{Deserialize, Serialize};

use super::keys::{self, Algorithm, PublicParts, SigningKey};

/// Latchkey's own claims in every ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatchkeyClaims {
    /// The agency's slug.
    pub agency: String,
    pub roles: Vec<String>,
}

impl AdditionalClaims for LatchkeyClaims {}

pub type LatchkeyIdToken = IdToken<
    LatchkeyClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJwsSigningAlgorithm,
>;

pub struct IdTokenInput<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub subject: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub agency: &'a str,
    pub roles: Vec<String>,
    pub amr: &'a str,
    pub auth_time: i64,
    pub nonce: Option<&'a str>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub access_token: Option<&'a str>,
}

fn instant(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

pub fn sign_id_token(key: &SigningKey, input: &IdTokenInput<'_>) -> Result<String, String> {
    let issuer = IssuerUrl::new(input.issuer.to_owned()).map_err(|e| e.to_string())?;
    let standard = StandardClaims::new(SubjectIdentifier::new(input.subject.to_owned()))
        .set_email(Some(EndUserEmail::new(input.email.to_owned())))
        .set_email_verified(Some(true))
        .set_name(Some(LocalizedClaim::from(EndUserName::new(
            input.name.to_owned(),
        ))));
    let claims = IdTokenClaims::new(
        issuer,
        vec![Audience::new(input.client_id.to_owned())],
        instant(input.expires_at),
        instant(input.issued_at),
        standard,
        LatchkeyClaims {
            agency: input.agency.to_owned(),
            roles: input.roles.clone(),
        },
    )
    .set_auth_time(Some(instant(input.auth_time)))
    .set_nonce(input.nonce.map(|n| Nonce::new(n.to_owned())))
    .set_auth_method_refs(Some(vec![AuthenticationMethodReference::new(
        input.amr.to_owned(),
    )]));
    let access_token = input.access_token.map(|t| AccessToken::new(t.to_owned()));
    LatchkeyIdToken::new(claims, key, key.alg.jws(), access_token.as_ref(), None)
        .map(|token| token.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// The claims of a JWT this service signed, if its signature verifies against one of
/// `published` (kid, alg, public parts). Expiry is not checked: `id_token_hint` may be an
/// expired token.
pub fn read_own_token(
    token: &str,
    published: &[(String, Algorithm, PublicParts)],
) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let alg = Algorithm::parse(&header.alg)?;
    let (_, key_alg, public) = published
        .iter()
        .find(|(kid, key_alg, _)| Some(kid) == header.kid.as_ref() && *key_alg == alg)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signed = &token[..token.len() - token.rsplit('.').next()?.len() - 1];
    if !keys::verify(*key_alg, public, signed.as_bytes(), &signature) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_read_back_only_with_the_right_key() {
        let generated = keys::generate(Algorithm::ES256).unwrap();
        let key = SigningKey::from_pkcs8(
            "kid-a",
            Algorithm::ES256,
            &generated.pkcs8,
            generated.public.clone(),
        )
        .unwrap();
        let token = sign_id_token(
            &key,
            &IdTokenInput {
                issuer: "https://id.example",
                client_id: "app",
                subject: "s1",
                email: "a@b.example",
                name: "A",
                agency: "acme",
                roles: vec!["staff".into()],
                amr: "pwd",
                auth_time: 100,
                nonce: Some("n-1"),
                issued_at: 100,
                expires_at: 700,
                access_token: Some("at"),
            },
        )
        .unwrap();
        let published = vec![(
            "kid-a".to_owned(),
            Algorithm::ES256,
            generated.public.clone(),
        )];
        let claims = read_own_token(&token, &published).unwrap();
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["agency"], "acme");
        assert_eq!(claims["amr"][0], "pwd");
        assert!(claims["at_hash"].is_string());
        let other = keys::generate(Algorithm::ES256).unwrap();
        assert!(
            read_own_token(
                &token,
                &[("kid-a".to_owned(), Algorithm::ES256, other.public)]
            )
            .is_none()
        );
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(read_own_token(&tampered, &published).is_none());
    }
}
