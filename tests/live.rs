//! Live token health (issue 14): runs with nothing new to apply press Test
//! Connection on the credentials Entra holds, end to end against moto_server
//! and the Entra simulator.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use entra_sim::{Fault, Route};
use scim_relay::alert::AlertKind;
use scim_relay::relay::RunReport;
use scim_relay::renew::{LiveToken, Outcome, Step};
use serde_json::{json, Value};

const EXPIRY: &str = "2030-06-30T00:00:00Z";

/// A target whose second token (version returned) is applied; the first one
/// is the "old" token the admin should now revoke in ABM.
async fn renewed(name: &str, live_check: &str) -> (World, String, String) {
    let mut w = World::new(name).await;
    w.env.insert("SCIM_RELAY_LIVE_CHECK".into(), live_check.into());
    w.set_days_before(EXPIRY, 300.0);
    let old = w.token("old");
    let new = w.token("new");
    w.sim.accept_token(&old);
    w.sim.accept_token(&new);
    w.put(&json!({"token": old, "expires_at": "2030-01-01"}).to_string()).await;
    assert_eq!(w.sync().await.results[0].outcome, Outcome::Applied);
    let v = w.put(&json!({"token": new, "expires_at": EXPIRY}).to_string()).await;
    assert_eq!(w.sync().await.results[0].outcome, Outcome::Applied);
    (w, v, new)
}

fn kinds(r: &RunReport) -> Vec<AlertKind> {
    r.results.iter().flat_map(|r| r.alerts.clone()).collect()
}

/// The `LiveTokenValid` value the run's EMF line for the first target carries.
fn live_metric(r: &RunReport) -> Option<i64> {
    let lines = scim_relay::metrics::emf_lines(r, 0, 1_700_000_000_000);
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

#[tokio::test]
async fn first_check_after_applied_confirms_the_old_token_could_be_revoked() {
    let (w, v, _) = renewed("confirm", "every-run").await;
    assert_eq!(record(&w.tags().await, "scim-relay:live-token"), format!("{v}:applied"));
    let r = w.sync().await;
    let t = &r.results[0];
    assert_eq!((t.outcome, t.live_token), (Outcome::Unchanged, Some(LiveToken::Passed)));
    assert!(t.message.contains("still passes after the old token could be revoked"), "{}", t.message);
    assert_eq!(live_metric(&r), Some(1));
    assert!(kinds(&r).is_empty(), "the good case is recorded, not announced");
    assert_eq!(record(&w.tags().await, "scim-relay:live-token"), format!("{v}:passed"));
    // Later runs just say it passes.
    let t = &w.sync().await.results[0];
    assert!(t.message.contains("pass Test Connection") && !t.message.contains("revoked"), "{}", t.message);
    let json = serde_json::to_value(t).unwrap();
    assert_eq!(json["live_token"], "passed");
    w.assert_no_leaks();
}

#[tokio::test]
async fn wrong_token_discarded_alerts_once_across_three_runs() {
    let (w, v, new) = renewed("wrongtoken", "every-run").await;
    let applied_alerts = w.alerts().await.len();
    let writes = w.entra_writes();
    // The admin revoked the new token in ABM instead of the old one.
    w.sim.refuse_token(&new);
    let mut sent = Vec::new();
    for run in 0..3 {
        let r = w
            .invoke(json!({"version":"0","detail-type":"Scheduled Event","source":"aws.scheduler","detail":"{}"}))
            .await
            .unwrap();
        assert!(r.error_summary().is_none(), "a refused live token is no invocation error: {:?}", r.error_summary());
        let t = &r.results[0];
        assert_eq!((t.outcome, t.live_token), (Outcome::Unchanged, Some(LiveToken::Refused)), "run {run}");
        assert!(t.message.contains("REFUSES the live token") && t.message.contains(&v), "{}", t.message);
        assert_eq!(live_metric(&r), Some(0), "run {run}");
        sent.extend(kinds(&r));
    }
    assert_eq!(sent, vec![AlertKind::LiveTokenRefused], "one alert across three runs");
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
    assert_eq!(record(&tags, "scim-relay:live-refused-alerted"), v);

    // Apple accepts it again (say the token was not revoked after all): one
    // `live_token_ok` closes the series.
    w.sim.accept_token(&new);
    let r = w.sync().await;
    assert_eq!(r.results[0].live_token, Some(LiveToken::Passed));
    assert!(r.results[0].message.contains("again"), "{}", r.results[0].message);
    assert_eq!(kinds(&r), vec![AlertKind::LiveTokenOk]);
    assert_eq!(record(&w.tags().await, "scim-relay:live-refused-alerted"), "none");
    assert!(kinds(&w.sync().await).is_empty());
    // A later refusal is a new series.
    w.sim.refuse_token(&new);
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenRefused]);
    w.assert_no_leaks();
}

