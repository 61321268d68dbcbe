//! Response builders in the exact shapes of Microsoft Graph and the Microsoft
//! identity platform (login.microsoftonline.com).

use std::time::SystemTime;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::util;

/// The content type Graph uses for successful JSON answers.
const GRAPH_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
/// The `WWW-Authenticate` challenge Graph sends with a 401.
const GRAPH_CHALLENGE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

/// The identity platform's text for AADSTS7000215.
pub(crate) const INVALID_SECRET: &str = "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to the app.";

/// The ids Graph attaches to every answer (`request-id`, `client-request-id`).
#[derive(Clone, Debug)]
pub(crate) struct RequestIds {
    pub(crate) request_id: String,
    pub(crate) client_request_id: String,
}

impl RequestIds {
    /// Fresh `request-id`; `client-request-id` echoes the caller's header when present.
    pub(crate) fn new(headers: &HeaderMap) -> Self {
        let request_id = util::uuid();
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| request_id.clone(), str::to_owned);
        Self { request_id, client_request_id }
    }

    fn stamp(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        for (name, value) in [("request-id", &self.request_id), ("client-request-id", &self.client_request_id)] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static(content_type))], body.to_string()).into_response()
}

fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A successful Graph JSON answer.
pub(crate) fn graph_ok(body: &Value, ids: &RequestIds) -> Response {
    ids.stamp(json_response(StatusCode::OK, GRAPH_JSON, body))
}

/// Graph's `204 No Content`.
pub(crate) fn graph_no_content(ids: &RequestIds) -> Response {
    ids.stamp(StatusCode::NO_CONTENT.into_response())
}

/// A Graph error in its standard envelope:
/// `{"error":{"code":..,"message":..,"innerError":{"date":..,"request-id":..,"client-request-id":..}}}`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str, ids: &RequestIds) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": util::graph_date(SystemTime::now()),
                "request-id": ids.request_id,
                "client-request-id": ids.client_request_id,
            }
        }
    });
    let mut response = ids.stamp(json_response(status, "application/json", &body));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(GRAPH_CHALLENGE));
    }
    response
}

/// Graph's 401 for a missing, unknown or expired bearer token.
pub(crate) fn graph_unauthorized(message: &str, ids: &RequestIds) -> Response {
    graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message, ids)
}

/// Graph's 400 `BadRequest`.
pub(crate) fn graph_bad_request(message: &str, ids: &RequestIds) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message, ids)
}

/// Graph's 500, as it answers e.g. camelCase secret keys.
pub(crate) fn graph_internal_error(ids: &RequestIds) -> Response {
    graph_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "An internal server error occurred while processing the request.",
        ids,
    )
}

fn status_or_500(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The answer to an injected `Fault::Status` on a Graph route.
pub(crate) fn graph_fault(code: u16, retry_after: Option<u64>, ids: &RequestIds) -> Response {
    let status = status_or_500(code);
    let (code, message) = match status.as_u16() {
        400 => ("BadRequest", "Bad request."),
        401 => ("InvalidAuthenticationToken", "Access token validation failure."),
        403 => ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
        404 => ("Request_ResourceNotFound", "Resource not found."),
        409 => ("Conflict", "The request conflicts with the current state."),
        429 => ("TooManyRequests", "Too many requests. Please retry after the time given in the Retry-After header."),
        500 => ("InternalServerError", "An internal server error occurred while processing the request."),
        502 => ("BadGateway", "Bad gateway."),
        504 => ("GatewayTimeout", "The operation timed out."),
        _ if status.is_server_error() => {
            ("ServiceUnavailable", "The service is temporarily unavailable. Please try again later.")
        }
        _ => ("UnknownError", "An unknown error occurred."),
    };
    with_retry_after(graph_error(status, code, message, ids), retry_after)
}

/// An identity platform error:
/// `{"error":..,"error_description":"AADSTSnnn: ..","error_codes":[nnn],"timestamp":..,"trace_id":..,"correlation_id":..,"error_uri":..}`.
pub(crate) fn identity_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> Response {
    let trace_id = util::uuid();
    let correlation_id = util::uuid();
    let timestamp = util::aad_timestamp(SystemTime::now());
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{aadsts}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
    });
    json_response(status, "application/json; charset=utf-8", &body)
}

/// The answer to an injected `Fault::Status` on the token route.
pub(crate) fn identity_fault(code: u16, retry_after: Option<u64>) -> Response {
    let status = status_or_500(code);
    let (error, aadsts, description) = match status.as_u16() {
        401 => ("invalid_client", 7_000_215, INVALID_SECRET),
        403 => ("unauthorized_client", 7_000_112, "Application is disabled."),
        429 | 500..=599 => ("temporarily_unavailable", 90_033, "A transient error has occurred. Please try again."),
        _ => ("invalid_request", 50_000, "There was an error issuing a token or an issue with our sign-in service."),
    };
    with_retry_after(identity_error(status, error, aadsts, description), retry_after)
}

/// The identity platform's successful client-credentials answer.
pub(crate) fn token_issued(access_token: &str, lifetime_secs: u64) -> Response {
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime_secs,
        "ext_expires_in": lifetime_secs,
        "access_token": access_token,
    });
    json_response(StatusCode::OK, "application/json; charset=utf-8", &body)
}

/// A plain JSON answer for the control API.
pub(crate) fn control_json(body: &Value) -> Response {
    json_response(StatusCode::OK, "application/json", body)
}

/// A raw answer for [`Fault::Respond`](crate::Fault::Respond).
pub(crate) fn raw(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
