//! Live token health (issue 14): runs with nothing new to apply press Test
//! Connection on the credentials Entra holds, end to end against moto_server
//! and the Entra simulator.

use std::sync::atomic::Ordering;

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::alert::AlertKind;
use scim_relay::core::renew::{LiveToken, Outcome};
use scim_relay::lambda::relay::RunReport;
use serde_json::{json, Value};

const EXPIRY: &str = "2030-06-30T00:00:00Z";

/// A target whose second token (version returned) is applied; the first one
/// is the "old" token the admin should now revoke in ABM.
async fn renewed(name: &str, live_check: &str) -> (World, String, String) {
    let mut w = World::new(name).await;
    w.env.insert("SCIM_RELAY_LIVE_CHECK".into(), live_check.into());
    w.set_days_before(EXPIRY, 300.0);
    w.apply_token("old", "2030-01-01").await;
    let (new, v) = w.apply_token("new", EXPIRY).await;
    (w, v, new)
}

fn kinds(r: &RunReport) -> Vec<AlertKind> {
    r.results.iter().flat_map(|r| r.alerts.clone()).collect()
}

/// The `LiveTokenValid` value the run's EMF line for the first target carries.
fn live_metric(r: &RunReport) -> Option<i64> {
    let lines = scim_relay::lambda::metrics::emf_lines(r, 0, 1_700_000_000_000);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    first.get("LiveTokenValid").and_then(Value::as_i64)
}

/// The value of a sealed record (`VALUE@MAC`), without its seal.
fn record(tags: &std::collections::HashMap<String, String>, key: &str) -> String {
    let raw = &tags[key];
    assert!(raw.contains('@'), "{key} is sealed: {raw}");
    raw.rsplit_once('@').unwrap().0.to_owned()
}

fn validations(w: &World) -> usize {
    w.sim
        .requests()
        .iter()
        .filter(|r| r.route == Some(Route::ValidateCredentials) && r.body.contains("\"useSavedCredentials\":true"))
        .count()
}

// ------------------------------------------- through the real binary --
//
// These run target/debug/scim-relay through a Lambda Runtime API emulator,
// with the real clock; the daily mode, which needs a clock to move, is
// tested in-process below.

fn scheduled() -> Value {
    json!({"version":"0","id":"e","detail-type":"Scheduled Event","source":"aws.scheduler","account":"123456789012",
        "time":"2026-12-06T00:00:00Z","region":"us-east-1","resources":[],"detail":"{}"})
}

/// Like [`renewed`], through the binary and on the real clock.
async fn renewed_binary(name: &str, live_check: &str) -> (World, String, String) {
    let mut w = World::new(name).await;
    w.env.insert("SCIM_RELAY_LIVE_CHECK".into(), live_check.into());
    w.put_token("old", "2029-01-01").await;
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["applied"]);
    let (new, v) = w.put_token("new", EXPIRY).await;
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["applied"]);
    (w, v, new)
}

fn target(inv: &Invocation) -> &Value {
    &inv.report()["results"][0]
}

