//! `entra-sim`: an in-process simulator of the parts of Microsoft Entra that
//! `scim-relay` talks to.
//!
//! * the identity platform's client-credentials token endpoint
//!   (`POST /{tenant}/oauth2/v2.0/token`), with a client secret, a
//!   certificate client assertion, or a federated token (see [`SimConfig`]), and
//! * Microsoft Graph v1.0's synchronization API for service principals
//!   (list/get jobs, `validateCredentials`, `PUT secrets`, `start`, `restart`),
//!
//! answering with Graph's real request/response shapes. It also plays the part
//! of "Apple" (which SCIM tokens are valid), records every Graph/login request,
//! can inject faults per route, and has an HTTP sink for SNS notifications
//! delivered by moto.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use entra_sim::{Fault, Route, Sim, SimConfig};
//!
//! let sim = Sim::start(SimConfig::default()).await?;
//! sim.add_job("sp-1", "Apple.job-1", "Active");
//! sim.accept_token("good-token");
//! sim.push_fault(Route::PutSecrets, Fault::Status { code: 429, retry_after: Some(1) });
//! // ... point the client at sim.url() for both Graph and login ...
//! assert_eq!(sim.saved_credentials("sp-1").map(|c| c.1).as_deref(), Some("good-token"));
//! # Ok(()) }
//! ```

mod assertion;
pub mod aws_proxy;
mod control;
mod graph;
mod responses;
pub mod runtime;
mod server;
mod state;
mod util;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::State;

/// Credentials and token settings of the simulated app registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The only `client_id` the token endpoint accepts.
    pub client_id: String,
    /// The only `client_secret` the token endpoint accepts.
    pub client_secret: String,
    /// `expires_in` of issued access tokens; Graph rejects them afterwards.
    pub token_lifetime_secs: u64,
    /// Certificates (DER) uploaded to the app registration: a client
    /// assertion whose `x5t#S256` (or `x5t`) names one of them, signed with
    /// its key, signs the app in. Empty: certificate sign-in is refused.
    pub certificates: Vec<Vec<u8>>,
    /// The app registration's federated identity credentials.
    pub federated_credentials: Vec<FederatedCredential>,
    /// The signing keys of external token issuers (what Entra fetches from
    /// the issuer's OIDC discovery / JWKS endpoints).
    pub issuer_keys: Vec<IssuerKey>,
    /// Seconds added to the simulator's clock when it checks an assertion's
    /// `exp` / `nbf` (clock-skew tests); 0 normally.
    pub clock_offset_secs: i64,
}

impl Default for SimConfig {
    /// `"sim-client-id"`, `"sim-client-secret"`, 3599 seconds (what Entra
    /// issues), no certificate, no federated credential.
    fn default() -> Self {
        Self {
            client_id: "sim-client-id".to_owned(),
            client_secret: "sim-client-secret".to_owned(),
            token_lifetime_secs: 3599,
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
            issuer_keys: Vec::new(),
            clock_offset_secs: 0,
        }
    }
}

/// A federated identity credential of the app registration: Entra accepts a
/// token from `issuer` about `subject` for one of `audiences` as the app's
/// client assertion (exact, case-sensitive matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    /// e.g. `https://abc123.tokens.sts.global.api.aws` (AWS outbound identity federation).
    pub issuer: String,
    /// e.g. `arn:aws:iam::123456789012:role/scim-relay` (the function's role).
    pub subject: String,
    /// Usually `["api://AzureADTokenExchange"]`.
    pub audiences: Vec<String>,
}

/// An external issuer's RS256 verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerKey {
    pub issuer: String,
    /// The RSA public key, DER: SubjectPublicKeyInfo or PKCS#1 RSAPublicKey.
    pub public_key: Vec<u8>,
}

/// The simulated endpoints, used to aim faults and to label recordings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /{tenant}/oauth2/v2.0/token`
    Token,
    /// `GET /v1.0/servicePrincipals/{sp}/synchronization/jobs`
    ListJobs,
    /// `GET /v1.0/servicePrincipals/{sp}/synchronization/jobs/{job}`
    GetJob,
    /// `POST .../jobs/{job}/validateCredentials`
    ValidateCredentials,
    /// `PUT /v1.0/servicePrincipals/{sp}/synchronization/secrets`
    PutSecrets,
    /// `POST .../jobs/{job}/start`
    Start,
    /// `POST .../jobs/{job}/restart`
    Restart,
    /// Only for faults: matches every Graph/login request (including
    /// unrecognised paths), never the control API or the SNS sink.
    Any,
}

/// A misbehaviour to inject into a route.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and a Graph-shaped error body (identity
    /// platform-shaped on [`Route::Token`]); `retry_after` adds a
    /// `Retry-After: N` header.
    Status {
        /// HTTP status code to answer with.
        code: u16,
        /// Seconds for the `Retry-After` header, if any.
        retry_after: Option<u64>,
    },
    /// Wait this long, then handle the request normally.
    Slow(Duration),
    /// Close the connection without sending any HTTP response.
    Drop,
    /// Answer this status with this raw body (JSON content type): for
    /// malformed, truncated, wrongly typed or oversized answers.
    Respond {
        /// HTTP status code to answer with.
        status: u16,
        /// The body, sent as is.
        body: String,
    },
}

