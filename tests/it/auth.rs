//! The relay's own Graph sign-in (`ENTRA_AUTH`): certificate client
//! assertions and AWS outbound identity federation end to end against moto
//! and the Entra simulator, refusals that name the setting, and the expiry
//! watch of the relay's own credential, with a controllable clock.
//!
//! moto (5.2.5) does not implement STS `GetWebIdentityToken`, so federated
//! sign-in is tested with an injected token source that plays AWS STS (an
//! RS256 issuer whose key the simulator trusts, with the claims AWS documents),
//! and the real STS adapter is driven through the AWS endpoint the relay uses
//! (the fault proxy in front of moto): moto's own answer, then STS-shaped
//! answers injected by the proxy (disabled feature, access denied, a token).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use entra_sim::{FederatedCredential, IssuerKey, Route};
use jiff::Timestamp;
use scim_relay::adapters::auth::{StsWebIdentity, WebIdentityError, WebIdentitySource};
use scim_relay::core::alert::AlertKind;
use scim_relay::core::credential_watch::{TAG_CREDENTIAL_EXPIRED_ALERTED, TAG_CREDENTIAL_EXPIRY_WARNED};
use scim_relay::core::renew::{Outcome, LABEL_REJECTED};
use scim_relay::lambda::relay::{Relay, RunReport};
use secrecy::SecretString;
use serde_json::{json, Value};

const ISSUER: &str = "https://a1b2c3d4-0000-4000-8000-123456789012.tokens.sts.global.api.aws";
const ROLE: &str = "arn:aws:iam::123456789012:role/scim-relay-FunctionRole-AbCdEf";
const AUDIENCE: &str = "api://AzureADTokenExchange";
/// The ABM token's expiry: far from the credential's, so its own watch is quiet.
const TOKEN_EXPIRY: &str = "2031-12-31T00:00:00Z";
const CREDENTIAL_EXPIRY: &str = "2030-06-30T00:00:00Z";

// ------------------------------------------------------------ helpers --

/// A certificate and its key, as an admin would store them.
struct TestCert {
    key_pem: String,
    cert_pem: String,
    der: Vec<u8>,
}

impl TestCert {
    /// A self-signed RSA certificate valid until `not_after` (a date).
    fn new(not_after: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["scim-relay-graph".into()]).unwrap();
        let date: jiff::civil::Date = not_after[..10].parse().unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(date.year().into(), date.month() as u8, date.day() as u8);
        let cert = params.self_signed(&key).unwrap();
        Self { key_pem: key.serialize_pem(), cert_pem: cert.pem(), der: cert.der().to_vec() }
    }

    /// The secret value. The key's PEM is preceded by a canary line
    /// (explanatory text before a PEM block is allowed and ignored), so any
    /// leak of the stored value trips the suite's canary checks.
    fn secret_value(&self, w: &World) -> String {
        json!({"private_key": format!("{}-private-key\n{}", w.token("cert"), self.key_pem), "certificate": self.cert_pem})
            .to_string()
    }

    /// A distinctive run of the key's base64 body, to look for in logs.
    fn key_material(&self) -> String {
        self.key_pem.lines().nth(5).unwrap().to_owned()
    }
}

/// A world whose relay signs in with `cert` (uploaded to the app when `upload`).
async fn certificate_world(name: &str, cert: &TestCert, upload: bool) -> World {
    let mut w = World::new(name).await;
    let id = format!("{}/graph-cert", w.prefix);
    w.sm.create_secret().name(&id).secret_string(cert.secret_value(&w)).send().await.unwrap();
    if upload {
        w.sim.add_certificate(&cert.der);
    }
    w.env.insert("ENTRA_AUTH".into(), "certificate".into());
    w.env.insert("ENTRA_CERTIFICATE_SECRET_ID".into(), id);
    // Certificate sign-in needs no client secret at all.
    w.env.remove("ENTRA_CLIENT_SECRET_ID");
    w
}

fn token_requests(w: &World) -> Vec<entra_sim::Recorded> {
    w.sim.requests().into_iter().filter(|r| r.route == Some(Route::Token)).collect()
}

