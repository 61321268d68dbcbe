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
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use crate::ports::{AppCredential, EntraError, GraphApp, SecretStore};
use crate::secret_value::format_date;
use crate::types::{list_some, printable, SecretId};

/// `client_assertion_type` for a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion the relay signs is valid.
pub const ASSERTION_LIFETIME_SECS: i64 = 600;
/// How long the web identity token asked of STS is valid (its minimum is 60).
pub const WEB_IDENTITY_TOKEN_SECS: i32 = 300;
/// The algorithm STS signs the web identity token with. Entra verifies RS256
/// (the algorithm of every OIDC issuer it federates with); STS also offers ES384.
pub const WEB_IDENTITY_SIGNING_ALGORITHM: &str = "RS256";

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
            let fail =
                |e: String| EntraError::AppCredential(format!("ENTRA_CERTIFICATE_SECRET_ID (secret {secret_id}): {e}"));
            let cert = StoredCertificate::parse(raw.expose_secret()).map_err(fail)?;
            // The assertion's times are checked against Entra's clock: they
            // come from the system clock, never from a test clock.
            let now = Timestamp::now();
            if cert.not_after <= now {
                return Err(fail(format!(
                    "the certificate expired on {}; create a new one, upload it to the app registration and store it with its key",
                    format_date(cert.not_after)
                )));
            }
            if cert.not_before > now {
                return Err(fail(format!("the certificate is not valid before {}", format_date(cert.not_before))));
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

// ------------------------------------------------------- client secret --

/// The value of the client-secret secret: the raw secret, or
/// `{"client_secret": "...", "expires_at": "2027-05-01"}`.
pub struct ClientSecret {
    pub secret: SecretString,
    /// When Entra stops accepting it (the expiry Entra showed when it was created).
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecret").field("secret", &"[REDACTED]").field("expires_at", &self.expires_at).finish()
    }
}

impl ClientSecret {
    /// Parses a stored value. Errors never quote the secret.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = trim(raw);
        if !trimmed.starts_with('{') {
            if trimmed.is_empty() {
                return Err("the value is empty; store the client secret's value".into());
            }
            if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("the client secret has whitespace or a control character inside it".into());
            }
            return Ok(Self { secret: SecretString::from(trimmed.to_owned()), expires_at: None });
        }
        let map = json_object(trimmed, &["client_secret", "expires_at"])?;
        let secret = match map.get("client_secret") {
            Some(Value::String(s)) if !trim(s).is_empty() => trim(s).to_owned(),
            Some(Value::String(_)) => return Err("`client_secret` is empty".into()),
            None | Some(Value::Null) => return Err("the JSON object has no `client_secret` key".into()),
            Some(_) => return Err("`client_secret` must be a string".into()),
        };
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("`client_secret` has whitespace or a control character inside it".into());
        }
        let expires_at = match map.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_time(s).ok_or_else(|| {
                format!(
                    "`expires_at` `{}` is neither a date (2027-05-01) nor an RFC 3339 time",
                    printable(&s.chars().take(40).collect::<String>())
                )
            })?),
            Some(_) => return Err("`expires_at` must be a string".into()),
        };
        Ok(Self { secret: SecretString::from(secret), expires_at })
    }
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// A JSON object with only `allowed` keys. Errors never quote values.
fn json_object(text: &str, allowed: &[&str]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!("the value starts with `{{` but is not valid JSON (line {}, column {})", e.line(), e.column())
    })?;
    let Value::Object(map) = value else { return Err("the value is not a JSON object".into()) };
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("`{}`", printable(&k.chars().take(40).collect::<String>())))
        .collect();
    if !unknown.is_empty() {
        let allowed: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
        return Err(format!("unknown key(s) {}; allowed keys are {}", list_some(&unknown), allowed.join(" and ")));
    }
    Ok(map)
}

