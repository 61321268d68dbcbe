//! How the relay's own Graph app proves who it is at the token endpoint
//! (`{LOGIN_ENDPOINT}/{tenant}/oauth2/v2.0/token`, client-credentials grant).
//! `ENTRA_AUTH` picks one of three methods:
//!
//! * `secret`: `client_secret`, read from Secrets Manager (a raw string, or
//!   `{"client_secret": "...", "expires_at": "2027-05-01"}`).
//! * `certificate`: a client assertion (RFC 7523, OpenID Connect
//!   `private_key_jwt`) that the relay signs itself with a private key read
//!   from Secrets Manager (`{"private_key": PEM, "certificate": PEM}`), as the
//!   Microsoft identity platform documents for certificate credentials:
//!   header `alg: PS256`, `typ: JWT`, `x5t#S256` (base64url SHA-256 of the
//!   certificate's DER); claims `aud` (the token endpoint), `iss` = `sub` =
//!   the client ID, a unique `jti`, `nbf`/`iat`/`exp` (10 minutes).
//! * `federated`: AWS IAM outbound identity federation. STS
//!   `GetWebIdentityToken` returns a short-lived JWT signed by AWS (issuer:
//!   the account's `https://….tokens.sts.global.api.aws`, subject: the
//!   function role's ARN, audience: `ENTRA_FEDERATED_AUDIENCE`), which Entra
//!   accepts through a federated identity credential on the app
//!   registration. It is sent as the client assertion. Nothing is stored.
//!
//! The renewal logic never sees any of this: [`client_auth`] is called by the
//! Graph adapter when it needs a new access token. No value built or read
//! here ever reaches a log line or an error message; every type that holds
//! one prints a redaction.

use std::fmt;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::core::ports::{AppCredential, EntraError, GraphApp, SecretStore};
use crate::core::secret_value::format_date;
use crate::core::types::Invalid;
use crate::core::types::SecretId;

/// `client_assertion_type` for a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion the relay signs is valid.
pub const ASSERTION_LIFETIME_SECS: i64 = 600;
/// How long the web identity token asked of STS is valid (its minimum is 60).
pub const WEB_IDENTITY_TOKEN_SECS: i32 = 300;
/// The algorithm STS signs the web identity token with. Entra verifies RS256
/// (the algorithm of every OIDC issuer it federates with); STS also offers ES384.
pub const WEB_IDENTITY_SIGNING_ALGORITHM: &str = "RS256";

mod certificate;
mod client_secret;
mod sts;

pub use certificate::StoredCertificate;
pub use client_secret::ClientSecret;
pub use sts::StsWebIdentity;

// ------------------------------------------------------------ sign-in --

/// What a token request carries to prove the app's identity. Debug prints a
/// redaction.
pub enum ClientAuth {
    /// `client_secret=…`
    Secret(SecretString),
    /// `client_assertion_type=…jwt-bearer&client_assertion=…`: a certificate
    /// assertion the relay signed, or the web identity token from AWS.
    Assertion(SecretString),
}

impl ClientAuth {
    /// The form fields to add to the client-credentials request.
    pub fn form_fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::Secret(s) => vec![("client_secret", s.expose_secret())],
            Self::Assertion(a) => vec![("client_assertion_type", JWT_BEARER), ("client_assertion", a.expose_secret())],
        }
    }

    /// The value, to scrub from anything the login service answers.
    pub fn exposed(&self) -> &str {
        match self {
            Self::Secret(s) | Self::Assertion(s) => s.expose_secret(),
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("ClientAuth::Secret([REDACTED])"),
            Self::Assertion(_) => f.write_str("ClientAuth::Assertion([REDACTED])"),
        }
    }
}

/// Why a web identity token could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebIdentityError {
    /// Throttling, 5xx, timeouts: the next run tries again.
    Transient(String),
    /// A configuration problem; the text says what to fix.
    Failed(String),
}

/// Where federated sign-in gets its token: AWS STS `GetWebIdentityToken` in
/// production ([`StsWebIdentity`]); tests inject their own issuer.
#[async_trait]
pub trait WebIdentitySource: Send + Sync {
    /// A short-lived JWT whose `aud` is `audience`.
    async fn web_identity_token(&self, audience: &str) -> Result<SecretString, WebIdentityError>;
}

