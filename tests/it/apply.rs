//! The apply path end to end: real moto_server (Secrets Manager + SNS), the
//! Entra simulator, the real AWS and Graph adapters. One scenario a test.

use std::time::Duration;

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::renew::{Outcome, LABEL_APPLIED, LABEL_REJECTED};
use serde_json::json;

fn outcome(r: &scim_relay::lambda::relay::RunReport) -> Outcome {
    r.results[0].outcome
}

/// The token every "applied" world starts from expires on this day.
const FIRST_EXPIRY: &str = "2099-11-20";

#[tokio::test]
async fn applied() {
    let w = World::new("applied").await;
    let t = w.token("new");
    w.sim.accept_token(&t);
    let v = w.put(&format!("\u{feff}  {t}\n")).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Applied, "{}", res.message);
    assert_eq!(res.version_id.as_deref(), Some(v.as_str()));
    assert_eq!(res.expires_source.map(|s| s.as_str()), Some("assumed"));
    assert!(res.days_left.unwrap() >= 364);
    assert_eq!(res.job_status.as_deref(), Some("Active"));
    assert_eq!(res.alerts.len(), 1);
    assert_eq!(w.saved_token().as_deref(), Some(t.as_str()));
    assert_eq!(w.sim.saved_credentials(SP).unwrap().0, "https://federation.apple.com/feeds/business/scim");
    assert_eq!(w.version_with(LABEL_APPLIED).await.as_deref(), Some(v.as_str()));
    let tags = w.tags().await;
    assert_eq!(tags["scim-relay:status"], "applied");
    assert_eq!(tags["scim-relay:expires-source"], "assumed");
    assert!(tags.contains_key("scim-relay:checked-at") && tags.contains_key("scim-relay:expires-at"));
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].0.contains("applied"), "{}", alerts[0].0);
    assert!(alerts[0].1.contains("revoke the old token"), "{}", alerts[0].1);
    assert!(alerts[0].1.contains(TENANT));
    // The sequence as Graph saw it: test, save, re-test, read job.
    let routes: Vec<Route> = w.sim.requests().iter().filter_map(|r| r.route).collect();
    assert_eq!(
        routes,
        [Route::Token, Route::ValidateCredentials, Route::PutSecrets, Route::ValidateCredentials, Route::GetJob]
    );
    w.assert_no_leaks();
}

#[tokio::test]
async fn explicit_expiry_and_tenant_url_from_the_secret() {
    let w = World::new("explicit").await;
    let t = w.token("asm");
    w.sim.accept_token(&t);
    w.put(&json!({"token": t, "expires_at": "2099-01-31", "tenant_url": "https://federation.apple.com/feeds/school/scim"}).to_string()).await;
    let r = w.sync().await;
    assert_eq!(outcome(&r), Outcome::Applied);
    assert_eq!(r.results[0].expires_at.as_deref(), Some("2099-01-31T00:00:00Z"));
    assert_eq!(r.results[0].expires_source.map(|s| s.as_str()), Some("explicit"));
    assert_eq!(w.sim.saved_credentials(SP).unwrap().0, "https://federation.apple.com/feeds/school/scim");
    assert_eq!(w.tags().await["scim-relay:expires-at"], "2099-01-31T00:00:00Z");
}

#[tokio::test]
async fn unchanged_on_rerun() {
    let (w, t, v) = World::with_applied("unchanged", FIRST_EXPIRY, None).await;
    let reads = || w.proxy.calls().iter().filter(|c| *c == "secretsmanager.GetSecretValue").count();
    w.proxy.clear_calls();
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Unchanged, "{}", res.message);
    assert_eq!(res.version_id.as_deref(), Some(v.as_str()));
    assert_eq!(res.expires_at.as_deref(), Some("2099-11-20T00:00:00Z"));
    assert!(res.alerts.is_empty());
    assert_eq!(w.entra_writes(), 0);
    assert_eq!(w.saved_token(), Some(t));
    assert_eq!(w.alerts().await.len(), 1, "only the first run alerted");
    let tags = w.tags().await;
    assert_eq!(tags["scim-relay:status"], "unchanged");
    assert_eq!(tags["scim-relay:expires-version"], v);
    // The applied version's expiry is computed from its value on every run
    // (tags are reports, never read back): the token and the Graph client
    // secret were read, once each.
    assert_eq!(reads(), 2);
    // Forged expiry tags change nothing the relay reports.
    for (k, val) in [("scim-relay:expires-version", v.as_str()), ("scim-relay:expires-at", "2099-12-31T00:00:00Z")] {
        w.sm.tag_resource()
            .secret_id(w.id())
            .tags(aws_sdk_secretsmanager::types::Tag::builder().key(k).value(val).build())
            .send()
            .await
            .unwrap();
    }
    let r = w.sync().await;
    assert_eq!(r.results[0].expires_at.as_deref(), Some("2099-11-20T00:00:00Z"));
    assert_eq!(w.tags().await["scim-relay:expires-at"], "2099-11-20T00:00:00Z", "and the report is mended");
    w.assert_no_leaks();
}