/// A date (midnight UTC) or an RFC 3339 time.
fn parse_time(s: &str) -> Option<Timestamp> {
    let t = s.trim();
    t.parse::<Timestamp>()
        .ok()
        .or_else(|| t.parse::<Date>().ok().and_then(|d| d.to_zoned_datetime(TimeZone::UTC).ok()).map(|z| z.timestamp()))
}

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
    pub fn parse(raw: &str) -> Result<Self, String> {
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
    pub fn client_assertion(&self, client_id: &str, token_url: &str, now: Timestamp) -> Result<SecretString, String> {
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
fn random_uuid() -> Result<String, String> {
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
struct X509<'a> {
    not_before: Timestamp,
    not_after: Timestamp,
    /// The `RSAPublicKey` DER inside subjectPublicKeyInfo's BIT STRING.
    rsa_public_key: &'a [u8],
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
    fn parse(cert: &'a [u8]) -> Option<Self> {
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
fn der_time(tag: u8, body: &[u8]) -> Option<Timestamp> {
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

// ------------------------------------------------------- expiry watch --

/// When the relay's own credential expires, from the credential secret's
/// value: a client secret's `expires_at` (None for a raw secret, whose
/// expiry the relay cannot know), or the certificate's notAfter. Federated
/// sign-in stores nothing that expires.
pub fn credential_expiry(credential: &AppCredential, raw: &str) -> Result<Option<Timestamp>, String> {
    match credential {
        AppCredential::Secret { .. } => ClientSecret::parse(raw).map(|s| s.expires_at),
        AppCredential::Certificate { .. } => StoredCertificate::parse(raw).map(|c| Some(c.not_after)),
        AppCredential::Federated { .. } => Ok(None),
    }
}

// ------------------------------------------------------------- AWS STS --

/// [`WebIdentitySource`] on AWS STS `GetWebIdentityToken` (IAM outbound
/// identity federation). The function's role needs
/// `sts:GetWebIdentityToken`, and the account must have outbound identity
/// federation enabled (`aws iam enable-outbound-web-identity-federation`).
/// The SDK calls the regional STS endpoint (the operation is not available
/// on the global one).
#[derive(Clone, Debug)]
pub struct StsWebIdentity {
    client: aws_sdk_sts::Client,
}

impl StsWebIdentity {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_sts::Client::new(config) }
    }
}

#[async_trait]
impl WebIdentitySource for StsWebIdentity {
    async fn web_identity_token(&self, audience: &str) -> Result<SecretString, WebIdentityError> {
        use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
        let out = self
            .client
            .get_web_identity_token()
            .audience(audience)
            .signing_algorithm(WEB_IDENTITY_SIGNING_ALGORITHM)
            .duration_seconds(WEB_IDENTITY_TOKEN_SECS)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or_default().to_owned();
                let message: String = e.message().unwrap_or_default().chars().take(300).collect();
                let status = e.raw_response().map(|r| r.status().as_u16());
                let summary = match (code.is_empty(), status) {
                    (false, _) => format!("{code}: {message}"),
                    (true, Some(status)) => format!("HTTP {status} with no AWS error code"),
                    (true, None) => aws_sdk_sts::error::DisplayErrorContext(&e).to_string().chars().take(300).collect(),
                };
                if status.is_some_and(|s| s == 429 || s >= 500) {
                    return WebIdentityError::Transient(summary);
                }
                match (&e, code.as_str()) {
                    (_, "OutboundWebIdentityFederationDisabledException") => WebIdentityError::Failed(format!(
                        "{summary}; enable outbound identity federation for the account (aws iam enable-outbound-web-identity-federation)"
                    )),
                    (_, "AccessDenied" | "AccessDeniedException") => WebIdentityError::Failed(format!(
                        "{summary}; the function's role needs sts:GetWebIdentityToken (the template grants it when EntraAuth is federated)"
                    )),
                    (_, "Throttling" | "ThrottlingException" | "ServiceUnavailable" | "InternalFailure" | "RequestTimeout") => {
                        WebIdentityError::Transient(summary)
                    }
                    (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _) => {
                        WebIdentityError::Transient(summary)
                    }
                    _ => WebIdentityError::Failed(summary),
                }
            })?;
        match out.web_identity_token() {
            Some(t) if !t.is_empty() => Ok(SecretString::from(t.to_owned())),
            _ => Err(WebIdentityError::Failed("STS answered without a web identity token".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(e.contains(want), "{raw}: {e}");
            assert!(!e.contains("CANARY"), "{e}");
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
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("CANARY") && !e.contains("-----END") && !e.contains("MII"), "{e}");
        }
        // A PEM certificate whose DER is garbage.
        let garbage = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        let e = StoredCertificate::parse(&json!({"private_key": key, "certificate": garbage}).to_string()).unwrap_err();
        assert!(e.contains("X.509"), "{e}");
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
