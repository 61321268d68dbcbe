//! Triggers, expiry watch and job health, end to end against moto_server and
//! the Entra simulator, with a controllable clock.

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::alert::AlertKind;
use scim_relay::core::renew::Outcome;
use scim_relay::lambda::handler::Decoded;
use scim_relay::lambda::relay::Targets;
use serde_json::{json, Value};

const EXPIRY: &str = "2030-06-30T00:00:00Z";

fn kinds(r: &scim_relay::lambda::relay::RunReport) -> Vec<AlertKind> {
    r.results.iter().flat_map(|r| r.alerts.clone()).collect()
}

// ------------------------------------------------------------- events --

fn scheduler_event() -> Value {
    json!({"version":"0","id":"0d6a8f4e-1b0c-4d6b-9e4f-2c1c3b7a9d10","detail-type":"Scheduled Event","source":"aws.scheduler",
        "account":"123456789012","time":"2026-11-23T06:00:00Z","region":"us-east-1",
        "resources":["arn:aws:scheduler:us-east-1:123456789012:schedule/default/scim-relay-schedule"],"detail":"{}"})
}

fn classic_schedule_event() -> Value {
    json!({"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events",
        "account":"123456789012","time":"2026-11-23T06:00:00Z","region":"us-east-1",
        "resources":["arn:aws:events:us-east-1:123456789012:rule/scim-relay-schedule"],"detail":{}})
}

fn label_event(name: &str, arn: &str, label: &str) -> Value {
    json!({"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"Secret Label Updated","source":"aws.secretsmanager",
        "account":"123456789012","time":"2026-11-23T16:43:48Z","region":"us-east-1","resources":[arn],
        "detail":{"name":name,"labelUpdated":label,"versionId":"a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"}})
}

