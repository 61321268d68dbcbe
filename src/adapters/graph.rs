//! The real [`Entra`] adapter: Microsoft Graph's synchronization API over
//! reqwest (rustls), with the client-credentials token cached until shortly
//! before it expires, typed errors from Graph's error body, and retries on
//! 429 / 5xx / timeouts / connection errors that honour `Retry-After` and
//! never run past the invocation's deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::adapters::auth::WebIdentitySource;
use crate::core::ports::{
    Credentials, Entra, EntraError, GraphApp, Job, JobRef, Quarantine, ReadOnce, SecretStore, Validation,
};
use crate::core::types::Endpoint;

/// Largest response body read from the network.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A token is renewed when less than this is left of it.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// No call is started with less than this left before the deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

/// Timeouts and the retry policy for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: usize,
    /// Total time one HTTP request may take (validateCredentials makes Entra
    /// call Apple, so it can take several seconds).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(20),
            max_retries: 5,
            request_timeout: Duration::from_secs(30),
        }
    }
}

struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

/// What lives as long as the process: the HTTP client, the token cache, and
/// the bound on Graph requests in flight.
pub struct GraphShared {
    http: reqwest::Client,
    graph: Endpoint,
    login: Endpoint,
    secrets: Arc<dyn SecretStore>,
    /// Federated sign-in's token source (AWS STS in production).
    web_identity: Option<Arc<dyn WebIdentitySource>>,
    tokens: tokio::sync::Mutex<HashMap<GraphApp, CachedToken>>,
    retry: RetryPolicy,
    /// At most this many Graph requests are in flight at once
    /// (`SCIM_RELAY_CONCURRENCY`). A permit is held for one attempt only,
    /// never while waiting to retry.
    in_flight: tokio::sync::Semaphore,
    retries: AtomicU64,
    token_fetches: AtomicU64,
}

/// The HTTP client could not be built (no TLS roots, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct HttpClientError(String);

impl GraphShared {
    pub fn new(
        graph: Endpoint,
        login: Endpoint,
        secrets: Arc<dyn SecretStore>,
        retry: RetryPolicy,
        max_in_flight: usize,
    ) -> Result<Self, HttpClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(retry.request_timeout))
            .timeout(retry.request_timeout)
            .user_agent(concat!("scim-relay/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpClientError(e.to_string()))?;
        Ok(Self {
            http,
            graph,
            login,
            secrets,
            web_identity: None,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            retry,
            in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1)),
            retries: AtomicU64::new(0),
            token_fetches: AtomicU64::new(0),
        })
    }

    /// Sets where federated sign-in (`ENTRA_AUTH=federated`) gets its token.
    pub fn set_web_identity(&mut self, source: Arc<dyn WebIdentitySource>) {
        self.web_identity = Some(source);
    }

    /// Retries made since the process started (for metrics).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Access tokens fetched since the process started.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }
}

/// Graph for one invocation: the shared client plus that invocation's
/// deadline and its reads of the relay's own credential secrets.
#[derive(Clone)]
pub struct Graph {
    shared: Arc<GraphShared>,
    deadline: Option<Instant>,
    credentials: Arc<ReadOnce>,
}

impl Graph {
    pub fn new(shared: Arc<GraphShared>, deadline: Option<Instant>) -> Self {
        let credentials = Arc::new(ReadOnce::new(shared.secrets.clone()));
        Self { shared, deadline, credentials }
    }

    /// The credential secrets as this invocation reads them: each value at
    /// most once, whether for sign-in or for the credential's expiry watch.
    pub fn credential_store(&self) -> &dyn SecretStore {
        self.credentials.as_ref()
    }
}

/// One failed attempt, before retry policy decides.
#[derive(Debug)]
enum Attempt {
    /// Worth retrying; `retry_after` from the server.
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// Final: an HTTP answer the caller interprets.
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    Final(EntraError),
}

