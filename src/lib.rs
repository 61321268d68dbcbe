//! scim-relay: keeps the Apple Business Manager / Apple School Manager SCIM
//! token in Microsoft Entra provisioning alive.
//!
//! - [`renew`]: the renewal logic, the SPEC's apply sequence, with no I/O.
//! - [`ports`]: the two interfaces it needs (secret store, Entra) and the notifier.
//! - [`aws`], [`graph`]: the real adapters; [`auth`]: how the relay's own Graph
//!   app signs in (client secret, certificate, AWS outbound identity federation).
//! - [`credential_watch`]: the relay's own credential is watched for expiry too.
//! - [`relay`]: runs a request over all targets; [`handler`]: the Lambda event layer.
//! - [`fleet`]: targets found by name prefix, their order, and fan-out over SQS.

pub mod alert;
pub mod auth;
pub mod aws;
pub mod config;
pub mod credential_watch;
pub mod fleet;
pub mod graph;
pub mod handler;
pub mod invocation_error;
#[cfg(test)]
pub mod memory;
pub mod metrics;
pub mod panic;
pub mod ports;
pub mod relay;
pub mod renew;
pub mod seal;
pub mod secret_value;
pub mod types;