#[tokio::test]
async fn rejected_leaves_entra_untouched_and_is_not_retried_until_forced() {
    let (w, old, old_v) = World::with_applied("rejected", FIRST_EXPIRY, None).await;
    let bad = w.token("refused");
    let bad_v = w.put(&bad).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Rejected, "{}", res.message);
    assert!(r.error_summary().is_none(), "rejected is not an invocation error");
    assert_eq!(w.entra_writes(), 0, "Entra untouched");
    assert_eq!(w.saved_token(), Some(old.clone()));
    assert_eq!(w.version_with(LABEL_REJECTED).await, Some(bad_v.clone()));
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(old_v.clone()));
    assert_eq!(w.tags().await["scim-relay:status"], "rejected");
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts[1].0.contains("refused"), "{}", alerts[1].0);
    assert!(alerts[1].1.contains("still uses the previous token"));

    // Not tried again: no validateCredentials with the new token (only the
    // live check on the saved credentials), no alert.
    w.sim.clear_requests();
    let r = w.sync().await;
    assert_eq!(outcome(&r), Outcome::Unchanged);
    assert!(!w
        .sim
        .requests()
        .iter()
        .any(|q| q.route == Some(Route::ValidateCredentials) && !q.body.contains("\"useSavedCredentials\":true")));
    assert_eq!(w.alerts().await.len(), 2);

    // Forced: tried again; Apple now accepts it, so it is applied.
    w.sim.accept_token(&bad);
    let r = w.invoke(json!({"action": "apply", "secret_id": w.id(), "force": true})).await.unwrap();
    assert_eq!(outcome(&r), Outcome::Applied, "{}", r.results[0].message);
    assert_eq!(w.saved_token(), Some(bad));
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(bad_v));
    assert_eq!(w.version_with(LABEL_REJECTED).await, None, "the rejected label is taken off once it works");
    w.assert_no_leaks();
}

#[tokio::test]
async fn local_rejections_make_no_entra_call() {
    let w = World::new("local").await;
    let t = w.token("x");
    let cases: Vec<(String, &str)> = vec![
        ("   \n".into(), "empty"),
        (format!("{t} {t}"), "whitespace"),
        (format!("{t}\u{1}"), "control character"),
        ("https://federation.apple.com/feeds/business/scim".into(), "URL"),
        (json!({"token": t, "expires": "2099-01-01"}).to_string(), "unknown key(s) `expires`"),
        (json!({"token": t, "expires_at": "2001-01-01"}).to_string(), "expired"),
        (json!({"token": t, "expires_at": "next year"}).to_string(), "expires_at"),
        (json!({"token": t, "tenant_url": "http://federation.apple.com"}).to_string(), "tenant_url"),
        (json!({"expires_at": "2099-01-01"}).to_string(), "no `token`"),
        (format!("{{\"token\": \"{t}\""), "not valid JSON"),
    ];
    for (value, why) in cases {
        w.sim.clear_requests();
        let v = w.put(&value).await;
        let r = w.sync().await;
        let res = &r.results[0];
        assert_eq!(res.outcome, Outcome::Rejected, "{why}: {}", res.message);
        assert!(res.message.contains(why), "message for {why}: {}", res.message);
        assert!(w.sim.requests().is_empty(), "{why}: Entra was called: {:?}", w.sim.requests());
        assert_eq!(w.version_with(LABEL_REJECTED).await, Some(v));
    }
    assert_eq!(w.saved_token(), None);
    assert_eq!(w.alerts().await.len(), 10, "one rejected alert per bad version");
    w.assert_no_leaks();
}

