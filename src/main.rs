//! The Lambda binary: decode event → request → relay → result.
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
use std::time::Duration;

use futures::FutureExt;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use scim_relay::core::config::Defaults;
use scim_relay::lambda::handler::{decode, Decoded};
use scim_relay::lambda::invocation_error::InvocationError;
use scim_relay::lambda::relay::Relay;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

/// Lambda's longest timeout, assumed when the runtime sends no deadline.
const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

/// The relay, or why it could not be built; built once per process.
static RELAY: OnceCell<Result<Relay, InvocationError>> = OnceCell::const_new();

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
        Ok(defaults) => Relay::from_defaults(defaults).await.map_err(InvocationError::Internal),
        Err(e) => Err(InvocationError::from(e)),
    };
    if let Err(e) = &built {
        error!(error_type = e.error_type(), error = %e.message(), "scim-relay cannot run; every invocation reports this error");
    }
    built
}

async fn relay() -> Result<&'static Relay, InvocationError> {
    RELAY.get_or_init(build).await.as_ref().map_err(Clone::clone)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    scim_relay::lambda::panic::install_hook();
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

async fn handle(event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
    let relay = relay().await?;
    let decoded = decode(&event.payload, &relay.defaults).map_err(|e| {
        error!(error = %e, "invocation refused");
        InvocationError::from(e)
    })?;
    let req = match decoded {
        Decoded::Run(req) => req,
        Decoded::Queue(batch) => {
            // Fan-out messages: failures are reported per message (SQS
            // delivers those again), never as an invocation error.
            let deadline = tokio::time::Instant::now() + time_left(event.context.deadline);
            info!(messages = batch.messages.len(), "fan-out messages received");
            let retries_before = relay.graph().retries();
            let outcome = scim_relay::lambda::queue::run_queue_batch(relay, &batch, Some(deadline)).await;
            let retries = relay.graph().retries().saturating_sub(retries_before);
            for line in scim_relay::lambda::metrics::emf_lines(&outcome.report, retries, now_millis() as i64) {
                println!("{line}");
            }
            if let Some(summary) = outcome.report.error_summary() {
                warn!(failed_messages = outcome.failed_messages.len(), summary = %summary, "fan-out messages failed; SQS delivers them again");
            }
            return Ok(scim_relay::lambda::queue::batch_response(&outcome.failed_messages));
        }
        Decoded::Ignore(why) => {
            info!(reason = %why, "event needs no action");
            return Ok(json!({"results": [], "ignored": why}));
        }
    };
    let time_left = time_left(event.context.deadline);
    let deadline = tokio::time::Instant::now() + time_left;
    info!(
        action = ?req.action,
        targets = ?req.targets,
        dry_run = req.opts.dry_run,
        force = req.opts.force,
        time_left_ms = time_left.as_millis() as u64,
        "invocation started"
    );
    let retries_before = relay.graph().retries();
    let report = relay.run(&req, Some(deadline)).await;
    let retries = relay.graph().retries().saturating_sub(retries_before);
    for line in scim_relay::lambda::metrics::emf_lines(&report, retries, now_millis() as i64) {
        println!("{line}");
    }
    let result = serde_json::to_value(&report)
        .map_err(|e| InvocationError::Internal(format!("the result could not be serialized: {e}")))?;
    info!(result = %result, "invocation finished");
    match InvocationError::from_report(&report) {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

fn time_left(deadline_ms: u64) -> Duration {
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_millis()));
    if left.is_zero() {
        // Lambda always sends a future deadline; some emulators do not.
        warn!(deadline_ms, "the runtime sent no usable deadline; assuming Lambda's maximum of 15 minutes");
        return MAX_LAMBDA_TIMEOUT;
    }
    left
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
