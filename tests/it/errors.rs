//! Errors that read well where admins see them: each kind of invocation
//! error, through the real binary (Lambda Runtime API emulator, moto_server,
//! the Entra simulator), has a stable `errorType` and an `errorMessage` that
//! says what failed and what to do. Never a Rust type path.

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::lambda::invocation_error::InvocationError;
use serde_json::{json, Value};

/// What every error document must be: a known type, no Rust path, and a
/// message with a "what to do" part.
fn assert_readable(e: &LambdaError) {
    assert!(InvocationError::ERROR_TYPES.contains(&e.error_type.as_str()), "{e:?}");
    assert!(!e.error_type.contains("::") && !e.error_message.contains("alloc::"), "{e:?}");
    assert!(e.error_message.len() > 40, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_payload_is_a_bad_request_and_changes_nothing() {
    let w = World::new("err-bad").await;
    let cases: [(Value, &str); 3] = [
        (json!({"action": "rotate"}), "unknown action `rotate`"),
        (json!([1]), "expected a JSON object"),
        (json!({"source": "aws.s3", "detail-type": "Object Created"}), "does not handle"),
    ];
    for (payload, why) in cases {
        let inv = w.invoke_binary(payload.clone()).await;
        let e = inv.error();
        assert_readable(e);
        assert_eq!(e.error_type, "BadRequest", "{payload}: {e:?}");
        assert!(e.error_message.contains(why), "{payload}: {e:?}");
        assert!(e.error_message.contains("Nothing was changed"), "{e:?}");
        assert!(e.error_message.contains("{\"action\""), "says what a valid request looks like: {e:?}");
        assert!(inv.emf().is_empty(), "a refused payload runs nothing");
    }
    assert!(w.sim.requests().is_empty(), "nothing was sent to Entra");
}

/// A configuration error is reported by every invocation of a process (no
/// crash loop at start-up), names the setting, and says where to fix it.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_setting_is_a_configuration_error_on_every_invocation() {
    let w = World::new("err-config").await;
    for (env, setting) in [
        (("ENTRA_CLIENT_ID", "nope"), "ENTRA_CLIENT_ID"),
        // An empty value removes the variable.
        (("SCIM_RELAY_SECRET_IDS", ""), "SCIM_RELAY_SECRET_IDS"),
    ] {
        let invs = w.invoke_binary_seq(vec![json!({}), json!({"action": "check"})], &[env]).await;
        assert_eq!(invs.len(), 2);
        for inv in &invs {
            let e = inv.error();
            assert_readable(e);
            assert_eq!(e.error_type, "Configuration", "{env:?}: {e:?}");
            assert!(e.error_message.contains(setting), "{env:?}: {e:?}");
            assert!(e.error_message.contains("Fix the setting in the function's environment"), "{e:?}");
        }
        // Logged once, when the process found out.
        assert_eq!(invs[0].stderr.matches("every invocation reports this error").count(), 1, "{}", invs[0].stderr);
    }
    assert!(w.sim.requests().is_empty(), "nothing was sent to Entra");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_target_is_targets_failed_naming_the_target() {
    let w = World::new("err-target").await;
    let t = w.token("new");
    w.sim.accept_token(&t);
    w.put(&t).await;
    w.sim.set_fault_always(Route::Any, Some(Fault::Status { code: 503, retry_after: Some(0) }));
    let inv = w.invoke_binary(json!({})).await;
    let e = inv.error();
    assert_readable(e);
    assert_eq!(e.error_type, "TargetsFailed", "{e:?}");
    assert!(e.error_message.starts_with(&format!("1 of 1 target(s) failed: {}: ", w.id())), "{e:?}");
    assert!(e.error_message.contains("Fix the cause"), "{e:?}");
    let emf = inv.emf();
    let outcomes: Vec<&str> = emf.iter().filter_map(|d| d["Outcome"].as_str()).collect();
    assert_eq!(outcomes, ["failed"], "the run's metrics were still emitted");
    assert_eq!(w.entra_writes(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_that_cannot_be_sent_is_alerts_undelivered() {
    let w = World::new("err-sns").await;
    let t = w.token("new");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let missing = "arn:aws:sns:us-east-1:123456789012:scim-relay-no-such-topic";
    let inv = w.invoke_binary_env(json!({}), &[("ALERT_TOPIC_ARN", missing)]).await;
    let e = inv.error();
    assert_readable(e);
    assert_eq!(e.error_type, "AlertsUndelivered", "{e:?}");
    assert!(
        e.error_message.starts_with("Every target ran, but 1 alert(s) could not be delivered: applied for"),
        "{e:?}"
    );
    assert!(e.error_message.contains("ALERT_TOPIC_ARN"), "{e:?}");
    assert!(e.error_message.contains("the next run sends them again"), "{e:?}");
    // The token itself was applied.
    assert_eq!(w.saved_token(), Some(t));
    let undelivered: Vec<i64> = inv.emf().iter().filter_map(|d| d["AlertsUndelivered"].as_i64()).collect();
    assert_eq!(undelivered, [1]);
}

/// Part of "metrics per stack": every metric document the binary prints
/// names its function (Lambda's AWS_LAMBDA_FUNCTION_NAME), in every
/// dimension set.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_binary_emits_names_its_function() {
    let w = World::new("err-metrics").await;
    let t = w.token("new");
    w.sim.accept_token(&t);
    w.put(&t).await;
    let inv = w.invoke_binary_env(json!({}), &[("AWS_LAMBDA_FUNCTION_NAME", "stack-a-ScimRelayFunction-AAAA")]).await;
    assert_eq!(inv.outcomes(), ["applied"], "{}", inv.stderr);
    let docs = inv.emf();
    assert!(docs.len() >= 2, "a target's document and the run's: {}", inv.stdout);
    let mut metrics = Vec::new();
    for d in &docs {
        assert_eq!(d["FunctionName"], "stack-a-ScimRelayFunction-AAAA", "{d}");
        for directive in d["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for set in directive["Dimensions"].as_array().unwrap() {
                assert_eq!(set[0], "FunctionName", "{d}");
            }
            metrics.extend(directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].clone()));
        }
    }
    for m in ["Targets", "DaysLeft", "Heartbeat", "AlertsSent", "AlertsUndelivered", "GraphRetries"] {
        assert!(metrics.contains(&json!(m)), "{m} missing: {metrics:?}");
    }
}
