//! A fault-injecting HTTP proxy in front of a real AWS endpoint (moto_server
//! in the tests): requests pass through unchanged unless a fault is set for
//! their AWS operation, so Secrets Manager and SNS can answer 429, 5xx,
//! slowly, with a dropped connection, or with a malformed body.
//!
//! Operations are named `service.Action`: `secretsmanager.DescribeSecret`
//! (from the JSON protocol's `X-Amz-Target`), `sns.Publish` or
//! `sts.GetWebIdentityToken` (from the query protocol's `Action=` form field
//! and the SigV4 credential scope's service).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use crate::server::ConnectionKiller;
use crate::Fault;

const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct ProxyState {
    one_shot: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    calls: Vec<String>,
}

/// A handle on a running proxy (cheap to clone).
#[derive(Clone)]
pub struct AwsProxy {
    state: Arc<Mutex<ProxyState>>,
    addr: SocketAddr,
}

struct Ctx {
    upstream: String,
    http: reqwest::Client,
    state: Arc<Mutex<ProxyState>>,
}

impl AwsProxy {
    /// Starts a proxy on 127.0.0.1 that forwards to `upstream` (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream: &str) -> std::io::Result<AwsProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let ctx = Arc::new(Ctx {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().build().map_err(std::io::Error::other)?,
            state: state.clone(),
        });
        let router = Router::new().fallback(handle).with_state(ctx);
        crate::server::spawn(listener, router);
        Ok(AwsProxy { state, addr })
    }

    /// `http://127.0.0.1:PORT`: give it to the SDK as its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A one-shot fault for the next call of `op` (FIFO).
    pub fn push_fault(&self, op: &str, fault: Fault) {
        self.lock().one_shot.entry(op.to_owned()).or_default().push_back(fault);
    }

    /// A fault for every call of `op` until cleared with `None`.
    pub fn set_fault_always(&self, op: &str, fault: Option<Fault>) {
        let mut s = self.lock();
        match fault {
            Some(f) => {
                s.always.insert(op.to_owned(), f);
            }
            None => {
                s.always.remove(op);
            }
        }
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.one_shot.clear();
        s.always.clear();
    }

    /// The operations called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

fn operation(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        // "secretsmanager.DescribeSecret"
        return target.to_owned();
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    match form.iter().find(|(k, _)| k == "Action") {
        Some((_, action)) => format!("{}.{action}", query_service(headers)),
        None => "unknown".to_owned(),
    }
}

/// The service of a query-protocol request (`sns`, `sts`): the SigV4
/// credential scope `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
fn query_service(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(3))
        .filter(|service| !service.is_empty() && service.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or("sns")
        .to_owned()
}

fn aws_error(op: &str, code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (aws_code, message) = match code {
        429 | 400 => ("ThrottlingException", "Rate exceeded"),
        500 => ("InternalServiceError", "An internal error occurred (injected)."),
        _ => ("ServiceUnavailable", "The service is unavailable (injected)."),
    };
    let mut response = if op.starts_with("sns.") || op.starts_with("sts.") {
        let body = format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>{}</Type><Code>{}</Code><Message>{message}</Message></Error><RequestId>injected</RequestId></ErrorResponse>",
            if code < 500 { "Sender" } else { "Receiver" },
            if aws_code == "ThrottlingException" { "Throttling" } else { aws_code },
        );
        (status, [(axum::http::header::CONTENT_TYPE, "text/xml")], body).into_response()
    } else {
        let body = serde_json::json!({"__type": aws_code, "message": message}).to_string();
        (status, [(axum::http::header::CONTENT_TYPE, "application/x-amz-json-1.1")], body).into_response()
    };
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
    }
    response
}

async fn handle(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body): Result<Bytes, _> = to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response();
    };
    let op = operation(&parts.headers, &body);
    let fault = {
        let mut s = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
        s.calls.push(op.clone());
        let one = s.one_shot.get_mut(&op).and_then(VecDeque::pop_front);
        one.or_else(|| s.always.get(&op).cloned())
    };
    match fault {
        Some(Fault::Status { code, retry_after }) => return aws_error(&op, code, retry_after),
        Some(Fault::Respond { status, body }) => return crate::responses::raw(status, body),
        Some(Fault::Drop) => {
            if let Some(killer) = parts.extensions.get::<ConnectionKiller>() {
                killer.kill();
                return std::future::pending().await;
            }
            return (StatusCode::BAD_GATEWAY, "drop").into_response();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut forward = ctx.http.request(parts.method.clone(), format!("{}{uri}", ctx.upstream)).body(body.to_vec());
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    match forward.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let headers = upstream.headers().clone();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in headers.iter() {
                if name != axum::http::header::CONTENT_LENGTH && name != axum::http::header::TRANSFER_ENCODING {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("upstream unreachable: {e}")).into_response(),
    }
}