impl Attempt {
    fn is_transient(&self) -> bool {
        matches!(self, Attempt::Transient { .. })
    }
}

/// A parsed HTTP answer.
/// One Graph call: what it is (for errors and logs), the request, and the
/// secrets to scrub from whatever the server answers.
struct Call<'c> {
    what: &'c str,
    method: Method,
    url: &'c str,
    body: Option<&'c Value>,
    scrub: &'c [&'c str],
}

impl<'c> Call<'c> {
    fn new(what: &'c str, method: Method, url: &'c str) -> Self {
        Self { what, method, url, body: None, scrub: &[] }
    }

    fn body(mut self, body: &'c Value, scrub: &'c [&'c str]) -> Self {
        self.body = Some(body);
        self.scrub = scrub;
        self
    }
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let secs = (at.as_second() - jiff::Timestamp::now().as_second()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

/// Graph's `{"error":{"code","message"}}`, or the login service's
/// `{"error","error_description"}`, with secrets scrubbed out.
fn error_parts(body: &[u8], scrub: &[&str]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (code, message) = match v.get("error") {
        Some(Value::Object(e)) => (
            e.get("code").and_then(Value::as_str).unwrap_or_default().to_owned(),
            e.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        ),
        Some(Value::String(code)) => (
            code.clone(),
            v.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => (String::new(), String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()),
    };
    (clean(&code, scrub, 80), clean(&message, scrub, 300))
}

/// Bounds a server-provided string and removes any secret it echoes.
fn clean(s: &str, scrub: &[&str], max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    for secret in scrub.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[REDACTED]");
    }
    out
}

/// One HTTP exchange, shared by Graph calls and sign-in: sends `req` and
/// reads the answer (bounded). A network failure, 429 or 5xx is transient
/// (with the server's `Retry-After`; `transient` words it from the status and
/// the scrubbed error code and message); any other status is the answer.
async fn exchange(
    req: reqwest::RequestBuilder,
    scrub: &[&str],
    transient: impl Fn(StatusCode, &str, &str) -> String,
) -> Result<Answer, Attempt> {
    let resp = req.send().await.map_err(|e| Attempt::Transient { detail: describe_reqwest(&e), retry_after: None })?;
    let status = resp.status();
    let after = retry_after(resp.headers());
    let body = read_limited(resp).await?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let (code, message) = error_parts(&body, scrub);
        return Err(Attempt::Transient { detail: transient(status, &code, &message), retry_after: after });
    }
    Ok(Answer { status, body })
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, Attempt> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Attempt::Final(EntraError::Unexpected {
                        status: resp.status().as_u16(),
                        code: "ResponseTooLarge".into(),
                        message: format!("the response is larger than {MAX_BODY_BYTES} bytes"),
                    }));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Attempt::Transient { detail: describe_reqwest(&e), retry_after: None }),
        }
    }
}

/// A reqwest error without its URL (which is harmless, but noisy).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the answer"
    } else {
        "the request failed"
    };
    let mut src = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = src {
        root = s.to_string();
        src = s.source();
    }
    if root.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({})", root.chars().take(120).collect::<String>())
    }
}

impl Graph {
    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// No call `what` is started with less than [`DEADLINE_MARGIN`] left.
    fn before_deadline(&self, what: &str) -> Result<(), Attempt> {
        match self.remaining() {
            Some(left) if left < DEADLINE_MARGIN => Err(Attempt::Final(EntraError::Deadline(what.to_owned()))),
            _ => Ok(()),
        }
    }