fn alert_kinds(inv: &Invocation) -> Vec<String> {
    target(inv)["alerts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

/// `LiveTokenValid` from the binary's EMF documents, with its dimensions.
fn live_valid(inv: &Invocation) -> Option<i64> {
    inv.emf().iter().find_map(|d| {
        let v = d.get("LiveTokenValid")?.as_i64()?;
        let directive = d["_aws"]["CloudWatchMetrics"]
            .as_array()?
            .iter()
            .find(|m| m["Metrics"].as_array().is_some_and(|ms| ms.iter().any(|x| x["Name"] == "LiveTokenValid")))?;
        assert_eq!(directive["Namespace"], "ScimRelay");
        assert!(
            directive["Dimensions"].as_array()?.contains(&json!(["FunctionName"])),
            "without SecretId, for the stack's alarm"
        );
        assert!(d["FunctionName"].is_string());
        Some(v)
    })
}

#[tokio::test]
async fn first_check_after_applied_confirms_the_old_token_could_be_revoked() {
    let (w, v, _) = renewed_binary("confirm", "every-run").await;
    assert_eq!(record(&w.tags().await, "scim-relay:live-token"), format!("{v}:applied"));
    let inv = w.invoke_binary(scheduled()).await;
    let t = target(&inv);
    assert_eq!((t["outcome"].as_str(), t["live_token"].as_str()), (Some("unchanged"), Some("passed")));
    let msg = t["message"].as_str().unwrap();
    assert!(msg.contains("still passes after the old token could be revoked"), "{msg}");
    assert_eq!(live_valid(&inv), Some(1));
    assert!(alert_kinds(&inv).is_empty(), "the good case is recorded, not announced");
    assert_eq!(record(&w.tags().await, "scim-relay:live-token"), format!("{v}:passed"));
    // Later runs just say it passes.
    let inv = w.invoke_binary(scheduled()).await;
    let msg = target(&inv)["message"].as_str().unwrap();
    assert!(msg.contains("pass Test Connection") && !msg.contains("revoked"), "{msg}");
}

#[tokio::test]
async fn wrong_token_discarded_alerts_once_across_three_runs() {
    let (w, v, new) = renewed_binary("wrongtoken", "every-run").await;
    let applied_alerts = w.alerts().await.len();
    let writes = w.entra_writes();
    // The admin revoked the new token in ABM instead of the old one.
    w.sim.refuse_token(&new);
    let mut sent = Vec::new();
    for run in 0..3 {
        let inv = w.invoke_binary(scheduled()).await;
        // A refused live token is no invocation error (retrying cannot help).
        let t = target(&inv);
        assert_eq!(
            (t["outcome"].as_str(), t["live_token"].as_str()),
            (Some("unchanged"), Some("refused")),
            "run {run}"
        );
        let msg = t["message"].as_str().unwrap();
        assert!(msg.contains("REFUSES the live token") && msg.contains(&v), "{msg}");
        assert_eq!(live_valid(&inv), Some(0), "run {run}");
        sent.extend(alert_kinds(&inv));
    }
    assert_eq!(sent, ["live_token_refused"], "one alert across three runs");
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), applied_alerts + 1);
    let (subject, body) = alerts.last().unwrap();
    assert!(subject.contains("Apple refuses the live SCIM token"), "{subject}");
    for needed in [v.as_str(), "applied 20", "wrong token", "Generate a new token", "which tokens are left"] {
        assert!(body.contains(needed), "the alert must say {needed:?}: {body}");
    }
    // Nothing was written to Entra, no label moved.
    assert_eq!(w.entra_writes(), writes);
    assert_eq!(w.version_with("SCIM_RELAY_APPLIED").await.as_deref(), Some(v.as_str()));
    assert!(w.version_with("SCIM_RELAY_REJECTED").await.is_none());
    let tags = w.tags().await;
    assert_eq!(record(&tags, "scim-relay:live-token"), format!("{v}:refused"));
    assert!(record(&tags, "scim-relay:live-refused-alerted").starts_with(&format!("{v}:20")));

    // Apple accepts it again (the token was not revoked after all): one
    // `live_token_ok` closes the series.
    w.sim.accept_token(&new);
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(target(&inv)["live_token"], "passed");
    assert!(target(&inv)["message"].as_str().unwrap().contains("again"));
    assert_eq!(alert_kinds(&inv), ["live_token_ok"]);
    assert_eq!(live_valid(&inv), Some(1));
    assert_eq!(record(&w.tags().await, "scim-relay:live-refused-alerted"), "none");
    assert!(alert_kinds(&w.invoke_binary(scheduled()).await).is_empty());
    // A later refusal is a new series.
    w.sim.refuse_token(&new);
    assert_eq!(alert_kinds(&w.invoke_binary(scheduled()).await), ["live_token_refused"]);
}

#[tokio::test]
async fn a_new_token_applied_closes_the_series() {
    let (w, v, new) = renewed_binary("closes", "every-run").await;
    w.sim.refuse_token(&new);
    assert_eq!(alert_kinds(&w.invoke_binary(scheduled()).await), ["live_token_refused"]);
    // The admin follows the alert: a new token, stored and applied.
    let (_, v3) = w.put_token("fresh", EXPIRY).await;
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(inv.outcomes(), ["applied"]);
    assert_eq!(alert_kinds(&inv), ["applied"]);
    let (_, body) = w.alerts().await.last().unwrap().clone();
    assert!(body.contains(&format!("closes the live_token_refused notice about version {v}")), "{body}");
    let tags = w.tags().await;
    assert_eq!(record(&tags, "scim-relay:live-refused-alerted"), "none");
    assert_eq!(record(&tags, "scim-relay:live-token"), format!("{v3}:applied"));
    // The next run confirms the new token, with no second closing notice.
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(target(&inv)["live_token"], "passed");
    assert!(alert_kinds(&inv).is_empty());
    assert_eq!(live_valid(&inv), Some(1));
}

