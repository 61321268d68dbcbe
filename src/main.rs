//! The Lambda binary: decode event → request → relay → result.

use std::time::Duration;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use scim_relay::handler::{decode, Decoded};
use scim_relay::relay::Relay;
use serde_json::{json, Value};
use tracing::{error, info, warn};

/// Lambda's longest timeout, assumed when the runtime sends no deadline.
const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

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

#[tokio::main]
async fn main() -> Result<(), Error> {
    scim_relay::panic::install_hook();
    init_tracing();
    // A configuration error is reported by every invocation, not by a
    // crash loop at start-up.
    let relay = Relay::from_env().await;
    if let Err(e) = &relay {
        error!(error = %e, "scim-relay is not configured correctly");
    }
    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let relay = relay.as_ref().map_err(|e| Error::from(e.clone()))?;
        let decoded = decode(&event.payload, &relay.defaults).map_err(|e| {
            error!(error = %e, "invocation refused");
            Error::from(e.to_string())
        })?;
        let req = match decoded {
            Decoded::Run(req) => req,
            Decoded::Queue(batch) => {
                let deadline = tokio::time::Instant::now() + time_left(event.context.deadline);
                info!(messages = batch.messages.len(), "fan-out messages received");
                let retries_before = relay.graph().retries();
                let outcome = scim_relay::fleet::run_queue_batch(relay, &batch, Some(deadline)).await;
                let retries = relay.graph().retries().saturating_sub(retries_before);
                for line in scim_relay::metrics::emf_lines(&outcome.report, retries, now_millis() as i64) {
                    println!("{line}");
                }
                if let Some(summary) = outcome.report.error_summary() {
                    warn!(failed_messages = outcome.failed_messages.len(), summary = %summary, "fan-out messages failed; SQS delivers them again");
                }
                return Ok(scim_relay::fleet::batch_response(&outcome.failed_messages));
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
        for line in scim_relay::metrics::emf_lines(&report, retries, now_millis() as i64) {
            println!("{line}");
        }
        let result = serde_json::to_value(&report)?;
        info!(result = %result, "invocation finished");
        match report.error_summary() {
            Some(summary) => Err(Error::from(summary)),
            None => Ok(result),
        }
    }))
    .await
}

/// Time left until the runtime's deadline (epoch milliseconds).
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
