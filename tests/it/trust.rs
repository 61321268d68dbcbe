//! Trust boundaries (SPEC "Trust boundaries"): whoever can only tag a token
//! secret, or only store a value in it, cannot redirect the token, choose
//! who receives it, lift the DaysLeft alarm or silence an alert. Each attack
//! runs through the real binary (Lambda Runtime API emulator), moto_server
//! and the Entra simulator, which records every BaseAddress it was asked to
//! test or save.

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::renew::{Outcome, LABEL_APPLIED, LABEL_REJECTED};
use serde_json::{json, Value};

const APPLE: [&str; 2] =
    ["https://federation.apple.com/feeds/business/scim", "https://federation.apple.com/feeds/school/scim"];

fn scheduled() -> Value {
    json!({"version":"0","id":"e","detail-type":"Scheduled Event","source":"aws.scheduler","account":"123456789012",
        "time":"2026-12-06T00:00:00Z","region":"us-east-1","resources":[],"detail":"{}"})
}

async fn tag(w: &World, key: &str, value: &str) {
    w.sm.tag_resource()
        .secret_id(w.id())
        .tags(aws_sdk_secretsmanager::types::Tag::builder().key(key).value(value).build())
        .send()
        .await
        .unwrap();
}

/// No BaseAddress outside Apple's endpoints (and `allowed`) ever reached Entra.
fn assert_only_allowed_addresses(w: &World, allowed: &[&str]) {
    for a in w.sim.base_addresses() {
        assert!(APPLE.contains(&a.as_str()) || allowed.contains(&a.as_str()), "{a} reached Entra");
    }
}

fn result(inv: &Invocation) -> &Value {
    &inv.report()["results"][0]
}

/// Route 1: a tag-writer sets `scim-relay:tenant-url` (and every other tag
/// that used to be a setting) to redirect the token. A new version, a forced
/// re-apply and a rollback all go to Apple only, with the deployer's tenant,
/// app and service principal.
#[tokio::test]
async fn tags_cannot_redirect_the_token_or_choose_who_receives_it() {
    let w = World::new("trust-tags").await;
    let other_sp = "12345678-1234-1234-1234-123456789abc";
    w.sim.add_job(other_sp, "Apple.evil.job", "Active");
    for (k, v) in [
        ("scim-relay:tenant-url", "https://scim.attacker.example/feeds/business/scim"),
        ("scim-relay:tenant-id", "attacker.onmicrosoft.com"),
        ("scim-relay:client-id", "12345678-1234-1234-1234-123456789abc"),
        ("scim-relay:service-principal-id", other_sp),
        ("scim-relay:job-id", "Apple.evil.job"),
        ("scim-relay:auth", "federated"),
        ("scim-relay:client-secret-id", "attacker/secret"),
    ] {
        tag(&w, k, v).await;
    }
    let first = w.token("first");
    w.sim.accept_token(&first);
    w.put(&first).await;
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    assert!(inv.stderr.contains("ignored"), "the ignored tags are logged");
    // Forced re-apply.
    let inv = w.invoke_binary(json!({"action": "apply", "force": true})).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    // A second token that fails once saved: rolled back to the first.
    let second = w.token("second");
    w.sim.accept_token(&second);
    w.put(&second).await;
    w.sim.set_break_saved_after_put(true);
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(inv.outcomes(), ["rolled_back"], "{}", inv.stderr);
    w.sim.set_break_saved_after_put(false);
    assert_eq!(w.saved_token().as_deref(), Some(first.as_str()));
    assert_only_allowed_addresses(&w, &[]);
    assert!(w.sim.saved_credentials(other_sp).is_none(), "the token reached another service principal");
    assert!(
        w.sim.requests().iter().all(|r| !r.path.contains(other_sp) && !r.path.contains("attacker")),
        "a request went to the tag's tenant or service principal"
    );
}