    /// Sends one Graph request for `app` with retries, with a Graph bearer token.
    async fn send(&self, app: &GraphApp, call: Call<'_>) -> Result<Answer, EntraError> {
        let Call { what, method, url, body, scrub } = call;
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let mut refreshed_token = false;
        let op = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            let method = method.clone();
            async move {
                self.before_deadline(what)?;
                let token = self.access_token(app).await.map_err(Attempt::Final)?;
                // Waiting for a slot may take a while: the deadline is checked after.
                let _slot = self.shared.in_flight.acquire().await.map_err(|_| {
                    Attempt::Final(EntraError::Unexpected {
                        status: 0,
                        code: "Shutdown".into(),
                        message: "the Graph client was shut down".into(),
                    })
                })?;
                self.before_deadline(what)?;
                let mut req = self.shared.http.request(method, url).bearer_auth(token.expose_secret());
                if let Some(left) = self.remaining() {
                    req = req.timeout(
                        self.shared.retry.request_timeout.min(left.saturating_sub(Duration::from_millis(500))),
                    );
                }
                req = match body {
                    Some(b) => req.json(b),
                    None => req.header(reqwest::header::CONTENT_LENGTH, "0"),
                };
                let answer = exchange(req, scrub, |status, code, message| {
                    let message = if message.is_empty() { String::new() } else { format!(": {message}") };
                    format!("{} {code}{message}", status.as_u16())
                })
                .await?;
                if answer.status.is_success() {
                    return Ok(answer);
                }
                let (code, message) = error_parts(&answer.body, scrub);
                Err(Attempt::Status { status: answer.status, code, message })
            }
        };
        let mut result = self.retrying(what, &op).await;
        // An expired or revoked access token: fetch a fresh one once.
        if let Err(Attempt::Status { status: StatusCode::UNAUTHORIZED, .. }) = &result {
            if !refreshed_token {
                refreshed_token = true;
                self.shared.tokens.lock().await.remove(app);
                debug!(call = what, refreshed_token, "Graph answered 401; retrying with a new access token");
                result = op().await;
            }
        }
        let attempts = attempts.load(Ordering::Relaxed);
        match result {
            Ok(a) => Ok(a),
            Err(Attempt::Final(e)) => Err(e),
            Err(Attempt::Transient { detail, .. }) => {
                Err(EntraError::Transient { attempts, detail: format!("{what}: {detail}") })
            }
            Err(Attempt::Status { status, code, message }) => Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    EntraError::Permission { status: status.as_u16(), code, message }
                }
                StatusCode::NOT_FOUND => EntraError::NotFound(format!("{what}: {code} {message}")),
                // The caller decides what a 400 means.
                _ => EntraError::Unexpected { status: status.as_u16(), code, message },
            }),
        }
    }

    /// Runs `op` with the retry policy: exponential backoff with jitter on
    /// transient failures, waiting `Retry-After` when the server gives one,
    /// and giving up rather than sleeping past the invocation's deadline.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Attempt>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let policy = self.shared.retry;
        let deadline = self.deadline;
        op.retry(
            ExponentialBuilder::default()
                .with_min_delay(policy.min_delay)
                .with_max_delay(policy.max_delay)
                .with_max_times(policy.max_retries)
                .with_jitter(),
        )
        .sleep(tokio::time::sleep)
        .when(Attempt::is_transient)
        .adjust(|err, backoff| {
            let wait = match err {
                Attempt::Transient { retry_after: Some(ra), .. } => *ra,
                _ => backoff?,
            };
            // `backoff` is None once the retries are used up.
            backoff?;
            match deadline {
                Some(d) if Instant::now() + wait + DEADLINE_MARGIN >= d => None,
                _ => Some(wait),
            }
        })
        .notify(|err, wait| {
            self.shared.retries.fetch_add(1, Ordering::Relaxed);
            if let Attempt::Transient { detail, .. } = err {
                warn!(call = what, error = %detail, retry_in_ms = wait.as_millis() as u64, "Graph call failed; retrying");
            }
        })
        .await
    }

    /// A Graph access token for `app`, from the cache when it has long enough left.
    async fn access_token(&self, app: &GraphApp) -> Result<SecretString, EntraError> {
        let mut cache = self.shared.tokens.lock().await;
        if let Some(t) = cache.get(app) {
            if Instant::now() < t.renew_at {
                return Ok(t.token.clone());
            }
        }
        let (token, lifetime) = self.fetch_token(app).await?;
        let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
        cache.insert(app.clone(), CachedToken { token: token.clone(), renew_at: Instant::now() + lifetime - margin });
        Ok(token)
    }

    /// The client-credentials grant. How the app proves who it is (client
    /// secret, certificate assertion, AWS web identity token) is
    /// [`crate::adapters::auth`]'s business.
    async fn fetch_token(&self, app: &GraphApp) -> Result<(SecretString, Duration), EntraError> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.shared.login.as_str(), app.tenant_id);
        let scope = format!("{}/.default", self.shared.graph.as_str());
        let auth =
            crate::adapters::auth::client_auth(self.credential_store(), self.shared.web_identity.as_deref(), app, &url)
                .await?;
        let proof = auth.exposed();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("scope", scope.as_str()),
        ];
        form.extend(auth.form_fields());
        let op = || async {
            self.before_deadline("sign-in")?;
            let req = self.shared.http.post(&url).form(&form);
            let answer =
                exchange(req, &[proof], |status, code, _| format!("sign-in: {} {code}", status.as_u16())).await?;
            Ok((answer.status, answer.body))
        };
        let policy = self.shared.retry;
        let (status, body) = self.retrying("sign-in", op).await.map_err(|e| match e {
            Attempt::Final(e) => e,
            Attempt::Transient { detail, .. } => {
                EntraError::Transient { attempts: policy.max_retries as u32 + 1, detail }
            }
            Attempt::Status { status, code, message } => {
                EntraError::Unexpected { status: status.as_u16(), code, message }
            }
        })?;
        if !status.is_success() {
            let (code, message) = error_parts(&body, &[proof]);
            return Err(EntraError::SignIn { code, message, check: app.credential.sign_in_hint() });
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: String,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| EntraError::Unexpected {
            status: status.as_u16(),
            code: "BadTokenResponse".into(),
            message: "the sign-in answer has no access_token".into(),
        })?;
        self.shared.token_fetches.fetch_add(1, Ordering::Relaxed);
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).clamp(60, 86_400));
        Ok((SecretString::from(answer.access_token), lifetime))
    }

    fn sp_url(&self, sp: &str) -> String {
        format!("{}/v1.0/servicePrincipals/{}/synchronization", self.shared.graph.as_str(), urlencode(sp))
    }

    fn job_url(&self, job: &JobRef, suffix: &str) -> String {
        format!("{}/jobs/{}{suffix}", self.sp_url(&job.service_principal_id), urlencode(&job.job_id))
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn unexpected(what: &str, why: &str) -> EntraError {
    EntraError::Unexpected { status: 200, code: "UnexpectedShape".into(), message: format!("{what}: {why}") }
}

fn parse_job(v: &Value) -> Result<Job, EntraError> {
    let id = v.get("id").and_then(Value::as_str).ok_or_else(|| unexpected("synchronization job", "no `id`"))?;
    let status = v.get("status").ok_or_else(|| unexpected("synchronization job", "no `status`"))?;
    let code = status
        .get("code")
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected("synchronization job", "no `status.code`"))?;
    let text = |q: &Value, k: &str| q.get(k).and_then(Value::as_str).map(|s| s.chars().take(200).collect::<String>());
    let quarantine = match status.get("quarantine") {
        Some(q) if q.is_object() => Some(Quarantine {
            reason: text(q, "reason").unwrap_or_else(|| "Unknown".into()),
            current_began: text(q, "currentBegan"),
            series_began: text(q, "seriesBegan"),
            next_attempt: text(q, "nextAttempt"),
            error: q.get("error").map(|e| {
                format!("{} {}", text(e, "code").unwrap_or_default(), text(e, "message").unwrap_or_default())
                    .trim()
                    .to_owned()
            }),
        }),
        _ => None,
    };
    // Graph documents camelCase enum values but answers PascalCase; accept both.
    let mut status_code = code.chars().take(40).collect::<String>();
    if let Some(first) = status_code.get(0..1) {
        status_code = first.to_ascii_uppercase() + &status_code[1..];
    }
    Ok(Job {
        id: id.chars().take(256).collect(),
        template_id: v.get("templateId").and_then(Value::as_str).map(str::to_owned),
        status: status_code,
        quarantine,
    })
}

