//! The Lambda event layer: decode an event into a request, refuse anything
//! else with a clear error, and run it ([`invoke`]). Our own types, not
//! aws_lambda_events: those are non-exhaustive and the schedule/CloudTrail
//! shapes vary.

use std::time::Duration;

use serde_json::{json, Map, Value};
use tracing::{error, info, warn};

use crate::core::config::Defaults;
use crate::core::renew::{Action, Options};
use crate::core::types::Invalid;
use crate::core::types::{list_some, printable};
use crate::lambda::invocation_error::InvocationError;
use crate::lambda::relay::{Relay, RunRequest, Targets};

/// One invocation: decodes `payload`, runs it on `relay` within `time_left`,
/// prints the EMF metrics on stdout, and returns the result or the error
/// Lambda reports (`errorType`, `errorMessage`).
pub async fn invoke(relay: &Relay, payload: &Value, time_left: Duration) -> Result<Value, InvocationError> {
    let decoded = decode(payload, &relay.defaults).map_err(|e| {
        error!(error = %e, "invocation refused");
        InvocationError::from(e)
    })?;
    let deadline = tokio::time::Instant::now() + time_left;
    let req = match decoded {
        Decoded::Run(req) => req,
        Decoded::Queue(batch) => {
            // Fan-out messages: failures are reported per message (SQS
            // delivers those again), never as an invocation error.
            info!(messages = batch.messages.len(), "fan-out messages received");
            let retries_before = relay.graph().retries();
            let outcome = crate::lambda::queue::run_queue_batch(relay, &batch, Some(deadline)).await;
            print_metrics(&outcome.report, relay.graph().retries().saturating_sub(retries_before));
            if let Some(summary) = outcome.report.error_summary() {
                warn!(failed_messages = outcome.failed_messages.len(), summary = %summary, "fan-out messages failed; SQS delivers them again");
            }
            return Ok(crate::lambda::queue::batch_response(&outcome.failed_messages));
        }
        Decoded::Ignore(why) => {
            info!(reason = %why, "event needs no action");
            return Ok(json!({"results": [], "ignored": why}));
        }
    };
    info!(
        action = ?req.action,
        targets = ?req.targets,
        dry_run = req.opts.dry_run,
        force = req.opts.force,
        time_left_ms = time_left.as_millis() as u64,
        "invocation started"
    );
    let retries_before = relay.graph().retries();
    let report = relay.run(&req, Some(deadline)).await;
    print_metrics(&report, relay.graph().retries().saturating_sub(retries_before));
    let result = serde_json::to_value(&report)
        .map_err(|e| InvocationError::Internal(format!("the result could not be serialized: {e}")))?;
    info!(result = %result, "invocation finished");
    match InvocationError::from_report(&report) {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// The EMF metric documents of one run, on stdout (where CloudWatch reads them).
fn print_metrics(report: &crate::lambda::relay::RunReport, retries: u64) {
    for line in crate::lambda::metrics::emf_lines(report, retries, now_millis() as i64) {
        println!("{line}");
    }
}

/// Lambda's longest timeout, assumed when the runtime sends no deadline.
pub const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

/// The time left before `deadline_ms` (milliseconds since the epoch, as the
/// Runtime API sends it); Lambda's maximum when there is none.
pub fn time_left(deadline_ms: u64) -> Duration {
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_millis()));
    if left.is_zero() {
        // Lambda always sends a future deadline; some emulators do not.
        warn!(deadline_ms, "the runtime sent no usable deadline; assuming Lambda's maximum of 15 minutes");
        return MAX_LAMBDA_TIMEOUT;
    }
    left
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Run(RunRequest),
    /// A valid event that needs nothing from us (logged).
    Ignore(String),
    /// Messages of the fan-out queue (an SQS event): one sync per message.
    Queue(QueueBatch),
}

/// One SQS event of the fan-out queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBatch {
    pub messages: Vec<QueueMessage>,
    pub opts: Options,
}