#[tokio::test]
async fn rolled_back_restores_the_previous_token() {
    let (w, old, old_v) = World::with_applied("rollback", FIRST_EXPIRY, None).await;
    let new = w.token("breaks-when-saved");
    w.sim.accept_token(&new);
    w.sim.set_break_saved_after_put(true);
    let new_v = w.put(&new).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::RolledBack, "{}", res.message);
    assert_eq!(res.expires_at.as_deref(), Some("2099-11-20T00:00:00Z"), "reports the live (restored) token");
    assert_eq!(w.saved_token(), Some(old), "the old token is back in Entra");
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(old_v));
    assert_eq!(w.version_with(LABEL_REJECTED).await, Some(new_v), "not retried on every run");
    assert_eq!(w.tags().await["scim-relay:status"], "rolled_back");
    let alerts = w.alerts().await;
    assert!(alerts.last().unwrap().0.contains("rolled back"));
    let puts = w.sim.requests().iter().filter(|q| q.route == Some(Route::PutSecrets)).count();
    assert_eq!(puts, 2, "the new token, then the old one");
    w.assert_no_leaks();
}

#[tokio::test]
async fn throttling_and_unavailable_are_retried() {
    let w = World::new("retry").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    w.sim.push_fault(Route::Token, Fault::Status { code: 503, retry_after: None });
    w.sim.push_fault(Route::ValidateCredentials, Fault::Status { code: 429, retry_after: Some(1) });
    w.sim.push_fault(Route::PutSecrets, Fault::Status { code: 503, retry_after: None });
    w.sim.push_fault(Route::PutSecrets, Fault::Drop);
    w.sim.push_fault(Route::GetJob, Fault::Status { code: 504, retry_after: None });
    let started = std::time::Instant::now();
    let r = w.sync().await;
    assert_eq!(outcome(&r), Outcome::Applied, "{}", r.results[0].message);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    let statuses: Vec<u16> =
        w.sim.requests().iter().filter(|q| q.route == Some(Route::ValidateCredentials)).map(|q| q.status).collect();
    assert_eq!(statuses[..2], [429, 204]);
    assert_eq!(w.saved_token(), Some(t));
    w.assert_no_leaks();
}

#[tokio::test]
async fn persistent_5xx_fails_without_rejecting_and_the_next_run_converges() {
    let w = World::new("outage").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    let v = w.put(&t).await;
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Status { code: 503, retry_after: None }));
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Failed, "{}", res.message);
    assert!(res.message.contains("503"), "{}", res.message);
    assert!(r.error_summary().is_some(), "a failed target makes the invocation an error");
    assert_eq!(w.version_with(LABEL_REJECTED).await, None, "a transient failure never rejects");
    assert_eq!(w.entra_writes(), 0);
    assert_eq!(w.tags().await["scim-relay:status"], "failed");
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].0.contains("failed"));
    // Still failing: no second alert for the same series.
    let r = w.sync().await;
    assert_eq!(outcome(&r), Outcome::Failed);
    assert_eq!(w.alerts().await.len(), 1);
    // Graph recovers: the next run applies.
    w.sim.set_fault_always(Route::ValidateCredentials, None);
    let r = w.sync().await;
    assert_eq!(outcome(&r), Outcome::Applied, "{}", r.results[0].message);
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(v));
    w.assert_no_leaks();
}

#[tokio::test]
async fn forbidden_names_the_missing_permission() {
    let w = World::new("forbidden").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Status { code: 403, retry_after: None }));
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("Application.ReadWrite.OwnedBy"), "{}", res.message);
    assert!(res.message.contains("Synchronization.ReadWrite.All"), "{}", res.message);
    assert_eq!(w.version_with(LABEL_REJECTED).await, None, "our own permission problem is never `rejected`");
    assert_eq!(w.entra_writes(), 0);
    w.assert_no_leaks();
}