fn form_value(body: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

fn kinds(r: &RunReport) -> Vec<AlertKind> {
    r.results.iter().flat_map(|r| r.alerts.clone()).collect()
}

/// The logs hold no key material and no client assertion.
fn assert_no_key_material(w: &World, cert: &TestCert) {
    w.assert_no_leaks();
    let logs = log_text();
    assert!(!logs.contains(&cert.key_material()), "private key material leaked into the logs");
    for r in token_requests(w) {
        if let Some(a) = form_value(&r.body, "client_assertion") {
            let signature = a.rsplit('.').next().unwrap();
            assert!(!logs.contains(&signature[..40]), "a client assertion leaked into the logs");
        }
    }
}

// -------------------------------------------------------- certificate --

#[tokio::test]
async fn certificate_sign_in_applies_a_token_end_to_end() {
    let cert = TestCert::new("2031-01-01");
    let w = certificate_world("certok", &cert, true).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    let relay = w.relay();
    let r = run(&w, &relay).await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Applied, "{}", res.message);
    assert_eq!(w.sim.sign_in_methods(), ["certificate"]);

    // The token request as the identity platform documents it.
    let reqs = token_requests(&w);
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0].body;
    assert_eq!(
        form_value(body, "client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(form_value(body, "grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(form_value(body, "client_secret"), None, "no client secret is sent");
    let assertion = form_value(body, "client_assertion").unwrap();
    let (header, claims) = (jwt_part(&assertion, 0), jwt_part(&assertion, 1));
    assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("PS256"), Some("JWT")));
    let thumb = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.der));
    assert_eq!(header["x5t#S256"], thumb);
    assert_eq!(claims["aud"], format!("{}/{TENANT}/oauth2/v2.0/token", w.sim.url()));
    assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some(CLIENT_ID), Some(CLIENT_ID)));
    let (nbf, exp) = (claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - nbf, 600);
    assert!((nbf - Timestamp::now().as_second()).abs() < 60, "assertion times come from the real clock");

    // The access token is reused: a second run of the same process signs in no more.
    assert_eq!(run(&w, &relay).await.results[0].outcome, Outcome::Unchanged);
    assert_eq!(w.sim.token_requests(), 1);
    assert_no_key_material(&w, &cert);
}

#[tokio::test]
async fn refused_certificates_fail_naming_the_setting_and_change_nothing() {
    let cert = TestCert::new("2031-01-01");

    // Not uploaded to the app registration (the thumbprint matches nothing).
    let w = certificate_world("certnotup", &cert, false).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = &w.sync().await.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    for want in ["ENTRA_CERTIFICATE_SECRET_ID", "AADSTS700027", "not registered", "invalid_client"] {
        assert!(res.message.contains(want), "{want}: {}", res.message);
    }
    assert_eq!(
        (w.entra_writes(), w.version_with(LABEL_REJECTED).await),
        (0, None),
        "our own sign-in is never `rejected`"
    );
    assert_no_key_material(&w, &cert);

    // Another certificate is uploaded: a wrong thumbprint.
    let w = certificate_world("certwrong", &cert, false).await;
    w.sim.add_certificate(&TestCert::new("2031-01-01").der);
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = &w.sync().await.results[0];
    assert!(
        res.message.contains("AADSTS700027") && res.message.contains("ENTRA_CERTIFICATE_SECRET_ID"),
        "{}",
        res.message
    );

    // A key that does not belong to the certificate: refused locally, nothing sent.
    let w = certificate_world("certkey", &cert, true).await;
    let other = TestCert::new("2031-01-01");
    let mixed = json!({"private_key": format!("{}\n{}", w.token("k"), other.key_pem), "certificate": cert.cert_pem});
    w.sm.put_secret_value()
        .secret_id(format!("{}/graph-cert", w.prefix))
        .secret_string(mixed.to_string())
        .send()
        .await
        .unwrap();
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = &w.sync().await.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(
        res.message.contains("ENTRA_CERTIFICATE_SECRET_ID") && res.message.contains("does not belong"),
        "{}",
        res.message
    );
    assert!(token_requests(&w).is_empty(), "nothing was sent to the login endpoint");
    assert_no_key_material(&w, &other);

    // Entra's clock an hour ahead of ours: the assertion has expired there.
    let w = certificate_world("certskew", &cert, true).await;
    w.sim.set_clock_offset(3600);
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = &w.sync().await.results[0];
    assert!(
        res.message.contains("AADSTS700024") && res.message.contains("ENTRA_CERTIFICATE_SECRET_ID"),
        "{}",
        res.message
    );
    w.sim.set_clock_offset(0);
    assert_eq!(w.sync().await.results[0].outcome, Outcome::Applied, "the next run converges");

    // An expired certificate is refused before anything is sent.
    let old = TestCert::new("2024-06-01");
    let w = certificate_world("certold", &old, true).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = &w.sync().await.results[0];
    assert!(
        res.message.contains("expired on 2024-06-01") && res.message.contains("ENTRA_CERTIFICATE_SECRET_ID"),
        "{}",
        res.message
    );
    assert!(token_requests(&w).is_empty());
    assert_no_key_material(&w, &old);
}