/// The proof of identity for one token request of `app` at `token_url`.
/// `web_identity` is needed only for federated sign-in.
pub async fn client_auth(
    secrets: &dyn SecretStore,
    web_identity: Option<&dyn WebIdentitySource>,
    app: &GraphApp,
    token_url: &str,
) -> Result<ClientAuth, EntraError> {
    match &app.credential {
        AppCredential::Secret { secret_id } => {
            let raw = read_credential(secrets, secret_id, "ENTRA_CLIENT_SECRET_ID").await?;
            let stored = ClientSecret::parse(raw.expose_secret())
                .map_err(|e| EntraError::AppCredential(format!("ENTRA_CLIENT_SECRET_ID (secret {secret_id}): {e}")))?;
            Ok(ClientAuth::Secret(stored.secret))
        }
        AppCredential::Certificate { secret_id } => {
            let raw = read_credential(secrets, secret_id, "ENTRA_CERTIFICATE_SECRET_ID").await?;
            let fail = |e: Invalid| {
                EntraError::AppCredential(format!("ENTRA_CERTIFICATE_SECRET_ID (secret {secret_id}): {e}"))
            };
            let cert = StoredCertificate::parse(raw.expose_secret()).map_err(fail)?;
            // The assertion's times are checked against Entra's clock: they
            // come from the system clock, never from a test clock.
            let now = Timestamp::now();
            if cert.not_after <= now {
                return Err(fail(format!(
                    "the certificate expired on {}; create a new one, upload it to the app registration and store it with its key",
                    format_date(cert.not_after)
                ).into()));
            }
            if cert.not_before > now {
                return Err(fail(
                    format!("the certificate is not valid before {}", format_date(cert.not_before)).into(),
                ));
            }
            cert.client_assertion(&app.client_id, token_url, now).map(ClientAuth::Assertion).map_err(fail)
        }
        AppCredential::Federated { audience } => {
            let source = web_identity.ok_or_else(|| {
                EntraError::AppCredential("ENTRA_AUTH is federated but no web identity token source is set up".into())
            })?;
            match source.web_identity_token(audience).await {
                Ok(token) => Ok(ClientAuth::Assertion(token)),
                Err(WebIdentityError::Transient(detail)) => Err(EntraError::AppCredential(format!(
                    "ENTRA_AUTH is federated, but AWS STS GetWebIdentityToken is unavailable ({detail}); the next run tries again"
                ))),
                Err(WebIdentityError::Failed(why)) => Err(EntraError::AppCredential(format!(
                    "ENTRA_AUTH is federated, but AWS STS GetWebIdentityToken (audience {audience}) failed: {why}"
                ))),
            }
        }
    }
}

/// The AWSCURRENT value of a credential secret.
async fn read_credential(
    secrets: &dyn SecretStore,
    secret_id: &SecretId,
    setting: &str,
) -> Result<SecretString, EntraError> {
    let version = secrets
        .get_version(secret_id, None)
        .await
        .map_err(|e| EntraError::AppCredential(format!("{setting} (secret {secret_id}) could not be read: {e}")))?;
    version.value.ok_or_else(|| {
        EntraError::AppCredential(format!("{setting} (secret {secret_id}) holds binary data; store it as a string"))
    })
}

// ------------------------------------------------------- expiry watch --