/// One message: the target it names, or why its body was refused (it is
/// then reported as a failed item, retried, and ends in the dead-letter queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    pub target: Result<crate::core::types::SecretId, Invalid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused the invocation payload: {0}")]
pub struct EventError(pub String);

fn err(msg: impl Into<String>) -> EventError {
    EventError(msg.into())
}

/// Decodes an invocation payload.
pub fn decode(payload: &Value, defaults: &Defaults) -> Result<Decoded, EventError> {
    let Value::Object(obj) = payload else {
        return Err(err(format!(
            "expected a JSON object (an EventBridge event or {{\"action\": ...}}), got {}",
            kind_of(payload)
        )));
    };
    if obj.contains_key("Records") {
        return decode_sqs(obj, defaults);
    }
    if obj.contains_key("detail-type") || obj.contains_key("source") {
        return decode_eventbridge(obj, defaults);
    }
    decode_on_demand(obj, defaults)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decode_on_demand(obj: &Map<String, Value>, defaults: &Defaults) -> Result<Decoded, EventError> {
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "action" | "secret_id" | "dry_run" | "force"))
        .map(|k| format!("`{}`", printable(k)))
        .collect();
    if !unknown.is_empty() {
        return Err(err(format!(
            "unknown key(s) {}; an on-demand payload has only `action`, `secret_id`, `dry_run` and `force`",
            list_some(&unknown)
        )));
    }
    let action = match obj.get("action") {
        None | Some(Value::Null) => Action::Sync,
        Some(Value::String(s)) => match s.as_str() {
            "sync" => Action::Sync,
            "check" => Action::Check,
            "validate" => Action::Validate,
            "apply" => Action::Apply,
            other => {
                return Err(err(format!("unknown action `{}`; use sync, check, validate or apply", printable(other))))
            }
        },
        Some(v) => return Err(err(format!("`action` must be a string, got {}", kind_of(v)))),
    };
    let flag = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(err(format!("`{key}` must be true or false, got {}", kind_of(v)))),
    };
    let opts = Options { dry_run: flag("dry_run")? || defaults.dry_run, force: flag("force")? };
    if opts.force && matches!(action, Action::Check | Action::Validate) {
        return Err(err(format!("`force` has no meaning for `{}`; use it with `apply`", action_name(action))));
    }
    let targets = match obj.get("secret_id") {
        None | Some(Value::Null) => Targets::All,
        Some(Value::String(s)) => Targets::One(target(defaults, s).ok_or_else(|| {
            let prefix = match &defaults.fleet.prefix {
                Some(p) => format!(", or a name under SCIM_RELAY_SECRET_PREFIX {p}"),
                None => String::new(),
            };
            err(format!(
                "`{}` is not one of the configured targets (SCIM_RELAY_SECRET_IDS: {}{prefix})",
                printable(s),
                list_some(&defaults.secret_ids.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            ))
        })?),
        Some(v) => return Err(err(format!("`secret_id` must be a string, got {}", kind_of(v)))),
    };
    Ok(Decoded::Run(RunRequest { action, targets, opts }))
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Sync => "sync",
        Action::Check => "check",
        Action::Validate => "validate",
        Action::Apply => "apply",
    }
}

/// A listed target, or a secret under the name prefix (one created after
/// the deployment is a target without a redeploy).
fn target(defaults: &Defaults, id: &str) -> Option<crate::core::types::SecretId> {
    defaults.target_named(id).cloned().or_else(|| crate::core::fleet::under_prefix(defaults, id))
}

