//! The simulated Graph synchronization API and identity platform token
//! endpoint: request classification, fault injection, recording and the
//! endpoint logic.

use axum::body::{to_bytes, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::responses::{
    graph_bad_request, graph_error, graph_fault, graph_internal_error, graph_no_content, graph_ok, graph_unauthorized,
    identity_error, identity_fault, token_issued, RequestIds, INVALID_SECRET,
};
use crate::server::ConnectionKiller;
use crate::state::{AccessTokenCheck, Job, ServicePrincipal, State as SimState};
use crate::{Fault, Recorded, Route, Sim};

/// Request bodies larger than this are refused.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The message of a failed `validateCredentials`.
const CREDENTIALS_INVALID: &str = "We received this unexpected response from your application: the credentials are invalid. Verify the Tenant URL (BaseAddress) and Secret Token (SecretToken) and try again.";

/// `resetScope` flags Graph knows for `restart`.
const RESET_SCOPES: [&str; 6] =
    ["Watermark", "Escrows", "QuarantineState", "Full", "ForceDeletes", "ConnectorDataStore"];

/// The Graph/login surface: everything not handled by the control API.
pub(crate) fn router(sim: Sim) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// A classified request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target<'a> {
    Token,
    ListJobs { sp: &'a str },
    GetJob { sp: &'a str, job: &'a str },
    ValidateCredentials { sp: &'a str, job: &'a str },
    PutSecrets { sp: &'a str },
    Start { sp: &'a str, job: &'a str },
    Restart { sp: &'a str, job: &'a str },
    Unknown,
}

impl Target<'_> {
    fn route(self) -> Option<Route> {
        Some(match self {
            Target::Token => Route::Token,
            Target::ListJobs { .. } => Route::ListJobs,
            Target::GetJob { .. } => Route::GetJob,
            Target::ValidateCredentials { .. } => Route::ValidateCredentials,
            Target::PutSecrets { .. } => Route::PutSecrets,
            Target::Start { .. } => Route::Start,
            Target::Restart { .. } => Route::Restart,
            Target::Unknown => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Target::ListJobs { .. } | Target::GetJob { .. } | Target::Unknown => Method::GET,
            Target::PutSecrets { .. } => Method::PUT,
            Target::Token | Target::ValidateCredentials { .. } | Target::Start { .. } | Target::Restart { .. } => {
                Method::POST
            }
        }
    }
}

/// Graph URL segments are case-insensitive.
fn is(segment: &str, literal: &str) -> bool {
    segment.eq_ignore_ascii_case(literal)
}

fn classify(path: &str) -> Target<'_> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        [tenant, oauth2, version, token]
            if !tenant.is_empty() && is(oauth2, "oauth2") && is(version, "v2.0") && is(token, "token") =>
        {
            Target::Token
        }
        [version, sps, sp, sync, rest @ ..]
            if is(version, "v1.0") && is(sps, "servicePrincipals") && !sp.is_empty() && is(sync, "synchronization") =>
        {
            match rest {
                [secrets] if is(secrets, "secrets") => Target::PutSecrets { sp },
                [jobs] if is(jobs, "jobs") => Target::ListJobs { sp },
                [jobs, job] if is(jobs, "jobs") && !job.is_empty() => Target::GetJob { sp, job },
                [jobs, job, action] if is(jobs, "jobs") && !job.is_empty() => {
                    if is(action, "validateCredentials") {
                        Target::ValidateCredentials { sp, job }
                    } else if is(action, "start") {
                        Target::Start { sp, job }
                    } else if is(action, "restart") {
                        Target::Restart { sp, job }
                    } else {
                        Target::Unknown
                    }
                }
                _ => Target::Unknown,
            }
        }
        _ => Target::Unknown,
    }
}

/// Counts a Graph request as in flight until it is answered or dropped.
struct InFlight(Sim);