/// When the relay's own credential expires, from the credential secret's
/// value: a client secret's `expires_at` (None for a raw secret, whose
/// expiry the relay cannot know), or the certificate's notAfter. Federated
/// sign-in stores nothing that expires.
pub fn credential_expiry(credential: &AppCredential, raw: &str) -> Result<Option<Timestamp>, Invalid> {
    match credential {
        AppCredential::Secret { .. } => ClientSecret::parse(raw).map(|s| s.expires_at),
        AppCredential::Certificate { .. } => StoredCertificate::parse(raw).map(|c| Some(c.not_after)),
        AppCredential::Federated { .. } => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::certificate::{der_time, X509};
    use super::*;
    use aws_lc_rs::{digest, signature};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn client_secret_values() {
        let s = ClientSecret::parse("  CANARY-abc~def.ghi_jkl-123 \n").unwrap();
        assert_eq!(s.secret.expose_secret(), "CANARY-abc~def.ghi_jkl-123");
        assert_eq!(s.expires_at, None);
        let s = ClientSecret::parse(r#"{"client_secret":"CANARY-x","expires_at":"2027-05-01"}"#).unwrap();
        assert_eq!(s.expires_at, Some("2027-05-01T00:00:00Z".parse().unwrap()));
        let s =
            ClientSecret::parse(r#"{"client_secret":"CANARY-x","expires_at":"2027-05-01T12:30:00+02:00"}"#).unwrap();
        assert_eq!(s.expires_at, Some("2027-05-01T10:30:00Z".parse().unwrap()));
        for (raw, want) in [
            ("", "empty"),
            ("CANARY-a b", "whitespace"),
            (r#"{"client_secret":"CANARY-x","expires":"2027-05-01"}"#, "`expires`"),
            (r#"{"expires_at":"2027-05-01"}"#, "no `client_secret`"),
            (r#"{"client_secret":1}"#, "must be a string"),
            (r#"{"client_secret":"CANARY-x","expires_at":"May 1st"}"#, "neither a date"),
            (r#"{"client_secret":"CANARY-x""#, "not valid JSON"),
            (r#"{"client_secret":"  "}"#, "empty"),
        ] {
            let e = ClientSecret::parse(raw).unwrap_err();
            assert!(e.as_str().contains(want), "{raw}: {e}");
            assert!(!e.as_str().contains("CANARY"), "{e}");
        }
        assert_eq!(format!("{:?}", ClientSecret::parse("CANARY-x").unwrap()).matches("CANARY").count(), 0);
    }

    fn rsa_cert(not_after: (i32, u8, u8)) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["scim-relay".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        (key.serialize_pem(), cert.pem(), cert.der().to_vec())
    }

    #[test]
    fn certificate_assertion_has_the_documented_shape() {
        let (key, cert, der) = rsa_cert((2030, 6, 30));
        let stored =
            StoredCertificate::parse(&json!({"private_key": key, "certificate": cert}).to_string()).expect("parses");
        assert_eq!(stored.not_after, "2030-06-30T00:00:00Z".parse().unwrap());
        assert_eq!(stored.not_before, "2024-01-02T00:00:00Z".parse().unwrap());
        let debug = format!("{stored:?}");
        assert!(debug.contains("[REDACTED]") && !debug.contains("PRIVATE"), "{debug}");

        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let url = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
        let a = stored.client_assertion("client-id", url, now).unwrap();
        let parts: Vec<&str> = a.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let part = |i: usize| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[i]).unwrap()).unwrap() };
        let (header, claims) = (part(0), part(1));
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        let thumb = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &der));
        assert_eq!(header["x5t#S256"], thumb);
        assert_eq!(
            (claims["aud"].as_str(), claims["iss"].as_str(), claims["sub"].as_str()),
            (Some(url), Some("client-id"), Some("client-id"))
        );
        assert_eq!(claims["nbf"], now.as_second());
        assert_eq!(claims["exp"], now.as_second() + 600);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
        let b = stored.client_assertion("client-id", url, now).unwrap();
        let jti = |s: &SecretString| -> Value {
            let p = s.expose_secret().split('.').nth(1).unwrap().to_owned();
            serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()["jti"].clone()
        };
        assert_ne!(jti(&a), jti(&b), "every assertion has its own jti");

        // The signature verifies with the certificate's public key (PSS, SHA-256).
        let cert = X509::parse(&der).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, cert.rsa_public_key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("valid PS256 signature");
        assert_eq!(format!("{:?}", ClientAuth::Assertion(a)), "ClientAuth::Assertion([REDACTED])");
    }

    #[test]
    fn certificate_values_are_checked_without_quoting_them() {
        let (key, cert, _) = rsa_cert((2030, 6, 30));
        let (other_key, _, _) = rsa_cert((2030, 6, 30));
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
        for (raw, want) in [
            (json!({"private_key": other_key, "certificate": cert}).to_string(), "does not belong"),
            (json!({"private_key": ec, "certificate": cert}).to_string(), "not an RSA key"),
            (json!({"private_key": "CANARY-not-pem", "certificate": cert}).to_string(), "not a PEM private key"),
            (json!({"private_key": key, "certificate": "CANARY-not-pem"}).to_string(), "not a PEM certificate"),
            (json!({"private_key": key}).to_string(), "no `certificate`"),
            (json!({"private_key": key, "certificate": cert, "password": "CANARY-x"}).to_string(), "`password`"),
            (key.clone(), "must be JSON"),
        ] {
            let e = StoredCertificate::parse(&raw).unwrap_err();
            assert!(e.as_str().contains(want), "{want}: {e}");
            assert!(
                !e.as_str().contains("CANARY") && !e.as_str().contains("-----END") && !e.as_str().contains("MII"),
                "{e}"
            );
        }
        // A PEM certificate whose DER is garbage.
        let garbage = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        let e = StoredCertificate::parse(&json!({"private_key": key, "certificate": garbage}).to_string()).unwrap_err();
        assert!(e.as_str().contains("X.509"), "{e}");
    }

    #[test]
    fn der_times_and_garbage() {
        assert_eq!(der_time(0x17, b"491231235959Z"), Some("2049-12-31T23:59:59Z".parse().unwrap()));
        assert_eq!(der_time(0x17, b"500101000000Z"), Some("1950-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(der_time(0x18, b"20500101000000Z"), Some("2050-01-01T00:00:00Z".parse().unwrap()));
        for bad in [&b"5001010000Z"[..], b"20501301000000Z", b"2050010100000aZ", b"20500101000000"] {
            assert_eq!(der_time(0x18, bad), None);
        }
        // Truncations and random bytes never panic.
        let (_, _, der_bytes) = rsa_cert((2030, 1, 1));
        for n in 0..der_bytes.len() {
            let _ = X509::parse(&der_bytes[..n]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = X509::parse(&bytes);
        }
        assert!(X509::parse(&der_bytes).is_some());
    }

    #[test]
    fn expiry_per_method() {
        let (key, cert, _) = rsa_cert((2031, 2, 3));
        let id = SecretId::parse("x").unwrap();
        let raw = json!({"private_key": key, "certificate": cert}).to_string();
        assert_eq!(
            credential_expiry(&AppCredential::Certificate { secret_id: id.clone() }, &raw).unwrap(),
            Some("2031-02-03T00:00:00Z".parse().unwrap())
        );
        assert_eq!(credential_expiry(&AppCredential::Secret { secret_id: id.clone() }, "CANARY-x").unwrap(), None);
        assert_eq!(credential_expiry(&AppCredential::Federated { audience: "a".into() }, "").unwrap(), None);
    }
}
