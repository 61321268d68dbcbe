//! The token endpoint's client assertions over real HTTP: certificate
//! credentials and workload identity federation, accepted and refused with
//! Entra's AADSTS codes.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use aws_lc_rs::{digest, rsa};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::{FederatedCredential, IssuerKey, Sim, SimConfig};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const CLIENT_ID: &str = "sim-client-id";
const TENANT: &str = "tenant-id";
const SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ISSUER: &str = "https://abc123-def456.tokens.sts.global.api.aws";
const ROLE: &str = "arn:aws:iam::123456789012:role/scim-relay-function";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An RSA key and a self-signed certificate for it.
struct Cert {
    key: RsaKeyPair,
    der: Vec<u8>,
}

fn cert() -> Cert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["scim-relay".into()]).unwrap().self_signed(&key).unwrap();
    Cert { key: RsaKeyPair::from_pkcs8(&key.serialize_der()).unwrap(), der: cert.der().to_vec() }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign(key: &RsaKeyPair, alg: &str, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let encoding: &'static dyn signature::RsaEncoding =
        if alg == "PS256" { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(encoding, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn thumb_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der))
}

fn token_url(sim: &Sim) -> String {
    format!("{}/{TENANT}/oauth2/v2.0/token", sim.url())
}

fn cert_claims(sim: &Sim) -> Value {
    let t = now();
    json!({"aud": token_url(sim), "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "nbf": t, "iat": t, "exp": t + 600})
}

fn cert_assertion(c: &Cert, claims: &Value) -> String {
    sign(&c.key, "PS256", &json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumb_s256(&c.der)}), claims)
}

async fn post(sim: &Sim, client_id: &str, assertion: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", SCOPE),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    let resp = Client::new().post(token_url(sim)).form(&form).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// `(status, error, first AADSTS code)` of a refusal.
async fn refusal(sim: &Sim, assertion: &str) -> (u16, String, u64) {
    let (status, body) = post(sim, CLIENT_ID, assertion).await;
    assert!(!status.is_success(), "accepted: {body}");
    let desc = body["error_description"].as_str().unwrap();
    let code = body["error_codes"][0].as_u64().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    (status.as_u16(), body["error"].as_str().unwrap().to_owned(), code)
}

#[tokio::test]
async fn certificate_assertions_sign_in_only_when_everything_matches() {
    let registered = cert();
    let sim =
        Sim::start(SimConfig { certificates: vec![registered.der.clone()], ..SimConfig::default() }).await.unwrap();

    // PS256 with x5t#S256, as the relay sends it; RS256 with the SHA-1 x5t too.
    let (status, body) = post(&sim, CLIENT_ID, &cert_assertion(&registered, &cert_claims(&sim))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().is_some());
    let sha1 = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &registered.der));
    let rs256 = sign(&registered.key, "RS256", &json!({"alg": "RS256", "typ": "JWT", "x5t": sha1}), &cert_claims(&sim));
    assert_eq!(post(&sim, CLIENT_ID, &rs256).await.0, StatusCode::OK);
    assert_eq!(sim.sign_in_methods(), ["certificate", "certificate"]);

    // A certificate that was never uploaded.
    let other = cert();
    assert_eq!(
        refusal(&sim, &cert_assertion(&other, &cert_claims(&sim))).await,
        (401, "invalid_client".into(), 700_027)
    );
    // The registered certificate's thumbprint, signed with another key.
    let forged = sign(
        &other.key,
        "PS256",
        &json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumb_s256(&registered.der)}),
        &cert_claims(&sim),
    );
    let (status, body) = post(&sim, CLIENT_ID, &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error_description"].as_str().unwrap().contains("signature validation"), "{body}");

    // Claims: iss/sub, aud, time range, jti.
    let mut c = cert_claims(&sim);
    c["sub"] = json!("someone-else");
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &c)).await.2, 700_021);
    let mut c = cert_claims(&sim);
    c["aud"] = json!("https://login.microsoftonline.com/other-tenant/oauth2/v2.0/token");
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &c)).await.2, 700_023);
    let mut c = cert_claims(&sim);
    c["exp"] = json!(now() - 1);
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &c)).await.2, 700_024);
    let mut c = cert_claims(&sim);
    c["nbf"] = json!(now() + 3600);
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &c)).await.2, 700_024);
    let mut c = cert_claims(&sim);
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &c)).await, (400, "invalid_request".into(), 50_027));

    // The simulator's clock an hour ahead: a fresh assertion has expired.
    sim.set_clock_offset(3600);
    assert_eq!(refusal(&sim, &cert_assertion(&registered, &cert_claims(&sim))).await.2, 700_024);
    sim.set_clock_offset(0);

    // Garbage, an unknown app, a missing assertion type.
    assert_eq!(refusal(&sim, "not.a-jwt").await.2, 50_027);
    let (status, body) = post(&sim, "another-app", &cert_assertion(&registered, &cert_claims(&sim))).await;
    assert_eq!((status, body["error_codes"][0].as_u64()), (StatusCode::BAD_REQUEST, Some(700_016)));
    let resp = Client::new()
        .post(token_url(&sim))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("scope", SCOPE),
            ("client_assertion", "x.y.z"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.token_requests(), 2, "no refused assertion got a token");

    // The control API never shows an assertion.
    let recorded =
        Client::new().get(format!("{}/_sim/requests", sim.url())).send().await.unwrap().text().await.unwrap();
    assert!(recorded.contains("client_assertion=***"), "{recorded}");
    assert!(!recorded.contains("eyJ"), "an assertion (a JWT) leaked through the control API");
}

