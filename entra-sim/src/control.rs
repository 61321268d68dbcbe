//! The control API (`/_sim/...`) used by the demo, and the SNS HTTP sink.
//! None of these requests are recorded or subject to faults.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::responses::{control_json, graph_bad_request, RequestIds};
use crate::{Recorded, Route, Sim};

const REDACTED: &str = "***";

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/requests", get(requests))
        .route("/_sim/stats", get(stats))
        .route("/_sim/state", get(state))
        .route("/_sim/sns", get(sns))
        .route("/_sim/accept", post(accept))
        .route("/_sim/job", post(set_job))
        .route("/sns-sink", post(sns_sink))
        .with_state(sim)
}

async fn requests(State(sim): State<Sim>) -> Response {
    let recorded: Vec<Value> = sim.requests().iter().map(redacted_json).collect();
    control_json(&Value::Array(recorded))
}

/// Counts only (cheap for long load runs): recorded Graph/login requests in
/// total, by route and by status, and the access tokens issued.
async fn stats(State(sim): State<Sim>) -> Response {
    let state = sim.lock();
    let (by_route, by_status) = state.request_counts();
    let total: u64 = by_route.values().sum();
    let by_status: serde_json::Map<String, Value> =
        by_status.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect();
    control_json(&json!({
        "requests": total,
        "byRoute": by_route,
        "byStatus": by_status,
        "accessTokensIssued": state.tokens_issued,
        "maxGraphInFlight": state.max_graph_in_flight,
    }))
}

/// A recorded request as JSON with secrets (`SecretToken` values,
/// `client_secret`, `client_assertion`, bearer tokens) replaced by `***`.
fn redacted_json(recorded: &Recorded) -> Value {
    json!({
        "method": recorded.method,
        "path": recorded.path,
        "route": recorded.route.map(|r| format!("{r:?}")),
        "status": recorded.status,
        "body": redact_body(recorded.route, &recorded.body),
        "authorization": recorded.authorization.as_deref().map(|a| match a.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} {REDACTED}"),
            None => REDACTED.to_owned(),
        }),
    })
}

fn redact_body(route: Option<Route>, body: &str) -> String {
    if body.is_empty() {
        return String::new();
    }
    if let Ok(mut value) = serde_json::from_str::<Value>(body) {
        redact_json(&mut value);
        return value.to_string();
    }
    if route == Some(Route::Token) {
        if let Ok(form) = serde_urlencoded::from_str::<Vec<(String, String)>>(body) {
            let form: Vec<(String, String)> = form
                .into_iter()
                .map(|(k, v)| {
                    let v = if k == "client_secret" || k == "client_assertion" { REDACTED.to_owned() } else { v };
                    (k, v)
                })
                .collect();
            if let Ok(encoded) = serde_urlencoded::to_string(form) {
                return encoded;
            }
        }
    }
    let lower = body.to_ascii_lowercase();
    if lower.contains("secret") || lower.contains("token") {
        // Unparseable and possibly secret-bearing: show nothing of it.
        return format!("{REDACTED} ({} bytes)", body.len());
    }
    body.to_owned()
}