// ---------------------------------------------------------- federated --

/// Plays AWS STS `GetWebIdentityToken`: RS256 tokens with the claims AWS
/// documents (issuer URL, role ARN subject, requested audience, 5 minutes).
struct FakeSts {
    key: RsaKeyPair,
    subject: String,
    audiences: Mutex<Vec<String>>,
}

impl FakeSts {
    fn new(subject: &str) -> Self {
        Self {
            key: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            subject: subject.into(),
            audiences: Mutex::default(),
        }
    }

    fn issuer_key(&self) -> IssuerKey {
        IssuerKey { issuer: ISSUER.into(), public_key: self.key.public_key().as_ref().to_vec() }
    }
}

#[async_trait]
impl WebIdentitySource for FakeSts {
    async fn web_identity_token(&self, audience: &str) -> Result<SecretString, WebIdentityError> {
        self.audiences.lock().unwrap().push(audience.to_owned());
        let now = Timestamp::now().as_second();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "sts-key-1"});
        let claims = json!({"iss": ISSUER, "sub": self.subject, "aud": audience, "iat": now, "exp": now + 300,
            "jti": format!("{now}-{}", self.audiences.lock().unwrap().len()),
            "https://sts.amazonaws.com/": {"aws_account": "123456789012", "source_region": "us-east-1",
                "lambda_source_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:scim-relay"}});
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
        Ok(SecretString::from(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))))
    }
}

/// A world whose Entra app trusts the AWS issuer for ROLE, and a relay
/// that signs in with `sts`.
async fn federated_world(name: &str, sts: &Arc<FakeSts>) -> World {
    let mut w = World::new(name).await;
    w.sim.add_federated_credential(FederatedCredential {
        issuer: ISSUER.into(),
        subject: ROLE.into(),
        audiences: vec![AUDIENCE.into()],
    });
    w.sim.set_issuer_key(sts.issuer_key());
    w.env.insert("ENTRA_AUTH".into(), "federated".into());
    // Nothing secret is stored for federated sign-in.
    w.env.remove("ENTRA_CLIENT_SECRET_ID");
    w
}

fn federated_relay(w: &World, sts: &Arc<FakeSts>) -> Relay {
    w.relay().with_web_identity(sts.clone())
}

async fn run(w: &World, relay: &Relay) -> RunReport {
    w.invoke_on(relay, json!({}), Duration::from_secs(60)).await.unwrap()
}

#[tokio::test]
async fn federated_sign_in_with_an_injected_token_source() {
    let sts = Arc::new(FakeSts::new(ROLE));
    let w = federated_world("fedok", &sts).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    let relay = federated_relay(&w, &sts);
    let r = run(&w, &relay).await;
    assert_eq!(r.results[0].outcome, Outcome::Applied, "{}", r.results[0].message);
    assert_eq!(w.sim.sign_in_methods(), ["federated"]);
    assert_eq!(*sts.audiences.lock().unwrap(), [AUDIENCE], "STS is asked for Entra's audience");
    let body = &token_requests(&w)[0].body;
    assert_eq!(form_value(body, "client_secret"), None);
    assert_eq!(jwt_part(&form_value(body, "client_assertion").unwrap(), 1)["sub"], ROLE);
    // Nothing to watch: no credential secret exists, and no alert but `applied`.
    assert_eq!(kinds(&r), [AlertKind::Applied]);
    w.assert_no_leaks();
}

