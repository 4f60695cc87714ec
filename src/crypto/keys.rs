//! Token signing keys: ES256 (P-256) and RS256 (2048-bit), signed with ring, published as
//! a JWKS, and stored encrypted (AES-256-GCM) under a key-encryption key from the
//! environment.
//!
//! The RSA key is generated with the `rsa` crate and only ever used through ring, whose
//! RSA signing is constant-time; the `rsa` crate never signs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::core::{CoreJsonCurveType, CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKeyId, PrivateSigningKey, SigningError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key-encryption key must be 32 bytes, base64url-encoded")]
    BadEncryptionKey,
    #[error("a stored signing key could not be decrypted (wrong key-encryption key?)")]
    Decrypt,
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("a stored signing key is unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    ES256,
    RS256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }

    pub fn jws(self) -> CoreJwsSigningAlgorithm {
        match self {
            Self::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            Self::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        }
    }
}

/// The public half, as published: RSA `n`/`e` or EC `x`/`y`, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicParts {
    pub a: String,
    pub b: String,
}

/// Encrypts and decrypts private keys at rest.
pub struct KeyEncryption {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl KeyEncryption {
    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| KeyError::BadEncryptionKey)?;
        let unbound =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::BadEncryptionKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// `nonce || ciphertext || tag`, standard base64; the key id is bound as AAD.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyError::Generate("no randomness".into()))?;
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| KeyError::Generate("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(STANDARD.encode(out))
    }

    pub fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| KeyError::Decrypt)?;
        if bytes.len() < NONCE_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Decrypt)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| KeyError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

/// A fresh key-encryption key, base64url.
pub fn generate_encryption_key() -> String {
    crate::crypto::tokens::random_token(32)
}

/// A newly made key pair: PKCS#8 DER of the private key and the public parts.
pub struct GeneratedKey {
    pub pkcs8: Vec<u8>,
    pub public: PublicParts,
}

pub fn generate(alg: Algorithm) -> Result<GeneratedKey, KeyError> {
    match alg {
        Algorithm::ES256 => {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
            // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err(KeyError::Generate("unexpected EC point".into()));
            }
            Ok(GeneratedKey {
                pkcs8: pkcs8.as_ref().to_vec(),
                public: PublicParts {
                    a: URL_SAFE_NO_PAD.encode(&point[1..33]),
                    b: URL_SAFE_NO_PAD.encode(&point[33..65]),
                },
            })
        }
        Algorithm::RS256 => {
            use rsa::pkcs8::EncodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let pkcs8 = private
                .to_pkcs8_der()
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(GeneratedKey {
                pkcs8: pkcs8.as_bytes().to_vec(),
                public: PublicParts {
                    a: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                    b: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
                },
            })
        }
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A key that signs tokens, usable with the openidconnect crate's ID token builder.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub public: PublicParts,
    pair: Pair,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {})", self.alg.as_str(), self.kid)
    }
}

fn decode_part(part: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| KeyError::Corrupt(e.to_string()))
}

impl SigningKey {
    pub fn from_pkcs8(
        kid: &str,
        alg: Algorithm,
        pkcs8: &[u8],
        public: PublicParts,
    ) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pair = match alg {
            Algorithm::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(|e| KeyError::Corrupt(e.to_string()))?,
            ),
            Algorithm::RS256 => Pair::Rsa(
                RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::Corrupt(e.to_string()))?,
            ),
        };
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            public,
            pair,
            rng,
        })
    }

    /// The JWK clients verify with.
    pub fn jwk(&self) -> CoreJsonWebKey {
        let kid = Some(JsonWebKeyId::new(self.kid.clone()));
        jwk_of(self.alg, &self.public, kid)
    }

    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigningError::CryptoError),
            Pair::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| SigningError::CryptoError)?;
                Ok(signature)
            }
        }
    }
}

/// The JWK for a published key.
pub fn jwk_of(alg: Algorithm, public: &PublicParts, kid: Option<JsonWebKeyId>) -> CoreJsonWebKey {
    let a = decode_part(&public.a).unwrap_or_default();
    let b = decode_part(&public.b).unwrap_or_default();
    match alg {
        Algorithm::ES256 => CoreJsonWebKey::new_ec(a, b, CoreJsonCurveType::P256, kid),
        Algorithm::RS256 => CoreJsonWebKey::new_rsa(a, b, kid),
    }
}

/// Verifies a signature made by a published key (used to check tokens this service
/// issued, and by the tests).
pub fn verify(alg: Algorithm, public: &PublicParts, message: &[u8], signature: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (decode_part(&public.a), decode_part(&public.b)) else {
        return false;
    };
    match alg {
        Algorithm::ES256 => {
            let mut point = vec![4u8];
            point.extend_from_slice(&a);
            point.extend_from_slice(&b);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok()
        }
        Algorithm::RS256 => ring::signature::RsaPublicKeyComponents { n: &a, e: &b }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok(),
    }
}

impl PrivateSigningKey for SigningKey {
    type VerificationKey = CoreJsonWebKey;

    fn sign(
        &self,
        signature_alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, SigningError> {
        if *signature_alg != self.alg.jws() {
            return Err(SigningError::UnsupportedAlg(format!("{signature_alg:?}")));
        }
        self.sign_bytes(message)
    }

    fn as_verification_key(&self) -> CoreJsonWebKey {
        self.jwk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_sign_and_verify() {
        for alg in [Algorithm::ES256, Algorithm::RS256] {
            let generated = generate(alg).unwrap();
            let key = SigningKey::from_pkcs8("k1", alg, &generated.pkcs8, generated.public.clone())
                .unwrap();
            let signature = key.sign_bytes(b"header.payload").unwrap();
            assert!(verify(
                alg,
                &generated.public,
                b"header.payload",
                &signature
            ));
            assert!(!verify(
                alg,
                &generated.public,
                b"header.payloaX",
                &signature
            ));
        }
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_kid() {
        let kek = KeyEncryption::from_base64(&generate_encryption_key()).unwrap();
        let sealed = kek.seal("kid-1", b"secret der").unwrap();
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"secret der");
        assert!(kek.open("kid-2", &sealed).is_err());
        let other = KeyEncryption::from_base64(&generate_encryption_key()).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(KeyEncryption::from_base64("short").is_err());
    }
}