/// Route 2: a value-writer stores a token with its own `tenant_url` outside
/// the allow-list: rejected before any Entra call, the alert names the
/// address and the setting that would allow it.
#[tokio::test]
async fn a_stored_tenant_url_outside_the_allow_list_is_rejected_before_entra() {
    let w = World::new("trust-value").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    let v = w.put(&json!({"token": t, "tenant_url": "https://10.0.0.5:8443/x"}).to_string()).await;
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(inv.outcomes(), ["rejected"], "{}", inv.stderr);
    let msg = result(&inv)["message"].as_str().unwrap();
    assert!(msg.contains("https://10.0.0.5:8443/x") && msg.contains("SCIM_RELAY_ALLOWED_TENANT_URLS"), "{msg}");
    assert!(w.sim.requests().iter().all(|r| r.route == Some(Route::Token) || r.route.is_none()));
    assert!(w.sim.base_addresses().is_empty());
    assert_eq!(w.version_with(LABEL_REJECTED).await.as_deref(), Some(v.as_str()));
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].1.contains("https://10.0.0.5:8443/x") && alerts[0].1.contains("SCIM_RELAY_ALLOWED_TENANT_URLS"));
    // Look-alikes of Apple's address fare no better.
    for (i, url) in [
        "https://federation.apple.com.evil.example/feeds/business/scim",
        "https://federation.apple.com@evil.example/feeds/business/scim",
        "https://federation.apple.com:8443/feeds/business/scim",
    ]
    .iter()
    .enumerate()
    {
        let t = w.token(&format!("look-{i}"));
        w.sim.accept_token(&t);
        w.put(&json!({"token": t, "tenant_url": url}).to_string()).await;
        let inv = w.invoke_binary(scheduled()).await;
        assert_eq!(inv.outcomes(), ["rejected"], "{url}");
    }
    assert!(w.sim.base_addresses().is_empty());
    // Spelt differently, Apple's own address is fine and sent canonically;
    // so is an address the deployer listed.
    let t = w.token("apple");
    w.sim.accept_token(&t);
    w.put(&json!({"token": t, "tenant_url": "https://FEDERATION.APPLE.COM:443/feeds/school/scim/"}).to_string()).await;
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["applied"]);
    assert_eq!(w.sim.saved_credentials(SP).unwrap().0, APPLE[1]);
    let t = w.token("listed");
    w.sim.accept_token(&t);
    w.put(&json!({"token": t, "tenant_url": "https://scim.school.example/v2"}).to_string()).await;
    let inv =
        w.invoke_binary_env(scheduled(), &[("SCIM_RELAY_ALLOWED_TENANT_URLS", "https://scim.school.example/v2")]).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    assert_only_allowed_addresses(&w, &["https://scim.school.example/v2"]);
}

/// A setting outside the allow-list, or an endpoint that is not Microsoft's,
/// is a configuration error that names it, and nothing is called.
#[tokio::test]
async fn settings_outside_the_allow_list_or_microsoft_fail_naming_them() {
    let w = World::new("trust-settings").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let target_settings = json!({ w.id(): {"SCIM_TENANT_URL": "https://scim.attacker.example/scim"} }).to_string();
    for (k, v, names) in [
        ("SCIM_TENANT_URL", "https://scim.attacker.example/scim", "SCIM_TENANT_URL"),
        ("SCIM_RELAY_TARGET_SETTINGS", target_settings.as_str(), "SCIM_RELAY_TARGET_SETTINGS"),
        ("GRAPH_ENDPOINT", "https://graph.attacker.example", "GRAPH_ENDPOINT"),
        ("LOGIN_ENDPOINT", "https://login.microsoftonline.com.attacker.example", "LOGIN_ENDPOINT"),
    ] {
        let inv = w.invoke_binary_env(scheduled(), &[(k, v)]).await;
        let e = inv.error();
        assert!(e.error_message.contains(names), "{k}: {e:?}");
        assert!(w.sim.requests().is_empty(), "{k}: Entra was called");
    }
    assert!(w.version_with(LABEL_APPLIED).await.is_none());
}

/// Route 3: forged report tags do not lift DaysLeft (the alarm's metric) or
/// change what `check` reports: expiry is computed from the value.
#[tokio::test]
async fn forged_expiry_tags_do_not_lift_days_left() {
    let w = World::new("trust-expiry").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    let expires = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(5 * 24 + 12)).unwrap();
    let v = w.put(&json!({"token": t, "expires_at": expires.to_string()}).to_string()).await;
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["applied"]);
    tag(&w, "scim-relay:expires-at", "2099-12-31T00:00:00Z").await;
    tag(&w, "scim-relay:expires-version", &v).await;
    tag(&w, "scim-relay:expires-source", "explicit").await;
    for payload in [json!({"action": "check"}), scheduled()] {
        let inv = w.invoke_binary(payload.clone()).await;
        assert_eq!(result(&inv)["days_left"], 5, "{payload}: {}", result(&inv));
        let days: Vec<i64> = inv.emf().iter().filter_map(|d| d["DaysLeft"].as_i64()).collect();
        assert_eq!(days, [5], "{payload}");
    }
    // The scheduled run also sent the `expiring` alert a forged tag would have hidden.
    let alerts = w.alerts().await;
    assert!(alerts.iter().any(|(s, _)| s.contains("expir")), "{alerts:?}");
}