#[tokio::test]
async fn transient_failure_of_the_saved_credentials_test_is_failed_not_refused() {
    let (w, _, _) = renewed_binary("transient", "every-run").await;
    let before = w.alerts().await.len();
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Status { code: 503, retry_after: None }));
    let inv = w.invoke_binary(scheduled()).await;
    // `failed` makes the invocation an error, so Lambda retries.
    let e = inv.error();
    assert!(e.error_message.contains("testing the saved credentials"), "{e:?}");
    assert!(!e.error_message.to_lowercase().contains("refuse"), "{e:?}");
    assert_eq!(live_valid(&inv), None, "no data point: the test did not finish");
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), before + 1);
    assert!(alerts.last().unwrap().0.contains("failed"), "{:?}", alerts.last());
    let tags = w.tags().await;
    assert!(!tags.contains_key("scim-relay:live-refused-alerted"));
    assert!(!record(&tags, "scim-relay:live-token").ends_with(":refused"));
    // Graph recovers: the live token passes, nothing about a refusal is sent.
    w.sim.set_fault_always(Route::ValidateCredentials, None);
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(
        (target(&inv)["outcome"].as_str(), target(&inv)["live_token"].as_str()),
        (Some("unchanged"), Some("passed"))
    );
    assert!(alert_kinds(&inv).iter().all(|k| !k.starts_with("live_token")));
}

#[tokio::test]
async fn check_never_alerts_or_records() {
    let (w, v, new) = renewed_binary("check", "every-run").await;
    w.sim.refuse_token(&new);
    let alerts = w.alerts().await.len();
    let tags = w.tags().await;
    for _ in 0..2 {
        let inv = w.invoke_binary(json!({"action": "check"})).await;
        let t = target(&inv);
        assert_eq!((t["outcome"].as_str(), t["live_token"].as_str()), (Some("checked"), Some("refused")));
        let msg = t["message"].as_str().unwrap();
        assert!(msg.contains("REFUSES the live token") && msg.contains(&v), "{msg}");
        assert!(alert_kinds(&inv).is_empty());
    }
    assert_eq!(w.alerts().await.len(), alerts, "check sends nothing");
    assert_eq!(w.tags().await, tags, "check records nothing");
    // A dry run reports like check.
    let inv = w.invoke_binary(json!({"dry_run": true})).await;
    assert_eq!(target(&inv)["live_token"], "refused");
    assert!(alert_kinds(&inv).is_empty());
    assert_eq!(w.tags().await, tags, "a dry run records nothing");
    assert_eq!(w.alerts().await.len(), alerts);
    // `validate` stays as it was: refused saved credentials → failed.
    let inv = w.invoke_binary(json!({"action": "validate"})).await;
    assert!(inv.error().error_message.contains("refused the saved credentials"), "{:?}", inv.error());
}

#[tokio::test]
async fn off_never_tests_the_saved_credentials() {
    let (w, _, new) = renewed_binary("off", "off").await;
    w.sim.refuse_token(&new);
    w.sim.clear_requests();
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(
        (target(&inv)["outcome"].as_str(), target(&inv)["live_token"].as_str()),
        (Some("unchanged"), Some("not_checked"))
    );
    assert!(alert_kinds(&inv).is_empty());
    assert_eq!(live_valid(&inv), None);
    let inv = w.invoke_binary(json!({"action": "check"})).await;
    assert_eq!(target(&inv)["live_token"], "not_checked");
    assert_eq!(validations(&w), 0);
    // A bad value is refused, naming the setting.
    let inv = w.invoke_binary_env(scheduled(), &[("SCIM_RELAY_LIVE_CHECK", "hourly")]).await;
    assert!(inv.error().error_message.contains("SCIM_RELAY_LIVE_CHECK"), "{:?}", inv.error());
}

// ---------------------------------------------------------- in-process --

#[tokio::test]
async fn daily_mode_tests_once_per_utc_day() {
    let (w, _, new) = renewed("daily", "daily").await;
    // Noon UTC, so that a few hours later is still the same date.
    let noon = w.now.load(Ordering::SeqCst) / 86_400 * 86_400 + 12 * 3_600;
    w.now.store(noon, Ordering::SeqCst);
    w.sim.clear_requests();
    let r = w.sync().await;
    assert_eq!(r.results[0].live_token, Some(LiveToken::Passed));
    assert_eq!(validations(&w), 1);
    for hours in [1, 6, 11] {
        w.now.store(noon + hours * 3_600, Ordering::SeqCst);
        let r = w.sync().await;
        assert_eq!(r.results[0].live_token, Some(LiveToken::NotChecked));
        assert!(r.results[0].message.contains("already ran today"), "{}", r.results[0].message);
        assert_eq!(live_metric(&r), None);
    }
    assert_eq!(validations(&w), 1, "once per UTC day");
    // The next UTC day tests again, and finds the refusal.
    w.sim.refuse_token(&new);
    w.now.store(noon + 13 * 3_600, Ordering::SeqCst);
    let r = w.sync().await;
    assert_eq!(r.results[0].live_token, Some(LiveToken::Refused));
    assert_eq!(kinds(&r), vec![AlertKind::LiveTokenRefused]);
    assert_eq!(validations(&w), 2);
    // `check` is on demand: it tests whatever the day.
    let r = w.invoke(json!({"action": "check"})).await.unwrap();
    assert_eq!(r.results[0].live_token, Some(LiveToken::Refused));
    assert_eq!(validations(&w), 3);
}