#[tokio::test]
async fn wrong_client_secret_fails_naming_the_settings() {
    let w = World::new("signin").await;
    w.sm.put_secret_value().secret_id(&w.client_secret_id).secret_string("CANARY-wrong-secret").send().await.unwrap();
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("ENTRA_CLIENT_SECRET_ID"), "{}", res.message);
    assert!(res.message.contains("invalid_client"), "{}", res.message);
    w.assert_no_leaks();
}

#[tokio::test]
async fn quarantine_is_cleared_after_applying() {
    let w = World::new("quarantine").await;
    w.sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Applied, "{}", res.message);
    assert!(res.quarantine_cleared);
    assert_eq!(w.sim.job_status(SP, JOB).as_deref(), Some("Active"));
    assert!(w.sim.requests().iter().any(|q| q.route == Some(Route::Start)));
}

#[tokio::test]
async fn a_paused_job_is_left_paused() {
    let w = World::new("paused").await;
    w.sim.set_job_status(SP, JOB, "Paused", None);
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Applied, "{}", res.message);
    assert!(!res.quarantine_cleared);
    assert_eq!(res.job_status.as_deref(), Some("Paused"));
    assert!(res.message.contains("paused"), "{}", res.message);
    assert_eq!(w.sim.job_status(SP, JOB).as_deref(), Some("Paused"));
    assert!(!w.sim.requests().iter().any(|q| matches!(q.route, Some(Route::Start | Route::Restart))));
}

#[tokio::test]
async fn job_auto_detection() {
    // One job: found and used.
    let mut w = World::new("jobs1").await;
    w.env.remove("ENTRA_JOB_ID");
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    assert_eq!(outcome(&w.sync().await), Outcome::Applied);
    assert!(w.sim.requests().iter().any(|q| q.route == Some(Route::ListJobs)));

    // Two jobs: an error that names them and the setting.
    w.sim.add_job(SP, "Apple.second.job", "Active");
    let t2 = w.token("t2");
    w.sim.accept_token(&t2);
    w.put(&t2).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("ENTRA_JOB_ID") && res.message.contains("Apple.second.job"), "{}", res.message);
    assert_eq!(w.saved_token(), Some(t), "nothing written");

    // No job on the service principal.
    let mut w0 = World::new("jobs0").await;
    w0.env.remove("ENTRA_JOB_ID");
    w0.env.insert("ENTRA_SERVICE_PRINCIPAL_ID".into(), "12345678-1234-1234-1234-123456789012".into());
    w0.sim.add_service_principal("12345678-1234-1234-1234-123456789012");
    let t0 = w0.token("t");
    w0.sim.accept_token(&t0);
    w0.put(&t0).await;
    let r = w0.sync().await;
    assert_eq!(outcome(&r), Outcome::Failed);
    assert!(r.results[0].message.contains("no provisioning job"), "{}", r.results[0].message);
    assert_eq!(w0.entra_writes(), 0);
}

#[tokio::test]
async fn check_writes_nothing_anywhere() {
    let (w, _old, _) = World::with_applied("check", FIRST_EXPIRY, None).await;
    let new = w.token("pending");
    w.sim.accept_token(&new);
    w.put(&new).await;
    let labels = w.labels().await;
    let tags = w.tags().await;
    let alerts = w.alerts().await.len();
    let r = w.invoke(json!({"action": "check"})).await.unwrap();
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Checked, "{}", res.message);
    assert!(res.message.contains("waiting to be applied"), "{}", res.message);
    assert_eq!(res.job_status.as_deref(), Some("Active"));
    assert_eq!(w.labels().await, labels);
    assert_eq!(w.tags().await, tags);
    assert_eq!(w.alerts().await.len(), alerts);
    assert_eq!(w.entra_writes(), 0);
    // The pending token is not tested; the live check tests what Entra holds.
    assert!(!w
        .sim
        .requests()
        .iter()
        .any(|q| q.route == Some(Route::ValidateCredentials) && !q.body.contains("\"useSavedCredentials\":true")));
    assert_eq!(res.live_token, Some(scim_relay::core::renew::LiveToken::Passed));
}

