//! The load-test switches over real HTTP: scheduled throttling with
//! `Retry-After`, a persistent latency, and the `/_sim/stats` counters.

use std::time::{Duration, Instant};

use entra_sim::{Fault, Route, Sim, SimConfig, Throttle};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const SP: &str = "sp-load";
const JOB: &str = "Apple.load";

async fn token(client: &Client, sim: &Sim) -> reqwest::Response {
    client
        .post(format!("{}/tenant/oauth2/v2.0/token", sim.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn throttle_bursts_latency_and_stats() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    sim.add_job(SP, JOB, "Active");
    let client = Client::new();
    let response = token(&client, &sim).await;
    assert_eq!(response.status(), StatusCode::OK);
    let access: Value = response.json().await.unwrap();
    let access = access["access_token"].as_str().unwrap().to_owned();

    sim.set_fault_always(Route::Any, Some(Fault::Slow(Duration::from_millis(40))));
    sim.set_throttle(Some(Throttle { every: 3, burst: 1, retry_after: Some(2) }));
    let url = format!("{}/v1.0/servicePrincipals/{SP}/synchronization/jobs/{JOB}", sim.url());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&access).send().await.unwrap();
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "2");
            assert!(started.elapsed() < Duration::from_millis(40), "a throttled answer is not delayed");
        } else {
            assert!(started.elapsed() >= Duration::from_millis(40), "latency applies");
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);

    sim.set_throttle(None);
    sim.set_fault_always(Route::Any, None);
    assert_eq!(client.get(&url).bearer_auth(&access).send().await.unwrap().status(), StatusCode::OK);

    let stats: Value = client.get(format!("{}/_sim/stats", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests"], 8);
    assert_eq!(stats["byRoute"]["Token"], 1);
    assert_eq!(stats["byRoute"]["GetJob"], 7);
    assert_eq!(stats["byStatus"]["200"], 6);
    assert_eq!(stats["byStatus"]["429"], 2);
    assert_eq!(stats["accessTokensIssued"], 1);
}