/// Scheduled throttling, for load tests: of every `every` Graph/login
/// requests (counted from when it is set), the last `burst` are answered
/// `429 Too Many Requests`, with `Retry-After: retry_after` when given. A
/// one-shot fault queued for a request still comes first; a throttled
/// request is answered at once (no persistent [`Fault::Slow`] delay), as
/// Graph answers throttled calls quickly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The period, in requests; 0 turns throttling off.
    pub every: u64,
    /// How many requests at the end of each period are throttled (less than `every`).
    pub burst: u64,
    /// Seconds for the `Retry-After` header, if any.
    pub retry_after: Option<u64>,
}

/// One request received on a Graph or login route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// HTTP method, e.g. `"PUT"`.
    pub method: String,
    /// The request path without the query string.
    pub path: String,
    /// The recognised route, `None` for unknown paths.
    pub route: Option<Route>,
    /// The status answered; 0 when no response was sent (a [`Fault::Drop`],
    /// or the client gave up during a [`Fault::Slow`]).
    pub status: u16,
    /// The raw request body (lossy UTF-8).
    pub body: String,
    /// The raw `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running simulator. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Sim {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Sim {
    /// Shows only the address: the state holds secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Sim {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Binds `addr` and serves on the current tokio runtime until the runtime
    /// shuts down.
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(addr).await?;
        let sim = Sim { state: Arc::new(Mutex::new(State::new(config))), addr: listener.local_addr()? };
        server::spawn(listener, sim.router());
        Ok(sim)
    }

    fn router(&self) -> axum::Router {
        control::router(self.clone())
            .merge(graph::router(self.clone()))
            .layer(axum::middleware::from_fn(server::log_request))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://IP:PORT` — the base URL for both Graph and the login endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a service principal with no provisioning job (if it is not there yet).
    pub fn add_service_principal(&self, sp_id: &str) {
        self.lock().service_principal_mut(sp_id);
    }

    /// Adds a job with status `code` (e.g. `"Active"`, `"Paused"`,
    /// `"Quarantine"`, `"NotRun"`, `"NotConfigured"`), creating the service
    /// principal if needed. An existing job just gets the new status.
    pub fn add_job(&self, sp_id: &str, job_id: &str, code: &str) {
        self.lock().upsert_job(sp_id, job_id, code, None);
    }

    /// Sets a job's status code (creating the job if needed). With
    /// `Some(reason)` — or for code `"Quarantine"`, which then defaults the
    /// reason to `EncounteredQuarantineException` — `status.quarantine` is a
    /// full quarantine object; otherwise it is `null`.
    pub fn set_job_status(&self, sp_id: &str, job_id: &str, code: &str, quarantine_reason: Option<&str>) {
        self.lock().upsert_job(sp_id, job_id, code, quarantine_reason);
    }

    /// The job's current status code.
    pub fn job_status(&self, sp_id: &str, job_id: &str) -> Option<String> {
        let state = self.lock();
        let job = state.service_principals.get(sp_id)?.job(job_id)?;
        Some(job.code.clone())
    }

    /// "Apple" accepts this SCIM token (also lifts an earlier refusal).
    pub fn accept_token(&self, token: &str) {
        self.lock().accept_token(token);
    }

    /// Accepts every non-empty SCIM token not explicitly refused (demo mode).
    pub fn set_accept_all(&self, on: bool) {
        self.lock().accept_all = on;
    }

    /// "Apple" no longer accepts this SCIM token, even in accept-all mode.
    pub fn refuse_token(&self, token: &str) {
        self.lock().refuse_token(token);
    }

    /// `(BaseAddress, SecretToken)` as last saved by `PUT .../secrets`.
    pub fn saved_credentials(&self, sp_id: &str) -> Option<(String, String)> {
        self.lock().service_principals.get(sp_id)?.saved_credentials()
    }

    /// Seeds the saved credentials (creating the service principal if needed).
    /// The token is not affected by [`Sim::set_break_saved_after_put`].
    pub fn set_saved_credentials(&self, sp_id: &str, base_address: &str, token: &str) {
        self.lock().service_principal_mut(sp_id).save_secrets(
            vec![("BaseAddress".to_owned(), base_address.to_owned()), ("SecretToken".to_owned(), token.to_owned())],
            false,
        );
    }

    /// Every synchronization secret the service principal holds, in PUT
    /// order (`SecretToken` included: in-process tests only; the control
    /// API's `/_sim/state` redacts it).
    pub fn saved_secrets(&self, sp_id: &str) -> Vec<(String, String)> {
        self.lock().service_principals.get(sp_id).map(|sp| sp.secrets().to_vec()).unwrap_or_default()
    }

    /// One saved synchronization secret, e.g. `SyncAll`.
    pub fn saved_secret(&self, sp_id: &str, key: &str) -> Option<String> {
        self.lock().service_principals.get(sp_id)?.secret(key).map(str::to_owned)
    }

    /// Seeds secrets as an admin's portal save would (merged by key), e.g.
    /// `SyncAll` and `SyncNotificationSettings` next to the credentials.
    pub fn set_saved_secrets(&self, sp_id: &str, secrets: &[(&str, &str)]) {
        let pairs = secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.lock().service_principal_mut(sp_id).save_secrets(pairs, false);
    }

    /// OData semantics for `PUT .../synchronization/secrets`: when on, a PUT
    /// replaces the whole collection (keys not sent are gone); when off (the
    /// default), it merges by key. Which one Graph does is not documented.
    pub fn set_put_secrets_replaces(&self, on: bool) {
        self.lock().put_secrets_replaces = on;
    }

    /// Queues a one-shot fault; each matching request consumes one, FIFO per
    /// route. Faults for the exact route are consumed before [`Route::Any`]
    /// ones, and one-shot faults before persistent ones.
    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.lock().push_fault(route, fault);
    }

    /// Sets (or with `None` clears) a fault applied to every matching request.
    pub fn set_fault_always(&self, route: Route, fault: Option<Fault>) {
        self.lock().set_fault_always(route, fault);
    }

    /// "The saved token stops working right after PUT": when armed, the
    /// `SecretToken` saved by the next `PUT .../secrets` fails
    /// `validateCredentials` with `useSavedCredentials: true`, even when
    /// "Apple" accepts it. One-shot: that PUT disarms it, so a later PUT
    /// (a roll-back to the previous token) works again.
    pub fn set_break_saved_after_put(&self, on: bool) {
        self.lock().break_saved_after_put = on;
    }

    /// All Graph/login requests so far (not the control API or SNS sink).
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests()
    }

    /// Every `BaseAddress` a request asked Entra to test
    /// (`validateCredentials`) or save (`PUT .../secrets`), in order: where a
    /// token would have been sent.
    pub fn base_addresses(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| matches!(r.route, Some(Route::ValidateCredentials | Route::PutSecrets)))
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .flat_map(|body| {
                let pairs = body.get("credentials").or_else(|| body.get("value")).cloned();
                pairs.and_then(|p| p.as_array().cloned()).unwrap_or_default()
            })
            .filter(|pair| pair.get("key").and_then(serde_json::Value::as_str) == Some("BaseAddress"))
            .filter_map(|pair| pair.get("value").and_then(serde_json::Value::as_str).map(str::to_owned))
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().clear_requests();
    }

    /// SNS notifications received on `POST /sns-sink` (the full SNS envelope
    /// with `Type: "Notification"`, or any non-SNS JSON; non-JSON bodies are
    /// kept as a JSON string).
    pub fn sns_messages(&self) -> Vec<serde_json::Value> {
        self.lock().sns_messages.clone()
    }

    /// `SubscriptionConfirmation` / `UnsubscribeConfirmation` envelopes received
    /// on the SNS sink (moto never sends these; real SNS does).
    pub fn sns_confirmations(&self) -> Vec<serde_json::Value> {
        self.lock().sns_confirmations.clone()
    }

    /// The most Graph requests (sign-ins not counted) that were being
    /// answered at one time.
    pub fn max_graph_in_flight(&self) -> usize {
        self.lock().max_graph_in_flight
    }

    /// How many access tokens the login endpoint has issued.
    pub fn token_requests(&self) -> usize {
        self.lock().tokens_issued
    }

    /// How each issued access token was obtained, in order: `"secret"`,
    /// `"certificate"` or `"federated"`.
    pub fn sign_in_methods(&self) -> Vec<&'static str> {
        self.lock().sign_in_methods.clone()
    }

    /// Uploads a certificate (DER) to the app registration.
    pub fn add_certificate(&self, der: &[u8]) {
        self.lock().config.certificates.push(der.to_vec());
    }

    /// Removes every uploaded certificate.
    pub fn clear_certificates(&self) {
        self.lock().config.certificates.clear();
    }

    /// Adds a federated identity credential to the app registration.
    pub fn add_federated_credential(&self, credential: FederatedCredential) {
        self.lock().config.federated_credentials.push(credential);
    }

    /// Publishes an issuer's signing key (replacing an earlier one).
    pub fn set_issuer_key(&self, key: IssuerKey) {
        let mut state = self.lock();
        state.config.issuer_keys.retain(|k| k.issuer != key.issuer);
        state.config.issuer_keys.push(key);
    }

    /// Shifts the clock used for assertion times by `secs` (clock skew).
    pub fn set_clock_offset(&self, secs: i64) {
        self.lock().config.clock_offset_secs = secs;
    }

    /// Sets (or with `None` clears) scheduled throttling; see [`Throttle`].
    /// The request count starts again from zero.
    pub fn set_throttle(&self, throttle: Option<Throttle>) {
        self.lock().set_throttle(throttle);
    }
}