/// Lambda's SQS event (`Records[]` from the fan-out queue). Every record
/// must come from the configured queue; each body is what an on-demand sync
/// of one target would be, `{"action":"sync","secret_id":...}`.
fn decode_sqs(obj: &Map<String, Value>, defaults: &Defaults) -> Result<Decoded, EventError> {
    let Some(queue) = &defaults.fleet.queue else {
        return Err(err("an SQS event, but this function has no fan-out queue (SCIM_RELAY_QUEUE_URL is not set)"));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "Records") {
        return Err(err(format!("unknown key `{}` next to `Records` in an SQS event", printable(k))));
    }
    let records = obj.get("Records").and_then(Value::as_array).ok_or_else(|| err("`Records` must be an array"))?;
    if records.is_empty() || records.len() > 10_000 {
        return Err(err(format!("an SQS event with {} records (1 to 10000 expected)", records.len())));
    }
    let mut messages = Vec::new();
    for r in records {
        let source = str_at(r, &["eventSource"]).unwrap_or_default();
        let arn = str_at(r, &["eventSourceARN"]).unwrap_or_default();
        if source != "aws:sqs" || !queue.is_arn(arn) {
            return Err(err(format!(
                "a record from `{}` (`{}`), not the fan-out queue {} (SCIM_RELAY_QUEUE_URL)",
                printable(arn),
                printable(source),
                queue.url
            )));
        }
        let message_id = str_at(r, &["messageId"])
            .filter(|m| !m.is_empty() && m.len() <= 128)
            .ok_or_else(|| err("an SQS record without a messageId"))?
            .to_owned();
        let target = queue_body(str_at(r, &["body"]), defaults);
        messages.push(QueueMessage { message_id, target });
    }
    Ok(Decoded::Queue(QueueBatch { messages, opts: Options { dry_run: defaults.dry_run, force: false } }))
}