#[tokio::test]
async fn federated_wrong_audience_or_subject_is_refused() {
    // The relay asks STS for another audience than the credential's.
    let sts = Arc::new(FakeSts::new(ROLE));
    let mut w = federated_world("fedaud", &sts).await;
    w.env.insert("ENTRA_FEDERATED_AUDIENCE".into(), "api://scim-relay".into());
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = run(&w, &federated_relay(&w, &sts)).await.results.remove(0);
    assert_eq!(res.outcome, Outcome::Failed);
    for want in ["AADSTS700212", "ENTRA_FEDERATED_AUDIENCE (api://scim-relay)", "federated identity credential"] {
        assert!(res.message.contains(want), "{want}: {}", res.message);
    }
    assert_eq!((w.entra_writes(), w.version_with(LABEL_REJECTED).await), (0, None));

    // Another role (the credential's subject names the function's role).
    let other = Arc::new(FakeSts::new("arn:aws:iam::123456789012:role/someone-else"));
    let w = federated_world("fedsub", &other).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    let res = run(&w, &federated_relay(&w, &other)).await.results.remove(0);
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("AADSTS700213") && res.message.contains("someone-else"), "{}", res.message);
    w.assert_no_leaks();
}

/// An STS query-protocol error answer.
fn sts_error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>4d3c2b1a</RequestId></ErrorResponse>"
    )
}

#[tokio::test]
async fn the_real_sts_adapter_through_the_aws_endpoint() {
    use entra_sim::Fault;
    let sts = Arc::new(FakeSts::new(ROLE));
    let w = federated_world("fedsts", &sts).await;
    w.put_token("t", TOKEN_EXPIRY).await;
    // The real adapter, on the same AWS endpoint as the rest: the fault
    // proxy in front of moto.
    let relay = w.relay().with_web_identity(Arc::new(StsWebIdentity::new(&w.relay_aws)));
    let op = "sts.GetWebIdentityToken";

    // moto 5.2.5 has no GetWebIdentityToken (it answers 500): reported, and
    // nothing reaches the login endpoint.
    let res = run(&w, &relay).await.results.remove(0);
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("GetWebIdentityToken is unavailable"), "{}", res.message);
    assert!(w.proxy.calls().iter().any(|c| c == op), "{:?}", w.proxy.calls());
    assert!(token_requests(&w).is_empty());

    // What STS answers when the account has not enabled the feature, or the
    // role may not call it: the message says what to do.
    for (status, code, want) in [
        (400, "OutboundWebIdentityFederationDisabledException", "aws iam enable-outbound-web-identity-federation"),
        (403, "AccessDenied", "needs sts:GetWebIdentityToken"),
    ] {
        w.proxy.push_fault(op, Fault::Respond { status, body: sts_error(code, "refused") });
        let res = run(&w, &relay).await.results.remove(0);
        assert!(res.message.contains(code) && res.message.contains(want), "{}", res.message);
    }

    // STS's answer (as its API reference shapes it), carrying a token from
    // the issuer the app trusts: the real adapter signs the relay in.
    let token = sts.web_identity_token(AUDIENCE).await.unwrap();
    let answer = format!(
        "<GetWebIdentityTokenResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetWebIdentityTokenResult><WebIdentityToken>{}</WebIdentityToken><Expiration>2030-01-01T00:05:00Z</Expiration></GetWebIdentityTokenResult><ResponseMetadata><RequestId>4d3c2b1a</RequestId></ResponseMetadata></GetWebIdentityTokenResponse>",
        secrecy::ExposeSecret::expose_secret(&token)
    );
    w.proxy.push_fault(op, Fault::Respond { status: 200, body: answer });
    let res = run(&w, &relay).await.results.remove(0);
    assert_eq!(res.outcome, Outcome::Applied, "{}", res.message);
    assert_eq!(w.sim.sign_in_methods(), ["federated"]);
    // The web identity token is a bearer credential: never in a log line
    // (the SDK's own TRACE logging included).
    let signature = secrecy::ExposeSecret::expose_secret(&token).rsplit('.').next().unwrap().to_owned();
    assert!(!log_text().contains(&signature[..40]), "the web identity token leaked into the logs");

    // A relay built without any token source says so.
    let res = run(&w, &w.relay()).await.results.remove(0);
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("no web identity token source"), "{}", res.message);
    w.assert_no_leaks();
}