/// Replaces the `value` of every `{"key":"SecretToken",...}` pair and every
/// `client_secret`/`SecretToken` property with `***`.
fn redact_json(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let is_secret_pair =
                object.get("key").and_then(Value::as_str).is_some_and(|k| k.eq_ignore_ascii_case("SecretToken"));
            for (key, inner) in object.iter_mut() {
                let secret_property = key.eq_ignore_ascii_case("client_secret")
                    || key.eq_ignore_ascii_case("SecretToken")
                    || (is_secret_pair && key == "value");
                if secret_property {
                    *inner = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// Jobs with status, and whether credentials are saved (never the token).
async fn state(State(sim): State<Sim>) -> Response {
    let state = sim.lock();
    let service_principals: Vec<Value> = state
        .service_principals
        .iter()
        .map(|(id, sp)| {
            let jobs: Vec<Value> = sp
                .jobs
                .iter()
                .map(|job| {
                    json!({
                        "id": job.id,
                        "code": job.code,
                        "quarantineReason": job.quarantine.as_ref().map(|q| q.reason.clone()),
                    })
                })
                .collect();
            json!({
                "id": id,
                "jobs": jobs,
                "credentialsSaved": sp.saved_credentials().is_some(),
                "savedBaseAddress": sp.secret("BaseAddress"),
                // Every saved key, with values of the non-secret ones.
                "savedSecrets": sp
                    .secrets()
                    .iter()
                    .map(|(k, v)| {
                        let shown = match k.as_str() {
                            "BaseAddress" | "SyncAll" | "SyncNotificationSettings" | "SkipOutOfScopeDeletions" => v.as_str(),
                            _ => REDACTED,
                        };
                        json!({"key": k, "value": shown})
                    })
                    .collect::<Vec<Value>>(),
            })
        })
        .collect();
    control_json(&json!({
        "servicePrincipals": service_principals,
        "acceptAll": state.accept_all,
        "acceptedTokenCount": state.accepted_token_count(),
        "breakSavedAfterPut": state.break_saved_after_put,
        "putSecretsReplaces": state.put_secrets_replaces,
        "accessTokensIssued": state.tokens_issued,
    }))
}

async fn sns(State(sim): State<Sim>) -> Response {
    control_json(&Value::Array(sim.sns_messages()))
}

#[derive(Debug, Deserialize)]
struct AcceptRequest {
    token: String,
}

async fn accept(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    match serde_json::from_slice::<AcceptRequest>(&body) {
        Ok(request) => {
            sim.accept_token(&request.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => graph_bad_request(&format!("Invalid request body: {error}."), &RequestIds::new(&headers)),
    }
}

#[derive(Debug, Deserialize)]
struct JobRequest {
    sp: String,
    job: String,
    code: String,
    #[serde(default)]
    quarantine_reason: Option<String>,
}

async fn set_job(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    match serde_json::from_slice::<JobRequest>(&body) {
        Ok(r) => {
            sim.set_job_status(&r.sp, &r.job, &r.code, r.quarantine_reason.as_deref());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => graph_bad_request(&format!("Invalid request body: {error}."), &RequestIds::new(&headers)),
    }
}

/// Receives SNS HTTP deliveries. Always answers 200.
async fn sns_sink(State(sim): State<Sim>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let sns_type = value.get("Type").and_then(Value::as_str);
    let mut state = sim.lock();
    match sns_type {
        Some("SubscriptionConfirmation" | "UnsubscribeConfirmation") => {
            tracing::info!(
                "SNS {} received (not confirmed: the sim never visits SubscribeURL)",
                sns_type.unwrap_or_default()
            );
            state.sns_confirmations.push(value);
        }
        _ => state.sns_messages.push(value),
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_token_values() {
        let body = r#"{"value":[{"key":"BaseAddress","value":"https://a"},{"key":"SecretToken","value":"s3cret"}]}"#;
        let redacted = redact_body(Some(Route::PutSecrets), body);
        assert!(!redacted.contains("s3cret"));
        assert!(redacted.contains("https://a"));
        assert!(redacted.contains(REDACTED));
    }

    #[test]
    fn redacts_client_secret_in_forms() {
        let body = "grant_type=client_credentials&client_id=id&client_secret=s3cret&scope=x%2F.default";
        let redacted = redact_body(Some(Route::Token), body);
        assert!(!redacted.contains("s3cret"));
        assert!(redacted.contains("client_id=id"));
    }

    #[test]
    fn hides_unparseable_secretish_bodies() {
        let redacted = redact_body(Some(Route::PutSecrets), r#"{"key":"SecretToken","value":"s3cret""#);
        assert!(!redacted.contains("s3cret"));
    }
}