impl InFlight {
    fn enter(sim: &Sim) -> Self {
        sim.lock().graph_request_started();
        Self(sim.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().graph_request_ended();
    }
}

/// Entry point for every Graph/login request: record, apply faults, dispatch.
async fn handle(State(sim): State<Sim>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let target = classify(&path);
    let route = target.route();
    let ids = RequestIds::new(&parts.headers);
    let _in_flight = (route.is_some() && route != Some(Route::Token)).then(|| InFlight::enter(&sim));
    let body = to_bytes(body, MAX_BODY_BYTES).await.ok();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        route,
        status: 0,
        body: body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        authorization: parts.headers.get(AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    };
    let (seq, fault) = {
        let mut state = sim.lock();
        let seq = state.record_request(recorded);
        (seq, state.take_fault(route))
    };

    let faulted = match fault {
        None => None,
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Fault::Status { code, retry_after }) => Some(if route == Some(Route::Token) {
            identity_fault(code, retry_after)
        } else {
            graph_fault(code, retry_after, &ids)
        }),
        Some(Fault::Respond { status, body }) => Some(crate::responses::raw(status, body)),
        Some(Fault::Drop) => match parts.extensions.get::<ConnectionKiller>() {
            Some(killer) => {
                tracing::info!("{} {} -> connection dropped (fault)", parts.method, path);
                killer.kill();
                // The connection (and with it this future) is about to be dropped.
                return std::future::pending().await;
            }
            None => Some(graph_internal_error(&ids)),
        },
    };
    let response = match (faulted, body) {
        (Some(response), _) => response,
        (None, None) => graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large or could not be read.",
            &ids,
        ),
        (None, Some(body)) => dispatch(&sim, &parts.method, &parts.headers, &path, target, &body, &ids),
    };
    sim.lock().finish_request(seq, response.status().as_u16());
    response
}

fn dispatch(
    sim: &Sim,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    target: Target<'_>,
    body: &Bytes,
    ids: &RequestIds,
) -> Response {
    let mut state = sim.lock();
    match target {
        Target::Unknown => return Failure::UnknownPath.respond(ids),
        Target::Token if method != Method::POST => {
            return identity_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900_561,
                &format!("The endpoint only accepts POST, OPTIONS requests. Received a {method} request."),
            )
        }
        Target::Token => {
            // The URL the client called: a client assertion's `aud` must name it.
            let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
            return issue_token(&mut state, &format!("http://{host}{path}"), body);
        }
        _ => {}
    }
    graph_call(&mut state, method, headers, target, body, ids).unwrap_or_else(|failure| failure.respond(ids))
}

/// Why a Graph call failed; turned into Graph's error answer by [`Failure::respond`].
#[derive(Debug)]
enum Failure {
    Unauthorized(&'static str),
    MethodNotAllowed(Method),
    UnknownPath,
    ServicePrincipalNotFound(String),
    JobNotFound(String),
    BadRequest(String),
    /// What Graph answers to camelCase secret keys.
    Internal,
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    fn respond(self, ids: &RequestIds) -> Response {
        match self {
            Self::Unauthorized(message) => graph_unauthorized(message, ids),
            Self::MethodNotAllowed(method) => graph_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                &format!("The HTTP method '{method}' is not allowed for this resource."),
                ids,
            ),
            Self::UnknownPath => graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "Resource not found for the segment in the request URL.",
                ids,
            ),
            Self::ServicePrincipalNotFound(sp) => graph_error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{sp}' does not exist or one of its queried reference-property objects are not present."
                ),
                ids,
            ),
            Self::JobNotFound(job) => graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("The synchronization job '{job}' was not found."),
                ids,
            ),
            Self::BadRequest(message) => graph_bad_request(&message, ids),
            Self::Internal => graph_internal_error(ids),
        }
    }
}

