//! Hostile input: a corpus of bad secret values, events, payloads, config
//! values, tag overrides and malformed Graph and AWS answers. Each gives a
//! clear error, changes nothing (no Entra write, no label move), and never
//! panics. Property tests cover the secret-value parser and the event decoder.

use std::collections::{BTreeMap, HashMap};

use crate::common::*;
use entra_sim::{Fault, Route};
use proptest::prelude::*;
use scim_relay::core::config::Defaults;
use scim_relay::core::renew::{Outcome, LABEL_APPLIED};
use scim_relay::core::secret_value::SecretValue;
use scim_relay::core::types::SecretId;
use scim_relay::lambda::handler::decode;
use serde_json::{json, Value};

/// Counts the corpus as it runs (the closing note reports it).
fn counted(category: &str, n: usize) {
    println!("hostile corpus: {n} {category}");
}

// -------------------------------------------------------- secret values --

#[tokio::test]
async fn bad_secret_values_are_refused_before_entra() {
    let w = World::new("hostile-values").await;
    let t = w.token("x");
    let cases: Vec<(String, &str)> = vec![
        ("\u{feff}".into(), "empty"),
        (json!({"token": ""}).to_string(), "empty"),
        (json!({"token": null}).to_string(), "no `token`"),
        (json!({"token": 5}).to_string(), "must be a string"),
        (json!({"token": [t]}).to_string(), "must be a string"),
        (json!({"token": {"value": t}}).to_string(), "must be a string"),
        (json!({"token": format!("{t}\t")}).to_string().replace("\\t", "\\tx"), "whitespace"),
        (json!({"token": format!("{t}\u{200b}")}).to_string(), "non-ASCII"),
        (json!({"token": format!("{t}\u{2019}")}).to_string(), "non-ASCII"),
        (json!({"token": t, "expires_at": 20271120}).to_string(), "must be a string"),
        (json!({"token": t, "expires_at": "2027-13-45"}).to_string(), "expires_at"),
        (json!({"token": t, "expires_at": "tomorrow"}).to_string(), "expires_at"),
        (json!({"token": t, "tenant_url": "ftp://federation.apple.com"}).to_string(), "tenant_url"),
        (json!({"token": t, "tenant_url": "https://user:pw@federation.apple.com/"}).to_string(), "tenant_url"),
        (json!({"token": t, "tenant_url": 443}).to_string(), "must be a string"),
        (json!({"TOKEN": t}).to_string(), "unknown key"),
        (json!({"token": t, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}).to_string(), "and 2 more"),
        (format!("[\"{t}\"]"), "not an object"),
        (format!("\"{t}\""), "not an object"),
        (format!("{{\"token\": \"{t}\", }}"), "not valid JSON"),
        ("x".repeat(20_000), "bytes long"),
        (format!("http://{t}"), "URL"),
    ];
    let n = cases.len();
    for (value, why) in cases {
        w.sim.clear_requests();
        w.put(&value).await;
        let r = w.sync().await;
        let res = &r.results[0];
        assert_eq!(res.outcome, Outcome::Rejected, "{why}: {}", res.message);
        assert!(res.message.contains(why), "expected `{why}` in: {}", res.message);
        assert!(w.sim.requests().is_empty(), "{why}: Entra was called");
    }
    assert_eq!(w.saved_token(), None);
    assert_eq!(w.version_with(LABEL_APPLIED).await, None);
    w.assert_no_leaks();
    counted("secret values", n);
}

// ------------------------------------------------ events and payloads --

