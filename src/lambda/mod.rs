//! The Lambda edge: events in, results and metrics out.
//!
//! - [`handler`]: event decoding and the invocation itself.
//! - [`relay`]: the composition root; runs a request over all targets and publishes alerts.
//! - [`queue`]: fan-out messages from SQS.
//! - [`invocation_error`]: the errorType/errorMessage Lambda reports.
//! - [`metrics`]: CloudWatch EMF metrics; [`panic`]: the panic hook.
//! - [`runtime`]: the Runtime API loop `main` starts.

pub mod handler;
pub mod invocation_error;
pub mod metrics;
pub mod panic;
pub mod queue;
pub mod relay;
pub mod runtime;