/// The Graph part proper: authentication, method check, endpoint logic.
fn graph_call(
    state: &mut SimState,
    method: &Method,
    headers: &HeaderMap,
    target: Target<'_>,
    body: &[u8],
    ids: &RequestIds,
) -> Result<Response, Failure> {
    // Every Graph call needs a live access token from the login endpoint.
    match bearer_token(headers).map(|t| state.check_access_token(t)) {
        None => return Err(Failure::Unauthorized("Access token is empty.")),
        Some(AccessTokenCheck::Unknown) => {
            return Err(Failure::Unauthorized("Access token validation failure. Invalid audience."))
        }
        Some(AccessTokenCheck::Expired) => {
            return Err(Failure::Unauthorized("Lifetime validation failed, the token is expired."))
        }
        Some(AccessTokenCheck::Valid) => {}
    }
    if *method != target.method() {
        return Err(Failure::MethodNotAllowed(method.clone()));
    }
    match target {
        Target::ListJobs { sp } => Ok(graph_ok(&list_jobs(state, sp)?, ids)),
        Target::GetJob { sp, job } => Ok(graph_ok(&get_job(state, sp, job)?, ids)),
        Target::ValidateCredentials { sp, job } => {
            validate_credentials(state, sp, job, body)?;
            Ok(graph_no_content(ids))
        }
        Target::PutSecrets { sp } => {
            put_secrets(state, sp, body)?;
            Ok(graph_no_content(ids))
        }
        Target::Start { sp, job } => {
            job_mut(state, sp, job)?.activate();
            Ok(graph_no_content(ids))
        }
        Target::Restart { sp, job } => {
            restart_job(state, sp, job, body)?;
            Ok(graph_no_content(ids))
        }
        Target::Token | Target::Unknown => Err(Failure::UnknownPath),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

fn service_principal<'s>(state: &'s SimState, sp: &str) -> Result<&'s ServicePrincipal, Failure> {
    state.service_principals.get(sp).ok_or_else(|| Failure::ServicePrincipalNotFound(sp.to_owned()))
}

/// Looks up a job, or the 404 Graph would answer.
fn find_job<'s>(state: &'s SimState, sp: &str, job: &str) -> Result<&'s Job, Failure> {
    service_principal(state, sp)?.job(job).ok_or_else(|| Failure::JobNotFound(job.to_owned()))
}

fn job_mut<'s>(state: &'s mut SimState, sp: &str, job: &str) -> Result<&'s mut Job, Failure> {
    state
        .service_principals
        .get_mut(sp)
        .ok_or_else(|| Failure::ServicePrincipalNotFound(sp.to_owned()))?
        .job_mut(job)
        .ok_or_else(|| Failure::JobNotFound(job.to_owned()))
}

fn jobs_context(sp: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/$metadata#servicePrincipals('{sp}')/synchronization/jobs")
}

fn list_jobs(state: &SimState, sp: &str) -> Result<Value, Failure> {
    let jobs: Vec<Value> = service_principal(state, sp)?.jobs.iter().map(Job::to_json).collect();
    Ok(json!({ "@odata.context": jobs_context(sp), "value": jobs }))
}

fn get_job(state: &SimState, sp: &str, job: &str) -> Result<Value, Failure> {
    let mut body = find_job(state, sp, job)?.to_json();
    if let Some(object) = body.as_object_mut() {
        object.insert("@odata.context".to_owned(), Value::String(format!("{}/$entity", jobs_context(sp))));
    }
    Ok(body)
}

/// A `{"key":..,"value":..}` pair as used by secrets and credentials.
#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
    value: String,
}

/// Graph's secret keys are PascalCase enum names; lowercase-initial keys make
/// it fail with a 500.
fn reject_camel_case_keys(pairs: &[KeyValue]) -> Result<(), Failure> {
    match pairs.iter().any(|kv| kv.key.starts_with(|c: char| c.is_ascii_lowercase())) {
        true => Err(Failure::Internal),
        false => Ok(()),
    }
}

fn parse_body<'b, T: Deserialize<'b>>(body: &'b [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| Failure::bad_request(format!("Invalid request body: {error}.")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidateCredentialsRequest {
    #[serde(default)]
    use_saved_credentials: bool,
    #[serde(default)]
    credentials: Option<Vec<KeyValue>>,
}