fn credential_pairs(c: &Credentials) -> Value {
    json!([
        {"key": "BaseAddress", "value": c.base_address.as_str()},
        {"key": "SecretToken", "value": c.secret_token.expose()},
    ])
}

#[async_trait]
impl Entra for Graph {
    async fn list_jobs(&self, app: &GraphApp, sp: &str) -> Result<Vec<Job>, EntraError> {
        let a = self
            .send(app, Call::new("list provisioning jobs", Method::GET, &format!("{}/jobs", self.sp_url(sp))))
            .await?;
        let v: Value = serde_json::from_slice(&a.body).map_err(|_| unexpected("job list", "not JSON"))?;
        let list =
            v.get("value").and_then(Value::as_array).ok_or_else(|| unexpected("job list", "no `value` array"))?;
        list.iter().map(parse_job).collect()
    }

    async fn get_job(&self, app: &GraphApp, job: &JobRef) -> Result<Job, EntraError> {
        let a = self.send(app, Call::new("read the provisioning job", Method::GET, &self.job_url(job, ""))).await?;
        let v: Value = serde_json::from_slice(&a.body).map_err(|_| unexpected("job", "not JSON"))?;
        parse_job(&v)
    }

    async fn validate_credentials(
        &self,
        app: &GraphApp,
        job: &JobRef,
        creds: Option<&Credentials>,
    ) -> Result<Validation, EntraError> {
        let body = match creds {
            Some(c) => json!({"useSavedCredentials": false, "credentials": credential_pairs(c)}),
            None => json!({"useSavedCredentials": true}),
        };
        let scrub: Vec<&str> = creds.map(|c| vec![c.secret_token.expose()]).unwrap_or_default();
        let url = self.job_url(job, "/validateCredentials");
        match self.send(app, Call::new("validateCredentials", Method::POST, &url).body(&body, &scrub)).await {
            Ok(a) if a.status == StatusCode::NO_CONTENT || a.status.is_success() => Ok(Validation::Authorized),
            Ok(a) => Err(EntraError::Unexpected {
                status: a.status.as_u16(),
                code: String::new(),
                message: "unexpected success code".into(),
            }),
            Err(EntraError::Unexpected { status: 400, code, message }) => {
                let why = if message.is_empty() {
                    code
                } else if code.is_empty() {
                    message
                } else {
                    format!("{code}: {message}")
                };
                Ok(Validation::Refused(if why.is_empty() { "400 Bad Request".into() } else { why }))
            }
            Err(e) => Err(e),
        }
    }

    async fn save_credentials(&self, app: &GraphApp, sp: &str, creds: &Credentials) -> Result<(), EntraError> {
        let mut pairs = credential_pairs(creds);
        if let Some(list) = pairs.as_array_mut() {
            for (key, value) in creds.settings.pairs() {
                list.push(json!({"key": key, "value": value}));
            }
        }
        let body = json!({"value": pairs});
        let url = format!("{}/secrets", self.sp_url(sp));
        self.send(
            app,
            Call::new("save the token (PUT secrets)", Method::PUT, &url).body(&body, &[creds.secret_token.expose()]),
        )
        .await?;
        Ok(())
    }

    async fn start_job(&self, app: &GraphApp, job: &JobRef) -> Result<(), EntraError> {
        self.send(app, Call::new("start the provisioning job", Method::POST, &self.job_url(job, "/start"))).await?;
        Ok(())
    }
}
