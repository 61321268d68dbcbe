//! End-to-end tests of the simulator over real HTTP.

use std::time::{Duration, Instant};

use entra_sim::{Fault, Route, Sim, SimConfig};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const SP: &str = "7c0c6d3c-0000-4000-8000-000000000001";
const JOB: &str = "Apple.0123456789abcdef.00000000-0000-0000-0000-000000000000";
const BASE: &str = "https://federation.apple.com/feeds/business/scim";
const SCOPE: &str = "https://graph.microsoft.com/.default";

fn token_form(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", "sim-client-id".to_owned()),
        ("client_secret", secret.to_owned()),
        ("scope", SCOPE.to_owned()),
    ]
}

async fn access_token(client: &Client, sim: &Sim) -> String {
    let response = client
        .post(format!("{}/tenant-id/oauth2/v2.0/token", sim.url()))
        .form(&token_form("sim-client-secret"))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("token json");
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// A started sim with one active job and an access token.
async fn setup() -> (Sim, Client, String) {
    let sim = Sim::start(SimConfig::default()).await.expect("start sim");
    sim.add_job(SP, JOB, "Active");
    let client = Client::new();
    let token = access_token(&client, &sim).await;
    (sim, client, token)
}

fn jobs_url(sim: &Sim) -> String {
    format!("{}/v1.0/servicePrincipals/{SP}/synchronization/jobs", sim.url())
}

fn job_url(sim: &Sim, action: &str) -> String {
    format!("{}/{JOB}{action}", jobs_url(sim))
}

fn secrets_url(sim: &Sim) -> String {
    format!("{}/v1.0/servicePrincipals/{SP}/synchronization/secrets", sim.url())
}

fn creds(base: &str, token: &str) -> Value {
    json!([{"key": "BaseAddress", "value": base}, {"key": "SecretToken", "value": token}])
}

async fn validate(client: &Client, sim: &Sim, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(job_url(sim, "/validateCredentials"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("validateCredentials");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put_secrets(client: &Client, sim: &Sim, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = client.put(secrets_url(sim)).bearer_auth(token).json(body).send().await.expect("put secrets");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
    let inner = &body["error"]["innerError"];
    assert!(inner["date"].is_string(), "body: {body}");
    assert!(inner["request-id"].is_string(), "body: {body}");
    assert!(inner["client-request-id"].is_string(), "body: {body}");
}

#[tokio::test]
async fn issues_tokens_and_rejects_bad_client_credentials() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let client = Client::new();
    let url = format!("{}/contoso.onmicrosoft.com/oauth2/v2.0/token", sim.url());

    let response = client.post(&url).form(&token_form("sim-client-secret")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().starts_with("sim-at-"));
    assert_eq!(sim.token_requests(), 1);

    let response = client.post(&url).form(&token_form("wrong")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7_000_215]));
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS7000215:"));
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }

    let mut form = token_form("sim-client-secret");
    form[3].1 = "https://graph.microsoft.com/Synchronization.ReadWrite.All".to_owned();
    let response = client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_scope");

    let mut form = token_form("sim-client-secret");
    form[0].1 = "password".to_owned();
    let response = client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");

    assert_eq!(sim.token_requests(), 1);
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 4);
    assert!(recorded.iter().all(|r| r.route == Some(Route::Token)));
    assert_eq!(recorded[1].status, 401);
}

