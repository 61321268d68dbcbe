//! A Lambda Runtime API emulator: lets a test run the real `scim-relay`
//! binary as Lambda would (`AWS_LAMBDA_RUNTIME_API=host:port`), hand it one
//! event at a time and read back its response or its error document.
//!
//! Implements the four routes a custom runtime uses:
//! `GET /2018-06-01/runtime/invocation/next` (long poll),
//! `POST .../invocation/{id}/response`, `POST .../invocation/{id}/error` and
//! `POST /2018-06-01/runtime/init/error`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `POST .../response`: the handler's JSON result.
    Response(Value),
    /// `POST .../error` (or `init/error`): Lambda's error document,
    /// `{"errorType": ..., "errorMessage": ...}`.
    Error(Value),
}

struct Pending {
    id: String,
    payload: Value,
    deadline_ms: u64,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
    init_error: Arc<Mutex<Option<Value>>>,
    polls: Arc<AtomicU64>,
}

/// A running Runtime API on a loopback port.
pub struct RuntimeApi {
    addr: SocketAddr,
    sender: mpsc::UnboundedSender<Pending>,
    shared: Shared,
    next_id: AtomicU64,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            init_error: Arc::default(),
            polls: Arc::default(),
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        crate::server::spawn(listener, router);
        Ok(RuntimeApi { addr, sender, shared, next_id: AtomicU64::new(1) })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// How many times the function has asked for its next event.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::SeqCst)
    }

    /// Hands `payload` to the function with `time_left` until its deadline
    /// and waits (at most `time_left` plus a grace second) for its answer.
    /// `None`: no answer in time.
    pub async fn invoke(&self, payload: Value, time_left: Duration) -> Option<Answer> {
        let id = format!("req-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap().insert(id.clone(), tx);
        let deadline_ms = now_ms + time_left.as_millis() as u64;
        self.sender.send(Pending { id: id.clone(), payload, deadline_ms }).ok()?;
        let wait = async {
            tokio::select! {
                answer = rx => answer.ok(),
                () = self.init_failed() => self.shared.init_error.lock().unwrap().clone().map(Answer::Error),
            }
        };
        let answer = tokio::time::timeout(time_left + Duration::from_secs(1), wait).await.ok().flatten();
        self.shared.waiting.lock().unwrap().remove(&id);
        answer
    }

    async fn init_failed(&self) {
        loop {
            if self.shared.init_error.lock().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn next(State(shared): State<Shared>) -> Response {
    shared.polls.fetch_add(1, Ordering::SeqCst);
    let pending = shared.queue.lock().await.recv().await;
    let Some(p) = pending else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    set("lambda-runtime-aws-request-id", p.id);
    set("lambda-runtime-deadline-ms", p.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:scim-relay-test".into());
    set("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0".into());
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, p.payload.to_string()).into_response()
}

fn finish(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().unwrap().remove(id) {
        Some(tx) => {
            let _ = tx.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    finish(&shared, &id, Answer::Response(json_or_text(&body)))
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    finish(&shared, &id, Answer::Error(json_or_text(&body)))
}

async fn init_error(State(shared): State<Shared>, body: String) -> StatusCode {
    *shared.init_error.lock().unwrap() = Some(json_or_text(&body));
    StatusCode::ACCEPTED
}
