//! Client assertions at the token endpoint, checked the way the Microsoft
//! identity platform documents them:
//!
//! * **Certificate credentials** (the header names a certificate with
//!   `x5t#S256`, or the older SHA-1 `x5t`): the certificate must be uploaded
//!   to the app registration ([`SimConfig::certificates`]); the signature
//!   (PS256 or RS256) must verify with its public key; `iss` and `sub` must be
//!   the `client_id`; `aud` must be the token endpoint that was called;
//!   `exp` in the future, `nbf` not in the future; a `jti`.
//! * **Workload identity federation** (any other assertion): a token from an
//!   external issuer, matched against the app's federated identity
//!   credentials ([`SimConfig::federated_credentials`]) by issuer, subject
//!   and audience, and verified with the issuer's signing key
//!   ([`SimConfig::issuer_keys`], what Entra reads from the issuer's JWKS).
//!
//! Refusals carry the AADSTS codes Entra uses: 50027 (malformed), 700016
//! (unknown app), 700021 (`iss`/`sub` not the client ID), 700023 (wrong
//! `aud`), 700024 (outside its time range), 700027 (certificate not
//! registered, or a bad signature), 700211 / 700213 / 700212 (no federated
//! credential for the issuer / subject / audience).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, signature};
use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde_json::Value;

use crate::responses::identity_error;
use crate::{util, SimConfig};

const CERT_DOC: &str =
    "Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials.";
const WIF_DOC: &str = "Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
/// How far `nbf` may be ahead of the simulator's clock.
const CLOCK_SKEW_SECS: i64 = 300;

/// How an accepted assertion authenticated the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// A certificate assertion the app signed.
    Certificate,
    /// A token from an external issuer, through a federated identity credential.
    Federated,
}

impl Accepted {
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::Federated => "federated",
        }
    }
}

/// A refusal, answered in the identity platform's error shape.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl Refusal {
    pub(crate) fn respond(&self) -> Response {
        identity_error(self.status, self.error, self.code, &self.description)
    }
}

fn malformed(detail: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        code: 50_027,
        description: format!("JWT token is invalid or malformed. {detail}"),
    }
}

/// Entra answers a refused client credential with 401 `invalid_client`.
fn invalid_client(code: u32, description: &str) -> Refusal {
    Refusal { status: StatusCode::UNAUTHORIZED, error: "invalid_client", code, description: description.to_owned() }
}

/// Seconds since the epoch by the simulator's clock (shifted for skew tests).
fn now_secs(config: &SimConfig) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    i64::try_from(now).unwrap_or(i64::MAX / 2) + config.clock_offset_secs
}

fn time_text(secs: i64) -> String {
    let t = u64::try_from(secs).map(|s| UNIX_EPOCH + Duration::from_secs(s)).unwrap_or(UNIX_EPOCH);
    util::rfc3339(t)
}

/// A decoded JWT: header, claims, the signed part and the signature.
struct Jwt<'a> {
    header: Value,
    claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn decode(assertion: &str) -> Option<Jwt<'_>> {
    let (signing_input, sig) = assertion.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    let part = |p: &str| -> Option<Value> {
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?).ok()?;
        v.is_object().then_some(v)
    };
    Some(Jwt {
        header: part(header)?,
        claims: part(claims)?,
        signing_input,
        signature: URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')).ok()?,
    })
}

fn claim<'v>(v: &'v Value, name: &str) -> Option<&'v str> {
    v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `aud` as a list (a string or an array of strings).
fn audiences(claims: &Value) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Checks `client_assertion` for `client_id` at `token_url` (the URL the
/// request was sent to). `Err` is the identity platform's refusal.
pub(crate) fn check(
    config: &SimConfig,
    client_id: &str,
    token_url: &str,
    assertion: &str,
) -> Result<Accepted, Refusal> {
    if client_id != config.client_id {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            error: "unauthorized_client",
            code: 700_016,
            description: format!("Application with identifier '{client_id}' was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant."),
        });
    }
    let jwt = decode(assertion).ok_or_else(|| malformed("The assertion is not a signed JWT."))?;
    let now = now_secs(config);
    if jwt.header.get("x5t#S256").is_some() || jwt.header.get("x5t").is_some() {
        check_certificate(config, client_id, token_url, &jwt, now)?;
        Ok(Accepted::Certificate)
    } else {
        check_federated(config, &jwt, now)?;
        Ok(Accepted::Federated)
    }
}