// ------------------------------------------------- own-credential watch --

/// Applies a token once (at 100 days before the credential expires).
async fn applied(w: &World) {
    w.set_days_before(CREDENTIAL_EXPIRY, 100.0);
    for id in &w.secret_ids {
        w.put_token_to(id, &format!("t-{}", id.rsplit('/').next().unwrap()), TOKEN_EXPIRY).await;
    }
    let r = w.sync().await;
    assert!(r.results.iter().all(|x| x.outcome == Outcome::Applied), "{:?}", r.results);
}

/// The value of a sealed de-duplication record (`VALUE@MAC`).
fn unsealed(v: &str) -> &str {
    v.rsplit_once('@').map(|(value, _)| value).unwrap_or(v)
}

#[tokio::test]
async fn client_secret_expiry_alerts_once_per_threshold_then_daily() {
    let w = World::new("credsecret").await;
    // The client secret with the expiry Entra showed when it was created.
    let value = json!({"client_secret": CLIENT_SECRET, "expires_at": &CREDENTIAL_EXPIRY[..10]});
    let version =
        w.sm.put_secret_value().secret_id(&w.client_secret_id).secret_string(value.to_string()).send().await.unwrap();
    let version = version.version_id.unwrap();
    applied(&w).await;

    let mut sent = Vec::new();
    for days in [40.0, 31.0, 30.0, 29.5, 20.0, 14.0, 13.9, 7.0, 6.5, 3.0, 2.9, 1.0, 0.5] {
        w.set_days_before(CREDENTIAL_EXPIRY, days);
        // A read-only check never alerts and never writes.
        assert!(kinds(&w.invoke(json!({"action": "check"})).await.unwrap()).is_empty());
        for _ in 0..2 {
            let r = w.sync().await;
            assert_eq!(r.results[0].outcome, Outcome::Unchanged, "{}", r.results[0].message);
            if kinds(&r).contains(&AlertKind::Expiring) {
                assert!(
                    r.results[0].message.contains("relay's own Graph credential expires in"),
                    "{}",
                    r.results[0].message
                );
                sent.push(days as i64);
            }
        }
    }
    assert_eq!(sent, [30, 14, 7, 3, 1]);
    let alerts = w.alerts().await;
    let own: Vec<&(String, String)> =
        alerts.iter().filter(|(s, _)| s.contains("relay's own Graph credential")).collect();
    assert_eq!(own.len(), 5);
    assert_eq!(own[0].0, "scim-relay: the relay's own Graph credential expires in 30 day(s)");
    let body = &own[0].1;
    for want in [CLIENT_ID, "ENTRA_CLIENT_SECRET_ID", &w.client_secret_id, "2030-06-30", "Client secrets", "federated"]
    {
        assert!(body.contains(want), "{want}: {body}");
    }
    assert_eq!(unsealed(&w.tags_of(&w.client_secret_id).await[TAG_CREDENTIAL_EXPIRY_WARNED]), format!("{version}:1"));

    // Expired: once per UTC day, and sign-in keeps working meanwhile in
    // the simulator (whose clock is real), so only the alert tells.
    let at: Timestamp = CREDENTIAL_EXPIRY.parse().unwrap();
    let mut per_run = Vec::new();
    for hours in [1, 20, 26, 49] {
        w.now.store(at.as_second() + hours * 3600, std::sync::atomic::Ordering::SeqCst);
        per_run.push(kinds(&w.sync().await).contains(&AlertKind::Expired));
    }
    assert_eq!(per_run, [true, false, true, true]);
    let alerts = w.alerts().await;
    assert!(alerts.iter().any(|(s, _)| s == "scim-relay: the relay's own Graph credential has EXPIRED"));
    assert_eq!(unsealed(&w.tags_of(&w.client_secret_id).await[TAG_CREDENTIAL_EXPIRED_ALERTED]), "2030-07-02");

    // A new client secret (a new version) starts the thresholds afresh.
    let value = json!({"client_secret": CLIENT_SECRET, "expires_at": "2032-06-30"});
    w.sm.put_secret_value().secret_id(&w.client_secret_id).secret_string(value.to_string()).send().await.unwrap();
    w.now.store("2032-06-20T00:00:00Z".parse::<Timestamp>().unwrap().as_second(), std::sync::atomic::Ordering::SeqCst);
    let r = w.sync().await;
    assert_eq!(kinds(&r).iter().filter(|k| **k == AlertKind::Expiring).count(), 1, "{:?}", r.results);
    w.assert_no_leaks();
}

