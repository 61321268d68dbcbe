//! The Lambda runtime loop: decode event → request → relay → result.
//!
//! Cold start: nothing but what the first poll of the Runtime API needs
//! happens before it. The relay (configuration, AWS and HTTP clients, TLS
//! roots) is built by the first invocation, once per process: on a cold
//! start Lambda has the event waiting, so building it in parallel with the
//! poll would save nothing but compete with the poll for the CPU (a 128 MB
//! function has a fraction of one). A configuration error is reported by
//! every invocation (errorType `Configuration`), not by a crash loop at
//! start-up.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::error;

use crate::core::config::Defaults;
use crate::lambda::handler::{invoke, time_left};
use crate::lambda::invocation_error::InvocationError;
use crate::lambda::relay::Relay;

/// The relay, or why it could not be built; built once per process.
static RELAY: OnceCell<Result<Relay, InvocationError>> = OnceCell::const_new();

/// Runs the function: the panic hook, logging, then the Runtime API loop.
pub async fn run() -> Result<(), Error> {
    crate::lambda::panic::install_hook();
    init_tracing();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        // A panic becomes `Internal` (its location is logged by the hook;
        // its payload is withheld, as it could hold anything).
        AssertUnwindSafe(handle(event)).catch_unwind().await.unwrap_or_else(|_| {
            Err(InvocationError::Internal(
                "the function panicked (the log line before this error says where; details are withheld so that \
                 no secret can leak)"
                    .into(),
            ))
        })
    }))
    .await
}

fn init_tracing() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("AWS_LAMBDA_LOG_LEVEL"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).without_time().init();
    } else {
        builder.with_ansi(false).init();
    }
}

async fn build() -> Result<Relay, InvocationError> {
    let built = match Defaults::from_process_env() {
        Ok(defaults) => Relay::from_defaults(defaults).await.map_err(InvocationError::from),
        Err(e) => Err(InvocationError::from(e)),
    };
    if let Err(e) = &built {
        error!(error_type = e.error_type(), error = %e.message(), "scim-relay cannot run; every invocation reports this error");
    }
    built
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    let relay = RELAY.get_or_init(build).await.as_ref().map_err(Clone::clone)?;
    invoke(relay, &event.payload, time_left(event.context.deadline)).await
}
