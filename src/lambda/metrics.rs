//! CloudWatch Embedded Metric Format: JSON lines on stdout that CloudWatch
//! Logs turns into metrics in the `ScimRelay` namespace, so alarms can be
//! built on them without any API call from the function.
//!
//! Every metric carries the dimension `FunctionName` (the stack's function,
//! [`stack_name`]), so two stacks in one account and region never mask each
//! other's missing heartbeat or trip each other's expiry alarm. It is added
//! in one place, [`directive`] and [`document`]: a metric added there gets it
//! too.
//!
//! | metric | unit | dimensions (besides `FunctionName`) | meaning |
//! |---|---|---|---|
//! | `Targets` | Count | `Outcome` | one per target and outcome of a run |
//! | `DaysLeft` | None | `SecretId`, and none | days until the live token expires (alarm on the Minimum) |
//! | `LiveTokenValid` | None | `SecretId`, and none | 1 when Test Connection on the credentials Entra holds passed, 0 when Apple refused them (alarm on the Minimum); only from runs that tested |
//! | `Heartbeat` | Count | none | 1 per run (alarm on missing data) |
//! | `AlertsSent` | Count | none | alerts delivered in the run |
//! | `AlertsUndelivered` | Count | none | alerts that could not be delivered |
//! | `GraphRetries` | Count | none | Graph calls retried in the run |
//! | `TargetsFailed` | Count | none | targets whose outcome was `failed` |

use serde_json::{json, Value};

use crate::core::renew::{LiveToken, Outcome};
use crate::lambda::relay::RunReport;

pub const NAMESPACE: &str = "ScimRelay";

/// The dimension that separates stacks, on every metric.
pub const STACK_DIMENSION: &str = "FunctionName";

/// The stack's name for metrics when the function name is unknown (outside Lambda).
pub const DEFAULT_STACK_NAME: &str = "scim-relay";

/// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, which Lambda always
/// sets), or [`DEFAULT_STACK_NAME`].
pub fn stack_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_STACK_NAME.to_owned())
}

/// A metric directive: `dimensions` are the dimension sets without the
/// stack dimension (`[["SecretId"], []]`), which is put first in each.
fn directive(dimensions: Value, metrics: &[(&str, &str)]) -> Value {
    let sets: Vec<Value> = dimensions
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|set| {
            let rest = set.as_array().map(Vec::as_slice).unwrap_or_default();
            Value::Array(std::iter::once(json!(STACK_DIMENSION)).chain(rest.iter().cloned()).collect())
        })
        .collect();
    json!({
        "Namespace": NAMESPACE,
        "Dimensions": sets,
        "Metrics": metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
    })
}

/// One EMF document: `members` (metric values and dimension values) with
/// the stack dimension's value, the timestamp and the directives.
fn document(stack: &str, timestamp_ms: i64, mut members: Value, directives: Vec<Value>) -> String {
    members[STACK_DIMENSION] = json!(stack);
    members["_aws"] = json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives});
    members.to_string()
}

/// The EMF lines for one run of this process's stack ([`stack_name`]).
pub fn emf_lines(report: &RunReport, graph_retries: u64, timestamp_ms: i64) -> Vec<String> {
    emf_lines_for(&stack_name(), report, graph_retries, timestamp_ms)
}

/// The EMF lines for one run: one per target, then one for the run.
pub fn emf_lines_for(stack: &str, report: &RunReport, graph_retries: u64, timestamp_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for r in &report.results {
        let mut directives = vec![directive(json!([["Outcome"]]), &[("Targets", "Count")])];
        let mut line = json!({"SecretId": r.secret_id, "Outcome": r.outcome.as_str(), "Targets": 1});
        if let Some(days) = r.days_left {
            directives.push(directive(json!([["SecretId"], []]), &[("DaysLeft", "None")]));
            line["DaysLeft"] = json!(days);
        }
        let live = match r.live_token {
            Some(LiveToken::Passed) => Some(1),
            Some(LiveToken::Refused) => Some(0),
            Some(LiveToken::NotChecked) | None => None,
        };
        if let Some(valid) = live {
            directives.push(directive(json!([["SecretId"], []]), &[("LiveTokenValid", "None")]));
            line["LiveTokenValid"] = json!(valid);
        }
        lines.push(document(stack, timestamp_ms, line, directives));
    }
    let sent: usize =
        report.results.iter().map(|r| r.alerts.len()).sum::<usize>().saturating_sub(report.undelivered.len());
    let failed = report.results.iter().filter(|r| r.outcome == Outcome::Failed).count();
    let run = json!({
        "Heartbeat": 1,
        "AlertsSent": sent,
        "AlertsUndelivered": report.undelivered.len(),
        "GraphRetries": graph_retries,
        "TargetsFailed": failed,
    });
    let directives = vec![directive(
        json!([[]]),
        &[
            ("Heartbeat", "Count"),
            ("AlertsSent", "Count"),
            ("AlertsUndelivered", "Count"),
            ("GraphRetries", "Count"),
            ("TargetsFailed", "Count"),
        ],
    )];
    lines.push(document(stack, timestamp_ms, run, directives));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::renew::TargetResult;

    #[test]
    fn lines_are_valid_emf() {
        let mut ok = TargetResult::new("scim-relay/abm", Outcome::Unchanged, "");
        ok.days_left = Some(12);
        ok.live_token = Some(LiveToken::Refused);
        let failed = TargetResult::new("scim-relay/asm", Outcome::Failed, "");
        let report = RunReport { results: vec![ok, failed], undelivered: vec![], fanned_out: None };
        let lines = emf_lines_for("my-stack-fn", &report, 3, 1_700_000_000_000);
        assert_eq!(lines.len(), 3);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["DaysLeft"], 12);
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][1]["Dimensions"],
            json!([["FunctionName", "SecretId"], ["FunctionName"]])
        );
        assert_eq!(first["LiveTokenValid"], 0);
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][2]["Dimensions"],
            json!([["FunctionName", "SecretId"], ["FunctionName"]])
        );
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert!(second.get("DaysLeft").is_none());
        assert!(second.get("LiveTokenValid").is_none(), "no test, no data point");
        let run: Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(
            (run["Heartbeat"].as_i64(), run["GraphRetries"].as_i64(), run["TargetsFailed"].as_i64()),
            (Some(1), Some(3), Some(1))
        );
        // Every metric a directive names is a member of the line, and so is
        // every dimension; every dimension set starts with the stack's.
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["FunctionName"], "my-stack-fn");
            for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for set in d["Dimensions"].as_array().unwrap() {
                    assert_eq!(set[0], "FunctionName", "{l}");
                    for dim in set.as_array().unwrap() {
                        assert!(v[dim.as_str().unwrap()].is_string(), "{dim} in {l}");
                    }
                }
            }
            for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for m in d["Metrics"].as_array().unwrap() {
                    assert!(v.get(m["Name"].as_str().unwrap()).is_some());
                }
            }
        }
    }
}