#[tokio::test]
async fn a_certificate_shared_by_two_targets_is_watched_once_per_run() {
    let cert = TestCert::new(CREDENTIAL_EXPIRY);
    let mut w = World::with_targets("certwatch", 2).await;
    let id = format!("{}/graph-cert", w.prefix);
    w.sm.create_secret().name(&id).secret_string(cert.secret_value(&w)).send().await.unwrap();
    w.sim.add_certificate(&cert.der);
    w.env.insert("ENTRA_AUTH".into(), "certificate".into());
    w.env.insert("ENTRA_CERTIFICATE_SECRET_ID".into(), id.clone());
    applied(&w).await;

    w.set_days_before(CREDENTIAL_EXPIRY, 10.0);
    let r = w.sync().await;
    let per_target: Vec<Vec<AlertKind>> = r.results.iter().map(|x| x.alerts.clone()).collect();
    assert_eq!(per_target, [vec![AlertKind::Expiring], vec![]], "one alert for the shared certificate");
    assert!(kinds(&w.sync().await).is_empty(), "already announced");
    let alerts = w.alerts().await;
    let own: Vec<&(String, String)> =
        alerts.iter().filter(|(s, _)| s.contains("relay's own Graph credential")).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].0, "scim-relay: the relay's own Graph credential expires in 10 day(s)");
    for want in
        ["certificate (ENTRA_AUTH)", "ENTRA_CERTIFICATE_SECRET_ID", "notAfter", "Certificates & secrets > Certificates"]
    {
        assert!(own[0].1.contains(want), "{want}: {}", own[0].1);
    }
    assert!(unsealed(&w.tags_of(&id).await[TAG_CREDENTIAL_EXPIRY_WARNED]).ends_with(":14"));
    // A dry run never alerts.
    w.set_days_before(CREDENTIAL_EXPIRY, 6.0);
    let r = w.invoke(json!({"dry_run": true})).await.unwrap();
    assert!(kinds(&r).is_empty());
    assert_eq!(kinds(&w.sync().await), [AlertKind::Expiring]);
    assert_no_key_material(&w, &cert);
}

#[tokio::test]
async fn an_undelivered_credential_alert_is_sent_by_the_next_run() {
    use entra_sim::Fault;
    let w = World::new("credresend").await;
    let value = json!({"client_secret": CLIENT_SECRET, "expires_at": &CREDENTIAL_EXPIRY[..10]});
    w.sm.put_secret_value().secret_id(&w.client_secret_id).secret_string(value.to_string()).send().await.unwrap();
    applied(&w).await;
    w.set_days_before(CREDENTIAL_EXPIRY, 13.0);
    // SNS refuses every Publish: the invocation is an error, nothing is recorded.
    w.proxy.set_fault_always("sns.Publish", Some(Fault::Status { code: 500, retry_after: None }));
    let r = w.sync().await;
    let err = r.error_summary().expect("an undelivered alert makes the invocation an error");
    assert!(err.contains("the relay's credential"), "{err}");
    assert!(r.results[0].message.contains("could not be delivered"), "{}", r.results[0].message);
    assert!(!w.tags_of(&w.client_secret_id).await.contains_key(TAG_CREDENTIAL_EXPIRY_WARNED));
    // SNS is back: the same alert goes out once.
    w.proxy.set_fault_always("sns.Publish", None);
    assert_eq!(kinds(&w.sync().await), [AlertKind::Expiring]);
    assert!(kinds(&w.sync().await).is_empty());
    w.assert_no_leaks();
}