/// Route 4: forged de-duplication records silence nothing: a forged
/// `status=failed` or `failed-alerted` does not stop the `failed` alert.
#[tokio::test]
async fn forged_records_do_not_silence_failed_alerts() {
    let w = World::new("trust-failed").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    w.put(&t).await;
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["applied"]);
    tag(&w, "scim-relay:status", "failed").await;
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    tag(&w, "scim-relay:failed-alerted", &today).await;
    tag(&w, "scim-relay:failed-alerted", &format!("{today}@0123456789abcdef")).await;
    w.sim.set_fault_always(Route::GetJob, Some(Fault::Status { code: 404, retry_after: None }));
    let before = w.alerts().await.len();
    let inv = w.invoke_binary(scheduled()).await;
    assert!(inv.result.is_err(), "a failed target fails the invocation");
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), before + 1, "{alerts:?}");
    assert!(alerts.last().unwrap().0.contains("failed"), "{alerts:?}");
    // The genuine record (sealed by the relay) does dedupe: no second alert today.
    let inv = w.invoke_binary(scheduled()).await;
    assert!(inv.result.is_err());
    assert_eq!(w.alerts().await.len(), before + 1);
}

/// Two invocations applying a secret's very first token at the same moment
/// send exactly one `applied` notice.
#[tokio::test]
async fn a_first_apply_race_notifies_once() {
    let w = World::new("trust-race").await;
    let t = w.token("t");
    w.sim.accept_token(&t);
    let v = w.put(&t).await;
    let (a, b) = tokio::join!(w.invoke_binary(scheduled()), w.invoke_binary(scheduled()));
    let outcomes = [a.outcomes()[0].clone(), b.outcomes()[0].clone()];
    // Whichever run got there first applied it (the other found it applied,
    // or lost the claim); exactly one of them reports the notice.
    let notices = [&a, &b].iter().filter(|i| result(i)["alerts"] == json!(["applied"])).count();
    assert_eq!(notices, 1, "{outcomes:?}\n{}\n{}", a.stderr, b.stderr);
    assert_eq!(w.version_with(LABEL_APPLIED).await.as_deref(), Some(v.as_str()));
    let applied = w.alerts().await.iter().filter(|(s, _)| s.contains("applied")).count();
    assert_eq!(applied, 1, "{outcomes:?}");
    // And the next run does not re-send it.
    assert_eq!(w.invoke_binary(scheduled()).await.outcomes(), ["unchanged"]);
    assert_eq!(w.alerts().await.iter().filter(|(s, _)| s.contains("applied")).count(), 1);
}

/// Two tenants in one stack: each target's tenant, service principal and
/// tenant URL come from SCIM_RELAY_TARGET_SETTINGS, which only the deployer
/// can change.
#[tokio::test]
async fn two_tenants_from_the_deployers_target_settings() {
    let mut w = World::with_targets("trust-two", 2).await;
    let sp_b = "22222222-3333-4444-5555-666666666666";
    w.sim.add_job(sp_b, "Apple.school.b", "Active");
    let (a, b) = (w.secret_ids[0].clone(), w.secret_ids[1].clone());
    w.env.insert(
        "SCIM_RELAY_TARGET_SETTINGS".into(),
        json!({ &b: {"ENTRA_SERVICE_PRINCIPAL_ID": sp_b, "ENTRA_JOB_ID": "Apple.school.b",
            "SCIM_TENANT_URL": "https://federation.apple.com/feeds/school/scim"} })
        .to_string(),
    );
    let (ta, tb) = (w.token("a"), w.token("b"));
    w.sim.accept_token(&ta);
    w.sim.accept_token(&tb);
    w.put_to(&a, &ta).await;
    w.put_to(&b, &tb).await;
    let inv = w.invoke_binary(scheduled()).await;
    assert_eq!(inv.outcomes(), ["applied", "applied"], "{}", inv.stderr);
    assert_eq!(w.sim.saved_credentials(SP), Some((APPLE[0].to_owned(), ta)));
    assert_eq!(w.sim.saved_credentials(sp_b), Some((APPLE[1].to_owned(), tb)));
    let r = w.sync().await;
    assert!(r.results.iter().all(|r| r.outcome == Outcome::Unchanged));
}