#[tokio::test]
async fn a_new_token_applied_closes_the_series() {
    let (w, v, new) = renewed("closes", "every-run").await;
    w.sim.refuse_token(&new);
    assert_eq!(kinds(&w.sync().await), vec![AlertKind::LiveTokenRefused]);
    // The admin follows the alert: a new token, stored and applied.
    let fresh = w.token("fresh");
    w.sim.accept_token(&fresh);
    let v3 = w.put(&json!({"token": fresh, "expires_at": EXPIRY}).to_string()).await;
    let r = w.sync().await;
    assert_eq!(r.results[0].outcome, Outcome::Applied);
    assert_eq!(kinds(&r), vec![AlertKind::Applied]);
    let (_, body) = w.alerts().await.last().unwrap().clone();
    assert!(body.contains(&format!("closes the live_token_refused notice about version {v}")), "{body}");
    let tags = w.tags().await;
    assert_eq!(record(&tags, "scim-relay:live-refused-alerted"), "none");
    assert_eq!(record(&tags, "scim-relay:live-token"), format!("{v3}:applied"));
    // The next run confirms the new token, with no second closing notice.
    let r = w.sync().await;
    assert_eq!(r.results[0].live_token, Some(LiveToken::Passed));
    assert!(kinds(&r).is_empty());
    w.assert_no_leaks();
}

#[tokio::test]
async fn transient_failure_of_the_saved_credentials_test_is_failed_not_refused() {
    let (w, _, _) = renewed("transient", "every-run").await;
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Status { code: 503, retry_after: None }));
    let r = w.sync().await;
    let t = &r.results[0];
    assert_eq!((t.outcome, t.failed_step, t.live_token), (Outcome::Failed, Some(Step::TestSavedToken), None));
    assert!(r.error_summary().is_some(), "failed makes the invocation an error, so Lambda retries");
    assert_eq!(kinds(&r), vec![AlertKind::Failed]);
    assert_eq!(live_metric(&r), None, "no data point: the test did not finish");
    let tags = w.tags().await;
    assert!(!tags.contains_key("scim-relay:live-refused-alerted"));
    assert!(!record(&tags, "scim-relay:live-token").ends_with(":refused"));
    // Graph recovers: the live token passes, nothing about a refusal is sent.
    w.sim.set_fault_always(Route::ValidateCredentials, None);
    let r = w.sync().await;
    assert_eq!((r.results[0].outcome, r.results[0].live_token), (Outcome::Unchanged, Some(LiveToken::Passed)));
    assert!(!kinds(&r).contains(&AlertKind::LiveTokenRefused) && !kinds(&r).contains(&AlertKind::LiveTokenOk));
    w.assert_no_leaks();
}

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
async fn check_never_alerts_or_records() {
    let (w, v, new) = renewed("check", "every-run").await;
    w.sim.refuse_token(&new);
    let alerts = w.alerts().await.len();
    let tags = w.tags().await;
    for _ in 0..2 {
        let r = w.invoke(json!({"action": "check"})).await.unwrap();
        let t = &r.results[0];
        assert_eq!((t.outcome, t.live_token), (Outcome::Checked, Some(LiveToken::Refused)));
        assert!(t.message.contains("REFUSES the live token") && t.message.contains(&v), "{}", t.message);
        assert!(kinds(&r).is_empty());
        assert!(r.error_summary().is_none());
    }
    assert_eq!(w.alerts().await.len(), alerts, "check sends nothing");
    assert_eq!(w.tags().await, tags, "check records nothing");
    // A dry run reports like check.
    let r = w.invoke(json!({"dry_run": true})).await.unwrap();
    assert_eq!((r.results[0].live_token, kinds(&r).len()), (Some(LiveToken::Refused), 0));
    assert_eq!(w.tags().await, tags, "a dry run records nothing");
    // `validate` stays as it was: the saved credentials are refused → failed.
    let r = w.invoke(json!({"action": "validate"})).await.unwrap();
    assert_eq!(r.results[0].outcome, Outcome::Failed);
    assert_eq!(r.results[0].live_token, None);
}

#[tokio::test]
async fn off_never_tests_the_saved_credentials() {
    let (w, _, new) = renewed("off", "off").await;
    w.sim.refuse_token(&new);
    w.sim.clear_requests();
    let r = w.sync().await;
    assert_eq!((r.results[0].outcome, r.results[0].live_token), (Outcome::Unchanged, Some(LiveToken::NotChecked)));
    assert!(kinds(&r).is_empty());
    let r = w.invoke(json!({"action": "check"})).await.unwrap();
    assert_eq!(r.results[0].live_token, Some(LiveToken::NotChecked));
    assert_eq!(validations(&w), 0);
    assert_eq!(live_metric(&r), None);
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