/// One fan-out message body: `{"action":"sync","secret_id":...}`, checked
/// like an on-demand payload (the secret must be a target).
fn queue_body(body: Option<&str>, defaults: &Defaults) -> Result<crate::core::types::SecretId, Invalid> {
    let body = body.ok_or("the message has no body")?;
    let value: Value = serde_json::from_str(body).map_err(|_| "the message body is not JSON".to_owned())?;
    let Value::Object(o) = &value else { return Err("the message body is not a JSON object".into()) };
    if o.get("action").and_then(Value::as_str) != Some("sync") || o.keys().any(|k| k != "action" && k != "secret_id") {
        return Err("the message body is not {\"action\":\"sync\",\"secret_id\":...}".into());
    }
    match decode_on_demand(o, defaults).map_err(|e| e.0)? {
        Decoded::Run(RunRequest { targets: Targets::One(id), .. }) => Ok(id),
        _ => Err("the message body names no `secret_id`".into()),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn decode_eventbridge(obj: &Map<String, Value>, defaults: &Defaults) -> Result<Decoded, EventError> {
    let source = obj.get("source").and_then(Value::as_str).unwrap_or_default();
    let detail_type = obj.get("detail-type").and_then(Value::as_str).unwrap_or_default();
    let event = Value::Object(obj.clone());
    let sync_all = || {
        Decoded::Run(RunRequest {
            action: Action::Sync,
            targets: Targets::All,
            opts: Options { dry_run: defaults.dry_run, force: false },
        })
    };
    let sync_one = |id: crate::core::types::SecretId| {
        Decoded::Run(RunRequest {
            action: Action::Sync,
            targets: Targets::One(id),
            opts: Options { dry_run: defaults.dry_run, force: false },
        })
    };
    match (source, detail_type) {
        ("aws.scheduler", _) | ("aws.events", "Scheduled Event") => Ok(sync_all()),
        ("aws.secretsmanager", "Secret Label Updated") => {
            let label = str_at(&event, &["detail", "labelUpdated"])
                .ok_or_else(|| err("a Secret Label Updated event without detail.labelUpdated"))?;
            let name = str_at(&event, &["detail", "name"]);
            let arn = obj.get("resources").and_then(Value::as_array).and_then(|r| r.first()).and_then(Value::as_str);
            let named =
                name.or(arn).ok_or_else(|| err("a Secret Label Updated event without detail.name or resources"))?;
            if label != "AWSCURRENT" {
                return Ok(Decoded::Ignore(format!(
                    "label {} moved on {}; only AWSCURRENT starts a sync",
                    printable(label),
                    printable(named)
                )));
            }
            let found = arn.and_then(|a| target(defaults, a)).or_else(|| name.and_then(|n| target(defaults, n)));
            Ok(match found {
                Some(id) => sync_one(id),
                None => Decoded::Ignore(format!("{} is not a target of this function", printable(named))),
            })
        }
        ("aws.secretsmanager", "AWS API Call via CloudTrail") => {
            let name = str_at(&event, &["detail", "eventName"]).unwrap_or_default();
            if !matches!(name, "PutSecretValue" | "UpdateSecret") {
                return Ok(Decoded::Ignore(format!(
                    "CloudTrail event {}; only PutSecretValue and UpdateSecret start a sync",
                    printable(name)
                )));
            }
            if let Some(code) = str_at(&event, &["detail", "errorCode"]) {
                return Ok(Decoded::Ignore(format!("{name} failed ({}); nothing changed", printable(code))));
            }
            let candidates = [
                str_at(&event, &["detail", "responseElements", "arn"]),
                str_at(&event, &["detail", "responseElements", "aRN"]),
                str_at(&event, &["detail", "requestParameters", "secretId"]),
            ];
            let named = candidates
                .iter()
                .flatten()
                .next()
                .copied()
                .ok_or_else(|| err(format!("a CloudTrail {name} event without requestParameters.secretId")))?;
            Ok(match candidates.iter().flatten().find_map(|c| target(defaults, c)) {
                Some(id) => sync_one(id),
                None => Decoded::Ignore(format!("{} is not a target of this function", printable(named))),
            })
        }
        _ => Err(err(format!(
            "an EventBridge event this function does not handle (source `{}`, detail-type `{}`)",
            printable(source),
            printable(detail_type)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> Defaults {
        let vars = [(
            "SCIM_RELAY_SECRET_IDS",
            "scim-relay/abm,arn:aws:secretsmanager:us-east-1:123456789012:secret:scim-relay/asm-Ab12Cd",
        )]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Defaults::from_vars(&vars).unwrap()
    }

    fn run(v: Value) -> RunRequest {
        match decode(&v, &defaults()).unwrap() {
            Decoded::Run(r) => r,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn on_demand() {
        assert_eq!(run(json!({})).action, Action::Sync);
        assert_eq!(run(json!({})).targets, Targets::All);
        let r = run(json!({"action":"apply","secret_id":"scim-relay/abm","force":true}));
        assert_eq!((r.action, r.opts.force), (Action::Apply, true));
        assert!(matches!(run(json!({"secret_id":"scim-relay/asm"})).targets, Targets::One(_)));
        for bad in [
            json!({"action":"rotate"}),
            json!({"action":"sync","secret":"x"}),
            json!({"secret_id":"other"}),
            json!({"dry_run":"yes"}),
            json!({"action":"check","force":true}),
            json!([1]),
            json!("sync"),
            json!({"source":"aws.s3","detail-type":"Object Created"}),
        ] {
            assert!(decode(&bad, &defaults()).is_err(), "{bad}");
        }
    }

    #[test]
    fn events() {
        assert_eq!(
            run(json!({"source":"aws.scheduler","detail-type":"Scheduled Event","detail":"{}"})).targets,
            Targets::All
        );
        assert_eq!(
            run(json!({"source":"aws.events","detail-type":"Scheduled Event","detail":{}})).targets,
            Targets::All
        );
        let label = |l: &str, n: &str| json!({"source":"aws.secretsmanager","detail-type":"Secret Label Updated","detail":{"name":n,"labelUpdated":l,"versionId":"v"}});
        assert!(matches!(run(label("AWSCURRENT", "scim-relay/abm")).targets, Targets::One(_)));
        assert!(matches!(
            decode(&label("SCIM_RELAY_APPLIED", "scim-relay/abm"), &defaults()).unwrap(),
            Decoded::Ignore(_)
        ));
        assert!(matches!(decode(&label("AWSCURRENT", "other"), &defaults()).unwrap(), Decoded::Ignore(_)));
        let ct = json!({"source":"aws.secretsmanager","detail-type":"AWS API Call via CloudTrail","detail":{"eventSource":"secretsmanager.amazonaws.com","eventName":"PutSecretValue","requestParameters":{"secretId":"scim-relay/asm"},"responseElements":{"aRN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:scim-relay/asm-Ab12Cd"}}});
        assert!(matches!(run(ct).targets, Targets::One(_)));
    }

    fn fleet_defaults() -> Defaults {
        let vars = [
            ("SCIM_RELAY_SECRET_PREFIX", "scim-relay/"),
            ("ENTRA_CLIENT_SECRET_ID", "scim-relay/graph"),
            ("SCIM_RELAY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/relay-targets.fifo"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Defaults::from_vars(&vars).unwrap()
    }

    #[test]
    fn secrets_under_the_prefix_are_targets_except_the_credential() {
        let d = fleet_defaults();
        let label = |n: &str| json!({"source":"aws.secretsmanager","detail-type":"Secret Label Updated","detail":{"name":n,"labelUpdated":"AWSCURRENT","versionId":"v"}});
        let one = |v: Value| match decode(&v, &d).unwrap() {
            Decoded::Run(RunRequest { targets: Targets::One(id), .. }) => Some(id.to_string()),
            Decoded::Ignore(_) => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(one(label("scim-relay/school-7")).as_deref(), Some("scim-relay/school-7"));
        assert_eq!(one(label("scim-relay/graph")), None, "the relay's own credential");
        assert_eq!(one(label("scim-relayx/abm")), None);
        assert_eq!(one(label("Scim-relay/abm")), None, "case-sensitive, as ListSecrets and IAM");
        let ct = json!({"source":"aws.secretsmanager","detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"PutSecretValue","requestParameters":{"secretId":"scim-relay/school-8"}}});
        assert_eq!(one(ct).as_deref(), Some("scim-relay/school-8"));
        assert_eq!(one(json!({"secret_id":"scim-relay/school-9"})).as_deref(), Some("scim-relay/school-9"));
        let e = decode(&json!({"secret_id":"other/x"}), &d).unwrap_err().to_string();
        assert!(e.contains("SCIM_RELAY_SECRET_PREFIX scim-relay/"), "{e}");
    }

    #[test]
    fn sqs_events_from_the_fan_out_queue_only() {
        let d = fleet_defaults();
        let arn = "arn:aws:sqs:us-east-1:123456789012:relay-targets.fifo";
        let rec = |id: &str, body: &str, arn: &str| json!({"messageId": id, "body": body, "eventSource": "aws:sqs", "eventSourceARN": arn});
        let ev = json!({"Records": [
            rec("a", r#"{"action":"sync","secret_id":"scim-relay/one"}"#, arn),
            rec("b", r#"{"action":"check","secret_id":"scim-relay/one"}"#, arn),
            rec("c", r#"{"action":"sync"}"#, arn),
            rec("d", "not json", arn),
            rec("e", r#"{"action":"sync","secret_id":"elsewhere/x"}"#, arn),
        ]});
        let Decoded::Queue(b) = decode(&ev, &d).unwrap() else { panic!("not a queue batch") };
        assert_eq!(b.messages[0].target.as_ref().unwrap().as_str(), "scim-relay/one");
        assert!(b.messages[1..].iter().all(|m| m.target.is_err()), "{:?}", b.messages);
        for bad in [
            json!({"Records": [rec("a", "{}", "arn:aws:sqs:us-east-1:123456789012:other.fifo")]}),
            json!({"Records": [rec("a", "{}", "arn:aws:sqs:us-east-1:210987654321:relay-targets.fifo")]}),
            json!({"Records": []}),
            json!({"Records": [rec("a", "{}", arn)], "extra": 1}),
            json!({"Records": [{"messageId": "a", "body": "{}", "eventSource": "aws:kinesis", "eventSourceARN": arn}]}),
        ] {
            assert!(decode(&bad, &d).is_err(), "{bad}");
        }
        // Without a queue configured, any SQS event is refused.
        assert!(decode(&json!({"Records": [rec("a", "{}", arn)]}), &defaults()).is_err());
    }
}