fn is_https_url(base_address: &str) -> bool {
    base_address.len() > "https://".len()
        && base_address.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        && !base_address.contains(char::is_whitespace)
}

fn validate_credentials(state: &SimState, sp: &str, job: &str, body: &[u8]) -> Result<(), Failure> {
    find_job(state, sp, job)?;
    let request: ValidateCredentialsRequest = parse_body(body)?;
    let credentials = request.credentials.unwrap_or_default();
    reject_camel_case_keys(&credentials)?;
    let (base_address, token, broken) = if request.use_saved_credentials {
        let principal = service_principal(state, sp)?;
        let (base, token) = principal.saved_credentials().ok_or_else(|| {
            Failure::bad_request(
                "The credentials are invalid: no saved credentials were found for this service principal.",
            )
        })?;
        (base, token, principal.saved_token_broken())
    } else {
        let find = |key: &str| credentials.iter().find(|kv| kv.key == key).map(|kv| kv.value.clone());
        match (find("BaseAddress"), find("SecretToken")) {
            (Some(base), Some(token)) => (base, token, false),
            _ => {
                return Err(Failure::bad_request(
                    "The credentials are invalid: both BaseAddress and SecretToken are required.",
                ))
            }
        }
    };
    if !is_https_url(&base_address) || broken || !state.scim_token_accepted(&token) {
        return Err(Failure::bad_request(CREDENTIALS_INVALID));
    }
    Ok(())
}