fn cloudtrail_event(event_name: &str, secret_id: &str, arn_key: &str, arn: &str) -> Value {
    json!({"version":"0","id":"3c1e8f2a-3b1e-4c2d-8f0e-7d6a5b4c3d2e","detail-type":"AWS API Call via CloudTrail","source":"aws.secretsmanager",
        "account":"123456789012","time":"2026-11-23T16:43:48Z","region":"us-east-1","resources":[],
        "detail":{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::123456789012:assumed-role/Admin/alice"},
            "eventTime":"2026-11-23T16:43:48Z","eventSource":"secretsmanager.amazonaws.com","eventName":event_name,
            "awsRegion":"us-east-1","sourceIPAddress":"203.0.113.10","userAgent":"aws-cli/2.17.0",
            "requestParameters":{"secretId":secret_id,"clientRequestToken":"5f8f4c2e-1a3b-4c5d-9e8f-0a1b2c3d4e5f"},
            "responseElements":{arn_key:arn,"name":secret_id,"versionId":"5f8f4c2e-1a3b-4c5d-9e8f-0a1b2c3d4e5f"},
            "requestID":"d1e2f3a4-b5c6-7d8e-9f0a-1b2c3d4e5f6a","eventID":"e1f2a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b",
            "readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}})
}

#[tokio::test]
async fn every_trigger_shape_is_decoded() {
    let w = World::new("events").await;
    let arn = w.sm.describe_secret().secret_id(w.id()).send().await.unwrap().arn.unwrap();
    let arn_no_suffix = arn.rsplit_once('-').unwrap().0.to_owned();
    let one = |d: Result<Decoded, String>| match d {
        Ok(Decoded::Run(r)) => r.targets,
        other => panic!("expected a run, got {other:?}"),
    };
    let ignored = |d: Result<Decoded, String>| matches!(d, Ok(Decoded::Ignore(_)));

    assert_eq!(one(w.decode(&scheduler_event())), Targets::All);
    assert_eq!(one(w.decode(&classic_schedule_event())), Targets::All);
    assert!(matches!(one(w.decode(&label_event(w.id(), &arn, "AWSCURRENT"))), Targets::One(_)));
    for own in ["SCIM_RELAY_APPLIED", "SCIM_RELAY_REJECTED", "MY_LABEL"] {
        assert!(ignored(w.decode(&label_event(w.id(), &arn, own))), "{own} must never trigger a sync");
    }
    assert!(ignored(w.decode(&label_event(
        "someone-else",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:someone-else-AbCdEf",
        "AWSCURRENT"
    ))));
    for (name, key, a) in [
        ("PutSecretValue", "arn", arn.as_str()),
        ("UpdateSecret", "aRN", arn.as_str()),
        ("PutSecretValue", "ARN", arn_no_suffix.as_str()),
    ] {
        assert!(matches!(one(w.decode(&cloudtrail_event(name, w.id(), key, a))), Targets::One(_)), "{name} {key}");
    }
    // By ARN only (the request named the secret by ARN, without the suffix).
    assert!(matches!(one(w.decode(&cloudtrail_event("PutSecretValue", &arn_no_suffix, "x", ""))), Targets::One(_)));
    assert!(ignored(w.decode(&cloudtrail_event("GetSecretValue", w.id(), "arn", &arn))));
    assert!(ignored(w.decode(&cloudtrail_event(
        "PutSecretValue",
        "other/secret",
        "arn",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/secret-AbCdEf"
    ))));
    let mut failed_call = cloudtrail_event("PutSecretValue", w.id(), "arn", &arn);
    failed_call["detail"]["errorCode"] = json!("AccessDenied");
    assert!(ignored(w.decode(&failed_call)));
    for unknown in [
        json!({"source":"aws.s3","detail-type":"Object Created","detail":{}}),
        json!({"source":"aws.secretsmanager","detail-type":"Secret Rotation Succeeded","detail":{}}),
        json!({"Records":[{"eventSource":"aws:sqs"}]}),
    ] {
        let e = w.decode(&unknown).unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}

#[tokio::test]
async fn secret_update_event_applies_that_secret_only_and_own_labels_do_not_loop() {
    let w = World::with_targets("evrun", 2).await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    let v = w.put_to(&w.secret_ids[1], &t).await;
    let arn = w.sm.describe_secret().secret_id(&w.secret_ids[1]).send().await.unwrap().arn.unwrap();
    let r = w.invoke(label_event(&w.secret_ids[1], &arn, "AWSCURRENT")).await.unwrap();
    assert_eq!(r.results.len(), 1);
    assert_eq!((r.results[0].secret_id.as_str(), r.results[0].outcome), (w.secret_ids[1].as_str(), Outcome::Applied));
    // The label move we just made raises its own event: a no-op.
    let e = w.invoke(label_event(&w.secret_ids[1], &arn, "SCIM_RELAY_APPLIED")).await.unwrap_err();
    assert!(e.starts_with("ignored"), "{e}");
    assert!(w.labels_of(&w.secret_ids[1]).await[&v].contains(&"SCIM_RELAY_APPLIED".to_owned()));
    // A schedule covers both targets.
    let r = w.invoke(scheduler_event()).await.unwrap();
    assert_eq!(r.results.len(), 2);
}

// -------------------------------------------------------------- expiry --

#[tokio::test]
async fn expiring_alerts_once_per_threshold_across_many_runs() {
    let w = World::with_applied("thresholds", EXPIRY, Some(100.0)).await.0;
    let mut sent = Vec::new();
    // Several runs a day, from 40 days left down to the last day.
    for days in [40.0, 35.5, 30.0, 29.9, 29.0, 20.0, 14.0, 13.5, 10.0, 7.0, 6.9, 5.0, 3.0, 2.5, 1.0, 0.5, 0.1] {
        w.set_days_before(EXPIRY, days);
        for _ in 0..2 {
            let r = w.sync().await;
            let res = &r.results[0];
            assert_eq!(res.outcome, Outcome::Unchanged, "{}", res.message);
            assert_eq!(res.expires_at.as_deref(), Some(EXPIRY));
            if res.alerts.contains(&AlertKind::Expiring) {
                sent.push(res.days_left.unwrap());
            }
        }
    }
    assert_eq!(sent, [30, 14, 7, 3, 1]);
    let alerts = w.alerts().await;
    let expiring: Vec<&(String, String)> = alerts.iter().filter(|(s, _)| s.contains("expires in")).collect();
    assert_eq!(expiring.len(), 5);
    assert!(expiring[0].0.contains("30 day"), "{}", expiring[0].0);
    assert!(expiring[0].1.contains("2030-06-30"), "{}", expiring[0].1);
    w.assert_no_leaks();
}

#[tokio::test]
async fn a_smaller_warning_window_skips_outer_thresholds() {
    let mut w = World::with_applied("window", EXPIRY, Some(100.0)).await.0;
    w.env.insert("EXPIRY_WARNING_DAYS".into(), "10".into());
    let mut sent = Vec::new();
    for days in [20.0, 14.0, 9.0, 7.0, 3.0] {
        w.set_days_before(EXPIRY, days);
        let r = w.sync().await;
        if r.results[0].alerts.contains(&AlertKind::Expiring) {
            sent.push(r.results[0].days_left.unwrap());
        }
    }
    assert_eq!(sent, [7, 3]);
}

#[tokio::test]
async fn expired_alerts_once_a_day() {
    let w = World::with_applied("expired", EXPIRY, Some(100.0)).await.0;
    let mut per_day = Vec::new();
    for hours_after in [1, 5, 23, 25, 30, 49] {
        let at: jiff::Timestamp = EXPIRY.parse().unwrap();
        w.now.store(at.as_second() + hours_after * 3600, std::sync::atomic::Ordering::SeqCst);
        let r = w.sync().await;
        assert!(r.results[0].days_left.unwrap() < 0);
        per_day.push(r.results[0].alerts.contains(&AlertKind::Expired));
    }
    // Day 1 (hours 1–23): once; day 2 (25–30): once; day 3 (49): once.
    assert_eq!(per_day, [true, false, false, true, false, true]);
    let alerts = w.alerts().await;
    assert!(alerts.iter().any(|(s, b)| s.contains("EXPIRED") && b.contains("Generate a new token")));
}

#[tokio::test]
async fn a_rejected_newer_version_does_not_silence_the_warning() {
    let w = World::with_applied("stillwarn", EXPIRY, Some(100.0)).await.0;
    w.set_days_before(EXPIRY, 20.0);
    let bad = w.token("refused");
    w.put(&bad).await;
    let r = w.sync().await;
    assert_eq!(r.results[0].outcome, Outcome::Rejected);
    w.set_days_before(EXPIRY, 14.0);
    let r = w.sync().await;
    assert_eq!(kinds(&r), [AlertKind::Expiring], "{}", r.results[0].message);
}

#[tokio::test]
async fn a_new_token_resets_the_thresholds() {
    let w = World::with_applied("reset", EXPIRY, Some(100.0)).await.0;
    w.set_days_before(EXPIRY, 10.0);
    assert_eq!(kinds(&w.sync().await), [AlertKind::Expiring]);
    w.put_token("next", "2031-06-30").await;
    assert_eq!(kinds(&w.sync().await), [AlertKind::Applied]);
    w.now.store(
        "2031-06-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second(),
        std::sync::atomic::Ordering::SeqCst,
    );
    assert_eq!(kinds(&w.sync().await), [AlertKind::Expiring], "thresholds start afresh for the new token");
}

// --------------------------------------------------------- job health --

#[tokio::test]
async fn quarantine_alert_once_per_series() {
    let w = World::with_applied("qseries", EXPIRY, Some(100.0)).await.0;
    w.sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    let r = w.sync().await;
    assert_eq!(r.results[0].job_status.as_deref(), Some("Quarantine"));
    assert_eq!(kinds(&r), [AlertKind::Quarantine]);
    assert!(kinds(&w.sync().await).is_empty(), "same series: no second alert");
    assert!(!w.sim.requests().iter().any(|q| q.route == Some(Route::Start)), "no new token: the job is left alone");
    let alerts = w.alerts().await;
    let (subject, body) = alerts.last().unwrap();
    assert!(subject.contains("quarantine"), "{subject}");
    assert!(body.contains("EncounteredQuarantineException") && body.contains("quarantined since"), "{body}");
    // A new series (Entra restarts the count later) is announced again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    w.sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    assert_eq!(kinds(&w.sync().await), [AlertKind::Quarantine]);
}

// ------------------------------------------------------- many targets --

#[tokio::test]
async fn three_targets_one_fails_the_others_finish_in_order() {
    let mut w = World::with_new_tokens("three", 3, 3).await;
    // The middle target points at a job that does not exist.
    w.env.insert(
        "SCIM_RELAY_TARGET_SETTINGS".into(),
        json!({ &w.secret_ids[1]: {"ENTRA_JOB_ID": "Apple.missing.job"} }).to_string(),
    );
    w.sim.push_fault(Route::Token, Fault::Status { code: 503, retry_after: None });
    let r = w.sync().await;
    let got: Vec<(&str, Outcome)> = r.results.iter().map(|x| (x.secret_id.as_str(), x.outcome)).collect();
    assert_eq!(
        got,
        [
            (w.secret_ids[0].as_str(), Outcome::Applied),
            (w.secret_ids[1].as_str(), Outcome::Failed),
            (w.secret_ids[2].as_str(), Outcome::Applied)
        ]
    );
    assert!(r.results[1].message.contains("not found"), "{}", r.results[1].message);
    let err = r.error_summary().expect("a failed target makes the invocation an error");
    assert!(err.starts_with("1 of 3 target(s) failed"), "{err}");
    assert_eq!(w.sim.token_requests(), 1, "one Graph token shared by all targets");
    w.assert_no_leaks();
}

#[tokio::test]
async fn graph_requests_in_flight_stay_within_the_concurrency_and_the_credential_is_read_once() {
    let w = World::with_new_tokens("inflight", 6, 2).await;
    // Slow Graph calls, so that targets in progress compete for Graph slots.
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Slow(std::time::Duration::from_millis(150))));
    w.sim.set_fault_always(Route::GetJob, Some(Fault::Slow(std::time::Duration::from_millis(150))));
    w.proxy.clear_calls();
    let r = w.sync().await;
    assert!(r.results.iter().all(|x| x.outcome == Outcome::Applied), "{:?}", r.results);
    // Four targets are in progress at once, but never more than two Graph
    // requests: the limit is reached, not exceeded.
    assert_eq!(w.sim.max_graph_in_flight(), 2);
    // One read of each new version, and one of the Graph client secret,
    // shared by sign-in and the credential's expiry watch.
    let reads = w.proxy.calls().iter().filter(|c| *c == "secretsmanager.GetSecretValue").count();
    assert_eq!(reads, w.secret_ids.len() + 1);
    w.assert_no_leaks();
}

/// Expiry alerts do not depend on Graph: with every Graph and sign-in call
/// answering 503, a target 5 days from expiry still gets its `expiring`
/// alert and its DaysLeft metric, and its outcome is `failed`. Through the
/// real binary (real clock: the token is stored to expire in 5½ days).
#[tokio::test]
async fn expiry_alerts_go_out_while_graph_is_down() {
    let w = World::new("graph-down").await;
    let t = w.token("live");
    w.sim.accept_token(&t);
    let expires = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(5 * 24 + 12)).unwrap();
    w.put(&json!({"token": t, "expires_at": expires.to_string()}).to_string()).await;
    w.sim.set_accept_all(false);
    let applied = w.invoke_binary(json!({})).await;
    assert_eq!(applied.outcomes(), ["applied"], "{}", applied.stderr);
    let before = w.alerts().await.len();
    w.sim.set_fault_always(Route::Any, Some(Fault::Status { code: 503, retry_after: Some(0) }));
    let inv = w.invoke_binary(json!({})).await;
    let e = inv.error();
    assert!(e.error_message.contains("failed"), "{e:?}");
    let days: Vec<i64> = inv.emf().iter().filter_map(|d| d["DaysLeft"].as_i64()).collect();
    assert_eq!(days, [5], "DaysLeft is emitted for the failed target:\n{}", inv.stdout);
    let outcomes: Vec<String> = inv.emf().iter().filter_map(|d| d["Outcome"].as_str().map(str::to_owned)).collect();
    assert_eq!(outcomes, ["failed"]);
    let alerts = w.alerts().await;
    let new: Vec<&String> = alerts[before..].iter().map(|(s, _)| s).collect();
    assert!(new.iter().any(|s| s.contains("expires")), "no expiring alert: {new:?}");
    assert!(new.iter().any(|s| s.contains("failed")), "no failed alert: {new:?}");
    // Recorded (sealed) despite the failure: the next run does not repeat it.
    let again = w.invoke_binary(json!({})).await;
    assert!(again.result.is_err());
    let alerts2 = w.alerts().await;
    assert!(!alerts2[alerts.len()..].iter().any(|(s, _)| s.contains("expires")), "{alerts2:?}");
}