/// A valid configuration for one target.
fn base_vars() -> HashMap<String, String> {
    [
        ("SCIM_RELAY_SECRET_IDS", "scim-relay/abm"),
        ("ENTRA_TENANT_ID", TENANT),
        ("ENTRA_CLIENT_ID", CLIENT_ID),
        ("ENTRA_CLIENT_SECRET_ID", "scim-relay/graph"),
        ("ENTRA_SERVICE_PRINCIPAL_ID", SP),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn defaults() -> Defaults {
    Defaults::from_vars(&base_vars()).unwrap()
}

#[test]
fn bad_events_and_payloads_are_refused() {
    let big: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases = vec![
        json!(null),
        json!(true),
        json!(42),
        json!("sync"),
        json!([]),
        json!([{}]),
        json!({"action": "SYNC"}),
        json!({"action": ""}),
        json!({"action": 1}),
        json!({"action": ["sync"]}),
        json!({"secret_id": 5}),
        json!({"secret_id": ""}),
        json!({"secret_id": "scim-relay/other"}),
        json!({"dry_run": 1}),
        json!({"force": "true"}),
        json!({"action": "check", "force": true}),
        json!({"action": "validate", "force": true}),
        json!({"action": "sync", "extra": 1}),
        Value::Object(big),
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated"}),
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "detail": {"name": "scim-relay/abm"}}),
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "detail": {"labelUpdated": "AWSCURRENT"}}),
        json!({"source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail", "detail": {"eventName": "PutSecretValue"}}),
        json!({"source": "aws.secretsmanager", "detail-type": "Secret Rotation Failed", "detail": {}}),
        json!({"source": "aws.events", "detail-type": "EC2 Instance State-change Notification", "detail": {}}),
        json!({"detail-type": "Scheduled Event"}),
        json!({"source": 5, "detail-type": []}),
        json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}),
    ];
    let d = defaults();
    for c in &cases {
        let e = decode(c, &d).expect_err(&format!("should refuse {}", &c.to_string()[..c.to_string().len().min(80)]));
        let msg = e.to_string();
        assert!(msg.starts_with("refused the invocation payload:"), "{msg}");
        assert!(msg.len() < 600, "the error stays readable ({} bytes)", msg.len());
    }
    counted("events and payloads", cases.len());
}

// ------------------------------------------------------- configuration --