#[tokio::test]
async fn validate_tests_the_saved_credentials_only() {
    let (w, _old, _) = World::with_applied("validate", FIRST_EXPIRY, None).await;
    let r = w.invoke(json!({"action": "validate", "secret_id": w.id()})).await.unwrap();
    assert_eq!(outcome(&r), Outcome::Checked, "{}", r.results[0].message);
    let bodies: Vec<String> = w
        .sim
        .requests()
        .iter()
        .filter(|q| q.route == Some(Route::ValidateCredentials))
        .map(|q| q.body.clone())
        .collect();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].contains("\"useSavedCredentials\":true"), "{}", bodies[0]);
    assert_eq!(w.entra_writes(), 0);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let (w, old, _) = World::with_applied("dryrun", FIRST_EXPIRY, None).await;
    let new = w.token("new");
    w.sim.accept_token(&new);
    w.put(&new).await;
    let labels = w.labels().await;
    let tags = w.tags().await;
    let r = w.invoke(json!({"action": "sync", "dry_run": true})).await.unwrap();
    assert_eq!(outcome(&r), Outcome::WouldApply, "{}", r.results[0].message);
    // A refused token in dry run: reported, but not labelled.
    let bad = w.token("bad");
    w.put(&bad).await;
    let labels_bad = w.labels().await;
    let r = w.invoke(json!({"dry_run": true})).await.unwrap();
    assert_eq!(outcome(&r), Outcome::Rejected);
    assert_eq!(w.labels().await, labels_bad);
    assert_ne!(labels, labels_bad);
    assert_eq!(w.tags().await, tags);
    assert_eq!(w.entra_writes(), 0);
    assert_eq!(w.saved_token(), Some(old));
    assert_eq!(w.alerts().await.len(), 1, "only the first apply alerted");

    // DRY_RUN=true in the environment does the same.
    let mut w2 = World::new("dryenv").await;
    w2.env.insert("DRY_RUN".into(), "true".into());
    let t = w2.token("t");
    w2.sim.accept_token(&t);
    w2.put(&t).await;
    assert_eq!(outcome(&w2.sync().await), Outcome::WouldApply);
    assert_eq!(w2.entra_writes(), 0);
    assert_eq!(w2.version_with(LABEL_APPLIED).await, None);
}

#[tokio::test]
async fn bad_payloads_are_refused_and_change_nothing() {
    let w = World::new("payloads").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    for payload in [
        json!({"action": "rotate"}),
        json!({"action": "sync", "secretid": "x"}),
        json!({"secret_id": "not-a-target"}),
        json!({"dry_run": "yes"}),
        json!([]),
        json!({"source": "aws.s3", "detail-type": "Object Created"}),
    ] {
        let e = w.invoke(payload.clone()).await.unwrap_err();
        assert!(e.starts_with("refused the invocation payload"), "{payload}: {e}");
    }
    assert!(w.sim.requests().is_empty());
    assert_eq!(w.version_with(LABEL_APPLIED).await, None);
}

#[tokio::test]
async fn a_missing_setting_fails_that_target_naming_it() {
    let mut w = World::new("config").await;
    w.env.remove("ENTRA_SERVICE_PRINCIPAL_ID");
    let t = w.token("t");
    w.put(&t).await;
    let r = w.sync().await;
    let res = &r.results[0];
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.message.contains("ENTRA_SERVICE_PRINCIPAL_ID") && res.message.contains(w.id()), "{}", res.message);
    assert!(w.sim.requests().is_empty());
    // A tag on the secret does not supply it (tags are never settings)...
    w.sm.tag_resource()
        .secret_id(w.id())
        .tags(aws_sdk_secretsmanager::types::Tag::builder().key("scim-relay:service-principal-id").value(SP).build())
        .send()
        .await
        .unwrap();
    w.sim.accept_token(&t);
    assert_eq!(outcome(&w.sync().await), Outcome::Failed);
    assert!(w.sim.requests().is_empty());
    // ...the deployer's per-target settings do.
    w.env
        .insert("SCIM_RELAY_TARGET_SETTINGS".into(), json!({ w.id(): {"ENTRA_SERVICE_PRINCIPAL_ID": SP} }).to_string());
    assert_eq!(outcome(&w.sync().await), Outcome::Applied);
}

/// The admin's provisioning settings as the portal saved them.
const NOTIFY: &str =
    r#"{"DeleteThresholdEnabled":true,"DeleteThresholdValue":500,"Enabled":true,"Recipients":"it@school.example"}"#;