fn check_certificate(
    config: &SimConfig,
    client_id: &str,
    token_url: &str,
    jwt: &Jwt<'_>,
    now: i64,
) -> Result<(), Refusal> {
    let alg = match claim(&jwt.header, "alg") {
        Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(malformed("The 'alg' header must be PS256 or RS256.")),
    };
    let (thumbprint, cert) = if let Some(s256) = claim(&jwt.header, "x5t#S256") {
        let found =
            config.certificates.iter().find(|der| URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der)) == s256);
        (s256, found)
    } else {
        let sha1 = claim(&jwt.header, "x5t").unwrap_or_default();
        let found = config
            .certificates
            .iter()
            .find(|der| URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)) == sha1);
        (sha1, found)
    };
    let Some(cert) = cert else {
        return Err(invalid_client(
            700_027,
            &format!("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.] {CERT_DOC}"),
        ));
    };
    let der = CertificateDer::from(cert.as_slice());
    let verified = webpki::EndEntityCert::try_from(&der)
        .ok()
        .is_some_and(|ee| ee.verify_signature(alg, jwt.signing_input.as_bytes(), &jwt.signature).is_ok());
    if !verified {
        return Err(invalid_client(
            700_027,
            &format!("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{thumbprint}'] {CERT_DOC}"),
        ));
    }
    if claim(&jwt.claims, "iss") != Some(client_id) || claim(&jwt.claims, "sub") != Some(client_id) {
        return Err(invalid_client(
            700_021,
            &format!("Client assertion application identifier doesn't match 'client_id' parameter. {CERT_DOC}"),
        ));
    }
    if !audiences(&jwt.claims).contains(&token_url) {
        return Err(invalid_client(
            700_023,
            &format!("Client assertion audience claim does not match Realm issuer. {CERT_DOC}"),
        ));
    }
    check_time(&jwt.claims, now, CERT_DOC)?;
    if claim(&jwt.claims, "jti").is_none() {
        return Err(malformed("The 'jti' claim is missing."));
    }
    Ok(())
}

fn check_time(claims: &Value, now: i64, doc: &str) -> Result<(), Refusal> {
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    let Some(exp) = exp else { return Err(malformed("The 'exp' claim is missing.")) };
    if exp <= now || nbf.is_some_and(|n| n > now + CLOCK_SKEW_SECS) {
        return Err(invalid_client(
            700_024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. {doc}",
                time_text(now),
                time_text(nbf.unwrap_or(0)),
                time_text(exp)
            ),
        ));
    }
    Ok(())
}

fn check_federated(config: &SimConfig, jwt: &Jwt<'_>, now: i64) -> Result<(), Refusal> {
    let issuer = claim(&jwt.claims, "iss").ok_or_else(|| malformed("The 'iss' claim is missing."))?;
    let subject = claim(&jwt.claims, "sub").unwrap_or_default();
    let by_issuer: Vec<_> = config.federated_credentials.iter().filter(|f| f.issuer == issuer).collect();
    if by_issuer.is_empty() {
        return Err(invalid_client(
            700_211,
            &format!("No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        ));
    }
    // The issuer's signing key, as published at its JWKS endpoint.
    let key = config.issuer_keys.iter().find(|k| k.issuer == issuer);
    let verified = claim(&jwt.header, "alg") == Some("RS256")
        && key.is_some_and(|k| {
            signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &k.public_key)
                .verify(jwt.signing_input.as_bytes(), &jwt.signature)
                .is_ok()
        });
    if !verified {
        let reason = if key.is_none() {
            "The key was not found."
        } else {
            "The provided signature value did not match the expected signature value."
        };
        return Err(invalid_client(
            700_027,
            &format!("Client assertion failed signature validation. [Reason - {reason}] {WIF_DOC}"),
        ));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == subject).collect();
    if by_subject.is_empty() {
        return Err(invalid_client(
            700_213,
            &format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. {WIF_DOC}"
            ),
        ));
    }
    let presented = audiences(&jwt.claims);
    if !by_subject.iter().any(|f| f.audiences.iter().any(|a| presented.contains(&a.as_str()))) {
        return Err(invalid_client(
            700_212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{}'. {WIF_DOC}",
                presented.join(",")
            ),
        ));
    }
    check_time(&jwt.claims, now, WIF_DOC)
}