#[test]
fn bad_configuration_names_the_setting() {
    let base = |k: &str, v: &str| {
        let mut vars = base_vars();
        vars.insert(k.into(), v.into());
        vars
    };
    let cases = [
        ("SCIM_RELAY_SECRET_IDS", ""),
        ("SCIM_RELAY_SECRET_IDS", " , ,"),
        ("SCIM_RELAY_SECRET_IDS", "has space"),
        ("SCIM_RELAY_SECRET_IDS", "a,a"),
        ("SCIM_RELAY_SECRET_IDS", "arn:aws:s3:::bucket"),
        ("ENTRA_TENANT_ID", "not a tenant"),
        ("ENTRA_CLIENT_ID", "1234"),
        ("ENTRA_SERVICE_PRINCIPAL_ID", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
        ("ENTRA_CLIENT_SECRET_ID", "bad secret id"),
        ("ENTRA_JOB_ID", "job id with spaces"),
        ("SCIM_TENANT_URL", "http://federation.apple.com/feeds/business/scim"),
        ("EXPIRY_WARNING_DAYS", "0"),
        ("EXPIRY_WARNING_DAYS", "366"),
        ("EXPIRY_WARNING_DAYS", "-1"),
        ("ALERT_TOPIC_ARN", "my-topic"),
        ("GRAPH_ENDPOINT", "http://graph.microsoft.com"),
        ("LOGIN_ENDPOINT", "ftp://login"),
        ("DRY_RUN", "maybe"),
        ("SCIM_RELAY_CONCURRENCY", "0"),
        ("SCIM_RELAY_CONCURRENCY", "1000"),
    ];
    for (k, v) in cases {
        let e = Defaults::from_vars(&base(k, v)).expect_err(&format!("{k}={v}"));
        assert!(e.to_string().starts_with(k), "{k}={v}: {e}");
    }
    counted("configuration values", cases.len());
}

/// Tags that earlier versions read as settings are ignored, whatever they
/// hold: the target is processed with the deployer's configuration.
#[tokio::test]
async fn setting_tags_are_ignored() {
    let cases = [
        ("scim-relay:tenant-id", "not-a-tenant"),
        ("scim-relay:client-id", "nope"),
        ("scim-relay:service-principal-id", "x"),
        ("scim-relay:job-id", "bad job!"),
        ("scim-relay:tenant-url", "https://scim.attacker.example/scim"),
        ("scim-relay:warning-days", "many"),
        ("scim-relay:client-secret-id", "a b"),
        ("scim-relay:auth", "federated"),
    ];
    for (tag, value) in cases {
        let w = World::new(&format!("hostile-tag-{}", tag.trim_start_matches("scim-relay:"))).await;
        let t = w.token("t");
        w.sim.accept_token(&t);
        w.put(&t).await;
        w.sm.tag_resource()
            .secret_id(w.id())
            .tags(aws_sdk_secretsmanager::types::Tag::builder().key(tag).value(value).build())
            .send()
            .await
            .unwrap();
        let r = w.sync().await;
        let res = &r.results[0];
        assert_eq!(res.outcome, Outcome::Applied, "{tag}: {}", res.message);
        assert_eq!(w.sim.saved_credentials(SP).unwrap().0, "https://federation.apple.com/feeds/business/scim", "{tag}");
        assert!(log_text().contains("ignored"), "{tag}: the ignored tag is not logged");
    }
    counted("ignored setting tags", cases.len());
}

// ------------------------------------------------- malformed answers --

#[tokio::test]
async fn malformed_graph_answers_fail_cleanly() {
    let huge = format!("{{\"id\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let cases: Vec<(Route, Fault, bool, &str)> = vec![
        (Route::ListJobs, Fault::Respond { status: 200, body: "<html>oops</html>".into() }, true, "not JSON"),
        (Route::ListJobs, Fault::Respond { status: 200, body: "{\"value\":[{\"id\":\"a\",".into() }, true, "not JSON"),
        (Route::ListJobs, Fault::Respond { status: 200, body: "{\"value\":{}}".into() }, true, "no `value` array"),
        (
            Route::ListJobs,
            Fault::Respond { status: 200, body: "{\"value\":[{\"status\":{\"code\":\"Active\"}}]}".into() },
            true,
            "no `id`",
        ),
        (
            Route::ListJobs,
            Fault::Respond { status: 200, body: "{\"value\":[{\"id\":\"j\",\"status\":{\"code\":5}}]}".into() },
            true,
            "status.code",
        ),
        (Route::ListJobs, Fault::Respond { status: 200, body: huge.clone() }, true, "larger than"),
        (
            Route::ListJobs,
            Fault::Respond {
                status: 418,
                body: "{\"error\":{\"code\":\"Teapot\",\"message\":\"short and stout\"}}".into(),
            },
            true,
            "Teapot",
        ),
        (
            Route::Token,
            Fault::Respond { status: 200, body: "{\"token_type\":\"Bearer\"}".into() },
            false,
            "no access_token",
        ),
        (Route::Token, Fault::Respond { status: 200, body: "not json".into() }, false, "no access_token"),
        (
            Route::Token,
            Fault::Respond {
                status: 400,
                body: "{\"error\":\"invalid_scope\",\"error_description\":\"AADSTS70011: bad scope\"}".into(),
            },
            false,
            "invalid_scope",
        ),
        (Route::ValidateCredentials, Fault::Respond { status: 500, body: "<html>".into() }, false, "500"),
        (Route::ValidateCredentials, Fault::Respond { status: 302, body: String::new() }, false, "302"),
        (Route::ValidateCredentials, Fault::Respond { status: 200, body: huge }, false, "larger than"),
    ];
    let n = cases.len();
    for (i, (route, fault, auto_job, why)) in cases.into_iter().enumerate() {
        let mut w = World::new(&format!("hostile-graph-{i}")).await;
        if auto_job {
            w.env.remove("ENTRA_JOB_ID");
        }
        let t = w.token("t");
        w.sim.accept_token(&t);
        w.put(&t).await;
        w.sim.set_fault_always(route, Some(fault));
        let r = w.sync().await;
        let res = &r.results[0];
        assert_eq!(res.outcome, Outcome::Failed, "{why}: {}", res.message);
        assert!(res.message.contains(why), "{why}: {}", res.message);
        assert_eq!(w.entra_writes(), 0, "{why}");
        assert_eq!(w.version_with(LABEL_APPLIED).await, None, "{why}");
        assert_eq!(w.version_with(scim_relay::core::renew::LABEL_REJECTED).await, None, "{why}: never rejected");
        w.assert_no_leaks();
    }
    counted("malformed Graph answers", n);
}

#[tokio::test]
async fn malformed_aws_answers_fail_cleanly() {
    let cases: Vec<(&str, Fault)> = vec![
        ("secretsmanager.DescribeSecret", Fault::Respond { status: 200, body: "<html>".into() }),
        (
            "secretsmanager.DescribeSecret",
            Fault::Respond { status: 200, body: "{\"VersionIdsToStages\": \"x\"}".into() },
        ),
        ("secretsmanager.DescribeSecret", Fault::Respond { status: 200, body: "{\"Tags\": 7".into() }),
        ("secretsmanager.GetSecretValue", Fault::Respond { status: 200, body: "{\"SecretString\": 5}".into() }),
        ("secretsmanager.GetSecretValue", Fault::Respond { status: 200, body: "{\"SecretStr".into() }),
        (
            "secretsmanager.GetSecretValue",
            Fault::Respond { status: 403, body: "{\"__type\":\"AccessDeniedException\",\"message\":\"no\"}".into() },
        ),
        (
            "secretsmanager.DescribeSecret",
            Fault::Respond {
                status: 400,
                body: "{\"__type\":\"ResourceNotFoundException\",\"message\":\"gone\"}".into(),
            },
        ),
    ];
    let n = cases.len();
    for (i, (op, fault)) in cases.into_iter().enumerate() {
        let w = World::new(&format!("hostile-aws-{i}")).await;
        let t = w.token("t");
        w.sim.accept_token(&t);
        w.put(&t).await;
        w.proxy.set_fault_always(op, Some(fault));
        let r = w.sync().await;
        let res = &r.results[0];
        assert_eq!(res.outcome, Outcome::Failed, "{op}: {}", res.message);
        assert!(!res.message.is_empty());
        assert_eq!(w.entra_writes(), 0, "{op}");
        assert_eq!(w.version_with(LABEL_APPLIED).await, None, "{op}");
        w.assert_no_leaks();
    }
    // A garbled SNS answer: the alert is reported undelivered, nothing panics.
    let w = World::new("hostile-sns").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    w.proxy.set_fault_always("sns.Publish", Some(Fault::Respond { status: 200, body: "<not-xml".into() }));
    let r = w.sync().await;
    assert_eq!(r.results[0].outcome, Outcome::Applied);
    assert!(r.error_summary().unwrap_or_default().contains("could not be delivered"));
    counted("malformed AWS answers", n + 1);
}

// ------------------------------------------------------ property tests --

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("aws.scheduler"),
            Just("aws.events"),
            Just("aws.secretsmanager"),
            Just("Scheduled Event"),
            Just("Secret Label Updated"),
            Just("AWS API Call via CloudTrail"),
            Just("AWSCURRENT"),
            Just("PutSecretValue"),
            Just("sync"),
            Just("check"),
            Just("scim-relay/abm")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("source".to_owned()),
                    Just("detail-type".to_owned()),
                    Just("detail".to_owned()),
                    Just("labelUpdated".to_owned()),
                    Just("name".to_owned()),
                    Just("eventName".to_owned()),
                    Just("requestParameters".to_owned()),
                    Just("secretId".to_owned()),
                    Just("action".to_owned()),
                    Just("secret_id".to_owned()),
                    Just("dry_run".to_owned()),
                    Just("force".to_owned()),
                    Just("resources".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The event decoder never panics, and what it accepts is well formed.
    #[test]
    fn decoder_never_panics(event in json_value()) {
        let d = defaults();
        if let Ok(scim_relay::lambda::handler::Decoded::Run(req)) = decode(&event, &d) {
            if let scim_relay::lambda::relay::Targets::One(id) = req.targets {
                prop_assert!(d.secret_ids.contains(&id));
            }
        }
    }

    /// The secret-value parser never panics on any string.
    #[test]
    fn secret_parser_never_panics(raw in "\\PC{0,64}|[{}\\[\\]\":, a-z_0-9\u{feff}\u{200b}]{0,64}") {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let _ = SecretValue::parse_and_check(&raw, None, now);
    }

    /// Whatever surrounds it, a refused value's error never quotes the token.
    #[test]
    fn errors_never_quote_the_token(
        token in "[A-Za-z0-9._-]{12,40}",
        extra_key in prop_oneof![Just("expires"), Just("tenant"), Just("Token"), Just("x")],
        expires in prop_oneof![Just("2001-01-01"), Just("soon"), Just("2099-01-01")],
        shape in 0u8..6,
    ) {
        let raw = match shape {
            0 => json!({"token": token, extra_key: 1}).to_string(),
            1 => json!({"token": token, "expires_at": expires}).to_string(),
            2 => format!("{{\"token\": \"{token}\""),
            3 => format!("{token} {token}"),
            4 => json!({"token": format!("{token}\u{200b}")}).to_string(),
            _ => json!({"token": token, "tenant_url": "http://federation.apple.com/feeds/business/scim"}).to_string(),
        };
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        if let Err(e) = SecretValue::parse_and_check(&raw, None, now) {
            prop_assert!(!e.to_string().contains(&token), "{}", e);
        }
    }

    /// Target matching is symmetric between a name and its ARN forms.
    #[test]
    fn arn_matching(name in "[a-z][a-z0-9/_+=.@-]{0,30}", suffix in "[A-Za-z0-9]{6}") {
        let id = SecretId::parse(&name).unwrap();
        let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-{suffix}");
        prop_assert!(id.matches(&arn));
        prop_assert!(SecretId::parse(&arn).unwrap().matches(&name));
    }
}
