//! CloudWatch Embedded Metric Format: JSON lines on stdout that CloudWatch
//! Logs turns into metrics in the `ScimRelay` namespace, so alarms can be
//! built on them without any API call from the function.
//!
//! | metric | unit | dimensions | meaning |
//! |---|---|---|---|
//! | `Targets` | Count | `Outcome` | one per target and outcome of a run |
//! | `DaysLeft` | None | `SecretId`, and none | days until the live token expires (alarm on the Minimum) |
//! | `Heartbeat` | Count | none | 1 per run (alarm on missing data) |
//! | `AlertsSent` | Count | none | alerts delivered in the run |
//! | `AlertsUndelivered` | Count | none | alerts that could not be delivered |
//! | `GraphRetries` | Count | none | Graph calls retried in the run |
//! | `TargetsFailed` | Count | none | targets whose outcome was `failed` |

use serde_json::{json, Value};

use crate::relay::RunReport;
use crate::renew::Outcome;

pub const NAMESPACE: &str = "ScimRelay";

fn directive(dimensions: Value, metrics: &[(&str, &str)]) -> Value {
    json!({
        "Namespace": NAMESPACE,
        "Dimensions": dimensions,
        "Metrics": metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
    })
}

/// The EMF lines for one run: one per target, then one for the run.
pub fn emf_lines(report: &RunReport, graph_retries: u64, timestamp_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for r in &report.results {
        let mut directives = vec![directive(json!([["Outcome"]]), &[("Targets", "Count")])];
        let mut line = json!({"SecretId": r.secret_id, "Outcome": r.outcome.as_str(), "Targets": 1});
        if let Some(days) = r.days_left {
            directives.push(directive(json!([["SecretId"], []]), &[("DaysLeft", "None")]));
            line["DaysLeft"] = json!(days);
        }
        line["_aws"] = json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives});
        lines.push(line.to_string());
    }
    let sent: usize =
        report.results.iter().map(|r| r.alerts.len()).sum::<usize>().saturating_sub(report.undelivered.len());
    let failed = report.results.iter().filter(|r| r.outcome == Outcome::Failed).count();
    let run = json!({
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [directive(json!([[]]), &[
            ("Heartbeat", "Count"), ("AlertsSent", "Count"), ("AlertsUndelivered", "Count"),
            ("GraphRetries", "Count"), ("TargetsFailed", "Count"),
        ])]},
        "Heartbeat": 1,
        "AlertsSent": sent,
        "AlertsUndelivered": report.undelivered.len(),
        "GraphRetries": graph_retries,
        "TargetsFailed": failed,
    });
    lines.push(run.to_string());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::renew::TargetResult;

    #[test]
    fn lines_are_valid_emf() {
        let mut ok = TargetResult::new("scim-relay/abm", Outcome::Unchanged, "");
        ok.days_left = Some(12);
        let failed = TargetResult::new("scim-relay/asm", Outcome::Failed, "");
        let report = RunReport { results: vec![ok, failed], undelivered: vec![], fanned_out: None };
        let lines = emf_lines(&report, 3, 1_700_000_000_000);
        assert_eq!(lines.len(), 3);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["DaysLeft"], 12);
        assert_eq!(first["_aws"]["CloudWatchMetrics"][1]["Dimensions"], json!([["SecretId"], []]));
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert!(second.get("DaysLeft").is_none());
        let run: Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(
            (run["Heartbeat"].as_i64(), run["GraphRetries"].as_i64(), run["TargetsFailed"].as_i64()),
            (Some(1), Some(3), Some(1))
        );
        // Every metric a directive names is a member of the line.
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for m in d["Metrics"].as_array().unwrap() {
                    assert!(v.get(m["Name"].as_str().unwrap()).is_some());
                }
            }
        }
    }
}