#[tokio::test]
async fn an_expired_live_token_is_left_to_the_expired_alert() {
    let (w, _, new) = renewed("expired", "every-run").await;
    w.set_days_before(EXPIRY, -2.0);
    w.sim.refuse_token(&new);
    let r = w.sync().await;
    assert_eq!(r.results[0].live_token, Some(LiveToken::Refused));
    assert_eq!(kinds(&r), vec![AlertKind::Expired], "not also live_token_refused");
}

/// The figure for the closing note: Graph requests per target of a
/// scheduled run with nothing new to apply, counted at the simulator.
#[tokio::test]
async fn graph_calls_per_target_per_scheduled_run() {
    let mut counts = Vec::new();
    for mode in ["off", "every-run"] {
        let mut w = World::with_new_tokens(&format!("calls-{mode}"), 3, 2).await;
        w.env.insert("SCIM_RELAY_LIVE_CHECK".into(), mode.into());
        assert!(w.sync().await.results.iter().all(|r| r.outcome == Outcome::Applied));
        w.sim.clear_requests();
        let r = w.sync().await;
        assert!(r.results.iter().all(|r| r.outcome == Outcome::Unchanged));
        let reqs = w.sim.requests();
        let per = |route: Route| reqs.iter().filter(|r| r.route == Some(route)).count();
        counts.push((per(Route::Token), per(Route::GetJob), per(Route::ValidateCredentials), reqs.len()));
    }
    // Sign-in once per run for the shared app; per target: GET job, plus
    // validateCredentials with the check on (ENTRA_JOB_ID set: no job list).
    assert_eq!(counts[0], (1, 3, 0, 4), "off");
    assert_eq!(counts[1], (1, 3, 3, 7), "every-run");
}

/// Tags are input, not configuration: planted values are never quoted in an
/// alert, and the metric comes from the test itself, not from the tags.
#[tokio::test]
async fn planted_tags_are_not_quoted_and_do_not_lift_the_metric() {
    let (w, v, new) = renewed("planted", "every-run").await;
    let tag = |k: &str, val: &str| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(val).build();
    w.sm.tag_resource()
        .secret_id(w.id())
        .tags(tag("scim-relay:applied-at", &format!("{v}@all is fine - ignore this")))
        .tags(tag("scim-relay:live-refused-alerted", "ignore this alert"))
        .send()
        .await
        .unwrap();
    w.sim.refuse_token(&new);
    let r = w.sync().await;
    assert_eq!(kinds(&r), vec![AlertKind::LiveTokenRefused]);
    let (_, body) = w.alerts().await.last().unwrap().clone();
    assert!(!body.contains("ignore") && body.contains("applied earlier"), "{body}");
    // A forged "already announced" record is no record: the alert repeats,
    // and the metric comes from the test, never from tags.
    w.sm.tag_resource().secret_id(w.id()).tags(tag("scim-relay:live-refused-alerted", &v)).send().await.unwrap();
    let r = w.sync().await;
    assert_eq!(kinds(&r), vec![AlertKind::LiveTokenRefused]);
    assert_eq!(live_metric(&r), Some(0));
    assert_eq!(r.results[0].live_token, Some(LiveToken::Refused));
    w.assert_no_leaks();
}

/// Once per series, with a weekly reminder while it lasts; a genuine old
/// record copied back cannot hold the alert back beyond that week.
#[tokio::test]
async fn refusal_is_reminded_weekly_and_a_replayed_record_cannot_silence_it() {
    let (w, _, new) = renewed("reminder", "every-run").await;
    let day0 = w.now.load(Ordering::SeqCst);
    let at_day = |d: f64| w.now.store(day0 + (d * 86_400.0) as i64, Ordering::SeqCst);
    w.sim.refuse_token(&new);
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenRefused]);
    let sealed = w.tags().await["scim-relay:live-refused-alerted"].clone();
    for d in [0.5, 1.0, 3.0, 6.5] {
        at_day(d);
        assert!(kinds(&w.sync().await).is_empty(), "day {d}: same series");
    }
    at_day(7.5);
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenRefused], "weekly reminder");
    w.sim.accept_token(&new);
    at_day(8.0);
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenOk]);
    // Day 9: the token is refused again, and someone copies the day-0 record back.
    at_day(9.0);
    w.sim.refuse_token(&new);
    w.sm.tag_resource()
        .secret_id(w.id())
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder().key("scim-relay:live-refused-alerted").value(sealed).build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenRefused], "an old record does not hold it back");
}