#[tokio::test]
async fn declared_provisioning_settings_survive_an_apply_and_a_rollback() {
    for replaces in [true, false] {
        let mut w = World::new(&format!("settings-{replaces}")).await;
        w.env.insert("ENTRA_SYNC_ALL".into(), "false".into());
        w.env.insert(
            "ENTRA_SYNC_NOTIFICATION_SETTINGS".into(),
            r#"{"Enabled": true, "Recipients": "it@school.example", "DeleteThresholdEnabled": true, "DeleteThresholdValue": 500}"#.into(),
        );
        w.sim.set_put_secrets_replaces(replaces);
        w.sim.set_saved_secrets(SP, &[("SyncNotificationSettings", NOTIFY), ("SyncAll", "false")]);
        let held = |w: &World| (w.sim.saved_secret(SP, "SyncAll"), w.sim.saved_secret(SP, "SyncNotificationSettings"));
        let expected = (Some("false".to_owned()), Some(NOTIFY.to_owned()));

        // Apply: one PUT with all four keys, in Microsoft's order.
        let old = w.token("first");
        w.sim.accept_token(&old);
        let old_v = w.put(&old).await;
        let r = w.sync().await;
        assert_eq!(outcome(&r), Outcome::Applied, "{}", r.results[0].message);
        assert_eq!(held(&w), expected, "replace mode {replaces}: kept after the apply");
        let keys: Vec<String> = w.sim.saved_secrets(SP).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        let put = w.sim.requests().into_iter().find(|q| q.route == Some(Route::PutSecrets)).unwrap();
        let body: serde_json::Value = serde_json::from_str(&put.body).unwrap();
        let sent: Vec<&str> = body["value"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
        assert_eq!(sent, ["BaseAddress", "SecretToken", "SyncNotificationSettings", "SyncAll"]);
        assert_eq!(body["value"][3]["value"], "false", "SyncAll is the string \"false\"");
        assert_eq!(body["value"][2]["value"], NOTIFY, "the settings are JSON text in a string");
        // validateCredentials carries only the credentials.
        let test = w.sim.requests().into_iter().find(|q| q.route == Some(Route::ValidateCredentials)).unwrap();
        assert!(!test.body.contains("SyncAll"), "validateCredentials sent a provisioning setting");
        w.sim.clear_requests();

        // Rollback: the new token breaks once saved; the restore PUT carries them too.
        let new = w.token("breaks-when-saved");
        w.sim.accept_token(&new);
        w.sim.set_break_saved_after_put(true);
        w.put(&new).await;
        let r = w.sync().await;
        assert_eq!(outcome(&r), Outcome::RolledBack, "{}", r.results[0].message);
        assert_eq!(w.saved_token(), Some(old.clone()));
        assert_eq!(w.version_with(LABEL_APPLIED).await, Some(old_v));
        assert_eq!(held(&w), expected, "replace mode {replaces}: kept after the rollback");
        let puts: Vec<_> = w.sim.requests().into_iter().filter(|q| q.route == Some(Route::PutSecrets)).collect();
        assert_eq!(puts.len(), 2, "the new token, then the old one");
        assert!(puts.iter().all(|p| p.body.contains("\"SyncAll\"") && p.body.contains("SyncNotificationSettings")));
        w.assert_no_leaks();
    }
}

#[tokio::test]
async fn undeclared_settings_are_lost_when_put_replaces_the_collection() {
    // Why the settings exist: in replace mode a PUT of two keys resets them.
    let w = World::new("settings-lost").await;
    w.sim.set_put_secrets_replaces(true);
    w.sim.set_saved_secrets(SP, &[("SyncNotificationSettings", NOTIFY), ("SyncAll", "false")]);
    let t = w.token("new");
    w.sim.accept_token(&t);
    w.put(&t).await;
    assert_eq!(outcome(&w.sync().await), Outcome::Applied);
    assert_eq!(w.sim.saved_secret(SP, "SyncAll"), None);
    assert_eq!(w.sim.saved_secret(SP, "SyncNotificationSettings"), None);
    // In merge mode (the simulator's default) they stay.
    let w = World::new("settings-merged").await;
    w.sim.set_saved_secrets(SP, &[("SyncAll", "false")]);
    let t = w.token("new");
    w.sim.accept_token(&t);
    w.put(&t).await;
    assert_eq!(outcome(&w.sync().await), Outcome::Applied);
    assert_eq!(w.sim.saved_secret(SP, "SyncAll").as_deref(), Some("false"));
}

/// The same apply through the real binary, as Lambda runs it: a scheduled
/// event in, the result document out, the alert sent, EMF metrics printed.
#[tokio::test]
async fn applied_through_the_real_binary() {
    let w = World::new("binary").await;
    let t = w.token("bin");
    w.sim.accept_token(&t);
    let v = w.put(&t).await;
    let event = json!({"version":"0","id":"e","detail-type":"Scheduled Event","source":"aws.scheduler",
        "account":"123456789012","time":"2026-12-06T00:00:00Z","region":"us-east-1","resources":[],"detail":"{}"});
    let inv = w.invoke_binary(event).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    assert_eq!(inv.report()["results"][0]["version_id"], v.as_str());
    assert_eq!(w.saved_token().as_deref(), Some(t.as_str()));
    assert_eq!(w.version_with(LABEL_APPLIED).await.as_deref(), Some(v.as_str()));
    assert_eq!(w.alerts().await.len(), 1);
    assert!(!inv.emf().is_empty(), "no EMF metrics on stdout:\n{}", inv.stdout);
    // A second run finds nothing new; a bad payload is a refused invocation.
    assert_eq!(w.invoke_binary(json!({})).await.outcomes(), ["unchanged"]);
    let bad = w.invoke_binary(json!({"action": "rotate"})).await;
    assert!(bad.error().error_message.contains("unknown action"), "{:?}", bad.error());
}

/// The declared settings through the real binary: an apply, then a rollback.
#[tokio::test]
async fn provisioning_settings_survive_a_rollback_through_the_real_binary() {
    let w = World::new("settings-binary").await;
    w.sim.set_put_secrets_replaces(true);
    w.sim.set_saved_secrets(SP, &[("SyncNotificationSettings", NOTIFY), ("SyncAll", "false")]);
    let env = [("ENTRA_SYNC_ALL", "false"), ("ENTRA_SYNC_NOTIFICATION_SETTINGS", NOTIFY)];
    let old = w.token("first");
    w.sim.accept_token(&old);
    w.put(&old).await;
    let inv = w.invoke_binary_env(json!({}), &env).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    let new = w.token("breaks-when-saved");
    w.sim.accept_token(&new);
    w.sim.set_break_saved_after_put(true);
    w.put(&new).await;
    let inv = w.invoke_binary_env(json!({}), &env).await;
    assert_eq!(inv.outcomes(), ["rolled_back"], "{}", inv.stderr);
    assert_eq!(w.saved_token(), Some(old));
    assert_eq!(w.sim.saved_secret(SP, "SyncAll").as_deref(), Some("false"));
    assert_eq!(w.sim.saved_secret(SP, "SyncNotificationSettings").as_deref(), Some(NOTIFY));
    // A malformed setting is refused naming it, before anything is written.
    w.sim.clear_requests();
    let inv = w.invoke_binary_env(json!({}), &[("ENTRA_SYNC_ALL", "yes")]).await;
    assert!(inv.error().error_message.contains("ENTRA_SYNC_ALL"), "{:?}", inv.error());
    assert_eq!(w.entra_writes(), 0);
}

/// The Lambda handler is a library function: the same code path as the
/// binary's, called directly (decode, run, result or typed error).
#[tokio::test]
async fn the_handler_is_a_function_tests_can_call() {
    let w = World::new("handler-fn").await;
    let t = w.token("h");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let relay = w.relay();
    let ok = scim_relay::lambda::handler::invoke(&relay, &json!({}), Duration::from_secs(60)).await.unwrap();
    assert_eq!(ok["results"][0]["outcome"], "applied", "{ok}");
    let bad = scim_relay::lambda::handler::invoke(&relay, &json!({"action": "rotate"}), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(bad.error_type(), "BadRequest");
    assert!(bad.message().contains("unknown action"), "{}", bad.message());
}
