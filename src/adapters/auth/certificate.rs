//! The certificate sign-in method: the stored key and certificate, and the
//! client assertion signed with them.

use std::fmt;

use crate::core::types::Invalid;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::client_secret::{json_object, trim};
use super::ASSERTION_LIFETIME_SECS;

// --------------------------------------------------------- certificate --

/// The value of the certificate secret, checked: an RSA private key and the
/// certificate it belongs to. Debug prints the thumbprint and dates only.
pub struct StoredCertificate {
    key: signature::RsaKeyPair,
    /// base64url SHA-256 of the certificate's DER: the `x5t#S256` header.
    pub thumbprint_s256: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("key", &"[REDACTED]")
            .field("thumbprint_s256", &self.thumbprint_s256)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl StoredCertificate {
    /// Parses `{"private_key": "<PKCS#8 PEM>", "certificate": "<PEM>"}`.
    /// Errors never quote key material.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = trim(raw);
        if !trimmed.starts_with('{') {
            return Err(
                "the value must be JSON: {\"private_key\": \"-----BEGIN PRIVATE KEY-----…\", \"certificate\": \"-----BEGIN CERTIFICATE-----…\"}"
                    .into(),
            );
        }
        let map = json_object(trimmed, &["private_key", "certificate"])?;
        let field = |name: &str| match map.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            None | Some(Value::Null) => Err(format!("the JSON object has no `{name}` key")),
            Some(_) => Err(format!("`{name}` must be a string (PEM)")),
        };
        let key_pem = field("private_key")?;
        let cert_pem = field("certificate")?;

        const NOT_RSA: &str =
            "`private_key` is not an RSA key; the relay signs with RSA (PS256): use an RSA key of 2048 bits or more";
        let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(der)) => signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(der)) => signature::RsaKeyPair::from_der(der.secret_pkcs1_der()),
            Ok(_) => return Err(NOT_RSA.into()),
            Err(_) => return Err("`private_key` is not a PEM private key (-----BEGIN PRIVATE KEY-----)".into()),
        }
        .map_err(|e| match e.to_string().as_str() {
            "WrongAlgorithm" => NOT_RSA.to_owned(),
            // KeyRejected's text is a fixed reason such as `TooSmall`, never key material.
            reason => format!("`private_key` is not a usable RSA private key ({reason}); use 2048 bits or more"),
        })?;

        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| "`certificate` is not a PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned())?;
        let cert = X509::parse(cert_der.as_ref())
            .ok_or_else(|| "`certificate` is not an X.509 certificate the relay can read".to_owned())?;
        if cert.rsa_public_key != signature::KeyPair::public_key(&key).as_ref() {
            return Err("`private_key` does not belong to `certificate` (their public keys differ)".into());
        }
        Ok(Self {
            key,
            thumbprint_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, cert_der.as_ref())),
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
    }

    /// A client assertion for `client_id` at `token_url`, valid from `now`
    /// for [`ASSERTION_LIFETIME_SECS`].
    ///
    /// PS256 (RSASSA-PSS with SHA-256), as the Microsoft identity platform's
    /// certificate-credentials page now documents together with `x5t#S256`;
    /// Entra also accepts RS256, but PSS is the RSA signature scheme with a
    /// security proof and the one Microsoft recommends.
    pub fn client_assertion(&self, client_id: &str, token_url: &str, now: Timestamp) -> Result<SecretString, Invalid> {
        let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint_s256});
        let iat = now.as_second();
        let claims = json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": random_uuid()?,
            "nbf": iat,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&signature::RSA_PSS_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(SecretString::from(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))))
    }
}

/// A random version-4 UUID: the assertion's `jti`.
fn random_uuid() -> Result<String, Invalid> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| "no randomness for the assertion's jti".to_owned())?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// The three fields of an X.509 certificate the relay needs, read with a
/// minimal DER walk (RFC 5280 §4.1): the validity and the RSA public key.
/// The certificate's authenticity is Entra's business (it holds the uploaded
/// copy); the relay only reads its own certificate's dates and checks that
/// its key matches.
pub(super) struct X509<'a> {
    pub(super) not_before: Timestamp,
    pub(super) not_after: Timestamp,
    /// The `RSAPublicKey` DER inside subjectPublicKeyInfo's BIT STRING.
    pub(super) rsa_public_key: &'a [u8],
}

/// One DER element: `(tag, contents, rest)`. Definite lengths only (DER).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The next element, which must have `tag`: `(contents, rest)`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = der(input)?;
    (t == tag).then_some((body, rest))
}

const SEQUENCE: u8 = 0x30;

impl<'a> X509<'a> {
    pub(super) fn parse(cert: &'a [u8]) -> Option<Self> {
        let (certificate, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(certificate, SEQUENCE)?;
        // version [0] EXPLICIT, optional
        let rest = match der(tbs)? {
            (0xa0, _, rest) => rest,
            _ => tbs,
        };
        let (_serial, rest) = expect(rest, 0x02)?;
        let (_signature, rest) = expect(rest, SEQUENCE)?;
        let (_issuer, rest) = expect(rest, SEQUENCE)?;
        let (validity, rest) = expect(rest, SEQUENCE)?;
        let (_subject, rest) = expect(rest, SEQUENCE)?;
        let (spki, _) = expect(rest, SEQUENCE)?;
        let (nb_tag, nb, after) = der(validity)?;
        let (na_tag, na, _) = der(after)?;
        let (_algorithm, rest) = expect(spki, SEQUENCE)?;
        let (bits, _) = expect(rest, 0x03)?;
        let (&unused, key) = bits.split_first()?;
        if unused != 0 {
            return None;
        }
        Some(Self { not_before: der_time(nb_tag, nb)?, not_after: der_time(na_tag, na)?, rsa_public_key: key })
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as RFC 5280 §4.1.2.5 allows in a certificate.
pub(super) fn der_time(tag: u8, body: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(body).ok()?;
    let digits = s.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i16 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i8>().ok();
    let dt = DateTime::new(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8)?, 0).ok()?;
    Some(dt.to_zoned_datetime(TimeZone::UTC).ok()?.timestamp())
}