/// The provisioning settings are strings holding Entra's own formats:
/// `SyncAll` "true"/"false", `SyncNotificationSettings` a JSON object text.
/// (Stricter than Graph is known to be: it checks what the relay sends.)
fn check_setting_values(pairs: &[KeyValue]) -> Result<(), Failure> {
    for kv in pairs {
        let ok = match kv.key.as_str() {
            "SyncAll" => matches!(kv.value.as_str(), "true" | "false" | "True" | "False"),
            "SyncNotificationSettings" => serde_json::from_str::<Value>(&kv.value).is_ok_and(|v| v.is_object()),
            _ => true,
        };
        if !ok {
            return Err(Failure::bad_request(format!("The value of secret '{}' is not valid.", kv.key)));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct PutSecretsRequest {
    #[serde(default)]
    value: Option<Vec<KeyValue>>,
}

fn put_secrets(state: &mut SimState, sp: &str, body: &[u8]) -> Result<(), Failure> {
    service_principal(state, sp)?;
    let request: PutSecretsRequest = parse_body(body)?;
    let secrets =
        request.value.ok_or_else(|| Failure::bad_request("The request body must contain a 'value' array."))?;
    reject_camel_case_keys(&secrets)?;
    if secrets.iter().any(|kv| kv.key.is_empty()) {
        return Err(Failure::bad_request("Secret keys must not be empty."));
    }
    check_setting_values(&secrets)?;
    // One-shot: only the first PUT after arming is broken (the roll-back PUT works).
    let broken = std::mem::take(&mut state.break_saved_after_put);
    let replaces = state.put_secrets_replaces;
    let pairs = secrets.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let principal = state.service_principal_mut(sp);
    match replaces {
        true => principal.replace_secrets(pairs, broken),
        false => principal.save_secrets(pairs, broken),
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct RestartRequest {
    criteria: Option<RestartCriteria>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartCriteria {
    reset_scope: Option<String>,
}

/// Parses a comma-separated `resetScope` flag list; `Some(resets_quarantine)`.
fn parse_reset_scope(scope: &str) -> Option<bool> {
    let mut resets_quarantine = false;
    let mut any = false;
    for flag in scope.split(',').map(str::trim) {
        let known = RESET_SCOPES.iter().find(|k| k.eq_ignore_ascii_case(flag))?;
        resets_quarantine |= matches!(*known, "QuarantineState" | "Full");
        any = true;
    }
    any.then_some(resets_quarantine)
}

fn restart_job(state: &mut SimState, sp: &str, job: &str, body: &[u8]) -> Result<(), Failure> {
    find_job(state, sp, job)?;
    let request: RestartRequest = parse_body(body)?;
    let scope = request
        .criteria
        .and_then(|c| c.reset_scope)
        .ok_or_else(|| Failure::bad_request("The request body must contain 'criteria' with a 'resetScope'."))?;
    let resets_quarantine = parse_reset_scope(&scope)
        .ok_or_else(|| Failure::bad_request(format!("Invalid value '{scope}' for 'resetScope'.")))?;
    if resets_quarantine {
        job_mut(state, sp, job)?.activate();
    }
    Ok(())
}

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client-credentials token request, authenticated by a client secret, a
/// certificate client assertion or a federated token (see [`crate::assertion`]).
fn issue_token(state: &mut SimState, token_url: &str, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let param = |name: &str| {
        form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|value| !value.is_empty())
    };
    let missing = |name: &str| {
        identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let Some(grant_type) = param("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = param("client_id") else {
        return missing("client_id");
    };
    let Some(scope) = param("scope") else {
        return missing("scope");
    };
    if !scope.ends_with("/.default") {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    }
    if let Some(assertion) = param("client_assertion") {
        let Some(assertion_type) = param("client_assertion_type") else {
            return missing("client_assertion_type");
        };
        if assertion_type != JWT_BEARER {
            return identity_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50_027,
                &format!("Invalid client_assertion_type; expected '{JWT_BEARER}'."),
            );
        }
        return match crate::assertion::check(&state.config, client_id, token_url, assertion) {
            Ok(how) => {
                state.sign_in_methods.push(how.method());
                let token = state.issue_access_token();
                token_issued(&token, state.config.token_lifetime_secs)
            }
            Err(refusal) => refusal.respond(),
        };
    }
    let Some(client_secret) = param("client_secret") else {
        return identity_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        );
    };
    if client_id != state.config.client_id || client_secret != state.config.client_secret {
        return identity_error(StatusCode::UNAUTHORIZED, "invalid_client", 7_000_215, INVALID_SECRET);
    }
    state.sign_in_methods.push("secret");
    let token = state.issue_access_token();
    token_issued(&token, state.config.token_lifetime_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/tenant/oauth2/v2.0/token"), Target::Token);
        assert_eq!(classify("/v1.0/servicePrincipals/sp/synchronization/jobs"), Target::ListJobs { sp: "sp" });
        assert_eq!(
            classify("/v1.0/serviceprincipals/sp/synchronization/jobs/j/VALIDATECREDENTIALS"),
            Target::ValidateCredentials { sp: "sp", job: "j" }
        );
        assert_eq!(classify("/v1.0/servicePrincipals/sp/synchronization/secrets"), Target::PutSecrets { sp: "sp" });
        assert_eq!(
            classify("/v1.0/servicePrincipals/sp/synchronization/jobs/j/restart"),
            Target::Restart { sp: "sp", job: "j" }
        );
        assert_eq!(classify("/v1.0/servicePrincipals//synchronization/jobs"), Target::Unknown);
        assert_eq!(classify("/beta/servicePrincipals/sp/synchronization/jobs"), Target::Unknown);
        assert_eq!(classify("/"), Target::Unknown);
    }

    #[test]
    fn parses_reset_scopes() {
        assert_eq!(parse_reset_scope("QuarantineState"), Some(true));
        assert_eq!(parse_reset_scope("Watermark, Escrows, QuarantineState"), Some(true));
        assert_eq!(parse_reset_scope("Watermark"), Some(false));
        assert_eq!(parse_reset_scope("Watermark, Nope"), None);
        assert_eq!(parse_reset_scope(""), None);
    }

    #[test]
    fn https_check() {
        assert!(is_https_url("https://federation.apple.com/feeds/business/scim"));
        assert!(!is_https_url("http://federation.apple.com"));
        assert!(!is_https_url("https://"));
        assert!(!is_https_url("https://a b"));
    }
}