#[tokio::test]
async fn graph_requires_a_live_bearer_token() {
    let config = SimConfig { token_lifetime_secs: 0, ..SimConfig::default() };
    let sim = Sim::start(config).await.unwrap();
    sim.add_job(SP, JOB, "Active");
    let client = Client::new();

    let response = client.get(jobs_url(&sim)).header("client-request-id", "my-id").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_graph_error(&body, "InvalidAuthenticationToken");
    assert_eq!(body["error"]["message"], "Access token is empty.");
    assert_eq!(body["error"]["innerError"]["client-request-id"], "my-id");

    let response = client.get(jobs_url(&sim)).bearer_auth("forged").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Lifetime 0: the issued token is already expired.
    let token = access_token(&client, &sim).await;
    let response = client.get(jobs_url(&sim)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    let recorded = sim.requests();
    assert_eq!(recorded.last().unwrap().authorization.as_deref(), Some(&*format!("Bearer {token}")));
}

#[tokio::test]
async fn lists_and_gets_jobs_in_graph_shape() {
    let (sim, client, token) = setup().await;
    sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    sim.add_job(SP, "Apple.paused", "Paused");

    let response = client.get(jobs_url(&sim)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert!(body["@odata.context"].as_str().unwrap().contains("synchronization/jobs"));
    let jobs = body["value"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);

    let job = &jobs[0];
    assert_eq!(job["id"], JOB);
    assert_eq!(job["templateId"], "Apple");
    assert_eq!(job["schedule"], json!({"expiration": null, "interval": "PT40M", "state": "Active"}));
    assert_eq!(job["synchronizationJobSettings"], json!([]));
    let status = &job["status"];
    assert_eq!(status["code"], "Quarantine");
    assert_eq!(status["countSuccessiveCompleteFailures"], 0);
    assert_eq!(status["steadyStateFirstAchievedTime"], "0001-01-01T00:00:00Z");
    assert_eq!(status["progress"], json!([]));
    let quarantine = &status["quarantine"];
    assert_eq!(quarantine["reason"], "EncounteredQuarantineException");
    assert_eq!(quarantine["seriesCount"], 3);
    assert_eq!(quarantine["error"]["code"], "SystemForCrossDomainIdentityManagementCredentialValidationUnavailable");
    assert_eq!(quarantine["error"]["tenantActionable"], true);
    for field in ["currentBegan", "nextAttempt", "seriesBegan"] {
        let value = quarantine[field].as_str().unwrap();
        assert!(value.len() == 20 && value.ends_with('Z'), "{field}: {value}");
    }
    assert_eq!(jobs[1]["schedule"]["state"], "Paused");
    assert_eq!(jobs[1]["status"]["code"], "Paused");
    assert!(jobs[1]["status"]["quarantine"].is_null());

    let response = client.get(job_url(&sim, "")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], JOB);
    assert_eq!(body["status"]["code"], "Quarantine");

    let response = client.get(format!("{}/nope", jobs_url(&sim))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_graph_error(&response.json().await.unwrap(), "NotFound");

    let response = client
        .get(format!("{}/v1.0/servicePrincipals/unknown/synchronization/jobs", sim.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_graph_error(&response.json().await.unwrap(), "Request_ResourceNotFound");

    let response = client.get(format!("{}/v1.0/me", sim.url())).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.json::<Value>().await.unwrap()["error"]["code"].is_string());
    assert_eq!(sim.requests().last().unwrap().route, None);
}

#[tokio::test]
async fn validate_credentials_answers_204_400_and_500() {
    let (sim, client, token) = setup().await;
    sim.accept_token("good");

    let ok = json!({"useSavedCredentials": false, "credentials": creds(BASE, "good")});
    assert_eq!(validate(&client, &sim, &token, &ok).await.0, StatusCode::NO_CONTENT);

    let (status, body) =
        validate(&client, &sim, &token, &json!({"useSavedCredentials": false, "credentials": creds(BASE, "bad")}))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_graph_error(&body, "BadRequest");
    assert!(body["error"]["message"].as_str().unwrap().contains("credentials are invalid"));

    let http_base = json!({"useSavedCredentials": false, "credentials": creds("http://example.com/scim", "good")});
    assert_eq!(validate(&client, &sim, &token, &http_base).await.0, StatusCode::BAD_REQUEST);

    let camel = json!({"useSavedCredentials": false, "credentials": [
        {"key": "baseAddress", "value": BASE}, {"key": "secretToken", "value": "good"}]});
    let (status, body) = validate(&client, &sim, &token, &camel).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_graph_error(&body, "InternalServerError");

    let missing = json!({"useSavedCredentials": false});
    assert_eq!(validate(&client, &sim, &token, &missing).await.0, StatusCode::BAD_REQUEST);

    let saved = json!({"useSavedCredentials": true});
    assert_eq!(validate(&client, &sim, &token, &saved).await.0, StatusCode::BAD_REQUEST);
    sim.set_saved_credentials(SP, BASE, "good");
    assert_eq!(validate(&client, &sim, &token, &saved).await.0, StatusCode::NO_CONTENT);
    sim.refuse_token("good");
    assert_eq!(validate(&client, &sim, &token, &saved).await.0, StatusCode::BAD_REQUEST);

    let response = client
        .post(job_url(&sim, "/validateCredentials"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_graph_error(&response.json().await.unwrap(), "BadRequest");
}

#[tokio::test]
async fn put_secrets_stores_pascal_case_keys_only() {
    let (sim, client, token) = setup().await;

    let (status, _) = put_secrets(&client, &sim, &token, &json!({"value": creds(BASE, "t1")})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(sim.saved_credentials(SP), Some((BASE.to_owned(), "t1".to_owned())));

    let camel = json!({"value": [{"key": "baseAddress", "value": BASE}, {"key": "secretToken", "value": "t2"}]});
    let (status, body) = put_secrets(&client, &sim, &token, &camel).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_graph_error(&body, "InternalServerError");
    assert_eq!(sim.saved_credentials(SP), Some((BASE.to_owned(), "t1".to_owned())));

    let (status, body) = put_secrets(&client, &sim, &token, &json!({"values": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_graph_error(&body, "BadRequest");

    let extra =
        json!({"value": [{"key": "SecretToken", "value": "t3"}, {"key": "SyncNotificationSettings", "value": "{}"}]});
    assert_eq!(put_secrets(&client, &sim, &token, &extra).await.0, StatusCode::NO_CONTENT);
    assert_eq!(sim.saved_credentials(SP), Some((BASE.to_owned(), "t3".to_owned())));

    let recorded = sim.requests();
    let put = recorded.iter().find(|r| r.route == Some(Route::PutSecrets)).unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, format!("/v1.0/servicePrincipals/{SP}/synchronization/secrets"));
    assert!(put.body.contains("t1"));
    assert_eq!(put.status, 204);
}

#[tokio::test]
async fn break_saved_after_put_fails_saved_validation_until_a_good_put() {
    let (sim, client, token) = setup().await;
    sim.accept_token("old");
    sim.accept_token("new");
    let saved = json!({"useSavedCredentials": true});

    sim.set_break_saved_after_put(true);
    assert_eq!(
        put_secrets(&client, &sim, &token, &json!({"value": creds(BASE, "new")})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(validate(&client, &sim, &token, &saved).await.0, StatusCode::BAD_REQUEST);
    // The same token is fine when passed explicitly.
    let explicit = json!({"useSavedCredentials": false, "credentials": creds(BASE, "new")});
    assert_eq!(validate(&client, &sim, &token, &explicit).await.0, StatusCode::NO_CONTENT);

    // One-shot: the next PUT (the roll-back) is not broken.
    assert_eq!(
        put_secrets(&client, &sim, &token, &json!({"value": creds(BASE, "old")})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(validate(&client, &sim, &token, &saved).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn start_and_restart_clear_quarantine() {
    let (sim, client, token) = setup().await;

    sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    let response = client.post(job_url(&sim, "/start")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.job_status(SP, JOB).as_deref(), Some("Active"));

    sim.set_job_status(SP, JOB, "Paused", None);
    let response = client.post(job_url(&sim, "/start")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.job_status(SP, JOB).as_deref(), Some("Active"));

    sim.set_job_status(SP, JOB, "Quarantine", Some("QuarantinedOnDemand"));
    let restart = |body: Value| client.post(job_url(&sim, "/restart")).bearer_auth(&token).json(&body).send();
    let response = restart(json!({})).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = restart(json!({"criteria": {"resetScope": "Bogus"}})).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.job_status(SP, JOB).as_deref(), Some("Quarantine"));

    let response = restart(json!({"criteria": {"resetScope": "Watermark, Escrows, QuarantineState"}})).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.job_status(SP, JOB).as_deref(), Some("Active"));
    let job: Value = client.get(job_url(&sim, "")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(job["status"]["quarantine"].is_null());

    let response =
        client.post(format!("{}/{}/start", jobs_url(&sim), "Apple.missing")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn one_shot_429_with_retry_after_then_success() {
    let (sim, client, token) = setup().await;
    sim.push_fault(Route::GetJob, Fault::Status { code: 429, retry_after: Some(7) });

    let response = client.get(job_url(&sim, "")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_graph_error(&response.json().await.unwrap(), "TooManyRequests");

    let response = client.get(job_url(&sim, "")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    sim.push_fault(Route::Any, Fault::Status { code: 403, retry_after: None });
    let response = client.get(jobs_url(&sim)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_graph_error(&body, "Authorization_RequestDenied");
    assert_eq!(body["error"]["message"], "Insufficient privileges to complete the operation.");

    sim.set_fault_always(Route::Token, Some(Fault::Status { code: 503, retry_after: Some(2) }));
    for _ in 0..2 {
        let response = client
            .post(format!("{}/t/oauth2/v2.0/token", sim.url()))
            .form(&token_form("sim-client-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "2");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "identity platform shape: {body}");
        assert!(body["error_codes"].is_array());
    }
    sim.set_fault_always(Route::Token, None);
    access_token(&client, &sim).await;

    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 200, 403, 503, 503, 200]);
}

#[tokio::test]
async fn slow_fault_delays_then_answers() {
    let (sim, client, token) = setup().await;
    sim.push_fault(Route::ListJobs, Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let response = client.get(jobs_url(&sim)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn drop_fault_gives_a_connection_error() {
    let (sim, client, token) = setup().await;

    sim.push_fault(Route::PutSecrets, Fault::Drop);
    let result =
        client.put(secrets_url(&sim)).bearer_auth(&token).json(&json!({"value": creds(BASE, "t")})).send().await;
    let error = result.expect_err("a dropped connection must be an error");
    assert!(error.status().is_none(), "no HTTP status expected: {error:?}");
    assert_eq!(sim.saved_credentials(SP), None);
    let last = sim.requests().pop().unwrap();
    assert_eq!((last.route, last.status), (Some(Route::PutSecrets), 0));

    // A raw socket sees the connection close without a single response byte.
    sim.push_fault(Route::Any, Fault::Drop);
    let addr = sim.addr();
    let request = format!(
        "GET /v1.0/servicePrincipals/{SP}/synchronization/jobs HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let (read, received) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        (read, received)
    })
    .await
    .unwrap();
    match read {
        Ok(_) => assert!(received.is_empty(), "got bytes: {received:?}"),
        Err(error) => assert!(
            !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "connection was not closed: {error}"
        ),
    }

    // The fault was one-shot: the next request works.
    let response = client.get(jobs_url(&sim)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn sns_sink_collects_notifications() {
    let (sim, client, _token) = setup().await;
    let sink = format!("{}/sns-sink", sim.url());
    sim.clear_requests();

    // What moto POSTs: a JSON envelope sent as text/plain.
    let notification = json!({
        "Type": "Notification",
        "MessageId": "9b1c7a6e-1111-4222-8333-444455556666",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:scim-relay",
        "Subject": "scim-relay: token rotated",
        "Message": "{\"outcome\":\"rotated\"}",
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "SignatureVersion": "2",
        "Signature": "c2ln",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    });
    let response = client
        .post(&sink)
        .header("content-type", "text/plain; charset=UTF-8")
        .body(notification.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let confirmation = json!({"Type": "SubscriptionConfirmation", "Token": "x", "SubscribeURL": "https://example"});
    let response = client.post(&sink).json(&confirmation).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client.post(&sink).body("not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let messages = sim.sns_messages();
    assert_eq!(messages, vec![notification.clone(), json!("not json")]);
    assert_eq!(sim.sns_confirmations(), vec![confirmation]);

    let listed: Value = client.get(format!("{}/_sim/sns", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, json!([notification, "not json"]));
    assert!(sim.requests().is_empty(), "sink/control requests are not recorded");
}

#[tokio::test]
async fn control_api_redacts_and_controls() {
    let (sim, client, token) = setup().await;
    put_secrets(&client, &sim, &token, &json!({"value": creds(BASE, "super-secret-scim")})).await;

    let text = client.get(format!("{}/_sim/requests", sim.url())).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("super-secret-scim"), "{text}");
    assert!(!text.contains("sim-client-secret"), "{text}");
    assert!(!text.contains(&token), "{text}");
    let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["route"], "PutSecrets");
    assert_eq!(listed[1]["status"], 204);

    let text = client.get(format!("{}/_sim/state", sim.url())).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("super-secret-scim"), "{text}");
    let state: Value = serde_json::from_str(&text).unwrap();
    let sp = &state["servicePrincipals"][0];
    assert_eq!(sp["id"], SP);
    assert_eq!(sp["credentialsSaved"], true);
    assert_eq!(sp["savedBaseAddress"], BASE);
    assert_eq!(sp["jobs"][0]["code"], "Active");

    let response =
        client.post(format!("{}/_sim/accept", sim.url())).json(&json!({"token": "demo"})).send().await.unwrap();
    assert!(response.status().is_success());
    let response = client
        .post(format!("{}/_sim/job", sim.url()))
        .json(&json!({"sp": SP, "job": JOB, "code": "Quarantine", "quarantine_reason": null}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(sim.job_status(SP, JOB).as_deref(), Some("Quarantine"));
    let response = client.post(format!("{}/_sim/job", sim.url())).body("{").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let explicit = json!({"useSavedCredentials": false, "credentials": creds(BASE, "demo")});
    assert_eq!(validate(&client, &sim, &token, &explicit).await.0, StatusCode::NO_CONTENT);
    assert_eq!(sim.requests().len(), 3, "control requests are not recorded");
}