/// A stand-in for AWS STS: an RS256 key and the tokens it issues.
struct Issuer {
    key: RsaKeyPair,
}

impl Issuer {
    fn new() -> Self {
        Self { key: RsaKeyPair::generate(rsa::KeySize::Rsa2048).unwrap() }
    }

    fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    fn token(&self, iss: &str, sub: &str, aud: &str, exp_in: i64) -> String {
        let t = now();
        sign(
            &self.key,
            "RS256",
            &json!({"alg": "RS256", "typ": "JWT", "kid": "aws-key-1"}),
            &json!({"iss": iss, "sub": sub, "aud": aud, "iat": t, "exp": t + exp_in, "jti": "xyz123",
                "https://sts.amazonaws.com/": {"aws_account": "123456789012", "source_region": "us-east-1"}}),
        )
    }
}

#[tokio::test]
async fn federated_tokens_match_issuer_subject_and_audience() {
    let aws = Issuer::new();
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    sim.add_federated_credential(FederatedCredential {
        issuer: ISSUER.into(),
        subject: ROLE.into(),
        audiences: vec![AUDIENCE.into()],
    });
    sim.set_issuer_key(IssuerKey { issuer: ISSUER.into(), public_key: aws.public_key() });

    let (status, body) = post(&sim, CLIENT_ID, &aws.token(ISSUER, ROLE, AUDIENCE, 300)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sim.sign_in_methods(), ["federated"]);

    assert_eq!(
        refusal(&sim, &aws.token("https://other.tokens.sts.global.api.aws", ROLE, AUDIENCE, 300)).await,
        (401, "invalid_client".into(), 700_211)
    );
    assert_eq!(
        refusal(&sim, &aws.token(ISSUER, "arn:aws:iam::123456789012:role/other", AUDIENCE, 300)).await.2,
        700_213
    );
    assert_eq!(refusal(&sim, &aws.token(ISSUER, ROLE, "api://wrong", 300)).await.2, 700_212);
    assert_eq!(refusal(&sim, &aws.token(ISSUER, ROLE, AUDIENCE, -10)).await.2, 700_024);
    // Someone else's key claiming to be the AWS issuer.
    assert_eq!(refusal(&sim, &Issuer::new().token(ISSUER, ROLE, AUDIENCE, 300)).await.2, 700_027);
    assert_eq!(sim.token_requests(), 1);
}
